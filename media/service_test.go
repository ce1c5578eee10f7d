package media

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"chappe/mxerr"
	"chappe/sqlstore/sqltest"
)

func TestMain(m *testing.M) { sqltest.Main(m) }

const server = "media.test"

// newService is a content repository on the package's test database, with
// its own media directory.
func newService(t testing.TB, configure ...func(*Config)) *Service {
	t.Helper()
	cfg := Config{
		ServerName:        server,
		Dir:               t.TempDir(),
		MaxUploadBytes:    1 << 20,
		MaxImagePixels:    32_000_000,
		PendingLifetime:   time.Hour,
		MaxPendingUploads: 3,
	}
	for _, f := range configure {
		f(&cfg)
	}
	s, err := New(sqltest.Store(t), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var testUsers struct {
	sync.Mutex
	n int
}

// newUser is a user ID no other test uses (the database is shared).
func newUser(name string) string {
	testUsers.Lock()
	defer testUsers.Unlock()
	testUsers.n++
	return "@" + name + strings.Repeat("x", testUsers.n) + ":" + server
}

func upload(t testing.TB, s *Service, user, contentType string, data []byte) string {
	t.Helper()
	uri, err := s.Upload(context.Background(), Upload{UserID: user, ContentType: contentType, Body: bytes.NewReader(data), ContentLength: int64(len(data))})
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	return mediaIDOf(t, uri)
}

func mediaIDOf(t testing.TB, uri string) string {
	t.Helper()
	id, ok := strings.CutPrefix(uri, "mxc://"+server+"/")
	if !ok || !validMediaID(id) {
		t.Fatalf("content URI %q", uri)
	}
	return id
}

func readContent(t testing.TB, c *Content) []byte {
	t.Helper()
	defer c.File.Close()
	data, err := io.ReadAll(c.File)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) != c.Size {
		t.Fatalf("read %d bytes, size says %d", len(data), c.Size)
	}
	return data
}

// storedFiles lists the content files in the media directory (not temporaries).
func storedFiles(t testing.TB, s *Service) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(s.cfg.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path == s.blobs.tmp {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func tempFiles(t testing.TB, s *Service) int {
	t.Helper()
	entries, err := os.ReadDir(s.blobs.tmp)
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func TestMediaIDs(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := newMediaID()
		if len(id) < 24 || !validMediaID(id) || seen[id] {
			t.Fatalf("media ID %q: too short, invalid or repeated", id)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "../etc/passwd", "a/b", "a.b", "a%2Fb", "é", strings.Repeat("a", 256)} {
		if validMediaID(bad) {
			t.Errorf("validMediaID(%q) = true", bad)
		}
	}
}

func TestUploadAndOpen(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	user := newUser("alice")
	data := []byte("bonjour, ceci est un fichier")
	uri, err := s.Upload(ctx, Upload{UserID: user, ContentType: "Text/Plain; Charset=UTF-8", FileName: "note été.txt", Body: bytes.NewReader(data), ContentLength: -1})
	if err != nil {
		t.Fatal(err)
	}
	id := mediaIDOf(t, uri)
	c, err := s.Open(ctx, server, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c.ContentType != "text/plain; charset=UTF-8" || c.FileName != "note été.txt" {
		t.Errorf("stored type %q name %q", c.ContentType, c.FileName)
	}
	if got := readContent(t, c); !bytes.Equal(got, data) {
		t.Fatalf("content %q", got)
	}
	// The file is named by its SHA-256 and nothing is left in tmp.
	files := storedFiles(t, s)
	sum := sha256.Sum256(data)
	if want := hex.EncodeToString(sum[:]); len(files) != 1 || filepath.Base(files[0]) != want || !strings.HasSuffix(files[0], filepath.Join(want[0:2], want[2:4], want)) {
		t.Fatalf("stored files %v, want one named by its SHA-256 %s", files, want)
	}
	if n := tempFiles(t, s); n != 0 {
		t.Fatalf("%d temporary files left", n)
	}
	for _, tc := range []struct{ server, id string }{
		{"other.example", id}, {server, "nope"}, {server, "../../etc/passwd"},
	} {
		_, err := s.Open(ctx, tc.server, tc.id, OpenOptions{})
		wantCode(t, "open "+tc.server+"/"+tc.id, err, mxerr.NotFound)
	}
}

func TestNormaliseContentType(t *testing.T) {
	for in, want := range map[string]string{
		"":                                   "application/octet-stream",
		"image/png":                          "image/png",
		"IMAGE/PNG":                          "image/png",
		"text/html; charset=utf-8":           "text/html; charset=utf-8",
		"not a type":                         "application/octet-stream",
		"text/plain\r\nX-Evil: yes":          "application/octet-stream",
		"application/x-matrix; x=\"a\\\"b\"": `application/x-matrix; x="a\"b"`,
	} {
		if got := normaliseContentType(in); got != want {
			t.Errorf("normaliseContentType(%q) = %q, want %q", in, got, want)
		}
	}
}

// Two identical uploads, even by different users, are two media IDs but one
// file on disk.
func TestDeduplication(t *testing.T) {
	s := newService(t)
	data := bytes.Repeat([]byte("same content "), 1000)
	a := upload(t, s, newUser("alice"), "application/octet-stream", data)
	b := upload(t, s, newUser("bob"), "text/plain", data)
	if a == b {
		t.Fatal("two uploads got the same media ID")
	}
	if files := storedFiles(t, s); len(files) != 1 {
		t.Fatalf("%d files stored for identical content, want 1: %v", len(files), files)
	}
	upload(t, s, newUser("carol"), "text/plain", []byte("other content"))
	if files := storedFiles(t, s); len(files) != 2 {
		t.Fatalf("%d files stored, want 2", len(files))
	}
}

func TestUploadTooLarge(t *testing.T) {
	s := newService(t, func(c *Config) { c.MaxUploadBytes = 1024 })
	ctx := context.Background()
	user := newUser("big")
	data := make([]byte, 1025)
	// Announced too big: refused before reading.
	_, err := s.Upload(ctx, Upload{UserID: user, Body: bytes.NewReader(data), ContentLength: 1025})
	wantCode(t, "announced 1025 bytes", err, mxerr.TooLarge)
	// Not announced (chunked): refused while reading, nothing kept.
	_, err = s.Upload(ctx, Upload{UserID: user, Body: bytes.NewReader(data), ContentLength: -1})
	wantCode(t, "chunked 1025 bytes", err, mxerr.TooLarge)
	if n := len(storedFiles(t, s)) + tempFiles(t, s); n != 0 {
		t.Fatalf("%d files left after refused uploads", n)
	}
	// Exactly the limit is fine.
	upload(t, s, user, "", data[:1024])
}

func TestQuota(t *testing.T) {
	s := newService(t, func(c *Config) { c.UserQuotaBytes = 3000 })
	ctx := context.Background()
	alice, bob := newUser("alice"), newUser("bob")
	upload(t, s, alice, "", bytes.Repeat([]byte{1}, 2000))
	for _, length := range []int64{1500, -1} {
		_, err := s.Upload(ctx, Upload{UserID: alice, Body: bytes.NewReader(bytes.Repeat([]byte{2}, 1500)), ContentLength: length})
		wantCode(t, "over quota", err, mxerr.Forbidden)
	}
	upload(t, s, alice, "", bytes.Repeat([]byte{3}, 1000)) // exactly fills it
	upload(t, s, bob, "", bytes.Repeat([]byte{2}, 1500))   // bob has his own
	if n := tempFiles(t, s); n != 0 {
		t.Fatalf("%d temporary files left", n)
	}
}

// Concurrent uploads cannot together exceed the quota.
func TestQuotaUnderConcurrency(t *testing.T) {
	s := newService(t, func(c *Config) { c.UserQuotaBytes = 1000 })
	user := newUser("racer")
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, refused := 0, 0
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := s.Upload(context.Background(), Upload{UserID: user, Body: bytes.NewReader(bytes.Repeat([]byte{byte(i)}, 300)), ContentLength: -1})
			mu.Lock()
			defer mu.Unlock()
			if e, isMx := mxerr.As(err); err == nil {
				ok++
			} else if isMx && e.Code == mxerr.Forbidden {
				refused++
			} else {
				t.Errorf("upload: %v", err)
			}
		}(i)
	}
	wg.Wait()
	if ok != 3 || refused != 7 {
		t.Fatalf("%d uploads accepted, %d refused; want 3 and 7 for 300-byte files in a 1000-byte quota", ok, refused)
	}
}

func TestAsyncUpload(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	alice, bob := newUser("alice"), newUser("bob")
	created, err := s.Create(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	id := mediaIDOf(t, created.ContentURI)
	if exp := time.UnixMilli(created.UnusedExpiresAt); exp.Before(time.Now().Add(59*time.Minute)) || exp.After(time.Now().Add(61*time.Minute)) {
		t.Fatalf("unused_expires_at %v, want in an hour", exp)
	}
	// Not there yet: 504 M_NOT_YET_UPLOADED at once without waiting.
	_, err = s.Open(ctx, server, id, OpenOptions{})
	wantCode(t, "download before upload", err, mxerr.NotYetUploaded)
	// A download waiting for it gets it as soon as it arrives.
	got := make(chan []byte, 1)
	go func() {
		c, err := s.Open(ctx, server, id, OpenOptions{Wait: 10 * time.Second})
		if err != nil {
			t.Errorf("waiting download: %v", err)
			got <- nil
			return
		}
		got <- readContent(t, c)
	}()
	time.Sleep(100 * time.Millisecond)
	put := func(user string, data []byte) error {
		return s.UploadTo(ctx, server, id, Upload{UserID: user, ContentType: "text/plain", Body: bytes.NewReader(data), ContentLength: int64(len(data))})
	}
	wantCode(t, "upload by another user", put(bob, []byte("mine")), mxerr.Forbidden)
	start := time.Now()
	if err := put(alice, []byte("arrived")); err != nil {
		t.Fatal(err)
	}
	select {
	case data := <-got:
		if string(data) != "arrived" {
			t.Fatalf("waiting download got %q", data)
		}
		if d := time.Since(start); d > 900*time.Millisecond {
			t.Errorf("the waiting download was not woken: it took %v", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiting download never returned")
	}
	wantCode(t, "second upload", put(alice, []byte("again")), mxerr.CannotOverwriteMedia)
	wantCode(t, "upload to an unknown ID", s.UploadTo(ctx, server, newMediaID(), Upload{UserID: alice, Body: strings.NewReader("x")}), mxerr.NotFound)
	wantCode(t, "upload to another server", s.UploadTo(ctx, "other.example", id, Upload{UserID: alice, Body: strings.NewReader("x")}), mxerr.NotFound)
}

func TestPendingUploadsLimitedAndExpire(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	user := newUser("hoarder")
	var ids []string
	for i := 0; i < 3; i++ {
		c, err := s.Create(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, mediaIDOf(t, c.ContentURI))
	}
	_, err := s.Create(ctx, user)
	wantCode(t, "fourth pending upload", err, mxerr.LimitExceeded)
	// Filling one frees a slot.
	if err := s.UploadTo(ctx, server, ids[0], Upload{UserID: user, Body: strings.NewReader("x"), ContentLength: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, user); err != nil {
		t.Fatalf("after filling one: %v", err)
	}
	// Two hours later, the others have expired: uploads to them fail, new ones may be created.
	s.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	wantCode(t, "upload to an expired ID", s.UploadTo(ctx, server, ids[1], Upload{UserID: user, Body: strings.NewReader("x")}), mxerr.NotFound)
	_, err = s.Open(ctx, server, ids[2], OpenOptions{})
	wantCode(t, "download of an expired ID", err, mxerr.NotFound)
	for i := 0; i < 3; i++ {
		if _, err := s.Create(ctx, user); err != nil {
			t.Fatalf("after expiry: %v", err)
		}
	}
	if _, err := s.store.GetMedia(ctx, ids[1]); err == nil {
		t.Fatal("the expired media ID was not purged")
	}
}

func TestLegacyCutoff(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		cutoff time.Time
		served bool
	}{
		{"no cutoff: frozen for all", time.Time{}, false},
		{"uploaded after the cutoff", time.Now().Add(-time.Hour), false},
		{"uploaded before the cutoff", time.Now().Add(time.Hour), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newService(t, func(c *Config) { c.LegacyCutoff = tc.cutoff })
			id := upload(t, s, newUser("old"), "image/png", encodeTestImage(t, "png", gradient(100, 100)))
			c, err := s.Open(ctx, server, id, OpenOptions{Legacy: true})
			th, terr := s.Thumbnail(ctx, server, id, ThumbnailRequest{Width: 32, Height: 32}, OpenOptions{Legacy: true})
			if tc.served {
				if err != nil || terr != nil {
					t.Fatalf("legacy download %v, thumbnail %v", err, terr)
				}
				c.File.Close()
				th.File.Close()
			} else {
				wantCode(t, "legacy download", err, mxerr.NotFound)
				wantCode(t, "legacy thumbnail", terr, mxerr.NotFound)
			}
			// The authenticated endpoints always serve it.
			c, err = s.Open(ctx, server, id, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			c.File.Close()
		})
	}
}

func TestThumbnailsCachedAndDeleted(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	user := newUser("photographer")
	img := encodeTestImage(t, "jpeg", gradient(400, 300))
	a := upload(t, s, user, "image/jpeg", img)
	b := upload(t, s, user, "image/jpeg", img) // same file
	thumb := func(id string, w, h int, method string) *Content {
		t.Helper()
		c, err := s.Thumbnail(ctx, server, id, ThumbnailRequest{Width: w, Height: h, Method: method}, OpenOptions{})
		if err != nil {
			t.Fatalf("thumbnail %dx%d %s: %v", w, h, method, err)
		}
		return c
	}
	first := thumb(a, 96, 96, MethodCrop)
	if first.ContentType != "image/jpeg" {
		t.Errorf("thumbnail of a JPEG is %s", first.ContentType)
	}
	firstData := readContent(t, first)
	again := thumb(a, 90, 90, MethodCrop) // same standard box: the cached one
	if !bytes.Equal(readContent(t, again), firstData) || !bytes.Equal(again.SHA256, first.SHA256) {
		t.Fatal("the second request did not get the cached thumbnail")
	}
	readContent(t, thumb(a, 320, 240, MethodScale))
	if n := len(storedFiles(t, s)); n != 3 {
		t.Fatalf("%d files, want the image and two thumbnails", n)
	}
	// Deleting a: its thumbnails go, the image stays for b.
	if err := s.Delete(ctx, server, a); err != nil {
		t.Fatal(err)
	}
	if n := len(storedFiles(t, s)); n != 1 {
		t.Fatalf("%d files after deleting one of two identical uploads, want 1", n)
	}
	_, err := s.Open(ctx, server, a, OpenOptions{})
	wantCode(t, "deleted media", err, mxerr.NotFound)
	readContent(t, mustOpen(t, s, b))
	if err := s.Delete(ctx, server, b); err != nil {
		t.Fatal(err)
	}
	if n := len(storedFiles(t, s)); n != 0 {
		t.Fatalf("%d files after deleting every media", n)
	}
	wantCode(t, "deleting again", s.Delete(ctx, server, b), mxerr.NotFound)
}

func mustOpen(t testing.TB, s *Service, id string) *Content {
	t.Helper()
	c, err := s.Open(context.Background(), server, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestQuarantineStopsServing(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	user := newUser("mallory")
	id := upload(t, s, user, "image/png", encodeTestImage(t, "png", gradient(100, 100)))
	other := upload(t, s, user, "image/png", encodeTestImage(t, "png", gradient(50, 50)))
	if c, err := s.Thumbnail(ctx, server, id, ThumbnailRequest{Width: 32, Height: 32}, OpenOptions{}); err != nil {
		t.Fatal(err)
	} else {
		c.File.Close()
	}
	if err := s.Quarantine(ctx, server, id, "@admin:"+server); err != nil {
		t.Fatal(err)
	}
	_, err := s.Open(ctx, server, id, OpenOptions{})
	wantCode(t, "download of quarantined media", err, mxerr.NotFound)
	_, err = s.Thumbnail(ctx, server, id, ThumbnailRequest{Width: 32, Height: 32}, OpenOptions{})
	wantCode(t, "cached thumbnail of quarantined media", err, mxerr.NotFound)
	readContent(t, mustOpen(t, s, other))
	wantCode(t, "quarantine of unknown media", s.Quarantine(ctx, server, newMediaID(), "@admin:"+server), mxerr.NotFound)
}

func TestThumbnailErrors(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	user := newUser("thumbs")
	blob := upload(t, s, user, "image/png", []byte("encrypted bytes that claim to be a PNG"))
	bomb := upload(t, s, user, "image/png", pngHeaderOnly(50_000, 50_000))
	img := upload(t, s, user, "image/png", encodeTestImage(t, "png", gradient(10, 10)))
	for _, tc := range []struct {
		name string
		id   string
		req  ThumbnailRequest
		code mxerr.Code
	}{
		{"not an image", blob, ThumbnailRequest{Width: 32, Height: 32}, mxerr.Unknown},
		{"decompression bomb", bomb, ThumbnailRequest{Width: 32, Height: 32}, mxerr.TooLarge},
		{"zero width", img, ThumbnailRequest{Width: 0, Height: 32}, mxerr.InvalidParam},
		{"negative height", img, ThumbnailRequest{Width: 32, Height: -5}, mxerr.InvalidParam},
		{"huge", img, ThumbnailRequest{Width: 1 << 30, Height: 32}, mxerr.InvalidParam},
		{"bad method", img, ThumbnailRequest{Width: 32, Height: 32, Method: "stretch"}, mxerr.InvalidParam},
		{"unknown media", newMediaID(), ThumbnailRequest{Width: 32, Height: 32}, mxerr.NotFound},
	} {
		_, err := s.Thumbnail(ctx, server, tc.id, tc.req, OpenOptions{})
		wantCode(t, tc.name, err, tc.code)
	}
	// An image smaller than asked for is not upscaled.
	c, err := s.Thumbnail(ctx, server, img, ThumbnailRequest{Width: 96, Height: 96, Method: MethodCrop}, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.File.Close()
	decoded, err := formatPNG.decode(c.File)
	if err != nil {
		t.Fatal(err)
	}
	if got := decoded.Bounds().Size(); got.X != 10 || got.Y != 10 {
		t.Fatalf("thumbnail of a 10x10 image is %v", got)
	}
}

// A missing file (lost disk, manual deletion) is a 404 for the client.
func TestMissingFile(t *testing.T) {
	s := newService(t)
	id := upload(t, s, newUser("lost"), "text/plain", []byte("soon gone"))
	for _, f := range storedFiles(t, s) {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.Open(context.Background(), server, id, OpenOptions{})
	wantCode(t, "missing file", err, mxerr.NotFound)
}

// The waiter map does not grow with requests that time out.
func TestWaitersCleanedUp(t *testing.T) {
	s := newService(t)
	c, err := s.Create(context.Background(), newUser("waiter"))
	if err != nil {
		t.Fatal(err)
	}
	id := mediaIDOf(t, c.ContentURI)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = s.Open(ctx, server, id, OpenOptions{Wait: time.Second})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's deadline", err)
	}
	s.mu.Lock()
	n := len(s.waiting)
	s.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d waiter entries left", n)
	}
}

func BenchmarkUpload8MiB(b *testing.B) {
	s := newService(b, func(c *Config) { c.MaxUploadBytes = 16 << 20 })
	user := newUser("bench")
	data := make([]byte, 8<<20)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		copy(data, []byte(time.Now().String())) // distinct content each time: no deduplication
		upload(b, s, user, "application/octet-stream", data)
	}
}

func BenchmarkOpenAndRead8MiB(b *testing.B) {
	s := newService(b, func(c *Config) { c.MaxUploadBytes = 16 << 20 })
	id := upload(b, s, newUser("bench"), "application/octet-stream", make([]byte, 8<<20))
	b.SetBytes(8 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := mustOpen(b, s, id)
		if _, err := io.Copy(io.Discard, c.File); err != nil {
			b.Fatal(err)
		}
		c.File.Close()
	}
}
