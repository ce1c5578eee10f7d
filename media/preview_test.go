package media

import (
	"chappe/netguard"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"chappe/mxerr"
)

func previewer(enabled bool, allowed ...string) *Previewer {
	return NewPreviewer(PreviewConfig{
		Enabled: enabled, AllowedNetworks: netguard.MustPrefixes(allowed...), MaxPageBytes: 64 << 10, Timeout: 5 * time.Second,
	})
}

// page is a local web server counting the requests it gets.
func page(t *testing.T, body string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

const ogPage = `<!doctype html><html><head>
<title>  Fallback   title </title>
<meta property="og:title" content="Annonce du ministère">
<meta property="og:description" content="Une description &amp; des accents : é">
<meta property="og:image" content="http://10.0.0.1/secret.png">
<meta property="og:type" content="article">
<meta name="description" content="ignored: og:description wins">
</head><body>Hello</body></html>`

func TestPreviewDisabledByDefault(t *testing.T) {
	srv, hits := page(t, ogPage)
	_, err := previewer(false, "127.0.0.0/8").Preview(context.Background(), srv.URL)
	wantCode(t, "disabled previews", err, mxerr.Forbidden)
	if hits.Load() != 0 {
		t.Fatal("a disabled previewer fetched the page")
	}
}

func TestPreviewRefusesLoopbackAndPrivate(t *testing.T) {
	srv, hits := page(t, ogPage)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	p := previewer(true)
	for _, u := range []string{
		srv.URL,                              // 127.0.0.1
		"http://localhost:" + port + "/page", // a name resolving to loopback
		"http://[::ffff:127.0.0.1]:" + port,  // mapped
	} {
		_, err := p.Preview(context.Background(), u)
		wantCode(t, u, err, mxerr.Forbidden)
	}
	if hits.Load() != 0 {
		t.Fatalf("the loopback page was fetched %d times", hits.Load())
	}
	for _, u := range []string{"file:///etc/passwd", "ftp://example.org/", "/relative", "http://"} {
		_, err := p.Preview(context.Background(), u)
		wantCode(t, u, err, mxerr.InvalidParam)
	}
}

func TestPreviewOpenGraph(t *testing.T) {
	srv, hits := page(t, ogPage)
	got, err := previewer(true, "127.0.0.1/32").Preview(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"og:title": "Annonce du ministère", "og:description": "Une description & des accents : é", "og:type": "article",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("preview %v, want %v (og:image left out)", got, want)
	}
	if hits.Load() != 1 {
		t.Fatalf("%d fetches", hits.Load())
	}
	plain, _ := page(t, "<html><head><title>Just a title</title><meta name=description content='Described'></head></html>")
	got, err = previewer(true, "127.0.0.1/32").Preview(context.Background(), plain.URL)
	if err != nil || got["og:title"] != "Just a title" || got["og:description"] != "Described" {
		t.Fatalf("fallbacks: %v %v", got, err)
	}
}

// A redirect from an allowed address to a denied one is refused at the
// second connection.
func TestPreviewRedirectToDeniedAddress(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, port, _ := net.SplitHostPort(r.Host)
		http.Redirect(w, r, "http://127.0.0.2:"+port+"/", http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	_, err := previewer(true, "127.0.0.1/32").Preview(context.Background(), srv.URL)
	wantCode(t, "redirect to 127.0.0.2", err, mxerr.Forbidden)
	if e, _ := mxerr.As(err); !strings.Contains(e.Message, "127.0.0.2") {
		t.Fatalf("message should name the refused address: %v", err)
	}
	if hits.Load() != 1 {
		t.Fatalf("%d requests to the first page", hits.Load())
	}
}

func TestPreviewUpstreamErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "gone", http.StatusNotFound)
	}))
	t.Cleanup(srv.Close)
	_, err := previewer(true, "127.0.0.1/32").Preview(context.Background(), srv.URL)
	if e, ok := mxerr.As(err); !ok || e.Status() != http.StatusBadGateway {
		t.Fatalf("page answering 404: got %v, want a 502", err)
	}
}
