package clientapi_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"chappe/accounts"
	"chappe/app/apptest"
	"chappe/config"
)

const (
	mediaV3 = "/_matrix/media/v3"
	mediaV1 = "/_matrix/client/v1/media"
)

// rawResponse is an answer whose body may not be JSON.
type rawResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r rawResponse) errcode() string {
	var e struct {
		Errcode string `json:"errcode"`
	}
	_ = json.Unmarshal(r.Body, &e)
	return e.Errcode
}

func (r rawResponse) json(t *testing.T) map[string]any {
	t.Helper()
	var out map[string]any
	if err := json.Unmarshal(r.Body, &out); err != nil {
		t.Fatalf("answer is not a JSON object: %q", r.Body)
	}
	return out
}

// send makes a request with any body; length -1 sends it chunked.
func send(t *testing.T, method, u, token, contentType string, body io.Reader, length int64, header ...string) rawResponse {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.ContentLength = length
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return rawResponse{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// uploadBytes uploads data and returns the server name and media ID.
func uploadBytes(t *testing.T, srv *apptest.Server, token, contentType, filename string, data []byte) (string, string) {
	t.Helper()
	u := srv.URL + mediaV3 + "/upload"
	if filename != "" {
		u += "?filename=" + url.QueryEscape(filename)
	}
	r := send(t, "POST", u, token, contentType, bytes.NewReader(data), int64(len(data)))
	if r.Status != 200 {
		t.Fatalf("upload: %d %s", r.Status, r.Body)
	}
	uri, _ := r.json(t)["content_uri"].(string)
	rest, ok := strings.CutPrefix(uri, "mxc://")
	server, id, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || server != "localhost" || len(id) < 24 {
		t.Fatalf("content_uri %q", uri)
	}
	return server, id
}

func wantStatus(t *testing.T, what string, r rawResponse, status int, code string) {
	t.Helper()
	if r.Status != status || r.errcode() != code {
		t.Fatalf("%s: %d %s, want %d %s", what, r.Status, r.Body, status, code)
	}
	if code != "" && !strings.Contains(string(r.Body), `"error":"`) {
		t.Fatalf("%s: no error message in %s", what, r.Body)
	}
}

func testPNG(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.NRGBA{uint8(x), uint8(y), 200, 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// checkSafeHeaders checks the headers every piece of media must carry.
func checkSafeHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	if csp := h.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "sandbox;") || !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'none'") {
		t.Errorf("%s: Content-Security-Policy %q", what, csp)
	}
	if h.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("%s: X-Content-Type-Options %q", what, h.Get("X-Content-Type-Options"))
	}
	if h.Get("Cross-Origin-Resource-Policy") != "cross-origin" {
		t.Errorf("%s: Cross-Origin-Resource-Policy %q", what, h.Get("Cross-Origin-Resource-Policy"))
	}
}

func disposition(t *testing.T, h http.Header) (string, string) {
	t.Helper()
	kind, params, err := mime.ParseMediaType(h.Get("Content-Disposition"))
	if err != nil {
		t.Fatalf("Content-Disposition %q: %v", h.Get("Content-Disposition"), err)
	}
	return kind, params["filename"]
}

