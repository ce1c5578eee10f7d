package media

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"chappe/mxerr"
)

func TestAddrFilter(t *testing.T) {
	none := NewAddrFilter(nil, nil)
	configured := NewAddrFilter(
		mustPrefixes("10.20.0.0/16", "127.0.0.1/32", "::ffff:192.168.7.0/120"),
		mustPrefixes("10.20.30.0/24", "198.51.100.7/32", "93.184.0.0/16"),
	)
	cases := []struct {
		addr       string
		none, conf bool
	}{
		{"93.184.215.14", true, false},        // public; denied by configuration
		{"8.8.8.8", true, true},               // public
		{"2606:4700::1111", true, true},       // public IPv6
		{"127.0.0.1", false, true},            // loopback; allowed by configuration
		{"127.0.0.2", false, false},           // the rest of loopback stays denied
		{"::1", false, false},                 // IPv6 loopback
		{"::ffff:127.0.0.1", false, true},     // IPv4-mapped loopback is loopback
		{"10.1.2.3", false, false},            // private
		{"10.20.1.1", false, true},            // inside an allowed private network
		{"10.20.30.40", false, false},         // inside a denied part of it: the most specific wins
		{"172.16.5.4", false, false},          // private
		{"172.32.0.1", true, true},            // just outside 172.16.0.0/12
		{"192.168.1.1", false, false},         // private
		{"192.168.7.9", false, true},          // allowed through an IPv4-mapped prefix
		{"169.254.169.254", false, false},     // cloud metadata
		{"100.64.0.1", false, false},          // carrier-grade NAT
		{"0.0.0.0", false, false},             // unspecified
		{"255.255.255.255", false, false},     // broadcast
		{"224.0.0.1", false, false},           // multicast
		{"fd00::1", false, false},             // unique local
		{"fe80::1", false, false},             // link-local
		{"fe80::1%eth0", false, false},        // with a zone
		{"64:ff9b::a00:1", false, false},      // NAT64 of 10.0.0.1
		{"2002:a00:1::1", false, false},       // 6to4 of 10.0.0.1
		{"2001:0:4136:e378::1", false, false}, // Teredo
		{"198.51.100.7", false, false},        // documentation range, and denied explicitly
	}
	for _, c := range cases {
		a := netip.MustParseAddr(c.addr)
		if got := none.Allowed(a); got != c.none {
			t.Errorf("built-in filter: Allowed(%s) = %v, want %v", c.addr, got, c.none)
		}
		if got := configured.Allowed(a); got != c.conf {
			t.Errorf("configured filter: Allowed(%s) = %v, want %v", c.addr, got, c.conf)
		}
	}
}

// The check runs on the address being dialled, whatever name led there.
func TestDialControlChecksResolvedAddress(t *testing.T) {
	f := NewAddrFilter(nil, nil)
	for addr, allowed := range map[string]bool{
		"10.0.0.1:80": false, "[::1]:443": false, "[::ffff:169.254.169.254]:80": false, "93.184.215.14:443": true,
		"not-an-address:80": false,
	} {
		err := f.control("tcp", addr, nil)
		if (err == nil) != allowed {
			t.Errorf("control(%s) = %v, want allowed=%v", addr, err, allowed)
		}
	}
}

func previewer(enabled bool, allowed ...string) *Previewer {
	return NewPreviewer(PreviewConfig{
		Enabled: enabled, AllowedNetworks: mustPrefixes(allowed...), MaxPageBytes: 64 << 10, Timeout: 5 * time.Second,
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
