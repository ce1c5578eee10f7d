package federation

import (
	"context"
	"errors"
	"net"
	"reflect"
	"testing"
	"time"
)

// The resolution steps of server-server-api.md, "Resolving server names",
// with the allowlist's pinned endpoint first: pure logic, over injected
// pins, SRV records and .well-known answers.
func TestResolve(t *testing.T) {
	srv := func(records map[string][]*net.SRV) func(context.Context, string, string, string) (string, []*net.SRV, error) {
		return func(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
			if rr, ok := records["_"+service+"._"+proto+"."+name]; ok {
				return "", rr, nil
			}
			return "", nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
		}
	}
	tests := []struct {
		name      string
		server    string
		pinned    map[string]string
		wellKnown map[string]string
		srv       map[string][]*net.SRV
		want      []target
	}{
		{name: "pinned endpoint wins over everything, certificate for the server name",
			server: "a.example", pinned: map[string]string{"a.example": "10.0.0.1:9000"},
			wellKnown: map[string]string{"a.example": "elsewhere.example"},
			srv:       map[string][]*net.SRV{"_matrix-fed._tcp.a.example": {{Target: "srv.example.", Port: 1}}},
			want:      []target{{addr: "10.0.0.1:9000", tlsName: "a.example", host: "a.example"}}},
		{name: "pinned endpoint of a server name with a port",
			server: "a.example:8449", pinned: map[string]string{"a.example:8449": "a-fed.example:443"},
			want: []target{{addr: "a-fed.example:443", tlsName: "a.example", host: "a.example:8449"}}},
		{name: "1: IPv4 literal, default port",
			server: "192.0.2.7", wellKnown: map[string]string{"192.0.2.7": "x.example"},
			want: []target{{addr: "192.0.2.7:8448", tlsName: "192.0.2.7", host: "192.0.2.7"}}},
		{name: "1: IPv6 literal with port",
			server: "[2001:db8::1]:9448",
			want:   []target{{addr: "[2001:db8::1]:9448", tlsName: "2001:db8::1", host: "[2001:db8::1]:9448"}}},
		{name: "2: explicit port, no lookups",
			server: "a.example:9448", wellKnown: map[string]string{"a.example": "x.example"},
			srv:  map[string][]*net.SRV{"_matrix-fed._tcp.a.example": {{Target: "srv.example.", Port: 1}}},
			want: []target{{addr: "a.example:9448", tlsName: "a.example", host: "a.example:9448"}}},
		{name: "3.1: delegated to an IP literal",
			server: "a.example", wellKnown: map[string]string{"a.example": "192.0.2.9"},
			want: []target{{addr: "192.0.2.9:8448", tlsName: "192.0.2.9", host: "192.0.2.9"}}},
		{name: "3.1: delegated to an IP literal with port",
			server: "a.example", wellKnown: map[string]string{"a.example": "[2001:db8::2]:443"},
			want: []target{{addr: "[2001:db8::2]:443", tlsName: "2001:db8::2", host: "[2001:db8::2]:443"}}},
		{name: "3.2: delegated hostname with port",
			server: "a.example", wellKnown: map[string]string{"a.example": "matrix.a.example:443"},
			srv:  map[string][]*net.SRV{"_matrix-fed._tcp.matrix.a.example": {{Target: "srv.example.", Port: 1}}},
			want: []target{{addr: "matrix.a.example:443", tlsName: "matrix.a.example", host: "matrix.a.example:443"}}},
		{name: "3.3: delegated hostname, _matrix-fed SRV, certificate for the delegated name",
			server: "a.example", wellKnown: map[string]string{"a.example": "matrix.a.example"},
			srv: map[string][]*net.SRV{
				"_matrix-fed._tcp.matrix.a.example": {{Target: "s1.example.", Port: 8000}, {Target: "s2.example.", Port: 8001}},
				"_matrix._tcp.matrix.a.example":     {{Target: "old.example.", Port: 1}},
			},
			want: []target{
				{addr: "s1.example:8000", tlsName: "matrix.a.example", host: "matrix.a.example"},
				{addr: "s2.example:8001", tlsName: "matrix.a.example", host: "matrix.a.example"},
			}},
		{name: "3.4: delegated hostname, deprecated _matrix SRV",
			server: "a.example", wellKnown: map[string]string{"a.example": "matrix.a.example"},
			srv:  map[string][]*net.SRV{"_matrix._tcp.matrix.a.example": {{Target: "old.example.", Port: 7}}},
			want: []target{{addr: "old.example:7", tlsName: "matrix.a.example", host: "matrix.a.example"}}},
		{name: "3.5: delegated hostname, no SRV",
			server: "a.example", wellKnown: map[string]string{"a.example": "matrix.a.example"},
			want: []target{{addr: "matrix.a.example:8448", tlsName: "matrix.a.example", host: "matrix.a.example"}}},
		{name: "4: no .well-known, _matrix-fed SRV, certificate for the server name",
			server: "a.example",
			srv:    map[string][]*net.SRV{"_matrix-fed._tcp.a.example": {{Target: "fed.example.", Port: 8443}}},
			want:   []target{{addr: "fed.example:8443", tlsName: "a.example", host: "a.example"}}},
		{name: "5: no .well-known, deprecated _matrix SRV",
			server: "a.example",
			srv:    map[string][]*net.SRV{"_matrix._tcp.a.example": {{Target: "old.example.", Port: 8443}}},
			want:   []target{{addr: "old.example:8443", tlsName: "a.example", host: "a.example"}}},
		{name: "SRV target '.' means no service: fall through",
			server: "a.example",
			srv:    map[string][]*net.SRV{"_matrix-fed._tcp.a.example": {{Target: ".", Port: 0}}},
			want:   []target{{addr: "a.example:8448", tlsName: "a.example", host: "a.example"}}},
		{name: "6: nothing at all, port 8448",
			server: "a.example",
			want:   []target{{addr: "a.example:8448", tlsName: "a.example", host: "a.example"}}},
	}
	for _, tc := range tests {
		r := &resolver{
			pinned:    func(s string) string { return tc.pinned[s] },
			lookupSRV: srv(tc.srv),
			wellKnown: func(_ context.Context, host string) (string, bool) {
				d, ok := tc.wellKnown[host]
				return d, ok
			},
		}
		got, err := r.resolve(context.Background(), tc.server)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
	r := &resolver{pinned: func(string) string { return "" }}
	for _, bad := range []string{"", "A.example", "a.example:0", "[::1", "a..example"} {
		if _, err := r.resolve(context.Background(), bad); err == nil {
			t.Errorf("resolve(%q) accepted a bad server name", bad)
		}
	}
}

func TestWellKnownCache(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	type answer struct {
		delegated string
		maxAge    time.Duration
		err       error
	}
	answers := map[string]answer{
		"good.example":     {"matrix.good.example:443", -1, nil},
		"short.example":    {"s.example", 10 * time.Second, nil},
		"long.example":     {"l.example", 1000 * time.Hour, nil},
		"broken.example":   {"", 0, errors.New("404")},
		"nocache.example":  {"n.example", 0, nil},
		"canceled.example": {"", 0, context.Canceled},
	}
	fetches := map[string]int{}
	w := newWellKnownCache(func(ctx context.Context, host string) (string, time.Duration, error) {
		fetches[host]++
		a := answers[host]
		return a.delegated, a.maxAge, a.err
	}, func() time.Time { return now })
	lookup := func(host string) (string, bool) { return w.lookup(context.Background(), host) }
	for host, a := range answers {
		if host == "canceled.example" {
			continue
		}
		d, ok := lookup(host)
		if ok != (a.err == nil) || d != a.delegated {
			t.Errorf("%s: got %q %v", host, d, ok)
		}
		lookup(host)
	}
	for host, want := range map[string]int{"good.example": 1, "short.example": 1, "long.example": 1, "broken.example": 1, "nocache.example": 2} {
		if fetches[host] != want {
			t.Errorf("%s fetched %d times, want %d", host, fetches[host], want)
		}
	}
	// Time passes: 10s answers expire, errors after an hour, the default
	// after 24h, and nothing is kept beyond 48h.
	now = now.Add(11 * time.Second)
	lookup("short.example")
	lookup("broken.example")
	now = now.Add(time.Hour)
	lookup("broken.example")
	lookup("good.example")
	now = now.Add(24 * time.Hour)
	lookup("good.example")
	lookup("long.example")
	now = now.Add(24 * time.Hour)
	lookup("long.example")
	for host, want := range map[string]int{"short.example": 2, "broken.example": 2, "good.example": 2, "long.example": 2} {
		if fetches[host] != want {
			t.Errorf("after time passed, %s fetched %d times, want %d", host, fetches[host], want)
		}
	}
	// Our own cancellation is not cached as the server's error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w.lookup(ctx, "canceled.example")
	w.lookup(ctx, "canceled.example")
	if fetches["canceled.example"] != 2 {
		t.Errorf("a cancelled fetch was cached")
	}
}

func TestCacheMaxAge(t *testing.T) {
	for header, want := range map[string]time.Duration{
		"":                         -1,
		"public, max-age=3600":     time.Hour,
		"MAX-AGE=60":               time.Minute,
		"no-store":                 0,
		"private, no-cache":        0,
		"max-age=999999999999":     48 * time.Hour,
		"max-age=-5":               -1,
		`max-age="120", immutable`: 2 * time.Minute,
	} {
		if got := cacheMaxAge(header); got != want {
			t.Errorf("cacheMaxAge(%q) = %s, want %s", header, got, want)
		}
	}
}

func TestParseWellKnown(t *testing.T) {
	for body, want := range map[string]string{
		`{"m.server": "matrix.example.org:443"}`: "matrix.example.org:443",
		`{"m.server": "[::1]:8448", "x": 1}`:     "[::1]:8448",
		`{"m.server": "Bad..Name"}`:              "",
		`{"m.server": 7}`:                        "",
		`{}`:                                     "",
		`not json`:                               "",
	} {
		got, err := parseWellKnown([]byte(body))
		if (err == nil) != (want != "") || got != want {
			t.Errorf("parseWellKnown(%s) = %q, %v", body, got, err)
		}
	}
}

func TestBackoffGrowsAndResets(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	b := newBackoff(time.Second, 5*time.Second, func() time.Time { return now }, func(string) bool { return true })
	if err := b.check("a"); err != nil {
		t.Fatal(err)
	}
	for i, want := range []time.Duration{1, 2, 4, 5, 5} {
		until := b.failed("a")
		if got := until.Sub(now); got != want*time.Second {
			t.Errorf("failure %d: backoff %s, want %s", i+1, got, want*time.Second)
		}
	}
	var be *BackoffError
	if err := b.check("a"); !errors.As(err, &be) || be.Destination != "a" || !be.Until.Equal(now.Add(5*time.Second)) {
		t.Errorf("check during backoff: %v", err)
	}
	now = now.Add(5 * time.Second)
	if err := b.check("a"); err != nil {
		t.Errorf("check after the backoff: %v", err)
	}
	b.succeeded("a")
	if !b.readyAt("a").IsZero() || len(b.entries) != 0 {
		t.Errorf("success did not forget the destination")
	}
	if got := b.failed("a").Sub(now); got != time.Second {
		t.Errorf("after a success the backoff starts again at %s", got)
	}
}

func TestBackoffTableIsBounded(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	allowed := true
	b := newBackoff(time.Second, time.Minute, func() time.Time { return now }, func(string) bool { return allowed })
	for i := range maxBackoffEntries {
		b.failed("s" + time.Duration(i).String())
	}
	if !b.failed("one-more").IsZero() || len(b.entries) != maxBackoffEntries {
		t.Errorf("the table grew past its bound: %d", len(b.entries))
	}
	allowed = false // every entry left the list: they make room
	if b.failed("one-more").IsZero() || len(b.entries) != 1 {
		t.Errorf("entries of servers no longer allowed were not dropped: %d", len(b.entries))
	}
}