func TestMediaUploadAndDownload(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "long-enough")
	data := testPNG(t, 64, 48)
	server, id := uploadBytes(t, srv, alice.Token, "image/png", "photo d'été.png", data)

	r := send(t, "GET", srv.URL+mediaV1+"/download/"+server+"/"+id, alice.Token, "", nil, 0)
	if r.Status != 200 || !bytes.Equal(r.Body, data) {
		t.Fatalf("download: %d, %d bytes", r.Status, len(r.Body))
	}
	if ct := r.Header.Get("Content-Type"); ct != "image/png" {
		t.Errorf("Content-Type %q", ct)
	}
	if kind, name := disposition(t, r.Header); kind != "inline" || name != "photo d'été.png" {
		t.Errorf("Content-Disposition %q", r.Header.Get("Content-Disposition"))
	}
	checkSafeHeaders(t, "download", r.Header)

	// The name in the path replaces the uploaded one.
	r = send(t, "GET", srv.URL+mediaV1+"/download/"+server+"/"+id+"/"+url.PathEscape("autre nom.png"), alice.Token, "", nil, 0)
	if _, name := disposition(t, r.Header); r.Status != 200 || name != "autre nom.png" {
		t.Errorf("download with a name: %d %q", r.Status, r.Header.Get("Content-Disposition"))
	}
	// Ranges work (video seeking).
	r = send(t, "GET", srv.URL+mediaV1+"/download/"+server+"/"+id, alice.Token, "", nil, 0, "Range", "bytes=0-7")
	if r.Status != http.StatusPartialContent || !bytes.Equal(r.Body, data[:8]) {
		t.Errorf("range request: %d %q", r.Status, r.Body)
	}
	// Another user of the server downloads it too.
	bob := register(t, srv, "bob", "long-enough")
	if r := send(t, "GET", srv.URL+mediaV1+"/download/"+server+"/"+id, bob.Token, "", nil, 0); r.Status != 200 {
		t.Errorf("download by bob: %d", r.Status)
	}
	// Without a Content-Type, the upload is application/octet-stream, an attachment, without a name.
	_, blob := uploadBytes(t, srv, alice.Token, "", "", []byte{1, 2, 3})
	r = send(t, "GET", srv.URL+mediaV1+"/download/localhost/"+blob, alice.Token, "", nil, 0)
	if r.Header.Get("Content-Type") != "application/octet-stream" || r.Header.Get("Content-Disposition") != "attachment" {
		t.Errorf("untyped upload served as %q, %q", r.Header.Get("Content-Type"), r.Header.Get("Content-Disposition"))
	}

	for _, path := range []string{"/config", "/download/localhost/" + id, "/thumbnail/localhost/" + id + "?width=32&height=32", "/preview_url?url=https://example.org"} {
		r := send(t, "GET", srv.URL+mediaV1+path, "", "", nil, 0)
		wantStatus(t, "unauthenticated GET "+path, r, 401, "M_MISSING_TOKEN")
	}
	r = send(t, "POST", srv.URL+mediaV3+"/upload", "", "text/plain", strings.NewReader("x"), 1)
	wantStatus(t, "unauthenticated upload", r, 401, "M_MISSING_TOKEN")
	r = send(t, "GET", srv.URL+mediaV1+"/download/localhost/"+id, "not-a-token", "", nil, 0)
	wantStatus(t, "bad token", r, 401, "M_UNKNOWN_TOKEN")

	for what, path := range map[string]string{
		"unknown media": "/download/localhost/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"bad media ID":  "/download/localhost/..%2F..%2Fetc%2Fpasswd",
	} {
		wantStatus(t, what, send(t, "GET", srv.URL+mediaV1+path, alice.Token, "", nil, 0), 404, "M_NOT_FOUND")
	}
	// Another server's media is fetched over federation, which only
	// reaches listed servers: matrix.org is not one.
	for what, path := range map[string]string{
		"remote media":     "/download/matrix.org/" + id,
		"remote thumbnail": "/thumbnail/matrix.org/" + id + "?width=32&height=32",
	} {
		r := send(t, "GET", srv.URL+mediaV1+path, alice.Token, "", nil, 0)
		wantStatus(t, what, r, 403, "M_FORBIDDEN")
		if !strings.Contains(string(r.Body), "matrix.org") {
			t.Errorf("%s: the message should say why: %s", what, r.Body)
		}
	}
}

// An HTML page is stored with its type but never rendered: it is an
// attachment, with a sandboxing CSP and no type sniffing.
func TestMediaHTMLServedAsAttachment(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "long-enough")
	page := []byte(`<html><body><script>fetch("/_matrix/client/v3/account/whoami")</script></body></html>`)
	for _, ct := range []string{"text/html", "text/html; charset=utf-8", "image/svg+xml", "application/xhtml+xml"} {
		_, id := uploadBytes(t, srv, alice.Token, ct, "page.html", page)
		for _, u := range []string{mediaV1 + "/download/localhost/" + id, mediaV1 + "/download/localhost/" + id + "/x.png"} {
			r := send(t, "GET", srv.URL+u, alice.Token, "", nil, 0)
			if r.Status != 200 {
				t.Fatalf("%s: %d", u, r.Status)
			}
			if got := r.Header.Get("Content-Type"); got != ct {
				t.Errorf("%s: Content-Type %q, want %q", ct, got, ct)
			}
			if kind, _ := disposition(t, r.Header); kind != "attachment" {
				t.Errorf("%s: Content-Disposition %q, want attachment", ct, r.Header.Get("Content-Disposition"))
			}
			checkSafeHeaders(t, ct, r.Header)
		}
	}
}

