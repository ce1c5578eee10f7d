package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/attachment"
	"maunium.net/go/mautrix/id"

	"chappe/app/apptest"
)

// mediaUser registers localpart with the dummy stage and returns its client.
func mediaUser(t *testing.T, srv *apptest.Server, localpart string) *mautrix.Client {
	t.Helper()
	reg, err := newClient(t, srv.URL, "", "").RegisterDummy(t.Context(), &mautrix.ReqRegister[any]{Username: localpart, Password: "long enough password"})
	if err != nil {
		t.Fatalf("registering %s: %v", localpart, err)
	}
	return newClient(t, srv.URL, reg.UserID, reg.AccessToken)
}

func testImage(t *testing.T, format string, w, h int) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.NRGBA{uint8(x), uint8(y), uint8(x + y), 255})
		}
	}
	var buf bytes.Buffer
	var err error
	switch format {
	case "image/png":
		err = png.Encode(&buf, img)
	case "image/jpeg":
		err = jpeg.Encode(&buf, img, nil)
	case "image/gif":
		err = gif.Encode(&buf, img, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// An image and an end-to-end encrypted attachment go up and come back
// byte for byte through mautrix-go's media calls, on the authenticated
// endpoints; without a token the download is refused.
func TestMediaRoundTrip(t *testing.T) {
	srv := apptest.Start(t)
	ctx := t.Context()
	alice := mediaUser(t, srv, "alice")
	bob := mediaUser(t, srv, "bob")

	cfg, err := alice.GetMediaConfig(ctx)
	if err != nil || cfg.UploadSize != 100<<20 {
		t.Fatalf("media config %+v, %v; want m.upload.size 100 MiB", cfg, err)
	}

	picture := testImage(t, "image/png", 200, 150)
	up, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: picture, ContentType: "image/png", FileName: "carte.png"})
	if err != nil {
		t.Fatalf("UploadMedia: %v", err)
	}
	if up.ContentURI.Homeserver != "localhost" || len(up.ContentURI.FileID) < 24 {
		t.Fatalf("content URI %s", up.ContentURI)
	}
	resp, err := bob.Download(ctx, up.ContentURI)
	if err != nil {
		t.Fatalf("Download: %v", err)
	}
	if got := readAll(t, resp); !bytes.Equal(got, picture) {
		t.Fatalf("downloaded %d bytes, not the %d uploaded", len(got), len(picture))
	}
	if resp.Header.Get("Content-Type") != "image/png" || resp.Header.Get("Content-Disposition") != "inline; filename=carte.png" {
		t.Errorf("headers: %q, %q", resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"))
	}

	// An encrypted attachment, as Element sends it in an encrypted room: the
	// server stores and returns opaque bytes, and the key never leaves the clients.
	secret := make([]byte, 100_000)
	_, _ = rand.Read(secret)
	file := attachment.NewEncryptedFile()
	ciphertext := file.Encrypt(secret)
	up, err = alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: ciphertext, ContentType: "application/octet-stream"})
	if err != nil {
		t.Fatalf("UploadMedia (encrypted): %v", err)
	}
	// Bob receives the key in the (encrypted) event, as JSON.
	keyJSON, err := json.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	var received attachment.EncryptedFile
	if err := json.Unmarshal(keyJSON, &received); err != nil {
		t.Fatal(err)
	}
	got, err := bob.DownloadBytes(ctx, up.ContentURI)
	if err != nil {
		t.Fatalf("DownloadBytes (encrypted): %v", err)
	}
	if !bytes.Equal(got, ciphertext) {
		t.Fatal("the server changed the encrypted bytes")
	}
	plain, err := received.Decrypt(got)
	if err != nil || !bytes.Equal(plain, secret) {
		t.Fatalf("decrypting the downloaded attachment: %v", err)
	}
	_, err = bob.DownloadThumbnail(ctx, up.ContentURI, 32, 32)
	wantMatrixError(t, "thumbnail of an encrypted blob", err, http.StatusBadRequest, "M_UNKNOWN")

	// Authenticated media: no token, no download.
	_, err = newClient(t, srv.URL, "", "").Download(ctx, up.ContentURI)
	wantMatrixError(t, "download without a token", err, http.StatusUnauthorized, "M_MISSING_TOKEN")
	_, err = bob.Download(ctx, id.ContentURI{Homeserver: "matrix.org", FileID: up.ContentURI.FileID})
	wantMatrixError(t, "download of an unlisted server's media", err, http.StatusForbidden, "M_FORBIDDEN")
}

