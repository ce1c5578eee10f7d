package media

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"chappe/mxerr"
)

const origin = "origin.test"

// fakeFetcher serves files by media ID, as another server would, and counts
// the fetches. gate, when set, holds every fetch until it is closed.
type fakeFetcher struct {
	mu     sync.Mutex
	files  map[string]Incoming // by media ID; the Body is rebuilt from data
	data   map[string][]byte
	thumbs []ThumbnailRequest // the thumbnails asked for
	calls  atomic.Int64
	gate   chan struct{}
	// after, when set, is the fetch's result once the sink accepted the file
	// (a malformed end of answer).
	after error
	// removed: the allowlist no longer admits origin.
	removed atomic.Bool
}

func (f *fakeFetcher) Admits(server string) bool { return server == origin && !f.removed.Load() }

func newFakeFetcher() *fakeFetcher {
	return &fakeFetcher{files: map[string]Incoming{}, data: map[string][]byte{}}
}

func (f *fakeFetcher) put(id, contentType, name string, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files[id] = Incoming{ContentType: contentType, FileName: name}
	f.data[id] = data
}

func (f *fakeFetcher) serve(ctx context.Context, id string, sink func(Incoming) error) error {
	f.calls.Add(1)
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	in, ok := f.files[id]
	data := f.data[id]
	after := f.after
	f.mu.Unlock()
	if !ok {
		return mxerr.New(mxerr.NotFound, "%s has no media %s", origin, id)
	}
	in.Body = bytes.NewReader(data)
	if err := sink(in); err != nil {
		return err
	}
	return after
}

func (f *fakeFetcher) Download(ctx context.Context, server, id string, _ time.Duration, sink func(Incoming) error) error {
	if server != origin {
		return mxerr.New(mxerr.Forbidden, "%s is outside the federation", server)
	}
	return f.serve(ctx, id, sink)
}

func (f *fakeFetcher) Thumbnail(ctx context.Context, server, id string, req ThumbnailRequest, _ time.Duration, sink func(Incoming) error) error {
	f.mu.Lock()
	f.thumbs = append(f.thumbs, req)
	f.mu.Unlock()
	return f.serve(ctx, fmt.Sprintf("%s/%dx%d/%s", id, req.Width, req.Height, req.Method), sink)
}

func newRemoteService(t *testing.T) (*Service, *fakeFetcher) {
	t.Helper()
	f := newFakeFetcher()
	s := newService(t)
	s.remote = f
	return s, f
}

// uniqueID is a remote media ID no other test uses (the database is shared).
func uniqueID(name string) string { return name + strings.ReplaceAll(newMediaID(), "-", "_")[:16] }

// Another server's media is fetched once, then served from the cache with
// what the origin said of it (type normalised, file name checked).
func TestRemoteMediaCached(t *testing.T) {
	ctx := context.Background()
	s, f := newRemoteService(t)
	id := uniqueID("photo")
	f.put(id, "IMAGE/PNG", "carte.png", []byte("png bytes"))

	for i := range 3 {
		c, err := s.Open(ctx, origin, id, OpenOptions{})
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		if got := readContent(t, c); string(got) != "png bytes" || c.ContentType != "image/png" || c.FileName != "carte.png" {
			t.Fatalf("open %d: %q as %q named %q", i, got, c.ContentType, c.FileName)
		}
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("%d fetches for three downloads, want 1", n)
	}
	if n := len(storedFiles(t, s)); n != 1 || tempFiles(t, s) != 0 {
		t.Fatalf("%d files stored, %d temporaries", n, tempFiles(t, s))
	}

	// A name the origin gives that we would not accept is dropped.
	bad := uniqueID("badname")
	f.put(bad, "text/plain", "evil\x00.txt", []byte("x"))
	c, err := s.Open(ctx, origin, bad, OpenOptions{})
	if err != nil || c.FileName != "" {
		t.Fatalf("control characters in the file name: %+v %v", c, err)
	}
	c.File.Close()

	// The deprecated unauthenticated endpoints never fetch.
	_, err = s.Open(ctx, origin, uniqueID("legacy"), OpenOptions{Legacy: true})
	wantCode(t, "legacy download of uncached remote media", err, mxerr.NotFound)
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("the legacy download fetched (%d fetches)", n)
	}
}

