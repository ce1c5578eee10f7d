package federation_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"chappe/allowlist"
	"chappe/app/apptest"
	"chappe/federation"
)

const versionPath = "/_matrix/federation/v1/version"

// Two listed servers and an unlisted one.
func TestListedAndUnlistedServers(t *testing.T) {
	fed := apptest.NewFederation(t)
	hs1 := fed.Start(t, "hs1.chappe.test")
	hs2 := fed.Start(t, "hs2.chappe.test")
	hs3 := fed.StartUnlisted(t, "hs3.chappe.test")
	serial := fed.Publish(t)
	t.Run("client through the gate", func(t *testing.T) { testClientThroughTheGate(t, hs1, hs2, hs3, serial) })
	t.Run("inbound authentication", func(t *testing.T) { testInboundAuthentication(t, fed, hs1, hs2, hs3, serial) })
}

// Outbound: a signed request reaches an authenticated route of a listed
// server; an unlisted destination is refused before anything is dialled.
func testClientThroughTheGate(t *testing.T, hs1, hs2, hs3 *apptest.FedServer, serial int64) {
	ctx := context.Background()

	var raw json.RawMessage
	if err := hs1.Federation.Do(ctx, federation.Request{Destination: hs2.Name, Method: http.MethodGet, Path: federation.PeerListPath}, &raw); err != nil {
		t.Fatalf("signed request to hs2: %v", err)
	}
	if d, err := allowlist.Parse(raw); err != nil || d.Serial != serial {
		t.Fatalf("hs2 served %s (%v), want its list %d", raw, err, serial)
	}
	var version struct {
		Server struct{ Name, Version string } `json:"server"`
	}
	if err := hs1.Federation.Do(ctx, federation.Request{Destination: hs2.Name, Method: http.MethodGet, Path: versionPath}, &version); err != nil || version.Server.Name != "Chappe" || version.Server.Version == "" {
		t.Fatalf("version: %+v, %v", version, err)
	}
	// An unknown federation path: 404 M_UNRECOGNIZED, which does not back hs2 off.
	err := hs1.Federation.Do(ctx, federation.Request{Destination: hs2.Name, Method: http.MethodGet, Path: "/_matrix/federation/v1/nope"}, nil)
	var remote *federation.RemoteError
	if !errors.As(err, &remote) || remote.Status != http.StatusNotFound || remote.ErrCode != "M_UNRECOGNIZED" || !hs1.Federation.ReadyAt(hs2.Name).IsZero() {
		t.Fatalf("unknown path: %v (backoff until %v)", err, hs1.Federation.ReadyAt(hs2.Name))
	}

	for _, dest := range []string{hs3.Name, "nowhere.chappe.test"} {
		err := hs1.Federation.Do(ctx, federation.Request{Destination: dest, Method: http.MethodGet, Path: versionPath}, nil)
		var na *allowlist.NotAllowedError
		if !errors.As(err, &na) || na.Server != dest || !strings.Contains(err.Error(), "not in the allowlist") {
			t.Errorf("request to unlisted %s: %v", dest, err)
		}
		if !hs1.Federation.ReadyAt(dest).IsZero() {
			t.Errorf("an unlisted destination got a backoff entry")
		}
	}
	if n := hs3.FedAccepts(); n != 0 {
		t.Errorf("hs1 connected to unlisted hs3 %d times", n)
	}
}

