package media

import (
	"context"
	"errors"
	"io"
	"mime"
	"strings"
	"unicode"
	"unicode/utf8"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// Upload is one file sent by a client.
type Upload struct {
	UserID string
	// ContentType is the request's Content-Type; empty means application/octet-stream.
	ContentType string
	// FileName is the filename query parameter; empty if none.
	FileName string
	Body     io.Reader
	// ContentLength is the announced length, -1 when unknown (chunked).
	ContentLength int64
}

// maxFileNameBytes caps the stored file name.
const maxFileNameBytes = 255

// normaliseContentType returns the media type as it will be stored and served:
// a valid type with its parameters, or application/octet-stream when none or a
// malformed one was given. Spec: content-repo.yaml, the contentType parameter.
func normaliseContentType(ct string) string {
	if strings.TrimSpace(ct) == "" {
		return "application/octet-stream"
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || !strings.Contains(mt, "/") {
		return "application/octet-stream"
	}
	if out := mime.FormatMediaType(mt, params); out != "" {
		return out
	}
	return "application/octet-stream"
}

func checkFileName(name string) error {
	if len(name) > maxFileNameBytes {
		return mxerr.New(mxerr.InvalidParam, "The file name is longer than %d bytes", maxFileNameBytes)
	}
	if !utf8.ValidString(name) {
		return mxerr.New(mxerr.InvalidParam, "The file name is not valid UTF-8")
	}
	if strings.ContainsFunc(name, unicode.IsControl) {
		return mxerr.New(mxerr.InvalidParam, "The file name contains control characters")
	}
	return nil
}

func (s *Service) tooLarge() error {
	return mxerr.New(mxerr.TooLarge, "The file is larger than the %d bytes this server accepts", s.cfg.MaxUploadBytes)
}

// precheck refuses, before any byte is read, what the announced length
// already shows to be too big or over quota.
func (s *Service) precheck(ctx context.Context, u Upload) error {
	if err := checkFileName(u.FileName); err != nil {
		return err
	}
	if u.ContentLength > s.cfg.MaxUploadBytes {
		return s.tooLarge()
	}
	if s.cfg.UserQuotaBytes > 0 && u.ContentLength > 0 {
		used, err := s.store.UserMediaBytes(ctx, u.UserID)
		if err != nil {
			return err
		}
		if used+u.ContentLength > s.cfg.UserQuotaBytes {
			return s.quotaErr(used)
		}
	}
	return nil
}

func (s *Service) quotaErr(used int64) error {
	return mxerr.New(mxerr.Forbidden, "This file does not fit in your storage quota: %d of %d bytes are used", used, s.cfg.UserQuotaBytes)
}

// readError marks a failure to read the client's body (as opposed to a
// failure to write the disk, which is the server's).
type readError struct{ err error }

func (e readError) Error() string { return e.err.Error() }
func (e readError) Unwrap() error { return e.err }

type tagReader struct{ r io.Reader }

func (t tagReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		err = readError{err}
	}
	return n, err
}

// receive stores the body in a temporary file.
func (s *Service) receive(body io.Reader) (*tempBlob, error) {
	t, err := s.blobs.writeTemp(tagReader{body}, s.cfg.MaxUploadBytes)
	var re readError
	switch {
	case errors.Is(err, errTooBig):
		return nil, s.tooLarge()
	case errors.As(err, &re):
		return nil, mxerr.New(mxerr.Unknown, "Could not read the uploaded file: %v", re.err)
	}
	return t, err
}

// commit, in one transaction, checks the quota, records the media with
// record, and puts its file in place; the file is durable on disk before the
// transaction commits, so an acknowledged upload is never lost.
func (s *Service) commit(ctx context.Context, userID string, t *tempBlob, record func(q *sqlstore.Queries) error) error {
	return s.store.InTx(ctx, func(q *sqlstore.Queries) error {
		if s.cfg.UserQuotaBytes > 0 {
			if err := q.LockMediaQuota(ctx, userID); err != nil {
				return err
			}
			used, err := q.UserMediaBytes(ctx, userID)
			if err != nil {
				return err
			}
			if used+t.size > s.cfg.UserQuotaBytes {
				return s.quotaErr(used)
			}
		}
		if err := q.LockMediaBlob(ctx, t.sha256); err != nil {
			return err
		}
		if err := record(q); err != nil {
			return err
		}
		return s.blobs.place(t)
	})
}

// Upload stores a new file and returns its mxc:// URI.
// Spec: POST /_matrix/media/v3/upload.
func (s *Service) Upload(ctx context.Context, u Upload) (string, error) {
	if err := s.precheck(ctx, u); err != nil {
		return "", err
	}
	t, err := s.receive(u.Body)
	if err != nil {
		return "", err
	}
	defer t.discard()
	now := s.now().UnixMilli()
	row := sqlstore.Media{
		MediaID: newMediaID(), UserID: u.UserID, ContentType: normaliseContentType(u.ContentType), UploadName: u.FileName,
		SizeBytes: t.size, SHA256: t.sha256, CreatedTS: now, UploadedTS: &now,
	}
	err = s.commit(ctx, u.UserID, t, func(q *sqlstore.Queries) error { return q.InsertMedia(ctx, row) })
	if err != nil {
		return "", err
	}
	return s.mxcURI(row.MediaID), nil
}

// Created is the answer to /create.
type Created struct {
	ContentURI      string `json:"content_uri"`
	UnusedExpiresAt int64  `json:"unused_expires_at"`
}

// Create hands out an mxc:// URI whose content the user uploads later.
// Spec: POST /_matrix/media/v1/create (at most media.max_pending_uploads
// awaited uploads per user: 429 M_LIMIT_EXCEEDED beyond).
func (s *Service) Create(ctx context.Context, userID string) (Created, error) {
	now := s.now()
	if err := s.PurgeExpired(ctx); err != nil {
		return Created{}, err
	}
	expires := now.Add(s.cfg.PendingLifetime).UnixMilli()
	row := sqlstore.Media{MediaID: newMediaID(), UserID: userID, CreatedTS: now.UnixMilli(), UnusedExpiresTS: &expires}
	err := s.store.InTx(ctx, func(q *sqlstore.Queries) error {
		if err := q.LockMediaQuota(ctx, userID); err != nil {
			return err
		}
		n, err := q.CountPendingMedia(ctx, userID, now.UnixMilli())
		if err != nil {
			return err
		}
		if n >= s.cfg.MaxPendingUploads {
			return mxerr.New(mxerr.LimitExceeded, "You already have %d media IDs awaiting their upload; upload to them or wait for them to expire", n)
		}
		return q.InsertMedia(ctx, row)
	})
	if err != nil {
		return Created{}, err
	}
	return Created{ContentURI: s.mxcURI(row.MediaID), UnusedExpiresAt: expires}, nil
}

// checkPending says whether the user may upload to this awaited media ID.
func (s *Service) checkPending(m sqlstore.Media, userID, serverName string) error {
	if m.UserID != userID {
		return mxerr.New(mxerr.Forbidden, "This media ID was created by another user")
	}
	if m.UploadedTS != nil {
		return mxerr.New(mxerr.CannotOverwriteMedia, "mxc://%s/%s already has its content; media cannot be overwritten", serverName, m.MediaID)
	}
	if m.UnusedExpiresTS != nil && *m.UnusedExpiresTS <= s.now().UnixMilli() {
		return mxerr.New(mxerr.NotFound, "The media ID mxc://%s/%s has expired; create a new one", serverName, m.MediaID)
	}
	return nil
}

// UploadTo fills a media ID handed out by Create.
// Spec: PUT /_matrix/media/v3/upload/{serverName}/{mediaId}.
func (s *Service) UploadTo(ctx context.Context, serverName, mediaID string, u Upload) error {
	if serverName != s.cfg.ServerName || !validMediaID(mediaID) {
		return mxerr.New(mxerr.NotFound, "mxc://%s/%s was not created on this server", serverName, mediaID)
	}
	m, err := s.store.GetMedia(ctx, mediaID)
	if errors.Is(err, sqlstore.ErrNotFound) {
		return mxerr.New(mxerr.NotFound, "No media ID mxc://%s/%s was created on this server (or it expired)", serverName, mediaID)
	}
	if err != nil {
		return err
	}
	if err := s.checkPending(m, u.UserID, serverName); err != nil {
		return err
	}
	if err := s.precheck(ctx, u); err != nil {
		return err
	}
	t, err := s.receive(u.Body)
	if err != nil {
		return err
	}
	defer t.discard()
	now := s.now().UnixMilli()
	err = s.commit(ctx, u.UserID, t, func(q *sqlstore.Queries) error {
		// Again, under the row lock: a concurrent PUT may have won meanwhile.
		m, err := q.GetMediaForUpdate(ctx, mediaID)
		if errors.Is(err, sqlstore.ErrNotFound) {
			return mxerr.New(mxerr.NotFound, "The media ID mxc://%s/%s has expired; create a new one", serverName, mediaID)
		}
		if err != nil {
			return err
		}
		if err := s.checkPending(m, u.UserID, serverName); err != nil {
			return err
		}
		return q.CompleteMedia(ctx, sqlstore.Media{
			MediaID: mediaID, ContentType: normaliseContentType(u.ContentType), UploadName: u.FileName,
			SizeBytes: t.size, SHA256: t.sha256, UploadedTS: &now,
		})
	})
	if err != nil {
		return err
	}
	s.wake(mediaID)
	return nil
}
