package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"image"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/attachment"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"chappe/accounts"
	"chappe/app/apptest"
	"chappe/federation"
)

// Media across servers, on real servers: bob on hs2 gets alice's image
// from hs1 through hs2's authenticated endpoints (hs2 fetches it over
// federation, then serves it from its cache, even with hs1 down), a
// thumbnail too; unknown remote media is 404; media of an unlisted server
// is refused without contacting it; quarantine on hs2 blocks cached remote
// media. Spec: server-server-api.md, "Content Repository".
func TestFederationMedia(t *testing.T) {
	fed := apptest.NewFederation(t)
	hs1 := fed.Start(t, "hs1.chappe.test", fastRetry)
	hs2 := fed.Start(t, "hs2.chappe.test", fastRetry)
	rogue := fed.StartUnlisted(t, "hs3.chappe.test")
	fed.Publish(t)
	ctx := t.Context()
	alice := registerUser(t, hs1.URL, "alice")
	bob := registerUser(t, hs2.URL, "bob")
	carol := registerUser(t, rogue.URL, "carol")

	picture := testImage(t, "image/png", 400, 300)
	up, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: picture, ContentType: "image/png", FileName: "carte.png"})
	if err != nil {
		t.Fatalf("UploadMedia on hs1: %v", err)
	}
	if up.ContentURI.Homeserver != hs1.Name {
		t.Fatalf("content URI %s", up.ContentURI)
	}
	resp, err := bob.Download(ctx, up.ContentURI)
	if err != nil {
		t.Fatalf("bob downloads hs1's image from hs2: %v", err)
	}
	if got := readAll(t, resp); !bytes.Equal(got, picture) {
		t.Fatalf("downloaded %d bytes, not the %d uploaded", len(got), len(picture))
	}
	for header, want := range map[string]string{
		"Content-Type":            "image/png",
		"Content-Disposition":     "inline; filename=carte.png",
		"X-Content-Type-Options":  "nosniff",
		"Content-Security-Policy": "sandbox; default-src 'none'",
	} {
		if got := resp.Header.Get(header); !strings.HasPrefix(got, want) {
			t.Errorf("%s: %q, want %q", header, got, want)
		}
	}
	// A thumbnail across servers: the 96x96 crop box, made by hs1.
	resp, err = bob.DownloadThumbnail(ctx, up.ContentURI, 96, 96, mautrix.DownloadThumbnailExtra{Method: "crop"})
	if err != nil {
		t.Fatalf("thumbnail across servers: %v", err)
	}
	thumb := readAll(t, resp)
	cfg, format, err := image.DecodeConfig(bytes.NewReader(thumb))
	if err != nil || format != "png" || cfg.Width != 96 || cfg.Height != 96 || resp.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("thumbnail: %s %dx%d as %q (%v)", format, cfg.Width, cfg.Height, resp.Header.Get("Content-Type"), err)
	}

	// Unknown media of a listed server: hs1's 404 comes through.
	_, err = bob.Download(ctx, id.ContentURI{Homeserver: hs1.Name, FileID: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"})
	wantMatrixError(t, "unknown media of hs1", err, http.StatusNotFound, "M_NOT_FOUND")

	// Media of the unlisted server: refused by hs2, which never contacts it.
	carolUp, err := carol.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: picture, ContentType: "image/png"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bob.Download(ctx, carolUp.ContentURI)
	wantForbidden(t, "download of hs3's media", err)
	_, err = bob.DownloadThumbnail(ctx, carolUp.ContentURI, 32, 32)
	wantForbidden(t, "thumbnail of hs3's media", err)
	if n := rogue.FedAccepts(); n != 0 {
		t.Fatalf("hs2 connected %d times to the unlisted server", n)
	}

	// hs1 goes down: hs2 serves what it cached, and says hs1 is
	// unreachable for what it did not.
	hs1.Stop(t)
	again, err := bob.DownloadBytes(ctx, up.ContentURI)
	if err != nil || !bytes.Equal(again, picture) {
		t.Fatalf("second download, with hs1 stopped: %v", err)
	}
	resp, err = bob.DownloadThumbnail(ctx, up.ContentURI, 96, 96, mautrix.DownloadThumbnailExtra{Method: "crop"})
	if err != nil || !bytes.Equal(readAll(t, resp), thumb) {
		t.Fatalf("cached thumbnail, with hs1 stopped: %v", err)
	}
	_, err = bob.DownloadThumbnail(ctx, up.ContentURI, 240, 320) // (height, width)
	wantMatrixError(t, "uncached thumbnail with hs1 stopped", err, http.StatusBadGateway, "M_UNKNOWN")

	// An administrator of hs2 quarantines the cached copy: no longer served.
	admin, err := hs2.Accounts.Register(ctx, accounts.RegisterRequest{Localpart: "admin", Password: "long enough password", IsAdmin: true})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, hs2.URL+"/_synapse/admin/v1/media/quarantine/"+hs1.Name+"/"+up.ContentURI.FileID, nil)
	req.Header.Set("Authorization", "Bearer "+admin.AccessToken)
	qr, err := http.DefaultClient.Do(req)
	if err != nil || qr.StatusCode != http.StatusOK {
		t.Fatalf("quarantine of hs1's media on hs2: %v %v", qr, err)
	}
	qr.Body.Close()
	_, err = bob.Download(ctx, up.ContentURI)
	wantMatrixError(t, "quarantined remote media", err, http.StatusNotFound, "M_NOT_FOUND")
	_, err = bob.DownloadThumbnail(ctx, up.ContentURI, 96, 96, mautrix.DownloadThumbnailExtra{Method: "crop"})
	wantMatrixError(t, "thumbnail of quarantined remote media", err, http.StatusNotFound, "M_NOT_FOUND")
}