func TestMediaTooLarge(t *testing.T) {
	srv := apptest.Start(t, func(c *config.Config) { c.Media.MaxUploadBytes = 2048 })
	alice := register(t, srv, "alice", "long-enough")
	r := send(t, "GET", srv.URL+mediaV1+"/config", alice.Token, "", nil, 0)
	if r.Status != 200 || r.json(t)["m.upload.size"] != float64(2048) {
		t.Fatalf("config: %d %s", r.Status, r.Body)
	}
	r = send(t, "GET", srv.URL+mediaV3+"/config", alice.Token, "", nil, 0)
	if r.Status != 200 || r.json(t)["m.upload.size"] != float64(2048) {
		t.Fatalf("v3 config: %d %s", r.Status, r.Body)
	}
	big := bytes.Repeat([]byte("x"), 4096)
	wantStatus(t, "announced 4096 bytes", send(t, "POST", srv.URL+mediaV3+"/upload", alice.Token, "text/plain", bytes.NewReader(big), 4096), 413, "M_TOO_LARGE")
	wantStatus(t, "chunked 4096 bytes", send(t, "POST", srv.URL+mediaV3+"/upload", alice.Token, "text/plain", io.MultiReader(bytes.NewReader(big)), -1), 413, "M_TOO_LARGE")
	// The limit is the media one, not the JSON body limit: 2048 bytes pass.
	uploadBytes(t, srv, alice.Token, "text/plain", "", big[:2048])
	if n := countFiles(t, srv.Config.MediaPath()); n != 1 {
		t.Fatalf("%d files stored, want only the accepted one", n)
	}
}

// countFiles counts the stored media files (temporaries excluded).
func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "tmp" {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMediaQuotaAndDeduplication(t *testing.T) {
	srv := apptest.Start(t, func(c *config.Config) { c.Media.UserQuotaBytes = 5000 })
	alice := register(t, srv, "alice", "long-enough")
	bob := register(t, srv, "bob", "long-enough")
	data := bytes.Repeat([]byte("quota "), 500) // 3000 bytes
	_, a := uploadBytes(t, srv, alice.Token, "text/plain", "", data)
	r := send(t, "POST", srv.URL+mediaV3+"/upload", alice.Token, "text/plain", bytes.NewReader(data), int64(len(data)))
	wantStatus(t, "upload over quota", r, 403, "M_FORBIDDEN")
	if !strings.Contains(string(r.Body), "quota") {
		t.Errorf("the message should mention the quota: %s", r.Body)
	}
	// Bob uploads the same bytes: his own quota, and the same file on disk.
	_, b := uploadBytes(t, srv, bob.Token, "text/plain", "", data)
	if a == b {
		t.Fatal("two uploads share a media ID")
	}
	if n := countFiles(t, srv.Config.MediaPath()); n != 1 {
		t.Fatalf("%d files on disk for two identical uploads, want 1", n)
	}
}

// The deprecated unauthenticated endpoints serve only media uploaded before
// media.legacy_download_cutoff.
func TestMediaLegacyEndpointsFrozen(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cutoff string
		served bool
	}{
		{"no cutoff", "", false},
		{"cutoff in the past", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), false},
		{"cutoff in the future", time.Now().Add(time.Hour).UTC().Format(time.RFC3339), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := apptest.Start(t, func(c *config.Config) { c.Media.LegacyDownloadCutoff = tc.cutoff })
			alice := register(t, srv, "alice", "long-enough")
			data := testPNG(t, 100, 100)
			_, id := uploadBytes(t, srv, alice.Token, "image/png", "old.png", data)
			dl := send(t, "GET", srv.URL+mediaV3+"/download/localhost/"+id, "", "", nil, 0)
			named := send(t, "GET", srv.URL+mediaV3+"/download/localhost/"+id+"/x.png", "", "", nil, 0)
			th := send(t, "GET", srv.URL+mediaV3+"/thumbnail/localhost/"+id+"?width=32&height=32", "", "", nil, 0)
			if tc.served {
				if dl.Status != 200 || !bytes.Equal(dl.Body, data) || named.Status != 200 || th.Status != 200 {
					t.Fatalf("legacy endpoints before the cutoff: download %d, named %d, thumbnail %d", dl.Status, named.Status, th.Status)
				}
				checkSafeHeaders(t, "legacy download", dl.Header)
			} else {
				wantStatus(t, "legacy download", dl, 404, "M_NOT_FOUND")
				wantStatus(t, "legacy named download", named, 404, "M_NOT_FOUND")
				wantStatus(t, "legacy thumbnail", th, 404, "M_NOT_FOUND")
				if !strings.Contains(string(dl.Body), "/_matrix/client/v1/media") {
					t.Errorf("the refusal should point to the authenticated endpoints: %s", dl.Body)
				}
			}
			if r := send(t, "GET", srv.URL+mediaV1+"/download/localhost/"+id, alice.Token, "", nil, 0); r.Status != 200 {
				t.Fatalf("authenticated download: %d", r.Status)
			}
		})
	}
}