// Thumbnails of every supported format, with both methods, have the size
// the spec's rules give: crop fills the standard box covering the request,
// scale fits in it, and nothing is upscaled.
func TestMediaThumbnails(t *testing.T) {
	srv := apptest.Start(t)
	ctx := t.Context()
	alice := mediaUser(t, srv, "alice")
	webp, err := os.ReadFile("../media/testdata/gradient-120x80-lossless.webp")
	if err != nil {
		t.Fatal(err)
	}
	type size struct{ w, h int }
	type want struct {
		method string
		req    size
		out    size
	}
	big := []want{
		{"crop", size{32, 32}, size{32, 32}},
		{"crop", size{96, 96}, size{96, 96}},
		{"crop", size{50, 40}, size{96, 96}}, // served from the 96x96 box: never smaller than asked
		{"crop", size{320, 240}, size{320, 240}},
		{"scale", size{320, 240}, size{320, 240}},
		{"scale", size{96, 96}, size{96, 72}},
		{"scale", size{640, 480}, size{400, 300}}, // not upscaled
		{"scale", size{1000, 1000}, size{400, 300}},
	}
	inputs := []struct {
		name, contentType, thumbType string
		data                         []byte
		cases                        []want
	}{
		{"png", "image/png", "image/png", testImage(t, "image/png", 400, 300), big},
		{"jpeg", "image/jpeg", "image/jpeg", testImage(t, "image/jpeg", 400, 300), big},
		{"gif", "image/gif", "image/png", testImage(t, "image/gif", 400, 300), big},
		{"webp", "image/webp", "image/png", webp, []want{
			{"crop", size{32, 32}, size{32, 32}},
			{"crop", size{96, 96}, size{96, 80}}, // 80 high: no upscaling
			{"scale", size{96, 96}, size{96, 64}},
			{"scale", size{320, 240}, size{120, 80}},
		}},
	}
	for _, in := range inputs {
		t.Run(in.name, func(t *testing.T) {
			up, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: in.data, ContentType: in.contentType})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range in.cases {
				resp, err := alice.DownloadThumbnail(ctx, up.ContentURI, c.req.h, c.req.w, mautrix.DownloadThumbnailExtra{Method: c.method})
				if err != nil {
					t.Fatalf("%s %dx%d: %v", c.method, c.req.w, c.req.h, err)
				}
				data := readAll(t, resp)
				if ct := resp.Header.Get("Content-Type"); ct != in.thumbType {
					t.Errorf("%s %dx%d: Content-Type %q, want %q", c.method, c.req.w, c.req.h, ct, in.thumbType)
				}
				cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
				if err != nil {
					t.Fatalf("%s %dx%d: thumbnail does not decode: %v", c.method, c.req.w, c.req.h, err)
				}
				if "image/"+format != in.thumbType || cfg.Width != c.out.w || cfg.Height != c.out.h {
					t.Errorf("%s %dx%d: got a %s of %dx%d, want %dx%d", c.method, c.req.w, c.req.h, format, cfg.Width, cfg.Height, c.out.w, c.out.h)
				}
			}
		})
	}
}

// Asynchronous upload: create the mxc:// URI first, upload to it later, and a
// download in between waits or answers M_NOT_YET_UPLOADED.
func TestMediaAsyncUpload(t *testing.T) {
	srv := apptest.Start(t)
	ctx := t.Context()
	alice := mediaUser(t, srv, "alice")
	bob := mediaUser(t, srv, "bob")

	created, err := alice.CreateMXC(ctx)
	if err != nil {
		t.Fatalf("CreateMXC: %v", err)
	}
	if created.ContentURI.Homeserver != "localhost" || created.UnusedExpiresAt.Before(time.Now().Add(23*time.Hour)) {
		t.Fatalf("CreateMXC answered %+v", created)
	}
	_, err = bob.DownloadWithParams(ctx, created.ContentURI, mautrix.DownloadExtra{Query: map[string]string{"timeout_ms": "0"}})
	wantMatrixError(t, "download before the upload", err, http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED")

	_, err = bob.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: []byte("bob's"), ContentType: "text/plain", MXC: created.ContentURI})
	wantMatrixError(t, "upload to alice's media ID", err, http.StatusForbidden, "M_FORBIDDEN")
	voice := bytes.Repeat([]byte("OggS voice note "), 4096)
	if _, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: voice, ContentType: "audio/ogg", MXC: created.ContentURI}); err != nil {
		t.Fatalf("UploadMedia to the created URI: %v", err)
	}
	got, err := bob.DownloadBytes(ctx, created.ContentURI)
	if err != nil || !bytes.Equal(got, voice) {
		t.Fatalf("download after the upload: %v", err)
	}
	_, err = alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: []byte("replacement"), ContentType: "audio/ogg", MXC: created.ContentURI})
	wantMatrixError(t, "second upload", err, http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA")

	// The library's own background upload: the URI comes back at once, and a
	// download started right away waits for the content.
	done := make(chan struct{})
	async, err := alice.UploadAsync(ctx, mautrix.ReqUploadMedia{
		ContentBytes: voice[:1000], ContentType: "audio/ogg", DoneCallback: func() { close(done) },
	})
	if err != nil {
		t.Fatalf("UploadAsync: %v", err)
	}
	got, err = bob.DownloadBytes(ctx, async.ContentURI)
	if err != nil || !bytes.Equal(got, voice[:1000]) {
		t.Fatalf("download of an asynchronous upload: %v", err)
	}
	<-done
}
