package media

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"

	"chappe/allowlist"
	"chappe/mxerr"
	"chappe/sqlstore"
)

// Other servers' media. A client asks for mxc://origin/mediaID through the
// authenticated download and thumbnail endpoints; the first request fetches
// it from origin over federation (GET /_matrix/federation/v1/media/download
// or /thumbnail, through the Fetcher: the allowlist gate comes first, so an
// unlisted origin is never contacted), stores it like an upload (once per
// SHA-256, a remote_media row saying where it comes from), and every later
// request is served from here, with the same headers as local media.
//
// Thumbnails of remote media are fetched from the origin, not made here from
// the original: a client scrolling a room asks for many thumbnails, and
// fetching each original (up to media.max_upload_bytes, videos included,
// which we cannot thumbnail) to shrink it is what the spec asks servers not
// to do ("Homeservers should not proxy or thumbnail large files or images
// from remote homeservers"). The origin is asked for the standard box that
// covers the request, and never more than the largest standard box
// (remoteBox): at most len(standardBoxes) thumbnails per media and method
// are fetched and kept, whatever sizes clients ask for.
//
// Nothing in, nothing out: the media of a server the allowlist does not
// admit (never listed, removed, or the list expired) is not served, even
// when it is cached from a time the server was listed — 403 M_FORBIDDEN,
// as a fetch from it would be. What is cached stays (the server may be
// listed again) until the cache retention drops it.
//
// Spec: server-server-api.md, "Content Repository";
// client-server-api/modules/content_repo.md, "Security considerations".

// Incoming is a file as another server sends it.
type Incoming struct {
	// ContentType and FileName are what the origin says (unchecked).
	ContentType, FileName string
	Body                  io.Reader
}

// Fetcher fetches other servers' media (federation.RemoteMedia). Each call
// hands the file to sink, which reads Body to its end, and returns nil only
// when the whole answer was well-formed; its errors are Matrix errors
// (404 when origin has no such media, 403 when it is outside the
// federation, 502 when it cannot be reached), or sink's own.
type Fetcher interface {
	// Download fetches the content of mxc://origin/mediaID, letting origin
	// wait up to wait for an asynchronous upload.
	Download(ctx context.Context, origin, mediaID string, wait time.Duration, sink func(Incoming) error) error
	// Thumbnail fetches a thumbnail of it for req's box and method.
	Thumbnail(ctx context.Context, origin, mediaID string, req ThumbnailRequest, wait time.Duration, sink func(Incoming) error) error
	// Admits tells whether the allowlist admits origin now: the media of a
	// server it does not admit is not served, cached or not.
	Admits(origin string) bool
}

// Bounds of the remote fetches. Each running fetch holds a connection and a
// temporary file of up to MaxUploadBytes.
const (
	// maxRunningFetches is how many fetches run at once.
	maxRunningFetches = 16
	// maxQueuedFetches is how many may wait or run (distinct media: the
	// requests for one media share its fetch); beyond, 429.
	maxQueuedFetches = 256
	// fetchTimeout bounds one fetch, the wait for a slot included; the
	// federation client's request timeout applies inside it too.
	fetchTimeout = 2 * time.Minute
)

// checkRemote refuses names that cannot be another server's media: the
// server name must be valid and the media ID made of the allowed characters
// (spec: content_repo.md, "Security considerations"); and the media of a
// server outside the federation, cached or not.
func (s *Service) checkRemote(origin, mediaID string) error {
	if err := allowlist.ValidServerName(origin); err != nil {
		return mxerr.New(mxerr.InvalidParam, "%q is not a valid server name: %v", origin, err)
	}
	if !validMediaID(mediaID) {
		return mxerr.New(mxerr.NotFound, "No media with ID %q: media IDs only contain A-Z, a-z, 0-9, _ and -", mediaID)
	}
	if s.remote == nil {
		return mxerr.New(mxerr.NotFound, "Media of other servers (%q) is not available through this server", origin)
	}
	if !s.remote.Admits(origin) {
		return mxerr.New(mxerr.Forbidden, "%s is outside the federation: its media is not served here", origin)
	}
	return nil
}