// Concurrent requests for the same remote media share one fetch.
func TestRemoteMediaFetchedOnce(t *testing.T) {
	ctx := context.Background()
	s, f := newRemoteService(t)
	id := uniqueID("shared")
	f.put(id, "application/octet-stream", "", bytes.Repeat([]byte("z"), 10_000))
	f.gate = make(chan struct{})

	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := s.Open(ctx, origin, id, OpenOptions{})
			if err == nil {
				if len(readContent(t, c)) != 10_000 {
					err = fmt.Errorf("short content")
				}
			}
			errs <- err
		}()
	}
	for f.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let the others join the flight
	close(f.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := f.calls.Load(); got != 1 {
		t.Fatalf("%d concurrent downloads made %d fetches, want 1", n, got)
	}
}

// Failures store nothing: the origin's 404, the outside of the federation,
// content over the limit (502 M_TOO_LARGE), an answer found malformed after
// its content.
func TestRemoteMediaFailures(t *testing.T) {
	ctx := context.Background()
	s, f := newRemoteService(t)

	_, err := s.Open(ctx, origin, uniqueID("missing"), OpenOptions{})
	wantCode(t, "unknown remote media", err, mxerr.NotFound)
	_, err = s.Open(ctx, "elsewhere.test", uniqueID("x"), OpenOptions{})
	wantCode(t, "unlisted server", err, mxerr.Forbidden)
	_, err = s.Open(ctx, "bad..name", "x", OpenOptions{})
	wantCode(t, "bad server name", err, mxerr.InvalidParam)
	_, err = s.Open(ctx, origin, "../../etc", OpenOptions{})
	wantCode(t, "bad media ID", err, mxerr.NotFound)

	big := uniqueID("big")
	f.put(big, "video/mp4", "", make([]byte, s.cfg.MaxUploadBytes+1))
	_, err = s.Open(ctx, origin, big, OpenOptions{})
	wantCode(t, "remote media over the limit", err, mxerr.TooLarge)
	if e, _ := mxerr.As(err); e.Status() != http.StatusBadGateway {
		t.Errorf("remote media over the limit: status %d, want 502", e.Status())
	}

	cut := uniqueID("cut")
	f.put(cut, "text/plain", "", []byte("whole?"))
	f.after = mxerr.New(mxerr.Unknown, "truncated").WithStatus(http.StatusBadGateway)
	_, err = s.Open(ctx, origin, cut, OpenOptions{})
	wantCode(t, "malformed end of answer", err, mxerr.Unknown)
	f.after = nil

	if n := len(storedFiles(t, s)); n != 0 || tempFiles(t, s) != 0 {
		t.Fatalf("failed fetches left %d files and %d temporaries", n, tempFiles(t, s))
	}
	// Once the origin answers properly, it is fetched.
	c, err := s.Open(ctx, origin, cut, OpenOptions{})
	if err != nil || string(readContent(t, c)) != "whole?" {
		t.Fatalf("after the failure: %v", err)
	}

	// Without a fetcher, remote media is refused, clearly.
	plain := newService(t)
	_, err = plain.Open(ctx, origin, cut, OpenOptions{})
	wantCode(t, "no fetcher", err, mxerr.NotFound)
}

