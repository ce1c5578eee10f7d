package federation_test

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"chappe/allowlist"
	"chappe/app/apptest"
	"chappe/federation"
)

// Discover tells each step of server discovery, and contacts nothing for a
// server the gate does not allow.
func TestDiscoverTellsEachStep(t *testing.T) {
	ctx := context.Background()
	ca := apptest.NewTestCA(t)
	wellKnown := tlsServer(t, ca.Issue(t, "wk.chappe.test"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"m.server":"matrix.wk.chappe.test"}`))
	}))
	var dials atomic.Int64
	dialer := &netDialer{routes: map[string]string{"wk.chappe.test:443": wellKnown}}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return dialer.dial(ctx, network, addr)
	}
	lookupSRV := func(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
		if service == "matrix-fed" && name == "matrix.wk.chappe.test" {
			return "", []*net.SRV{{Target: "fed.wk.chappe.test.", Port: 8443}}, nil
		}
		return "", nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	gate := fakeGate{servers: map[string]allowlist.Server{
		"wk.chappe.test": {}, "pinned.chappe.test": {Endpoint: "127.0.0.1:9"}, "plain.chappe.test": {},
	}}
	c := newClient(t, federation.ClientConfig{Enabled: true, CAFile: ca.File, Dial: dial, LookupSRV: lookupSRV}, gate, newKey(t))

	tests := []struct {
		server  string
		steps   []string // a substring of each step, in order
		targets []federation.Target
	}{
		{server: "pinned.chappe.test",
			steps:   []string{"the allowlist pins the endpoint 127.0.0.1:9"},
			targets: []federation.Target{{Addr: "127.0.0.1:9", TLSName: "pinned.chappe.test", Host: "pinned.chappe.test"}}},
		{server: "wk.chappe.test",
			steps:   []string{"step 3: https://wk.chappe.test/.well-known/matrix/server delegates to matrix.wk.chappe.test", "DNS SRV _matrix-fed._tcp.matrix.wk.chappe.test: fed.wk.chappe.test:8443"},
			targets: []federation.Target{{Addr: "fed.wk.chappe.test:8443", TLSName: "matrix.wk.chappe.test", Host: "matrix.wk.chappe.test"}}},
		{server: "plain.chappe.test",
			steps: []string{"step 3: no .well-known delegation at https://plain.chappe.test/", "DNS SRV _matrix-fed._tcp.plain.chappe.test: none",
				"DNS SRV _matrix._tcp.plain.chappe.test: none", "no SRV record: plain.chappe.test on the default port 8448"},
			targets: []federation.Target{{Addr: "plain.chappe.test:8448", TLSName: "plain.chappe.test", Host: "plain.chappe.test"}}},
	}
	for _, tc := range tests {
		d, err := c.Discover(ctx, tc.server)
		if err != nil {
			t.Errorf("%s: %v", tc.server, err)
			continue
		}
		if len(d.Steps) != len(tc.steps) {
			t.Errorf("%s: steps %q, want %d", tc.server, d.Steps, len(tc.steps))
			continue
		}
		for i, want := range tc.steps {
			if !strings.Contains(d.Steps[i], want) {
				t.Errorf("%s: step %d is %q, want %q in it", tc.server, i, d.Steps[i], want)
			}
		}
		if len(d.Targets) != len(tc.targets) || d.Targets[0] != tc.targets[0] {
			t.Errorf("%s: targets %+v, want %+v", tc.server, d.Targets, tc.targets)
		}
	}

	before := dials.Load()
	var na *allowlist.NotAllowedError
	if _, err := c.Discover(ctx, "unlisted.chappe.test"); !errors.As(err, &na) {
		t.Errorf("unlisted: %v, want the gate's refusal", err)
	}
	if _, err := c.InspectTLS(ctx, "unlisted.chappe.test", federation.Target{Addr: wellKnown, TLSName: "unlisted.chappe.test"}); !errors.As(err, &na) {
		t.Errorf("unlisted TLS: %v, want the gate's refusal", err)
	}
	if dials.Load() != before {
		t.Error("an unlisted server was dialled")
	}
}

// InspectTLS shows the chain whether or not it verifies, says why it does
// not, and sends nothing on the connection.
func TestInspectTLS(t *testing.T) {
	ctx := context.Background()
	ca, otherCA := apptest.NewTestCA(t), apptest.NewTestCA(t)
	var requests atomic.Int64
	handler := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { requests.Add(1) })
	good := tlsServer(t, ca.Issue(t, "good.chappe.test"), handler)
	foreign := tlsServer(t, otherCA.Issue(t, "foreign.chappe.test"), handler)
	misnamed := tlsServer(t, ca.Issue(t, "someone-else.chappe.test"), handler)
	gate := fakeGate{servers: map[string]allowlist.Server{"good.chappe.test": {}, "foreign.chappe.test": {}, "misnamed.chappe.test": {}}}
	c := newClient(t, federation.ClientConfig{Enabled: true, CAFile: ca.File}, gate, newKey(t))

	rep, err := c.InspectTLS(ctx, "good.chappe.test", federation.Target{Addr: good, TLSName: "good.chappe.test"})
	if err != nil || rep.VerifyError != nil {
		t.Fatalf("good: %v / %v", err, rep.VerifyError)
	}
	if len(rep.Chain) != 1 || rep.Chain[0].Subject != "CN=good.chappe.test" || rep.Chain[0].Issuer != "CN=Chappe test CA" ||
		rep.Chain[0].DNSNames[0] != "good.chappe.test" || !rep.Chain[0].NotAfter.After(time.Now()) || !strings.HasPrefix(rep.Version, "TLS 1.") {
		t.Errorf("good: %+v", rep)
	}

	rep, err = c.InspectTLS(ctx, "foreign.chappe.test", federation.Target{Addr: foreign, TLSName: "foreign.chappe.test"})
	var unknown x509.UnknownAuthorityError
	if err != nil || !errors.As(rep.VerifyError, &unknown) || len(rep.Chain) != 1 || rep.Chain[0].Subject != "CN=foreign.chappe.test" {
		t.Errorf("foreign CA: %v, %+v (verify: %v), want the chain and an unknown authority", err, rep, rep.VerifyError)
	}
	rep, err = c.InspectTLS(ctx, "misnamed.chappe.test", federation.Target{Addr: misnamed, TLSName: "misnamed.chappe.test"})
	var hostname x509.HostnameError
	if err != nil || !errors.As(rep.VerifyError, &hostname) {
		t.Errorf("misnamed: %v, verify %v, want a hostname error", err, rep.VerifyError)
	}
	if _, err := c.InspectTLS(ctx, "good.chappe.test", federation.Target{Addr: "127.0.0.1:1", TLSName: "good.chappe.test"}); err == nil {
		t.Error("a closed port gave no error")
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("InspectTLS sent %d HTTP requests", n)
	}
}

// FetchServerKeys checks the document as the key ring does and compares
// it with the keys the list pins; FetchVersion goes unsigned.
func TestFetchServerKeysAndVersion(t *testing.T) {
	ctx := context.Background()
	ca := apptest.NewTestCA(t)
	theirKey, otherKey := newKey(t), newKey(t)
	keys := federation.NewKeyServer("keys.chappe.test", theirKey, time.Hour)
	var sawAuth atomic.Value
	mux := http.NewServeMux()
	mux.Handle(federation.KeyPath, keys)
	mux.HandleFunc(federation.VersionPath, func(w http.ResponseWriter, r *http.Request) {
		sawAuth.Store(r.Header.Get("Authorization"))
		_, _ = w.Write([]byte(`{"server":{"name":"Other","version":"1.2"}}`))
	})
	addr := tlsServer(t, ca.Issue(t, "keys.chappe.test", "pinned.chappe.test", "wrongpin.chappe.test", "impostor.chappe.test"), mux)
	gate := fakeGate{servers: map[string]allowlist.Server{
		"keys.chappe.test": {Endpoint: addr},
		// Its document names keys.chappe.test: refused as another server's.
		"impostor.chappe.test": {Endpoint: addr},
	}}
	c := newClient(t, federation.ClientConfig{Enabled: true, CAFile: ca.File}, gate, newKey(t))

	rep, err := c.FetchServerKeys(ctx, "keys.chappe.test")
	if err != nil || rep.VerifyKeys[string(theirKey.ID)] != theirKey.PublicBase64() || rep.Pinned != nil || rep.Unpinned != nil {
		t.Fatalf("keys: %+v %v", rep, err)
	}
	if d := time.Until(rep.ValidUntil); d < 50*time.Minute || d > time.Hour {
		t.Errorf("valid until %s", rep.ValidUntil)
	}
	if _, err := c.FetchServerKeys(ctx, "impostor.chappe.test"); err == nil || !strings.Contains(err.Error(), `is for "keys.chappe.test"`) {
		t.Errorf("another server's document: %v", err)
	}

	gate.servers["keys.chappe.test"] = allowlist.Server{Endpoint: addr, VerifyKeys: map[string]string{string(theirKey.ID): theirKey.PublicBase64()}}
	if rep, err := c.FetchServerKeys(ctx, "keys.chappe.test"); err != nil || rep.Pinned == nil || rep.Unpinned != nil {
		t.Errorf("matching pin: %+v %v", rep, err)
	}
	gate.servers["keys.chappe.test"] = allowlist.Server{Endpoint: addr, VerifyKeys: map[string]string{string(theirKey.ID): otherKey.PublicBase64()}}
	if rep, err := c.FetchServerKeys(ctx, "keys.chappe.test"); err != nil || len(rep.Unpinned) != 1 || rep.Unpinned[0] != string(theirKey.ID) {
		t.Errorf("another key pinned: %+v %v", rep, err)
	}

	v, err := c.FetchVersion(ctx, "keys.chappe.test")
	if err != nil || v.Name != "Other" || v.Version != "1.2" || sawAuth.Load() != "" {
		t.Errorf("version: %+v %v (Authorization %q)", v, err, sawAuth.Load())
	}
}
