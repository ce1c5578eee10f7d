package media

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// Waiting for an asynchronous upload. Spec: the timeout_ms parameter of the
// download and thumbnail endpoints.
const (
	// DefaultWait is the spec's default timeout_ms.
	DefaultWait = 20 * time.Second
	// MaxWait caps timeout_ms.
	MaxWait = 60 * time.Second
	// pollInterval is how often a waiting download looks at the database, for
	// content uploaded through another process sharing it.
	pollInterval = time.Second
)

// OpenOptions says how a download was asked for.
type OpenOptions struct {
	// Legacy is set for the deprecated unauthenticated /_matrix/media/v3
	// endpoints, which only serve media uploaded before the cutoff.
	Legacy bool
	// Wait is how long to wait for the content of an asynchronous upload
	// before answering 504 M_NOT_YET_UPLOADED.
	Wait time.Duration
}

// Content is a file ready to be served. The caller closes File.
type Content struct {
	File        *os.File
	Size        int64
	ContentType string
	// FileName is the name given at upload, or "" (the caller may override it).
	FileName string
	SHA256   []byte
	Modified time.Time
}

// lookup finds the uploaded media row, waiting for it if it is awaited.
func (s *Service) lookup(ctx context.Context, serverName, mediaID string, opts OpenOptions) (sqlstore.Media, error) {
	if err := s.checkLocal(serverName, mediaID); err != nil {
		return sqlstore.Media{}, err
	}
	deadline := s.now().Add(min(opts.Wait, MaxWait))
	for {
		m, err := s.store.GetMedia(ctx, mediaID)
		if errors.Is(err, sqlstore.ErrNotFound) {
			return m, notFoundErr(serverName, mediaID)
		}
		if err != nil {
			return m, err
		}
		if m.QuarantinedTS != nil {
			return m, quarantinedErr(serverName, mediaID)
		}
		if m.UploadedTS != nil {
			if opts.Legacy && s.frozen(*m.UploadedTS) {
				return m, frozenErr(serverName, mediaID)
			}
			return m, nil
		}
		if m.UnusedExpiresTS != nil && *m.UnusedExpiresTS <= s.now().UnixMilli() {
			return m, notFoundErr(serverName, mediaID)
		}
		remaining := deadline.Sub(s.now())
		if remaining <= 0 {
			return m, mxerr.New(mxerr.NotYetUploaded, "The content of mxc://%s/%s has not been uploaded yet", serverName, mediaID)
		}
		if err := s.wait(ctx, mediaID, min(remaining, pollInterval)); err != nil {
			return m, err
		}
	}
}

func quarantinedErr(serverName, mediaID string) error {
	return mxerr.New(mxerr.NotFound, "mxc://%s/%s has been quarantined by the server administrators and is no longer served", serverName, mediaID)
}

// frozen tells whether media stored at ms (uploaded here, or fetched from
// another server) is kept from the deprecated unauthenticated endpoints.
// Spec: content_repo.md, "Client behaviour" (the freeze warning; for remote
// media, the date the cache was populated counts).
func (s *Service) frozen(ms int64) bool {
	return s.cfg.LegacyCutoff.IsZero() || !time.UnixMilli(ms).Before(s.cfg.LegacyCutoff)
}

func frozenErr(serverName, mediaID string) error {
	return mxerr.New(mxerr.NotFound, "mxc://%s/%s is only served through the authenticated media endpoints (/_matrix/client/v1/media/...): unauthenticated access is frozen for recent media", serverName, mediaID)
}

// Open returns the content of a media for download: a local one, or
// another server's, fetched and cached (remote.go).
// Spec: GET /_matrix/client/v1/media/download/{serverName}/{mediaId} and the
// deprecated GET /_matrix/media/v3/download/{serverName}/{mediaId}.
func (s *Service) Open(ctx context.Context, serverName, mediaID string, opts OpenOptions) (*Content, error) {
	if serverName != s.cfg.ServerName {
		return s.openRemote(ctx, serverName, mediaID, opts)
	}
	m, err := s.lookup(ctx, serverName, mediaID, opts)
	if err != nil {
		return nil, err
	}
	f, err := s.openBlob(ctx, m.SHA256, serverName, mediaID)
	if err != nil {
		return nil, err
	}
	return &Content{
		File: f, Size: m.SizeBytes, ContentType: m.ContentType, FileName: m.UploadName, SHA256: m.SHA256,
		Modified: time.UnixMilli(*m.UploadedTS),
	}, nil
}

