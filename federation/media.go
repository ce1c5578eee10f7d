package federation

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"

	"chappe/media"
	"chappe/mxerr"
	"chappe/mxhttp"
)

// Media over federation, both ways.
//
//   - MediaEndpoints serves our own media to the servers of the list:
//     GET /_matrix/federation/v1/media/download/{mediaId} and
//     /media/thumbnail/{mediaId}, answered in multipart/mixed (a JSON
//     metadata part, then the content inline: we never redirect).
//   - RemoteMedia fetches other servers' media for the content repository
//     (media.Fetcher), through Client.DoRaw: the allowlist gate, backoff,
//     discovery, signature and TLS of every federation request. It parses
//     the multipart answer strictly and refuses a redirect part: following
//     Location would fetch from a host the list does not name.
//
// Spec: server-server-api.md, "Content Repository", and
// data/api/server-server/content_repository.yaml.

// LocalMedia is what the endpoints need of the content repository
// (media.Service); they only ever ask it for media of this server.
type LocalMedia interface {
	Open(ctx context.Context, serverName, mediaID string, opts media.OpenOptions) (*media.Content, error)
	Thumbnail(ctx context.Context, serverName, mediaID string, req media.ThumbnailRequest, opts media.OpenOptions) (*media.Content, error)
}

// MediaEndpoints serves our media to other servers.
type MediaEndpoints struct {
	serverName string
	media      LocalMedia
}

// NewMediaEndpoints builds the media endpoints of server serverName.
func NewMediaEndpoints(serverName string, m LocalMedia) *MediaEndpoints {
	return &MediaEndpoints{serverName: serverName, media: m}
}

// Register mounts the endpoints inside the authenticated group
// (ServerDeps.Register): only listed servers, signing, get our media.
func (e *MediaEndpoints) Register(r chi.Router) {
	r.Get("/_matrix/federation/v1/media/download/{mediaId}", e.download)
	r.Get("/_matrix/federation/v1/media/thumbnail/{mediaId}", e.thumbnail)
}

// download answers GET /_matrix/federation/v1/media/download/{mediaId}:
// the content of one of our media, waiting up to timeout_ms for an
// asynchronous upload. Unknown or quarantined: 404 M_NOT_FOUND.
func (e *MediaEndpoints) download(w http.ResponseWriter, r *http.Request) {
	wait, err := media.ParseWait(r.URL.Query().Get("timeout_ms"))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	c, err := e.media.Open(r.Context(), e.serverName, param(r, "mediaId"), media.OpenOptions{Wait: wait})
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	defer c.File.Close()
	writeMultipartMedia(w, r, c)
}

// thumbnail answers GET /_matrix/federation/v1/media/thumbnail/{mediaId}
// with width, height, method and animated as for our clients.
func (e *MediaEndpoints) thumbnail(w http.ResponseWriter, r *http.Request) {
	req, wait, err := media.ParseThumbnailQuery(r.URL.Query())
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	c, err := e.media.Thumbnail(r.Context(), e.serverName, param(r, "mediaId"), req, media.OpenOptions{Wait: wait})
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	defer c.File.Close()
	writeMultipartMedia(w, r, c)
}

// writeMultipartMedia writes the answer of the federation media endpoints:
// multipart/mixed with exactly two parts, the metadata ({}) and the content
// with its Content-Type and Content-Disposition.
func writeMultipartMedia(w http.ResponseWriter, r *http.Request, c *media.Content) {
	mw := multipart.NewWriter(w)
	ct := c.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	w.WriteHeader(http.StatusOK)
	err := writeParts(mw, textproto.MIMEHeader{
		"Content-Type":        {ct},
		"Content-Disposition": {media.Disposition(ct, c.FileName)},
		"Content-Length":      {strconv.FormatInt(c.Size, 10)},
	}, c.File)
	if err != nil {
		// Too late for an error answer: the peer sees a truncated body,
		// which it must refuse.
		zerolog.Ctx(r.Context()).Warn().Err(err).Msg("media answer to another server cut short")
	}
}

func writeParts(mw *multipart.Writer, header textproto.MIMEHeader, content io.Reader) error {
	meta, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	if err != nil {
		return err
	}
	if _, err := io.WriteString(meta, "{}"); err != nil {
		return err
	}
	part, err := mw.CreatePart(header)
	if err != nil {
		return err
	}
	if _, err := io.Copy(part, content); err != nil {
		return err
	}
	return mw.Close()
}

// RemoteMedia fetches other servers' media (media.Fetcher).
type RemoteMedia struct {
	c *Client
	// maxBytes caps a media's content (media.max_upload_bytes): the answer
	// may be that plus multipartOverhead.
	maxBytes int64
}

// multipartOverhead is what a media answer may hold besides the content:
// the boundaries, the part headers and the metadata part.
const multipartOverhead = 128 << 10