// Inbound, against a real server: the X-Matrix header, the gate before any
// key work, the destination.
func testInboundAuthentication(t *testing.T, fed *apptest.Federation, hs1, hs2, hs3 *apptest.FedServer, serial int64) {
	ctx := context.Background()
	c := rawFedClient(fed.CA.Pool, hs2.Name, hs2.FedAddr)
	uri := federation.PeerListPath

	get := func(header ...string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "https://"+hs2.Name+uri, nil)
		for _, h := range header {
			req.Header.Add("Authorization", h)
		}
		status, code, h := send(t, c, req)
		if got := h.Get(federation.SerialHeader); got != "1" || serial != 1 {
			t.Errorf("response serial header %q, want %d", got, serial)
		}
		return status, code
	}
	for name, header := range map[string][]string{
		"no header":     nil,
		"other scheme":  {"Bearer abc"},
		"garbled":       {`X-Matrix origin=`},
		"no signature":  {`X-Matrix origin="hs1.chappe.test",key="ed25519:x"`},
		"bad origin":    {`X-Matrix origin="HS1..test",key="ed25519:x",sig="abc"`},
		"bad signature": {`X-Matrix origin="hs1.chappe.test",destination="hs2.chappe.test",key="` + string(hs1.Key.ID) + `",sig="AAAA"`},
		"unknown key":   {`X-Matrix origin="hs1.chappe.test",destination="hs2.chappe.test",key="ed25519:nope",sig="AAAA"`},
	} {
		if status, code := get(header...); status != http.StatusUnauthorized || code != "M_UNAUTHORIZED" {
			t.Errorf("%s: %d %s, want 401 M_UNAUTHORIZED", name, status, code)
		}
	}

	// Signed by hs1 (with gomatrixserverlib's signer): accepted.
	if status, _, _ := send(t, c, signedRequest(t, "GET", uri, hs1.Name, hs1.Key, hs2.Name, nil, nil)); status != http.StatusOK {
		t.Errorf("request signed by hs1: %d", status)
	}
	// Signed for another destination: 401.
	req := signedRequest(t, "GET", uri, hs1.Name, hs1.Key, "hs9.chappe.test", nil, nil)
	if status, code, _ := send(t, c, req); status != http.StatusUnauthorized || code != "M_UNAUTHORIZED" {
		t.Errorf("wrong destination: %d %s", status, code)
	}
	// A body other than the one signed: 401.
	req = signedRequest(t, "GET", uri, hs1.Name, hs1.Key, hs2.Name, []byte(`{"a":1}`), []byte(`{"a":2}`))
	if status, code, _ := send(t, c, req); status != http.StatusUnauthorized || code != "M_UNAUTHORIZED" {
		t.Errorf("tampered body: %d %s", status, code)
	}

	// The unlisted hs3, signing with its real key, through its own client
	// (its own list tells it where hs2 is): 403, and hs2 never connected to
	// hs3 for its key.
	err := hs3.Federation.Do(ctx, federation.Request{Destination: hs2.Name, Method: http.MethodGet, Path: uri}, nil)
	var remote *federation.RemoteError
	if !errors.As(err, &remote) || remote.Status != http.StatusForbidden || remote.ErrCode != "M_FORBIDDEN" || !strings.Contains(remote.Message, "outside the federation") {
		t.Errorf("request from unlisted hs3: %v", err)
	}
	if n := hs3.FedAccepts(); n != 0 {
		t.Errorf("hs2 connected to hs3 %d times (a key fetch for an unlisted origin?)", n)
	}
}

