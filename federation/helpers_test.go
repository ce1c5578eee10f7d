package federation_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/rs/zerolog"

	"chappe/allowlist"
	"chappe/federation"
	"chappe/signingkey"
	"chappe/sqlstore/sqltest"
)

func TestMain(m *testing.M) { sqltest.Main(m) }

// rawFedClient talks to the federation listener at addr over TLS (checked
// for name against roots) with requests the test builds itself.
func rawFedClient(roots *x509.CertPool, name, addr string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig: &tls.Config{ServerName: name, RootCAs: roots},
	}}
}

// tlsServer serves h over TLS with cert on a loopback port; it returns the
// address. It stops when the test ends.
func tlsServer(t *testing.T, cert tls.Certificate, h http.Handler) string {
	t.Helper()
	ts := httptest.NewUnstartedServer(h)
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts.Listener.Addr().String()
}

func splitPort(t *testing.T, addr string) (host, port string) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return host, port
}

// netDialer sends the connections to host:port to the loopback address
// routes names (the test's DNS); anything else fails.
type netDialer struct{ routes map[string]string }

func (d *netDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	to, ok := d.routes[addr]
	if !ok {
		return nil, fmt.Errorf("test dialer: no route to %s", addr)
	}
	return (&net.Dialer{}).DialContext(ctx, network, to)
}

// newKey makes a signing key.
func newKey(t *testing.T) signingkey.Key {
	t.Helper()
	k, err := signingkey.LoadOrGenerate(filepath.Join(t.TempDir(), "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var nopLog = zerolog.Nop()

// fixedSerial is a ListServer whose list has a fixed serial.
type fixedSerial int64

func (f fixedSerial) Serial() int64 { return int64(f) }

func (f fixedSerial) ServePeer(w http.ResponseWriter, _ *http.Request, origin string) {
	_ = json.NewEncoder(w).Encode(map[string]string{"for": origin})
}

// signedRequest builds a request to signedDest signed by origin with key,
// following server-server-api.md, "Request Authentication" step by step
// with a map (not the package's own code, so the two are checked against
// each other). signedBody is the body signed (nil: none), body what is
// sent.
func signedRequest(t *testing.T, method, uri, origin string, key signingkey.Key, signedDest string, signedBody, body []byte) *http.Request {
	t.Helper()
	obj := map[string]any{"method": method, "uri": uri, "origin": origin, "destination": signedDest}
	if signedBody != nil {
		obj["content"] = json.RawMessage(signedBody)
	}
	signed := signJSON(t, origin, key, obj)
	var sigs struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(signed, &sigs); err != nil {
		t.Fatal(err)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, "https://"+signedDest+uri, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", fmt.Sprintf(`X-Matrix origin=%q,destination=%q,key=%q,sig=%q`,
		origin, signedDest, key.ID, sigs.Signatures[origin][string(key.ID)]))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

// send does req and returns the status and the Matrix errcode.
func send(t *testing.T, c *http.Client, req *http.Request) (int, string, http.Header) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	var e struct {
		ErrCode string `json:"errcode"`
	}
	data, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(data, &e)
	return resp.StatusCode, e.ErrCode, resp.Header
}

// signJSON signs a JSON object with a server's key (an event, say).
func signJSON(t *testing.T, server string, key signingkey.Key, obj any) []byte {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := gomatrixserverlib.SignJSON(server, key.ID, key.Private, raw)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// verify asks ring whether message carries a valid signature of server at atTS.
func verify(ring gomatrixserverlib.JSONVerifier, server string, message []byte, atTS time.Time, check gomatrixserverlib.SignatureValidityCheckFunc) error {
	res, err := ring.VerifyJSONs(context.Background(), []gomatrixserverlib.VerifyJSONRequest{{
		ServerName: spec.ServerName(server), AtTS: spec.AsTimestamp(atTS), Message: message, ValidityCheckingFunc: check,
	}})
	if err != nil {
		return err
	}
	return res[0].Error
}

// fakeGate is a gate for tests of the client or key ring alone, talking to
// a TLS test server rather than a Chappe server.
type fakeGate struct {
	servers map[string]allowlist.Server  // the allowed servers and their pins
	removed map[string]allowlist.Removal // servers shown as removed
}

func (g fakeGate) Allowed(s string) bool { _, ok := g.servers[s]; return ok }

func (g fakeGate) Check(s string) error {
	if g.Allowed(s) {
		return nil
	}
	return &allowlist.NotAllowedError{Server: s, Reason: "it is not in the test gate"}
}

func (g fakeGate) Pinned(s string) (allowlist.Server, bool) { srv, ok := g.servers[s]; return srv, ok }

func (g fakeGate) Removed(s string) (allowlist.Removal, bool) { r, ok := g.removed[s]; return r, ok }

// newClient builds a client for tests of the client alone.
func newClient(t *testing.T, cfg federation.ClientConfig, gate federation.Gate, key signingkey.Key) *federation.Client {
	t.Helper()
	if cfg.ServerName == "" {
		cfg.ServerName = "us.chappe.test"
	}
	c, err := federation.NewClient(cfg, gate, key, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// eventually polls cond until it holds or 20 seconds pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