// maxMetadataBytes caps the JSON metadata part.
const maxMetadataBytes = 64 << 10

// NewRemoteMedia wraps the client for the content repository; maxBytes is
// the largest content accepted (media.max_upload_bytes).
func NewRemoteMedia(c *Client, maxBytes int64) *RemoteMedia {
	return &RemoteMedia{c: c, maxBytes: maxBytes}
}

var _ media.Fetcher = (*RemoteMedia)(nil)

// Download fetches mxc://origin/mediaID.
// Spec: GET /_matrix/federation/v1/media/download/{mediaId}; a server
// answering 404 M_UNRECOGNIZED is asked the deprecated
// GET /_matrix/media/v3/download/{serverName}/{mediaId} with
// allow_remote=false, as the spec says.
func (m *RemoteMedia) Download(ctx context.Context, origin, mediaID string, wait time.Duration, sink func(media.Incoming) error) error {
	q := url.Values{"timeout_ms": {strconv.FormatInt(wait.Milliseconds(), 10)}}
	return m.fetch(ctx, origin, mediaID, sink,
		fedPath("/_matrix/federation/v1/media/download", mediaID),
		fedPath("/_matrix/media/v3/download", origin, mediaID), q)
}

// Admits tells whether the allowlist admits origin now.
func (m *RemoteMedia) Admits(origin string) bool { return m.c.gate.Allowed(origin) }

// Thumbnail fetches a thumbnail of mxc://origin/mediaID.
// Spec: GET /_matrix/federation/v1/media/thumbnail/{mediaId}, with the
// same fallback to GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}.
func (m *RemoteMedia) Thumbnail(ctx context.Context, origin, mediaID string, req media.ThumbnailRequest, wait time.Duration, sink func(media.Incoming) error) error {
	q := url.Values{
		"width": {strconv.Itoa(req.Width)}, "height": {strconv.Itoa(req.Height)}, "method": {req.Method},
		"timeout_ms": {strconv.FormatInt(wait.Milliseconds(), 10)},
	}
	return m.fetch(ctx, origin, mediaID, sink,
		fedPath("/_matrix/federation/v1/media/thumbnail", mediaID),
		fedPath("/_matrix/media/v3/thumbnail", origin, mediaID), q)
}

// fetch asks origin's federation endpoint at path, falling back to the
// deprecated one at legacyPath when origin does not know the first.
func (m *RemoteMedia) fetch(ctx context.Context, origin, mediaID string, sink func(media.Incoming) error, path, legacyPath string, q url.Values) error {
	req := Request{
		Destination: origin, Method: http.MethodGet, Path: path, Query: q,
		MaxResponseBytes: m.maxBytes + multipartOverhead, Accept: "multipart/mixed",
	}
	s := &trackedSink{sink: sink}
	err := m.c.DoRaw(ctx, req, func(resp *http.Response) error { return readMultipartMedia(origin, resp, s.put) })
	var remote *RemoteError
	if errors.As(err, &remote) && remote.Status == http.StatusNotFound && remote.ErrCode == string(mxerr.Unrecognized) {
		req.Path, req.Query, req.Accept = legacyPath, legacyQuery(q), "*/*"
		err = m.c.DoRaw(ctx, req, func(resp *http.Response) error { return readPlainMedia(resp, s.put) })
	}
	if err != nil && s.failed && !s.readFailed {
		return err // the sink's own failure (our disk, our limit)
	}
	return mediaError(origin, mediaID, err)
}

// legacyQuery is q for the deprecated endpoints: a copy (q is left as it
// is), with allow_remote=false so that origin does not fetch from another
// server on our behalf. Spec: content_repo.md, GET /_matrix/media/v3/download.
func legacyQuery(q url.Values) url.Values {
	legacy := maps.Clone(q)
	if legacy == nil {
		legacy = url.Values{}
	}
	legacy.Set("allow_remote", "false")
	return legacy
}

// trackedSink tells the sink's own failures from failures to read the
// answer, which are the remote server's.
type trackedSink struct {
	sink       func(media.Incoming) error
	failed     bool // the sink returned an error
	readFailed bool // reading the body failed
}

func (s *trackedSink) put(in media.Incoming) error {
	r := &trackedReader{r: in.Body}
	in.Body = r
	err := s.sink(in)
	s.failed, s.readFailed = err != nil, r.err != nil
	return err
}

// trackedReader remembers its first read error.
type trackedReader struct {
	r   io.Reader
	err error
}

func (t *trackedReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF && t.err == nil {
		t.err = err
	}
	return n, err
}