// The test: an encrypted image sent from hs1 is downloaded by a
// user on hs2 through hs2's authenticated media endpoint. Alice encrypts
// the image as Element does (AES-CTR, the key in the event's "file"),
// uploads the ciphertext as application/octet-stream and sends the event
// in an encrypted room; bob finds the event on hs2, downloads the
// ciphertext through hs2 and decrypts it to the original bytes.
func TestFederationEncryptedImage(t *testing.T) {
	_, hs1, hs2 := fedPair(t)
	alice, bob, roomID := sharedRoom(t, hs1, hs2, "chiffre")
	ctx := t.Context()
	if _, err := alice.SendStateEvent(ctx, roomID, event.StateEncryption, "", &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}); err != nil {
		t.Fatalf("enabling encryption: %v", err)
	}

	picture := testImage(t, "image/jpeg", 640, 480)
	noise := make([]byte, 1000)
	_, _ = rand.Read(noise)
	picture = append(picture, noise...) // not guessable from the test's image alone
	file := attachment.NewEncryptedFile()
	ciphertext := file.Encrypt(picture)
	up, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: ciphertext, ContentType: "application/octet-stream"})
	if err != nil {
		t.Fatalf("uploading the encrypted image: %v", err)
	}
	content := &event.MessageEventContent{
		MsgType: event.MsgImage, Body: "photo.jpg",
		Info: &event.FileInfo{MimeType: "image/jpeg", Size: len(picture), Width: 640, Height: 480},
		File: &event.EncryptedFileInfo{EncryptedFile: *file, URL: up.ContentURI.CUString()},
	}
	if _, err := alice.SendMessageEvent(ctx, roomID, event.EventMessage, content); err != nil {
		t.Fatalf("sending the image event: %v", err)
	}

	// Bob sees the event on hs2 and takes the key and the URI from it.
	var got *event.MessageEventContent
	waitFor(t, "the image event on hs2", 10*time.Second, func() bool {
		resp, err := bob.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatalf("bob /messages: %v", err)
		}
		for _, ev := range resp.Chunk {
			if ev.Type != event.EventMessage {
				continue
			}
			_ = ev.Content.ParseRaw(ev.Type)
			if c := ev.Content.AsMessage(); c.MsgType == event.MsgImage && c.File != nil {
				got = c
				return true
			}
		}
		return false
	})
	uri, err := got.File.URL.Parse()
	if err != nil || uri.Homeserver != hs1.Name {
		t.Fatalf("URI in the event: %q %v", got.File.URL, err)
	}
	resp, err := bob.Download(ctx, uri)
	if err != nil {
		t.Fatalf("bob downloads the encrypted image through hs2: %v", err)
	}
	data := readAll(t, resp)
	if resp.Header.Get("Content-Type") != "application/octet-stream" || resp.Header.Get("Content-Disposition") != "attachment" {
		t.Errorf("encrypted blob served as %q, %q", resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"))
	}
	if !bytes.Equal(data, ciphertext) {
		t.Fatal("the encrypted bytes changed on the way")
	}
	plain, err := got.File.Decrypt(data)
	if err != nil || !bytes.Equal(plain, picture) {
		t.Fatalf("decrypting the downloaded image: %v", err)
	}
}