// Thumbnails of remote media are asked of the origin for the standard box
// covering the request, and kept per box and method.
func TestRemoteThumbnails(t *testing.T) {
	ctx := context.Background()
	s, f := newRemoteService(t)
	id := uniqueID("thumbed")
	f.put(id+"/96x96/crop", "image/png", "", []byte("crop 96"))
	f.put(id+"/320x240/scale", "image/jpeg", "", []byte("scale 320"))

	for _, req := range []ThumbnailRequest{{50, 40, "crop"}, {96, 96, "crop"}, {300, 200, ""}, {320, 240, "scale"}} {
		c, err := s.Thumbnail(ctx, origin, id, req, OpenOptions{})
		if err != nil {
			t.Fatalf("%+v: %v", req, err)
		}
		want := map[string]string{"crop": "crop 96", "scale": "scale 320", "": "scale 320"}[req.Method]
		if got := string(readContent(t, c)); got != want {
			t.Fatalf("%+v: %q, want %q", req, got, want)
		}
	}
	f.mu.Lock()
	asked := fmt.Sprint(f.thumbs)
	f.mu.Unlock()
	if asked != "[{96 96 crop} {320 240 scale}]" {
		t.Fatalf("thumbnails asked of the origin: %s", asked)
	}
	_, err := s.Thumbnail(ctx, origin, id, ThumbnailRequest{800, 600, "scale"}, OpenOptions{})
	wantCode(t, "thumbnail the origin does not have", err, mxerr.NotFound)

	// Beyond the largest standard box, every request is that box: one
	// fetch, not one per size asked for.
	f.put(id+"/800x600/crop", "image/png", "", []byte("crop 800"))
	f.mu.Lock()
	f.thumbs = nil
	f.mu.Unlock()
	for _, req := range []ThumbnailRequest{{1600, 1200, "crop"}, {801, 600, "crop"}, {4000, 10, "crop"}, {16384, 16384, "crop"}} {
		c, err := s.Thumbnail(ctx, origin, id, req, OpenOptions{})
		if err != nil {
			t.Fatalf("%+v: %v", req, err)
		}
		if got := string(readContent(t, c)); got != "crop 800" {
			t.Fatalf("%+v: %q", req, got)
		}
	}
	f.mu.Lock()
	asked = fmt.Sprint(f.thumbs)
	f.mu.Unlock()
	if asked != "[{800 600 crop}]" {
		t.Fatalf("large thumbnails asked of the origin: %s", asked)
	}
}

// The media of a server the allowlist no longer admits is not served, even
// cached; it is again once the server is listed again, without a fetch.
func TestRemoteMediaOfRemovedServer(t *testing.T) {
	ctx := context.Background()
	s, f := newRemoteService(t)
	id := uniqueID("removed")
	// Bytes of their own: the database is shared, and files by content.
	f.put(id, "text/plain", "", []byte("from before "+id))
	f.put(id+"/32x32/crop", "image/png", "", []byte("thumb "+id))
	if _, err := s.Open(ctx, origin, id, OpenOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Thumbnail(ctx, origin, id, ThumbnailRequest{32, 32, "crop"}, OpenOptions{}); err != nil {
		t.Fatal(err)
	}
	f.removed.Store(true)
	_, err := s.Open(ctx, origin, id, OpenOptions{})
	wantCode(t, "cached media of a removed server", err, mxerr.Forbidden)
	_, err = s.Thumbnail(ctx, origin, id, ThumbnailRequest{32, 32, "crop"}, OpenOptions{})
	wantCode(t, "cached thumbnail of a removed server", err, mxerr.Forbidden)
	_, err = s.Open(ctx, origin, id, OpenOptions{Legacy: true})
	wantCode(t, "cached media of a removed server, legacy endpoint", err, mxerr.Forbidden)

	f.removed.Store(false)
	c, err := s.Open(ctx, origin, id, OpenOptions{})
	if err != nil || string(readContent(t, c)) != "from before "+id {
		t.Fatalf("listed again: %v", err)
	}
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2 (the media and its thumbnail, once)", n)
	}
}

