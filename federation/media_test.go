package federation_test

import (
	"bytes"
	"context"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"chappe/allowlist"
	"chappe/app/apptest"
	"chappe/federation"
	"chappe/media"
	"chappe/mxerr"
)

// oneFile is a LocalMedia holding one file, for the endpoints' side.
type oneFile struct {
	id, contentType, name string
	data                  []byte
}

func (f oneFile) content(t *testing.T) (*media.Content, error) {
	path := t.TempDir() + "/f"
	if err := os.WriteFile(path, f.data, 0o600); err != nil {
		return nil, err
	}
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &media.Content{File: file, Size: int64(len(f.data)), ContentType: f.contentType, FileName: f.name}, nil
}

// multipartBody builds a media answer by hand: parts in order, each a
// header and a body; closed says whether the closing boundary is written.
func multipartBody(parts []textproto.MIMEHeader, bodies []string, closed bool) (string, []byte) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for i, h := range parts {
		p, _ := mw.CreatePart(h)
		_, _ = io.WriteString(p, bodies[i])
	}
	if closed {
		_ = mw.Close()
	}
	return "multipart/mixed; boundary=" + mw.Boundary(), buf.Bytes()
}

var (
	jsonPart = textproto.MIMEHeader{"Content-Type": {"application/json"}}
	textPart = textproto.MIMEHeader{"Content-Type": {"text/plain"}, "Content-Disposition": {`inline; filename="note.txt"`}}
)