// Outbound against TLS test servers: the certificate is checked for the
// server name against the system roots and ca_file; the Host header and the
// signature name the server; 5xx backs off and 4xx resets.
func TestClientTLSAndBackoff(t *testing.T) {
	ctx := context.Background()
	ca, otherCA := apptest.NewTestCA(t), apptest.NewTestCA(t)
	key := newKey(t)
	var status int
	var sawHost, sawAuth string
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawHost, sawAuth = r.Host, r.Header.Get("Authorization")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"errcode":"M_TEST","error":"test answer","padding":"` + strings.Repeat("x", 100) + `"}`))
	})
	good := tlsServer(t, ca.Issue(t, "good.chappe.test"), handler)
	foreign := tlsServer(t, otherCA.Issue(t, "foreign.chappe.test"), handler)
	misnamed := tlsServer(t, ca.Issue(t, "someone-else.chappe.test"), handler)
	gate := fakeGate{servers: map[string]allowlist.Server{
		"good.chappe.test":     {Endpoint: good},
		"foreign.chappe.test":  {Endpoint: foreign},
		"misnamed.chappe.test": {Endpoint: misnamed},
	}}
	var dials atomic.Int64
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		if addr == "unlisted.chappe.test:443" || addr == "unlisted.chappe.test:8448" {
			addr = good // it would answer, were it dialled
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	c := newClient(t, federation.ClientConfig{Enabled: true, CAFile: ca.File, BackoffInitial: 100 * time.Millisecond, BackoffMax: time.Second, Dial: dial}, gate, key)
	do := func(dest string, out any) error {
		return c.Do(ctx, federation.Request{Destination: dest, Method: http.MethodPut, Path: "/_matrix/federation/v1/send/t1", Body: map[string]int{"a": 1}}, out)
	}

	var na *allowlist.NotAllowedError
	if err := do("unlisted.chappe.test", nil); !errors.As(err, &na) || dials.Load() != 0 || sawAuth != "" {
		t.Fatalf("unlisted destination: %v after %d dials", err, dials.Load())
	}

	for _, dest := range []string{"foreign.chappe.test", "misnamed.chappe.test"} {
		err := do(dest, nil)
		var ce *federation.ConnectError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s: %v, want a certificate error", dest, err)
		}
		if c.ReadyAt(dest).IsZero() {
			t.Errorf("%s: a TLS failure did not back off", dest)
		}
	}
	if sawAuth != "" {
		t.Fatalf("a request went through a certificate that did not verify")
	}

	status = http.StatusBadGateway
	var remote *federation.RemoteError
	if err := do("good.chappe.test", nil); !errors.As(err, &remote) || remote.Status != 502 || remote.ErrCode != "M_TEST" || remote.Message != "test answer" {
		t.Fatalf("502: %v", err)
	}
	if sawHost != "good.chappe.test" || !strings.HasPrefix(sawAuth, `X-Matrix origin="us.chappe.test",destination="good.chappe.test",key="`+string(key.ID)+`",sig="`) {
		t.Errorf("Host %q, Authorization %q", sawHost, sawAuth)
	}
	until := c.ReadyAt("good.chappe.test")
	if until.IsZero() {
		t.Fatal("a 502 did not back off")
	}
	var be *federation.BackoffError
	if err := do("good.chappe.test", nil); !errors.As(err, &be) || !be.Until.Equal(until) {
		t.Fatalf("during the backoff: %v", err)
	}
	time.Sleep(time.Until(until)) // the backoff's own clock, not a synchronisation
	status = http.StatusNotFound
	if err := do("good.chappe.test", nil); !errors.As(err, &remote) || remote.Status != 404 {
		t.Fatalf("404: %v", err)
	}
	if !c.ReadyAt("good.chappe.test").IsZero() {
		t.Error("a 4xx answer did not reset the backoff")
	}
	status = http.StatusOK
	var out map[string]any
	if err := do("good.chappe.test", &out); err != nil || out["errcode"] != "M_TEST" {
		t.Fatalf("200: %v %v", out, err)
	}
	err := c.Do(ctx, federation.Request{Destination: "good.chappe.test", Method: http.MethodGet, Path: "/x", MaxResponseBytes: 10}, nil)
	if err == nil || !strings.Contains(err.Error(), "larger than 10 bytes") {
		t.Errorf("response cap: %v", err)
	}
	if err := c.Do(ctx, federation.Request{Destination: "good.chappe.test", Method: http.MethodGet, Path: "/_matrix/federation/v1/x", Unsigned: true}, nil); err == nil {
		t.Error("an unsigned federation request was sent")
	}

	disabled := newClient(t, federation.ClientConfig{Enabled: false, CAFile: ca.File}, gate, key)
	sawAuth = ""
	if err := disabled.Do(ctx, federation.Request{Destination: "good.chappe.test", Method: http.MethodGet, Path: versionPath}, nil); !errors.Is(err, federation.ErrDisabled) || sawAuth != "" {
		t.Errorf("disabled federation: %v", err)
	}
}