// mediaError turns the failure of a media fetch into the Matrix error our
// client gets. Spec: content_repo.md, "Security considerations" (remote
// content too large: 502 M_TOO_LARGE).
func mediaError(origin, mediaID string, err error) error {
	var remote *RemoteError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrResponseTooLarge):
		return mxerr.New(mxerr.TooLarge, "The media mxc://%s/%s is larger than this server accepts from other servers", origin, mediaID).
			WithStatus(http.StatusBadGateway)
	case errors.As(err, &remote) && remote.Status == http.StatusNotFound:
		return mxerr.New(mxerr.NotFound, "%s has no media mxc://%s/%s (it answered: %s)", origin, origin, mediaID, cmp.Or(remote.Message, http.StatusText(remote.Status)))
	case errors.As(err, &remote) && remote.ErrCode == string(mxerr.NotYetUploaded):
		return mxerr.New(mxerr.NotYetUploaded, "The content of mxc://%s/%s has not been uploaded to %s yet", origin, mediaID, origin)
	case errors.As(err, &remote) && remote.ErrCode == string(mxerr.TooLarge):
		return mxerr.New(mxerr.TooLarge, "%s answered: %s", origin, remote.Message).WithStatus(http.StatusBadGateway)
	}
	return MatrixError(origin, err)
}

// badMedia is a malformed media answer: 502, the remote server's fault.
func badMedia(origin, format string, args ...any) error {
	return mxerr.New(mxerr.Unknown, "%s sent a malformed media answer: %s", origin, fmt.Sprintf(format, args...)).
		WithStatus(http.StatusBadGateway)
}

// readMultipartMedia reads the answer of the federation media endpoints:
// multipart/mixed with a boundary, exactly two parts, the first
// application/json holding a JSON object, the second the content with
// inline bytes (a Location part is refused). The content goes to sink as it
// is read; nil means the answer was whole, its closing boundary included,
// so a truncated answer never passes for a complete file.
func readMultipartMedia(origin string, resp *http.Response, sink func(media.Incoming) error) error {
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return badMedia(origin, "its Content-Type is %q, not multipart/mixed with a boundary", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	meta, err := mr.NextPart()
	if err != nil {
		return partError(origin, "the metadata part", err)
	}
	if mt, _, err := mime.ParseMediaType(meta.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return badMedia(origin, "the first part is %q, not application/json metadata", meta.Header.Get("Content-Type"))
	}
	raw, err := io.ReadAll(io.LimitReader(meta, maxMetadataBytes+1))
	if err != nil {
		return partError(origin, "the metadata part", err)
	}
	var obj map[string]json.RawMessage
	if len(raw) > maxMetadataBytes || json.Unmarshal(raw, &obj) != nil || obj == nil {
		return badMedia(origin, "the metadata part is not a JSON object of at most %d bytes", maxMetadataBytes)
	}
	content, err := mr.NextPart()
	if err != nil {
		return partError(origin, "the content part", err)
	}
	if loc := content.Header.Get("Location"); loc != "" {
		return badMedia(origin, "it redirects to %q; this server only takes media from the listed server itself", loc)
	}
	in := media.Incoming{ContentType: content.Header.Get("Content-Type"), FileName: dispositionFileName(content.Header.Get("Content-Disposition")), Body: content}
	if err := sink(in); err != nil {
		return partError(origin, "the content part", err)
	}
	if _, err := io.Copy(io.Discard, content); err != nil {
		return partError(origin, "the content part", err)
	}
	switch _, err := mr.NextPart(); {
	case err == nil:
		return badMedia(origin, "it has more than two parts")
	case err != io.EOF:
		return partError(origin, "the end of the answer", err)
	}
	return nil
}

// readPlainMedia reads the answer of the deprecated /_matrix/media/v3
// endpoints: the content itself, described by the answer's headers.
func readPlainMedia(resp *http.Response, sink func(media.Incoming) error) error {
	return sink(media.Incoming{
		ContentType: resp.Header.Get("Content-Type"),
		FileName:    dispositionFileName(resp.Header.Get("Content-Disposition")),
		Body:        resp.Body,
	})
}

// partError explains a failure to read part of a media answer. Errors that
// are already Matrix errors (the sink's), or that say the answer is too
// large or could not be read (the client's), keep their meaning.
func partError(origin, what string, err error) error {
	var conn *ConnectError
	if _, ok := mxerr.As(err); ok || errors.Is(err, ErrResponseTooLarge) || errors.As(err, &conn) {
		return err
	}
	if err == io.EOF {
		return badMedia(origin, "%s is missing", what)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return badMedia(origin, "%s is truncated", what)
	}
	return badMedia(origin, "%s: %v", what, err)
}

// dispositionFileName is the filename of a Content-Disposition ("" if none).
func dispositionFileName(cd string) string {
	if strings.TrimSpace(cd) == "" {
		return ""
	}
	_, params, err := mime.ParseMediaType(cd)
	if err != nil {
		return ""
	}
	return params["filename"]
}