// hs1's federation media endpoints as another server sees them: bad
// parameters are 400, unknown and quarantined media 404, and timeout_ms
// is honoured for an asynchronous upload (a remote 504 M_NOT_YET_UPLOADED
// reaches the client as such, and does not back hs1 off).
func TestFederationMediaEndpoints(t *testing.T) {
	_, hs1, hs2 := fedPair(t)
	ctx := t.Context()
	alice := registerUser(t, hs1.URL, "alice")
	bob := registerUser(t, hs2.URL, "bob")
	up, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: testImage(t, "image/png", 64, 64), ContentType: "image/png"})
	if err != nil {
		t.Fatal(err)
	}

	// hs2's own client, signed requests, straight to hs1's endpoints.
	ask := func(path string, query url.Values) error {
		req := federation.Request{Destination: hs1.Name, Method: http.MethodGet, Path: path, Query: query, Accept: "multipart/mixed"}
		return hs2.Federation.DoRaw(ctx, req, func(*http.Response) error { return nil })
	}
	thumb := "/_matrix/federation/v1/media/thumbnail/" + up.ContentURI.FileID
	for what, c := range map[string]struct {
		path   string
		query  url.Values
		status int
		code   string
	}{
		"no width":       {thumb, url.Values{"height": {"32"}}, 400, "M_MISSING_PARAM"},
		"bad width":      {thumb, url.Values{"width": {"abc"}, "height": {"32"}}, 400, "M_INVALID_PARAM"},
		"bad method":     {thumb, url.Values{"width": {"32"}, "height": {"32"}, "method": {"stretch"}}, 400, "M_INVALID_PARAM"},
		"bad timeout_ms": {"/_matrix/federation/v1/media/download/" + up.ContentURI.FileID, url.Values{"timeout_ms": {"-1"}}, 400, "M_INVALID_PARAM"},
		"unknown media":  {"/_matrix/federation/v1/media/download/AAAAAAAAAAAAAAAAAAAAAAAA", nil, 404, "M_NOT_FOUND"},
	} {
		var remote *federation.RemoteError
		if err := ask(c.path, c.query); !errors.As(err, &remote) || remote.Status != c.status || remote.ErrCode != c.code {
			t.Errorf("%s: %v, want %d %s", what, err, c.status, c.code)
		}
	}
	if err := ask(thumb, url.Values{"width": {"32"}, "height": {"32"}, "animated": {"true"}}); err != nil {
		t.Errorf("a well-formed thumbnail request: %v", err)
	}

	// An asynchronous upload on hs1: not there yet with timeout_ms=0; a
	// download waiting for it gets it once alice uploads.
	created, err := alice.CreateMXC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = bob.DownloadWithParams(ctx, created.ContentURI, mautrix.DownloadExtra{Query: map[string]string{"timeout_ms": "0"}})
	wantMatrixError(t, "remote media not uploaded yet", err, http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED")
	if !hs2.Federation.ReadyAt(hs1.Name).IsZero() {
		t.Error("hs1's 504 M_NOT_YET_UPLOADED backed hs1 off")
	}
	voice := bytes.Repeat([]byte("OggS "), 1000)
	go func() {
		time.Sleep(500 * time.Millisecond)
		_, _ = alice.UploadMedia(context.Background(), mautrix.ReqUploadMedia{ContentBytes: voice, ContentType: "audio/ogg", MXC: created.ContentURI})
	}()
	got, err := bob.DownloadBytes(ctx, created.ContentURI)
	if err != nil || !bytes.Equal(got, voice) {
		t.Fatalf("download waiting for the upload on hs1: %v", err)
	}

	// Quarantined on hs1: hs1 no longer serves it to other servers.
	admin, err := hs1.Accounts.Register(ctx, accounts.RegisterRequest{Localpart: "admin", Password: "long enough password", IsAdmin: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := hs1.Media.Quarantine(ctx, hs1.Name, up.ContentURI.FileID, admin.UserID); err != nil {
		t.Fatal(err)
	}
	_, err = bob.Download(ctx, up.ContentURI)
	wantMatrixError(t, "media quarantined on its origin", err, http.StatusNotFound, "M_NOT_FOUND")
}