// Quarantine applies to remote media as to local: cached or not, it is no
// longer served (nor fetched); deletion empties the cache, and a file a
// local upload shares with the cache stays.
func TestRemoteMediaQuarantineAndDelete(t *testing.T) {
	ctx := context.Background()
	s, f := newRemoteService(t)
	cached, later := uniqueID("cached"), uniqueID("later")
	f.put(cached, "text/plain", "", []byte("same bytes"))
	f.put(later, "text/plain", "", []byte("other"))
	f.put(cached+"/32x32/crop", "image/png", "", []byte("thumb"))
	c, err := s.Open(ctx, origin, cached, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.File.Close()
	if _, err := s.Thumbnail(ctx, origin, cached, ThumbnailRequest{32, 32, "crop"}, OpenOptions{}); err != nil {
		t.Fatal(err)
	}

	for _, id := range []string{cached, later} {
		if err := s.Quarantine(ctx, origin, id, "@admin:"+server); err != nil {
			t.Fatalf("quarantine %s: %v", id, err)
		}
	}
	calls := f.calls.Load()
	for _, id := range []string{cached, later} {
		_, err := s.Open(ctx, origin, id, OpenOptions{})
		wantCode(t, "quarantined remote media", err, mxerr.NotFound)
		if !strings.Contains(err.Error(), "quarantined") {
			t.Errorf("%s: %v does not say it is quarantined", id, err)
		}
		_, err = s.Thumbnail(ctx, origin, id, ThumbnailRequest{32, 32, "crop"}, OpenOptions{})
		wantCode(t, "thumbnail of quarantined remote media", err, mxerr.NotFound)
	}
	if f.calls.Load() != calls {
		t.Fatal("quarantined remote media was fetched")
	}

	// A local upload with the same bytes shares the file.
	local := upload(t, s, newUser("alice"), "text/plain", []byte("same bytes"))
	if err := s.Delete(ctx, origin, cached); err != nil {
		t.Fatalf("delete cached remote media: %v", err)
	}
	c, err = s.Open(ctx, server, local, OpenOptions{})
	if err != nil || string(readContent(t, c)) != "same bytes" {
		t.Fatalf("the local upload lost its file with the remote copy: %v", err)
	}
	if n := len(storedFiles(t, s)); n != 1 {
		t.Fatalf("%d files after deleting the remote copy and its thumbnail, want the shared one", n)
	}
	// The quarantine outlives the deletion: never fetched again.
	_, err = s.Open(ctx, origin, cached, OpenOptions{})
	wantCode(t, "deleted quarantined remote media", err, mxerr.NotFound)
	if f.calls.Load() != calls {
		t.Fatal("deleted quarantined remote media was fetched")
	}

	// Deleting what is not quarantined empties the cache: fetched again when asked.
	other := uniqueID("other")
	f.put(other, "text/plain", "", []byte("again"))
	for range 2 {
		c, err = s.Open(ctx, origin, other, OpenOptions{})
		if err != nil || string(readContent(t, c)) != "again" {
			t.Fatalf("open: %v", err)
		}
		if err := s.Delete(ctx, origin, other); err != nil {
			t.Fatalf("delete: %v", err)
		}
	}
	if f.calls.Load() != calls+2 {
		t.Fatalf("%d fetches after two deletions, want 2", f.calls.Load()-calls)
	}
	err = s.Delete(ctx, origin, other)
	wantCode(t, "delete of what is not cached", err, mxerr.NotFound)
}

// Cached remote media not served for RemoteCacheRetention is dropped with
// its files; media served meanwhile stays; dropped media is fetched again.
func TestRemoteCacheRetention(t *testing.T) {
	ctx := context.Background()
	s, f := newRemoteService(t)
	// A clock in the past: the rows of the other tests (the database is
	// shared) are all more recent than what this test purges.
	var clock atomic.Int64
	clock.Store(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli())
	s.now = func() time.Time { return time.UnixMilli(clock.Load()) }
	advance := func(d time.Duration) { clock.Add(d.Milliseconds()) }
	kept, dropped := uniqueID("kept"), uniqueID("dropped")
	f.put(kept, "text/plain", "", []byte("kept "+kept))
	f.put(dropped, "text/plain", "", []byte("dropped "+dropped))
	f.put(dropped+"/32x32/crop", "image/png", "", []byte("thumb "+dropped))
	open := func(id string) {
		t.Helper()
		c, err := s.Open(ctx, origin, id, OpenOptions{})
		if err != nil {
			t.Fatalf("open %s: %v", id, err)
		}
		c.File.Close()
	}
	open(kept)
	open(dropped)
	if _, err := s.Thumbnail(ctx, origin, dropped, ThumbnailRequest{32, 32, "crop"}, OpenOptions{}); err != nil {
		t.Fatal(err)
	}
	advance(RemoteCacheRetention / 2)
	open(kept)
	advance(RemoteCacheRetention/2 + accessTouchEvery)
	if n, err := s.PurgeRemoteCache(ctx); err != nil || n != 1 {
		t.Fatalf("purge: %d dropped, %v; want 1", n, err)
	}
	if n := len(storedFiles(t, s)); n != 1 {
		t.Fatalf("%d files after the purge, want the kept media's", n)
	}
	calls := f.calls.Load()
	open(kept)
	open(dropped)
	if got := f.calls.Load() - calls; got != 1 {
		t.Fatalf("%d fetches after the purge, want 1 (the dropped media)", got)
	}
}