// pngHeaderOnly is a PNG signature and IHDR chunk claiming w×h pixels, with no
// image data.
func pngHeaderOnly(w, h uint32) []byte {
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 6
	chunk := append([]byte("IHDR"), ihdr...)
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	_ = binary.Write(&b, binary.BigEndian, uint32(len(ihdr)))
	b.Write(chunk)
	_ = binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return b.Bytes()
}

func TestMediaThumbnailRequests(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "long-enough")
	_, img := uploadBytes(t, srv, alice.Token, "image/png", "", testPNG(t, 400, 300))
	_, bomb := uploadBytes(t, srv, alice.Token, "image/png", "bomb.png", pngHeaderOnly(50_000, 50_000))
	_, blob := uploadBytes(t, srv, alice.Token, "image/png", "", []byte("opaque encrypted bytes"))
	th := func(id, query string) rawResponse {
		return send(t, "GET", srv.URL+mediaV1+"/thumbnail/localhost/"+id+"?"+query, alice.Token, "", nil, 0)
	}
	r := th(img, "width=96&height=96&method=crop")
	if r.Status != 200 || r.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("crop thumbnail: %d %s", r.Status, r.Header.Get("Content-Type"))
	}
	if kind, name := disposition(t, r.Header); kind != "inline" || name != "thumbnail.png" {
		t.Errorf("thumbnail Content-Disposition %q", r.Header.Get("Content-Disposition"))
	}
	checkSafeHeaders(t, "thumbnail", r.Header)
	if cfg, err := png.DecodeConfig(bytes.NewReader(r.Body)); err != nil || cfg.Width != 96 || cfg.Height != 96 {
		t.Fatalf("crop thumbnail is %dx%d (%v), want 96x96", cfg.Width, cfg.Height, err)
	}
	r = th(img, "width=320&height=240&method=scale&animated=true")
	if cfg, err := png.DecodeConfig(bytes.NewReader(r.Body)); err != nil || cfg.Width != 320 || cfg.Height != 240 {
		t.Fatalf("scale thumbnail is %dx%d (%v), want 320x240", cfg.Width, cfg.Height, err)
	}
	r = th(bomb, "width=32&height=32")
	wantStatus(t, "thumbnail of a 50000x50000 PNG header", r, 413, "M_TOO_LARGE")
	wantStatus(t, "thumbnail of a non-image", th(blob, "width=32&height=32"), 400, "M_UNKNOWN")
	wantStatus(t, "no width", th(img, "height=32"), 400, "M_MISSING_PARAM")
	wantStatus(t, "width not a number", th(img, "width=big&height=32"), 400, "M_INVALID_PARAM")
	wantStatus(t, "negative width", th(img, "width=-3&height=32"), 400, "M_INVALID_PARAM")
	wantStatus(t, "bad method", th(img, "width=32&height=32&method=zoom"), 400, "M_INVALID_PARAM")
	wantStatus(t, "bad animated", th(img, "width=32&height=32&animated=maybe"), 400, "M_INVALID_PARAM")
	// The bomb itself is still an ordinary download (an attachment-safe PNG).
	if r := send(t, "GET", srv.URL+mediaV1+"/download/localhost/"+bomb, alice.Token, "", nil, 0); r.Status != 200 {
		t.Errorf("download of the bomb file: %d", r.Status)
	}
}