// Without a pinned endpoint, the client finds the server through
// .well-known (fetched over TLS from the server name, cached, redirects
// followed) and connects where it delegates, signing for the server name.
func TestClientWellKnownDelegation(t *testing.T) {
	ctx := context.Background()
	ca := apptest.NewTestCA(t)
	var wellKnownHits int
	var sawHost, sawAuth string
	target := tlsServer(t, ca.Issue(t, "fed.chappe.test"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawHost, sawAuth = r.Host, r.Header.Get("Authorization")
		_, _ = w.Write([]byte(`{}`))
	}))
	_, targetPort := splitPort(t, target)
	wellKnown := tlsServer(t, ca.Issue(t, "wk.chappe.test", "wk2.chappe.test"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host == "wk2.chappe.test" {
			http.Redirect(w, r, "https://wk.chappe.test/.well-known/matrix/server", http.StatusFound)
			return
		}
		wellKnownHits++
		w.Header().Set("Cache-Control", "max-age=3600")
		_, _ = w.Write([]byte(`{"m.server":"fed.chappe.test:` + targetPort + `"}`))
	}))
	dialer := &netDialer{routes: map[string]string{
		"wk.chappe.test:443": wellKnown, "wk2.chappe.test:443": wellKnown, "fed.chappe.test:" + targetPort: target,
	}}
	gate := fakeGate{servers: map[string]allowlist.Server{"wk.chappe.test": {}, "wk2.chappe.test": {}}}
	c := newClient(t, federation.ClientConfig{Enabled: true, CAFile: ca.File, Dial: dialer.dial}, gate, newKey(t))
	for i := range 2 {
		if err := c.Do(ctx, federation.Request{Destination: "wk.chappe.test", Method: http.MethodGet, Path: versionPath}, nil); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if wellKnownHits != 1 {
		t.Errorf(".well-known fetched %d times, want once (cached)", wellKnownHits)
	}
	if sawHost != "fed.chappe.test:"+targetPort || !strings.Contains(sawAuth, `destination="wk.chappe.test"`) {
		t.Errorf("Host %q (want the delegated name), Authorization %q (want the server name)", sawHost, sawAuth)
	}
	if err := c.Do(ctx, federation.Request{Destination: "wk2.chappe.test", Method: http.MethodGet, Path: versionPath}, nil); err != nil {
		t.Fatalf("through a .well-known redirect: %v", err)
	}
	if wellKnownHits != 2 || !strings.Contains(sawAuth, `destination="wk2.chappe.test"`) {
		t.Errorf("redirect: %d hits, Authorization %q", wellKnownHits, sawAuth)
	}
}