// openBlob opens a stored file. A file missing from a disk that the database
// says is there is the operators' problem: logged, and a 404 for the client.
func (s *Service) openBlob(ctx context.Context, sum []byte, serverName, mediaID string) (*os.File, error) {
	f, err := s.blobs.open(sum)
	if errors.Is(err, os.ErrNotExist) {
		zerolog.Ctx(ctx).Error().Str("media_id", mediaID).Str("path", s.blobs.path(sum)).Msg("media file missing from the media directory")
		return nil, mxerr.New(mxerr.NotFound, "The content of mxc://%s/%s is missing on this server", serverName, mediaID)
	}
	return f, err
}

// waitEntry is the channel closed when a media's content arrives, shared by
// every request waiting for it.
type waitEntry struct {
	ch      chan struct{}
	waiters int
}

// wait blocks until the media's content arrives through this process, d
// passes or ctx ends.
func (s *Service) wait(ctx context.Context, mediaID string, d time.Duration) error {
	s.mu.Lock()
	e, ok := s.waiting[mediaID]
	if !ok {
		e = &waitEntry{ch: make(chan struct{})}
		s.waiting[mediaID] = e
	}
	e.waiters++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if e.waiters--; e.waiters == 0 && s.waiting[mediaID] == e {
			delete(s.waiting, mediaID)
		}
		s.mu.Unlock()
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-e.ch:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// wake releases the requests waiting for the media's content.
func (s *Service) wake(mediaID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.waiting[mediaID]; ok {
		close(e.ch)
		delete(s.waiting, mediaID)
	}
}

// Quarantine stops serving a media, as an administrator's decision; the file
// is kept (for inspection) until Delete.
func (s *Service) Quarantine(ctx context.Context, serverName, mediaID, byUserID string) error {
	if serverName != s.cfg.ServerName {
		return s.quarantineRemote(ctx, serverName, mediaID, byUserID)
	}
	if err := s.checkLocal(serverName, mediaID); err != nil {
		return err
	}
	err := s.store.QuarantineMedia(ctx, mediaID, byUserID, s.now().UnixMilli())
	if errors.Is(err, sqlstore.ErrNotFound) {
		return notFoundErr(serverName, mediaID)
	}
	return err
}

// Delete removes a media, its thumbnails and every file no other media
// uses; for another server's media, what the cache holds of it.
func (s *Service) Delete(ctx context.Context, serverName, mediaID string) error {
	if serverName != s.cfg.ServerName {
		return s.deleteRemote(ctx, serverName, mediaID)
	}
	if err := s.checkLocal(serverName, mediaID); err != nil {
		return err
	}
	err := s.deleteFiles(ctx,
		func(q *sqlstore.Queries) ([][]byte, error) { return q.MediaFileHashes(ctx, mediaID) },
		func(q *sqlstore.Queries) error { return q.DeleteMedia(ctx, mediaID) })
	if errors.Is(err, sqlstore.ErrNotFound) {
		return notFoundErr(serverName, mediaID)
	}
	return err
}

// deleteFiles, in one transaction, deletes rows with del and removes the
// files they used (listed by hashes) that nothing else uses any more.
func (s *Service) deleteFiles(ctx context.Context, hashesOf func(q *sqlstore.Queries) ([][]byte, error), del func(q *sqlstore.Queries) error) error {
	return s.store.InTx(ctx, func(q *sqlstore.Queries) error {
		hashes, err := hashesOf(q)
		if err != nil {
			return err
		}
		// Always lock in the same order, so two deletions cannot deadlock.
		slices.SortFunc(hashes, bytes.Compare)
		for _, h := range hashes {
			if err := q.LockMediaBlob(ctx, h); err != nil {
				return err
			}
		}
		if err := del(q); err != nil {
			return err
		}
		for _, h := range hashes {
			used, err := q.MediaBlobReferenced(ctx, h)
			if err != nil {
				return err
			}
			if !used {
				if err := s.blobs.remove(h); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