// cachedRemote is what we hold of mxc://origin/mediaID: the row (zero when
// there is none) or the refusal of a quarantined media. A request for it is
// an access, recorded for the cache retention (remote_cache.go).
func (s *Service) cachedRemote(ctx context.Context, origin, mediaID string) (sqlstore.RemoteMedia, error) {
	m, err := s.store.GetRemoteMedia(ctx, origin, mediaID)
	switch {
	case errors.Is(err, sqlstore.ErrNotFound):
		return sqlstore.RemoteMedia{}, nil
	case err != nil:
		return m, err
	case m.QuarantinedTS != nil:
		return m, quarantinedErr(origin, mediaID)
	}
	return m, s.touchRemote(ctx, m)
}

// openRemote serves another server's media from the cache, fetching it
// first if needed. The deprecated unauthenticated endpoints (opts.Legacy)
// never fetch: what they would cache now is frozen anyway.
func (s *Service) openRemote(ctx context.Context, origin, mediaID string, opts OpenOptions) (*Content, error) {
	if err := s.checkRemote(origin, mediaID); err != nil {
		return nil, err
	}
	m, err := s.cachedRemote(ctx, origin, mediaID)
	if err != nil {
		return nil, err
	}
	if m.FetchedTS != nil {
		if opts.Legacy && s.frozen(*m.FetchedTS) {
			return nil, frozenErr(origin, mediaID)
		}
		f, err := s.blobs.open(m.SHA256)
		if err == nil {
			return remoteContent(m, f), nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		zerolog.Ctx(ctx).Error().Str("origin", origin).Str("media_id", mediaID).Str("path", s.blobs.path(m.SHA256)).
			Msg("cached remote media file missing from the media directory; fetching it again")
	}
	if opts.Legacy {
		return nil, frozenErr(origin, mediaID)
	}
	v, err := s.shared(ctx, "download "+origin+"/"+mediaID, func(ctx context.Context) (any, error) {
		return s.fetchRemote(ctx, origin, mediaID, opts.Wait)
	})
	if err != nil {
		return nil, err
	}
	m = v.(sqlstore.RemoteMedia)
	if m.QuarantinedTS != nil { // quarantined while it was being fetched
		return nil, quarantinedErr(origin, mediaID)
	}
	f, err := s.openBlob(ctx, m.SHA256, origin, mediaID)
	if err != nil {
		return nil, err
	}
	return remoteContent(m, f), nil
}

func remoteContent(m sqlstore.RemoteMedia, f *os.File) *Content {
	return &Content{
		File: f, Size: m.SizeBytes, ContentType: m.ContentType, FileName: m.UploadName, SHA256: m.SHA256,
		Modified: time.UnixMilli(*m.FetchedTS),
	}
}

// shared runs fetch once for all the concurrent requests with the same key,
// within the bounds above. The fetch goes on when the request that started
// it goes away (others may be waiting for it); each request stops waiting
// when its own context ends.
func (s *Service) shared(ctx context.Context, key string, fetch func(context.Context) (any, error)) (any, error) {
	ch := s.fetches.DoChan(key, func() (any, error) {
		select {
		case s.fetchQueue <- struct{}{}:
			defer func() { <-s.fetchQueue }()
		default:
			return nil, mxerr.New(mxerr.LimitExceeded, "This server is already fetching %d media from other servers; try again shortly", maxQueuedFetches)
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
		defer cancel()
		select {
		case s.fetchSlots <- struct{}{}:
			defer func() { <-s.fetchSlots }()
		case <-fctx.Done():
			return nil, mxerr.New(mxerr.LimitExceeded, "This server is busy fetching media from other servers; try again shortly")
		}
		return fetch(fctx)
	})
	select {
	case r := <-ch:
		return r.Val, r.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// receiveRemote stores what another server sends in a temporary file: at
// most MaxUploadBytes, beyond which it is 502 M_TOO_LARGE, as the spec
// says for remote content. A failure to read is the Fetcher's error (a
// malformed or broken answer), returned as it is.
func (s *Service) receiveRemote(origin string, body io.Reader) (*tempBlob, error) {
	t, err := s.blobs.writeTemp(tagReader{body}, s.cfg.MaxUploadBytes)
	var re readError
	switch {
	case errors.Is(err, errTooBig):
		return nil, mxerr.New(mxerr.TooLarge, "The media on %s is larger than the %d bytes this server accepts", origin, s.cfg.MaxUploadBytes).
			WithStatus(502)
	case errors.As(err, &re):
		return nil, re.err
	}
	return t, err
}

// fetch runs one Fetcher call with a sink that stores the file in a
// temporary file; the caller records it, then discards the temporary file.
func (s *Service) fetch(origin string, call func(sink func(Incoming) error) error) (*tempBlob, Incoming, error) {
	var t *tempBlob
	var in Incoming
	err := call(func(got Incoming) error {
		in = got
		var err error
		t, err = s.receiveRemote(origin, got.Body)
		return err
	})
	if err != nil {
		t.discard()
		return nil, in, err
	}
	return t, in, nil
}

// remoteFileName is the file name the origin gave, if it is one we would
// accept in an upload; else none.
func remoteFileName(name string) string {
	if checkFileName(name) != nil {
		return ""
	}
	return name
}

// fetchRemote fetches mxc://origin/mediaID and records it in the cache.
func (s *Service) fetchRemote(ctx context.Context, origin, mediaID string, wait time.Duration) (sqlstore.RemoteMedia, error) {
	// A request that missed the cache just before the previous fetch stored
	// the media starts a flight of its own: it finds the media here.
	if m, err := s.store.GetRemoteMedia(ctx, origin, mediaID); err == nil && m.FetchedTS != nil && s.blobs.has(m.SHA256) {
		return m, nil
	}
	t, in, err := s.fetch(origin, func(sink func(Incoming) error) error {
		return s.remote.Download(ctx, origin, mediaID, wait, sink)
	})
	if err != nil {
		return sqlstore.RemoteMedia{}, err
	}
	defer t.discard()
	now := s.now().UnixMilli()
	row := sqlstore.RemoteMedia{
		Origin: origin, MediaID: mediaID, ContentType: normaliseContentType(in.ContentType), UploadName: remoteFileName(in.FileName),
		SizeBytes: t.size, SHA256: t.sha256, FetchedTS: &now,
	}
	err = s.store.InTx(ctx, func(q *sqlstore.Queries) error {
		if err := q.LockMediaBlob(ctx, t.sha256); err != nil {
			return err
		}
		var err error
		if row, err = q.PutRemoteMedia(ctx, row); err != nil {
			return err
		}
		return s.blobs.place(t)
	})
	return row, err
}

// remoteThumbnail serves a thumbnail of another server's media from the
// cache, fetching it from the origin first if needed.
func (s *Service) remoteThumbnail(ctx context.Context, origin, mediaID string, req ThumbnailRequest, opts OpenOptions) (*Content, error) {
	if err := s.checkRemote(origin, mediaID); err != nil {
		return nil, err
	}
	if _, err := s.cachedRemote(ctx, origin, mediaID); err != nil {
		return nil, err
	}
	box := remoteBox(req.Width, req.Height)
	t, err := s.store.GetRemoteThumbnail(ctx, origin, mediaID, box.X, box.Y, req.Method)
	switch {
	case err == nil:
		if opts.Legacy && s.frozen(t.CreatedTS) {
			return nil, frozenErr(origin, mediaID)
		}
	case !errors.Is(err, sqlstore.ErrNotFound):
		return nil, err
	case opts.Legacy:
		return nil, frozenErr(origin, mediaID)
	default:
		key := fmt.Sprintf("thumbnail %s/%s/%dx%d/%s", origin, mediaID, box.X, box.Y, req.Method)
		v, err := s.shared(ctx, key, func(ctx context.Context) (any, error) {
			return s.fetchRemoteThumbnail(ctx, origin, mediaID, box, req.Method, opts.Wait)
		})
		if err != nil {
			return nil, err
		}
		t = v.(sqlstore.RemoteThumbnail)
		// Quarantined while it was being fetched?
		if _, err := s.cachedRemote(ctx, origin, mediaID); err != nil {
			return nil, err
		}
	}
	return s.openThumbnail(ctx, t.Thumbnail, origin, mediaID)
}

// remoteBox is the box a thumbnail of remote media is asked of the origin
// for: the smallest standard box covering the request, or the largest
// standard box for a larger request. Unlike local thumbnails (requestBox),
// a large request is not rounded up to boxStep: each box is a fetch and a
// file kept, and any user may ask for any size.
func remoteBox(reqW, reqH int) image.Point {
	largest := standardBoxes[len(standardBoxes)-1]
	if reqW > largest.X || reqH > largest.Y {
		return largest
	}
	return requestBox(reqW, reqH)
}

// fetchRemoteThumbnail fetches a thumbnail for box and method from the
// origin and records it in the cache.
func (s *Service) fetchRemoteThumbnail(ctx context.Context, origin, mediaID string, box image.Point, method string, wait time.Duration) (sqlstore.RemoteThumbnail, error) {
	if t, err := s.store.GetRemoteThumbnail(ctx, origin, mediaID, box.X, box.Y, method); err == nil {
		return t, nil // stored by a fetch that ended just before this one (see fetchRemote)
	}
	req := ThumbnailRequest{Width: box.X, Height: box.Y, Method: method}
	t, in, err := s.fetch(origin, func(sink func(Incoming) error) error {
		return s.remote.Thumbnail(ctx, origin, mediaID, req, wait, sink)
	})
	if err != nil {
		return sqlstore.RemoteThumbnail{}, err
	}
	defer t.discard()
	now := s.now().UnixMilli()
	row := sqlstore.RemoteThumbnail{Origin: origin, Thumbnail: sqlstore.Thumbnail{
		MediaID: mediaID, Width: box.X, Height: box.Y, Method: method, ContentType: normaliseContentType(in.ContentType),
		SizeBytes: t.size, SHA256: t.sha256, CreatedTS: now,
	}}
	err = s.store.InTx(ctx, func(q *sqlstore.Queries) error {
		if err := q.EnsureRemoteMedia(ctx, origin, mediaID, now); err != nil {
			return err
		}
		if err := q.LockMediaBlob(ctx, t.sha256); err != nil {
			return err
		}
		if err := q.InsertRemoteThumbnail(ctx, row); err != nil {
			return err
		}
		return s.blobs.place(t)
	})
	if err != nil {
		return row, err
	}
	// A concurrent fetch in another process may have won the insert: serve
	// what is recorded.
	return s.store.GetRemoteThumbnail(ctx, origin, mediaID, box.X, box.Y, method)
}

// quarantineRemote stops serving another server's media, whether or not
// anything of it is cached yet: a media quarantined before it was ever
// fetched is never fetched.
func (s *Service) quarantineRemote(ctx context.Context, origin, mediaID, byUserID string) error {
	if err := allowlist.ValidServerName(origin); err != nil || !validMediaID(mediaID) {
		return mxerr.New(mxerr.InvalidParam, "mxc://%s/%s is not a valid content URI", origin, mediaID)
	}
	return s.store.QuarantineRemoteMedia(ctx, origin, mediaID, byUserID, s.now().UnixMilli())
}

// deleteRemote drops what the cache holds of another server's media, and
// the files nothing else uses.
func (s *Service) deleteRemote(ctx context.Context, origin, mediaID string) error {
	err := s.deleteFiles(ctx,
		func(q *sqlstore.Queries) ([][]byte, error) { return q.RemoteMediaFileHashes(ctx, origin, mediaID) },
		func(q *sqlstore.Queries) error { return q.DeleteRemoteMedia(ctx, origin, mediaID) })
	if errors.Is(err, sqlstore.ErrNotFound) {
		return mxerr.New(mxerr.NotFound, "Nothing of mxc://%s/%s is cached on this server", origin, mediaID)
	}
	return err
}