// The federation router with a registered route: the handler sees the
// verified origin and the body; bodies are capped; unknown paths are
// M_UNRECOGNIZED; our serial is on every response.
func TestInboundRegisteredRoute(t *testing.T) {
	ca := apptest.NewTestCA(t)
	usKey, peerKey, otherKey := newKey(t), newKey(t), newKey(t)
	gate := fakeGate{servers: map[string]allowlist.Server{
		"peer.chappe.test": {VerifyKeys: map[string]string{string(peerKey.ID): peerKey.PublicBase64()}},
	}}
	client := newClient(t, federation.ClientConfig{ServerName: "us.chappe.test", Enabled: true, CAFile: ca.File}, gate, usKey)
	ring := federation.NewKeyRing(federation.KeyRingConfig{ServerName: "us.chappe.test", Key: usKey, KeyValidity: time.Hour}, gate, client, nopLog)
	srv := federation.NewServer(federation.ServerConfig{ServerName: "us.chappe.test", MaxRequestBytes: 64 << 10}, federation.ServerDeps{
		Keys: federation.NewKeyServer("us.chappe.test", usKey, time.Hour), KeyRing: ring, Gate: gate, Lists: fixedSerial(7), Client: client, Log: nopLog,
		Register: func(r chi.Router) {
			r.Put("/_matrix/federation/v1/send/{txn}", func(w http.ResponseWriter, r *http.Request) {
				var body map[string]any
				_ = json.NewDecoder(r.Body).Decode(&body)
				_ = json.NewEncoder(w).Encode(map[string]any{"origin": federation.Origin(r.Context()), "body": body})
			})
		},
	})
	addr := tlsServer(t, ca.Issue(t, "us.chappe.test"), srv.Handler())
	c := rawFedClient(ca.Pool, "us.chappe.test", addr)
	uri := "/_matrix/federation/v1/send/txn%201"
	body := []byte(`{"pdus":[],"edus":[]}`)

	resp, err := c.Do(signedRequest(t, "PUT", uri, "peer.chappe.test", peerKey, "us.chappe.test", body, body))
	if err != nil {
		t.Fatal(err)
	}
	var echo struct {
		Origin string         `json:"origin"`
		Body   map[string]any `json:"body"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&echo)
	resp.Body.Close()
	if resp.StatusCode != 200 || echo.Origin != "peer.chappe.test" || echo.Body["pdus"] == nil || resp.Header.Get(federation.SerialHeader) != "7" {
		t.Fatalf("valid request: %d %+v, serial %q", resp.StatusCode, echo, resp.Header.Get(federation.SerialHeader))
	}

	big := []byte(`{"x":"` + strings.Repeat("a", 70<<10) + `"}`)
	cases := []struct {
		name   string
		req    func() *http.Request
		status int
		code   string
	}{
		{"tampered body", func() *http.Request {
			return signedRequest(t, "PUT", uri, "peer.chappe.test", peerKey, "us.chappe.test", body, []byte(`{"pdus":[1],"edus":[]}`))
		}, 401, "M_UNAUTHORIZED"},
		{"oversized body", func() *http.Request {
			return signedRequest(t, "PUT", uri, "peer.chappe.test", peerKey, "us.chappe.test", big, big)
		}, 413, "M_TOO_LARGE"},
		{"not JSON", func() *http.Request {
			return signedRequest(t, "PUT", uri, "peer.chappe.test", peerKey, "us.chappe.test", nil, []byte(`{not json`))
		}, 400, "M_NOT_JSON"},
		{"a key the list does not pin", func() *http.Request {
			return signedRequest(t, "PUT", uri, "peer.chappe.test", otherKey, "us.chappe.test", body, body)
		}, 401, "M_UNAUTHORIZED"},
		{"wrong destination", func() *http.Request {
			return signedRequest(t, "PUT", uri, "peer.chappe.test", peerKey, "them.chappe.test", body, body)
		}, 401, "M_UNAUTHORIZED"},
		{"origin outside the federation", func() *http.Request {
			return signedRequest(t, "PUT", uri, "rogue.chappe.test", otherKey, "us.chappe.test", body, body)
		}, 403, "M_FORBIDDEN"},
		{"unknown path", func() *http.Request {
			return signedRequest(t, "GET", "/_matrix/federation/v1/unknown", "peer.chappe.test", peerKey, "us.chappe.test", nil, nil)
		}, 404, "M_UNRECOGNIZED"},
	}
	for _, tc := range cases {
		req := tc.req()
		req.URL.Host = "us.chappe.test"
		status, code, h := send(t, c, req)
		if status != tc.status || code != tc.code || h.Get(federation.SerialHeader) != "7" {
			t.Errorf("%s: %d %s (serial %q), want %d %s", tc.name, status, code, h.Get(federation.SerialHeader), tc.status, tc.code)
		}
	}
}
