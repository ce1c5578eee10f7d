package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"chappe/allowlist"
)

// Diagnostics, for `chappe federation check`: each helper is one step of
// what every request does (discovery, TLS, keys, version, the peer's list),
// through the same client, gate and checks, with what the step found shown
// instead of hidden. Like Do, each one asks the gate first: a server the
// gate does not allow is never contacted.

// VersionPath is the unauthenticated endpoint that names a server's
// implementation. Spec: server-server-api.md, "GET /_matrix/federation/v1/version".
const VersionPath = "/_matrix/federation/v1/version"

// Target is where discovery sends the requests for a server name.
type Target struct {
	// Addr is the host:port dialled.
	Addr string `json:"address"`
	// TLSName is the name the certificate must be valid for, sent as SNI
	// unless it is an IP address.
	TLSName string `json:"certificate_name"`
	// Host is the Host header of the requests.
	Host string `json:"host_header"`
}

// Discovery is what server discovery did for a server name.
type Discovery struct {
	// Steps are the steps taken, in order, in plain language.
	Steps []string `json:"steps"`
	// Targets are tried in order, as Do tries them.
	Targets []Target `json:"targets"`
}

// Discover resolves server exactly as a request to it would, and tells
// each step: a pinned endpoint, or server-server-api.md, "Resolving server
// names" (IP literal, explicit port, .well-known, SRV, port 8448). The
// .well-known step contacts the server, so the gate is asked first.
func (c *Client) Discover(ctx context.Context, server string) (Discovery, error) {
	if err := c.checkAllowed(server); err != nil {
		return Discovery{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	var d Discovery
	ctx = withResolveTrace(ctx, func(step string) { d.Steps = append(d.Steps, step) })
	targets, err := c.resolver.resolve(ctx, server)
	if err != nil {
		return d, err
	}
	for _, t := range targets {
		d.Targets = append(d.Targets, Target{Addr: t.addr, TLSName: t.tlsName, Host: t.host})
	}
	return d, nil
}

// checkAllowed is Do's first two checks: federation is enabled, and the
// gate allows server.
func (c *Client) checkAllowed(server string) error {
	if err := c.checkEnabled(); err != nil {
		return err
	}
	return c.gate.Check(server)
}

// Certificate is what a certificate says, for people.
type Certificate struct {
	Subject     string    `json:"subject"`
	Issuer      string    `json:"issuer"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	DNSNames    []string  `json:"dns_names,omitempty"`
	IPAddresses []string  `json:"ip_addresses,omitempty"`
}

// TLSReport is one TLS handshake with a server's target.
type TLSReport struct {
	Target  Target `json:"target"`
	Version string `json:"tls_version"`
	// Chain is the certificates as the server sent them, its own first.
	Chain []Certificate `json:"chain"`
	// VerifyError is why the chain is not valid for Target.TLSName against
	// the system's roots and ca_file (an x509 error), nil when it is: the
	// very check every request makes.
	VerifyError error `json:"-"`
}

// InspectTLS connects to target t of server, does the TLS handshake and
// reports the certificate chain and whether it verifies as a request's
// would (same roots, same name). To show a chain that does not verify, the
// handshake itself accepts any certificate and the chain is verified
// afterwards; the connection is then closed without sending a byte, so a
// server that fails the check never receives anything from us.
func (c *Client) InspectTLS(ctx context.Context, server string, t Target) (TLSReport, error) {
	rep := TLSReport{Target: t}
	if err := c.checkAllowed(server); err != nil {
		return rep, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	raw, err := c.dial(ctx, "tcp", t.Addr)
	if err != nil {
		return rep, err
	}
	conf := &tls.Config{ServerName: t.TLSName, MinVersion: tls.VersionTLS12,
		InsecureSkipVerify: true} // verified below, before anything is sent
	conn := tls.Client(raw, conf)
	defer conn.Close()
	if err := conn.HandshakeContext(ctx); err != nil {
		return rep, fmt.Errorf("TLS handshake: %w", err)
	}
	state := conn.ConnectionState()
	rep.Version = tls.VersionName(state.Version)
	for _, cert := range state.PeerCertificates {
		rep.Chain = append(rep.Chain, describeCertificate(cert))
	}
	rep.VerifyError = c.verifyChain(state.PeerCertificates, t.TLSName)
	return rep, nil
}

// verifyChain checks a server's chain as crypto/tls does for every request:
// against our roots, for name, at our clock's time.
func (c *Client) verifyChain(chain []*x509.Certificate, name string) error {
	if len(chain) == 0 {
		return errors.New("the server sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, cert := range chain[1:] {
		inter.AddCert(cert)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{DNSName: name, Roots: c.roots, Intermediates: inter, CurrentTime: c.now()})
	return err
}

func describeCertificate(cert *x509.Certificate) Certificate {
	out := Certificate{Subject: cert.Subject.String(), Issuer: cert.Issuer.String(),
		NotBefore: cert.NotBefore.UTC(), NotAfter: cert.NotAfter.UTC(), DNSNames: cert.DNSNames}
	for _, ip := range cert.IPAddresses {
		out.IPAddresses = append(out.IPAddresses, ip.String())
	}
	return out
}

// KeyReport is a server's key document as the server itself serves it,
// checked as the key ring checks it (server_name, self-signature by every
// verify key).
type KeyReport struct {
	// VerifyKeys are its current keys: key id → unpadded base64.
	VerifyKeys map[string]string `json:"verify_keys"`
	ValidUntil time.Time         `json:"valid_until"`
	// Pinned are the keys the allowlist pins for the server, nil if none.
	Pinned map[string]string `json:"pinned,omitempty"`
	// Unpinned are the verify keys the server uses that the allowlist,
	// pinning keys, does not pin (or pins with another value): its
	// signatures with them will be refused.
	Unpinned []string `json:"unpinned,omitempty"`
}

// FetchServerKeys gets GET /_matrix/key/v2/server from server directly,
// even when the allowlist pins its keys (the key ring then never fetches),
// so that the pins can be compared with what the server really signs with.
// Spec: server-server-api.md, "Retrieving server keys".
func (c *Client) FetchServerKeys(ctx context.Context, server string) (KeyReport, error) {
	var raw json.RawMessage
	err := c.Do(ctx, Request{Destination: server, Method: http.MethodGet, Path: KeyPath, Unsigned: true, MaxResponseBytes: maxKeyDocumentBytes}, &raw)
	if err != nil {
		return KeyReport{}, err
	}
	doc, err := parseKeyDocument(server, raw, c.now())
	if err != nil {
		return KeyReport{}, err
	}
	rep := KeyReport{VerifyKeys: map[string]string{}, ValidUntil: doc.validUntil.Time().UTC()}
	for id, pub := range doc.verify {
		rep.VerifyKeys[string(id)] = base64.RawStdEncoding.EncodeToString(pub)
	}
	if pinned, _ := c.gate.Pinned(server); len(pinned.VerifyKeys) > 0 {
		rep.Pinned = pinned.VerifyKeys
		for id, pub := range doc.verify {
			if p, err := decodeKey(pinned.VerifyKeys[string(id)]); err != nil || !p.Equal(pub) {
				rep.Unpinned = append(rep.Unpinned, string(id))
			}
		}
		sort.Strings(rep.Unpinned)
	}
	return rep, nil
}

// ServerVersion is the answer of GET /_matrix/federation/v1/version.
type ServerVersion struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// FetchVersion asks server which implementation it runs (unauthenticated).
func (c *Client) FetchVersion(ctx context.Context, server string) (ServerVersion, error) {
	var body struct {
		Server ServerVersion `json:"server"`
	}
	err := c.Do(ctx, Request{Destination: server, Method: http.MethodGet, Path: VersionPath, Unsigned: true, MaxResponseBytes: 64 << 10}, &body)
	return body.Server, err
}

// FetchPeerList gets the allowlist a Chappe server has in force, from
// PeerListPath, with a signed request: the server answers only to servers
// its own list names (403 M_FORBIDDEN otherwise), and a server that is not
// Chappe answers 404 M_UNRECOGNIZED. The list is returned as received,
// unchecked: give it to the allowlist service or allowlist.Parse.
func (c *Client) FetchPeerList(ctx context.Context, server string) ([]byte, error) {
	var raw json.RawMessage
	err := c.Do(ctx, Request{Destination: server, Method: http.MethodGet, Path: PeerListPath, MaxResponseBytes: allowlist.MaxDocumentBytes}, &raw)
	return raw, err
}