func TestMediaAsyncUpload(t *testing.T) {
	srv := apptest.Start(t, func(c *config.Config) { c.Media.MaxPendingUploads = 2 })
	alice := register(t, srv, "alice", "long-enough")
	bob := register(t, srv, "bob", "long-enough")
	r := send(t, "POST", srv.URL+"/_matrix/media/v1/create", alice.Token, "", nil, 0)
	if r.Status != 200 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	body := r.json(t)
	uri, _ := body["content_uri"].(string)
	exp, _ := body["unused_expires_at"].(float64)
	if !strings.HasPrefix(uri, "mxc://localhost/") || time.UnixMilli(int64(exp)).Before(time.Now().Add(23*time.Hour)) {
		t.Fatalf("create answered %s", r.Body)
	}
	id := strings.TrimPrefix(uri, "mxc://localhost/")
	dl := srv.URL + mediaV1 + "/download/localhost/" + id
	wantStatus(t, "download before upload", send(t, "GET", dl+"?timeout_ms=0", alice.Token, "", nil, 0), 504, "M_NOT_YET_UPLOADED")
	wantStatus(t, "bad timeout_ms", send(t, "GET", dl+"?timeout_ms=soon", alice.Token, "", nil, 0), 400, "M_INVALID_PARAM")
	put := func(token, body string) rawResponse {
		return send(t, "PUT", srv.URL+mediaV3+"/upload/localhost/"+id+"?filename=late.txt", token, "text/plain", strings.NewReader(body), int64(len(body)))
	}
	wantStatus(t, "upload by another user", put(bob.Token, "bob's"), 403, "M_FORBIDDEN")
	// A download waiting with the default timeout gets the content when it arrives.
	waited := make(chan rawResponse, 1)
	go func() { waited <- send(t, "GET", dl, bob.Token, "", nil, 0) }()
	time.Sleep(200 * time.Millisecond)
	if r := put(alice.Token, "finally"); r.Status != 200 || string(r.Body) != "{}" {
		t.Fatalf("upload: %d %s", r.Status, r.Body)
	}
	select {
	case r := <-waited:
		if r.Status != 200 || string(r.Body) != "finally" {
			t.Fatalf("waiting download: %d %q", r.Status, r.Body)
		}
		if _, name := disposition(t, r.Header); name != "late.txt" {
			t.Errorf("file name %q", r.Header.Get("Content-Disposition"))
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the waiting download did not return")
	}
	wantStatus(t, "second upload", put(alice.Token, "again"), 409, "M_CANNOT_OVERWRITE_MEDIA")
	wantStatus(t, "upload to an unknown ID", send(t, "PUT", srv.URL+mediaV3+"/upload/localhost/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", alice.Token, "text/plain", strings.NewReader("x"), 1), 404, "M_NOT_FOUND")
	// At most two awaited uploads at once.
	for i := 0; i < 2; i++ {
		if r := send(t, "POST", srv.URL+"/_matrix/media/v1/create", alice.Token, "", nil, 0); r.Status != 200 {
			t.Fatalf("create %d: %d %s", i, r.Status, r.Body)
		}
	}
	wantStatus(t, "third awaited upload", send(t, "POST", srv.URL+"/_matrix/media/v1/create", alice.Token, "", nil, 0), 429, "M_LIMIT_EXCEEDED")
}

func TestMediaQuarantineAndDelete(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "long-enough")
	admin, err := srv.Accounts.Register(context.Background(), accounts.RegisterRequest{Localpart: "admin", Password: "long-enough", IsAdmin: true})
	if err != nil {
		t.Fatal(err)
	}
	_, bad := uploadBytes(t, srv, alice.Token, "image/png", "", testPNG(t, 100, 100))
	_, good := uploadBytes(t, srv, alice.Token, "text/plain", "", []byte("harmless"))
	if r := send(t, "GET", srv.URL+mediaV1+"/thumbnail/localhost/"+bad+"?width=32&height=32", alice.Token, "", nil, 0); r.Status != 200 {
		t.Fatalf("thumbnail: %d", r.Status)
	}
	quarantine := srv.URL + "/_synapse/admin/v1/media/quarantine/localhost/" + bad
	wantStatus(t, "quarantine by a non-admin", send(t, "POST", quarantine, alice.Token, "", nil, 0), 403, "M_FORBIDDEN")
	if r := send(t, "POST", quarantine, admin.AccessToken, "", nil, 0); r.Status != 200 {
		t.Fatalf("quarantine: %d %s", r.Status, r.Body)
	}
	wantStatus(t, "download of quarantined media", send(t, "GET", srv.URL+mediaV1+"/download/localhost/"+bad, alice.Token, "", nil, 0), 404, "M_NOT_FOUND")
	wantStatus(t, "thumbnail of quarantined media", send(t, "GET", srv.URL+mediaV1+"/thumbnail/localhost/"+bad+"?width=32&height=32", alice.Token, "", nil, 0), 404, "M_NOT_FOUND")
	if r := send(t, "GET", srv.URL+mediaV1+"/download/localhost/"+good, alice.Token, "", nil, 0); r.Status != 200 {
		t.Fatalf("other media: %d", r.Status)
	}
	before := countFiles(t, srv.Config.MediaPath())
	del := srv.URL + "/_synapse/admin/v1/media/localhost/" + bad
	wantStatus(t, "delete by a non-admin", send(t, "DELETE", del, alice.Token, "", nil, 0), 403, "M_FORBIDDEN")
	if r := send(t, "DELETE", del, admin.AccessToken, "", nil, 0); r.Status != 200 || !strings.Contains(string(r.Body), bad) {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	if after := countFiles(t, srv.Config.MediaPath()); after != before-2 {
		t.Fatalf("%d files before deletion, %d after: the image and its thumbnail should be gone", before, after)
	}
	wantStatus(t, "download of deleted media", send(t, "GET", srv.URL+mediaV1+"/download/localhost/"+bad, alice.Token, "", nil, 0), 404, "M_NOT_FOUND")
	wantStatus(t, "delete again", send(t, "DELETE", del, admin.AccessToken, "", nil, 0), 404, "M_NOT_FOUND")
}

func TestMediaPreviewURL(t *testing.T) {
	var hits atomic.Int32
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<html><head><meta property="og:title" content="Intranet"></head></html>`)
	}))
	t.Cleanup(site.Close)
	preview := func(srv *apptest.Server, token string) rawResponse {
		return send(t, "GET", srv.URL+mediaV1+"/preview_url?url="+url.QueryEscape(site.URL), token, "", nil, 0)
	}

	t.Run("off by default", func(t *testing.T) {
		srv := apptest.Start(t)
		alice := register(t, srv, "alice", "long-enough")
		r := preview(srv, alice.Token)
		wantStatus(t, "preview", r, 403, "M_FORBIDDEN")
		if !strings.Contains(string(r.Body), "disabled") {
			t.Errorf("the message should say previews are disabled: %s", r.Body)
		}
	})
	t.Run("on, loopback refused", func(t *testing.T) {
		srv := apptest.Start(t, func(c *config.Config) { c.Media.URLPreview.Enabled = true })
		alice := register(t, srv, "alice", "long-enough")
		wantStatus(t, "preview of a loopback address", preview(srv, alice.Token), 403, "M_FORBIDDEN")
		_, port, _ := strings.Cut(strings.TrimPrefix(site.URL, "http://"), ":")
		r := send(t, "GET", srv.URL+mediaV1+"/preview_url?url="+url.QueryEscape("http://localhost:"+port+"/"), alice.Token, "", nil, 0)
		wantStatus(t, "preview of a name resolving to loopback", r, 403, "M_FORBIDDEN")
		wantStatus(t, "no url", send(t, "GET", srv.URL+mediaV1+"/preview_url", alice.Token, "", nil, 0), 400, "M_MISSING_PARAM")
	})
	if hits.Load() != 0 {
		t.Fatalf("the loopback site was fetched %d times", hits.Load())
	}
	t.Run("on, loopback allowed by configuration", func(t *testing.T) {
		srv := apptest.Start(t, func(c *config.Config) {
			c.Media.URLPreview.Enabled = true
			c.Media.URLPreview.AllowedNetworks = []string{"127.0.0.1/32"}
		})
		alice := register(t, srv, "alice", "long-enough")
		r := preview(srv, alice.Token)
		if r.Status != 200 || r.json(t)["og:title"] != "Intranet" {
			t.Fatalf("preview: %d %s", r.Status, r.Body)
		}
	})
}