// RemoteMedia against a TLS test server that answers each media ID in its
// own way: a well-formed answer (written by MediaEndpoints itself) is
// taken whole; every malformed, truncated, redirected or oversized one is
// a 502 with a message saying what is wrong, and never a panic; the
// origin's 404 stays a 404; a server that does not know the federation
// endpoint is asked the deprecated one; an unlisted server is never dialled.
func TestRemoteMediaAnswers(t *testing.T) {
	ctx := context.Background()
	ca := apptest.NewTestCA(t)
	const maxBytes = 1000
	const origin = "media.chappe.test"
	local := oneFile{id: "good", contentType: "text/plain", name: "note.txt", data: []byte("bonjour de la part du ministère")}
	endpoints := federation.NewMediaEndpoints(origin, localFunc(func(id string) (*media.Content, error) {
		if id != local.id {
			return nil, mxerr.New(mxerr.NotFound, "no %s", id)
		}
		return local.content(t)
	}))
	var legacyQuery atomic.Value
	raw := func(ct string, body []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", ct)
			_, _ = w.Write(body)
		}
	}
	answers := map[string]http.HandlerFunc{}
	add := func(id string, ct string, body []byte) { answers[id] = raw(ct, body) }
	ct, body := multipartBody([]textproto.MIMEHeader{jsonPart, textPart}, []string{"{}", "bonjour"}, true)
	add("notmultipart", "application/json", []byte(`{}`))
	add("noboundary", "multipart/mixed", body)
	add("wrongboundary", "multipart/mixed; boundary=nope", body)
	c2, b2 := multipartBody([]textproto.MIMEHeader{jsonPart, textPart}, []string{"not json", "bonjour"}, true)
	add("metanotjson", c2, b2)
	c3, b3 := multipartBody([]textproto.MIMEHeader{textPart, textPart}, []string{"{}", "bonjour"}, true)
	add("metatext", c3, b3)
	c4, b4 := multipartBody([]textproto.MIMEHeader{jsonPart, {"Location": {"https://elsewhere.example/x"}}}, []string{"{}", ""}, true)
	add("redirect", c4, b4)
	add("truncated", ct, body[:len(body)-40])
	c5, b5 := multipartBody([]textproto.MIMEHeader{jsonPart, textPart}, []string{"{}", "bonjour"}, false)
	add("unclosed", c5, b5)
	c6, b6 := multipartBody([]textproto.MIMEHeader{jsonPart, textPart, textPart}, []string{"{}", "bonjour", "encore"}, true)
	add("threeparts", c6, b6)
	c7, b7 := multipartBody([]textproto.MIMEHeader{jsonPart}, []string{"{}"}, true)
	add("onepart", c7, b7)
	c8, b8 := multipartBody([]textproto.MIMEHeader{jsonPart, textPart}, []string{"{}", strings.Repeat("x", 300<<10)}, true)
	add("huge", c8, b8)
	add("garbage", ct, []byte("\x00\xff--\r\n\r\n--"+strings.Repeat("\r\n--", 1000)))
	answers["broken"] = func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}

	r := chi.NewRouter()
	r.Get("/_matrix/federation/v1/media/download/{mediaId}", func(w http.ResponseWriter, r *http.Request) {
		id := chi.URLParam(r, "mediaId")
		if h, ok := answers[id]; ok {
			h(w, r)
			return
		}
		if id == "old" {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`))
			return
		}
		serveLocal(endpoints, w, r)
	})
	r.Get("/_matrix/media/v3/download/"+origin+"/old", func(w http.ResponseWriter, r *http.Request) {
		legacyQuery.Store(r.URL.RawQuery)
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Content-Disposition", `inline; filename="ancien.png"`)
		_, _ = w.Write([]byte("old bytes"))
	})
	addr := tlsServer(t, ca.Issue(t, origin), r)
	var dials atomic.Int64
	dial := func(ctx context.Context, network, a string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, a)
	}
	gate := fakeGate{servers: map[string]allowlist.Server{origin: {Endpoint: addr}}}
	c := newClient(t, federation.ClientConfig{Enabled: true, CAFile: ca.File, BackoffInitial: time.Millisecond, BackoffMax: time.Millisecond, Dial: dial}, gate, newKey(t))
	rm := federation.NewRemoteMedia(c, maxBytes)

	download := func(server, id string) (media.Incoming, []byte, error) {
		var got media.Incoming
		var data []byte
		err := rm.Download(ctx, server, id, time.Second, func(in media.Incoming) error {
			got = in
			var err error
			data, err = io.ReadAll(in.Body)
			return err
		})
		return got, data, err
	}

	in, data, err := download(origin, "good")
	if err != nil || !bytes.Equal(data, local.data) || in.ContentType != "text/plain" || in.FileName != "note.txt" {
		t.Fatalf("well-formed answer: %q %+v %v", data, in, err)
	}
	in, data, err = download(origin, "old")
	if err != nil || string(data) != "old bytes" || in.ContentType != "image/png" || in.FileName != "ancien.png" {
		t.Fatalf("fallback to the deprecated endpoint: %q %+v %v", data, in, err)
	}
	if q, _ := legacyQuery.Load().(string); !strings.Contains(q, "allow_remote=false") {
		t.Errorf("the fallback did not say allow_remote=false: %q", q)
	}

	for id, want := range map[string]string{
		"notmultipart":  "not multipart/mixed",
		"noboundary":    "not multipart/mixed",
		"wrongboundary": "metadata part",
		"metanotjson":   "not a JSON object",
		"metatext":      "not application/json",
		"redirect":      "redirects",
		"truncated":     "truncated",
		"unclosed":      "truncated",
		"threeparts":    "more than two parts",
		"onepart":       "content part is missing",
		"huge":          "larger than",
		"garbage":       "malformed",
	} {
		_, _, err := download(origin, id)
		e, ok := mxerr.As(err)
		if !ok || e.Status() != http.StatusBadGateway || !strings.Contains(e.Error(), want) {
			t.Errorf("%s: got %v, want a 502 saying %q", id, err, want)
		}
	}
	_, _, err = download(origin, "unknown")
	if e, ok := mxerr.As(err); !ok || e.Code != mxerr.NotFound || e.Status() != http.StatusNotFound {
		t.Errorf("unknown media: %v, want 404 M_NOT_FOUND", err)
	}

	// The sink's own failure comes back as it is.
	mine := mxerr.New(mxerr.TooLarge, "mine")
	err = rm.Download(ctx, origin, "good", time.Second, func(media.Incoming) error { return mine })
	if err != mine {
		t.Errorf("sink failure: %v", err)
	}

	// A failing server: 502, and it is backed off.
	_, _, err = download(origin, "broken")
	if e, ok := mxerr.As(err); !ok || e.Status() != http.StatusBadGateway || !strings.Contains(e.Error(), "500") || c.ReadyAt(origin).IsZero() {
		t.Errorf("broken server: %v", err)
	}

	before := dials.Load()
	_, _, err = download("unlisted.chappe.test", "good")
	if e, ok := mxerr.As(err); !ok || e.Code != mxerr.Forbidden || !strings.Contains(e.Error(), "outside the federation") || dials.Load() != before {
		t.Errorf("unlisted server: %v after %d dials", err, dials.Load()-before)
	}
}

// localFunc is a LocalMedia answering downloads with f.
type localFunc func(id string) (*media.Content, error)

func (f localFunc) Open(_ context.Context, _, id string, _ media.OpenOptions) (*media.Content, error) {
	return f(id)
}

func (f localFunc) Thumbnail(_ context.Context, _, id string, _ media.ThumbnailRequest, _ media.OpenOptions) (*media.Content, error) {
	return f(id)
}

// serveLocal runs the request through the endpoints' own routes.
func serveLocal(e *federation.MediaEndpoints, w http.ResponseWriter, r *http.Request) {
	router := chi.NewRouter()
	e.Register(router)
	router.ServeHTTP(w, r)
}
