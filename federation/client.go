package federation

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/rs/zerolog"

	"chappe/allowlist"
	"chappe/signingkey"
)

// Gate is what federation asks the allowlist (allowlist.Service implements it).
type Gate interface {
	// Check is nil for a server we may federate with, else a
	// *allowlist.NotAllowedError whose message is for people.
	Check(server string) error
	// Allowed is Check's fast yes or no.
	Allowed(server string) bool
	// Pinned is what the list pins for a listed server: verify keys, endpoint.
	Pinned(server string) (allowlist.Server, bool)
	// Removed is the removal record of a server the list shows as removed.
	Removed(server string) (allowlist.Removal, bool)
}

// PeerLists is what the client needs to pass newer allowlists on
// (allowlist.Service implements it): our serial, whether a peer's serial is
// worth a fetch, and the door every list goes through.
type PeerLists interface {
	Serial() int64
	ShouldFetchFrom(peer string, serial int64) bool
	Offer(ctx context.Context, raw []byte, source string) (allowlist.Verdict, error)
}

// ClientConfig configures the outbound client.
type ClientConfig struct {
	// ServerName is ours: the origin of every request.
	ServerName string
	// Enabled: when false every request fails with ErrDisabled.
	Enabled bool
	// RequestTimeout bounds one request, discovery included.
	RequestTimeout time.Duration
	// BackoffInitial and BackoffMax bound the backoff of failing destinations.
	BackoffInitial, BackoffMax time.Duration
	// CAFile is a PEM bundle trusted on top of the system's roots. Server
	// certificates are always verified; nothing here can turn that off.
	CAFile string
	// Lists, when set, spreads allowlists: our serial goes out on every
	// request, and a peer showing a higher one has its list fetched and
	// offered. Nil: lists are not spread.
	Lists PeerLists
	// LookupSRV resolves SRV records. Nil: net.DefaultResolver.LookupSRV.
	LookupSRV func(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
	// Dial connects to host:port. Nil: a net.Dialer. (Tests point names
	// at loopback listeners with it; TLS is verified all the same.)
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
}

// Request is one outbound federation request.
type Request struct {
	// Destination is the server name called.
	Destination string
	// Method and Path; Path is the raw escaped path, e.g.
	// "/_matrix/federation/v1/send/txn1".
	Method, Path string
	Query        url.Values
	// Body is sent as JSON when non-nil (json.RawMessage and []byte as is).
	Body any
	// Unsigned is only for GET /_matrix/key/v2/server and /.well-known,
	// which servers call before they can know each other's keys, and for
	// the version endpoint, which needs no authentication.
	Unsigned bool
	// MaxResponseBytes caps the response body; 0: DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// Accept is the Accept header; "": application/json. (Media downloads
	// ask for multipart/mixed.)
	Accept string
}

// DefaultMaxResponseBytes caps response bodies when the request says nothing.
const DefaultMaxResponseBytes = 50 << 20

// KeyPath is the path of a server's key document.
const KeyPath = "/_matrix/key/v2/server"

// ErrDisabled: federation.enabled is false.
var ErrDisabled = errors.New("federation is disabled on this server (federation.enabled is false)")

// RemoteError is a non-2xx answer from a remote server.
type RemoteError struct {
	Destination string
	Status      int
	// ErrCode and Message are the Matrix error body's, when it had one.
	ErrCode, Message string
}

func (e *RemoteError) Error() string {
	if e.ErrCode == "" {
		return fmt.Sprintf("federation: %s answered HTTP %d", e.Destination, e.Status)
	}
	return fmt.Sprintf("federation: %s answered HTTP %d %s: %s", e.Destination, e.Status, e.ErrCode, e.Message)
}

// ConnectError says a destination could not be reached (discovery,
// connection, TLS, or no answer in time).
type ConnectError struct {
	Destination string
	Err         error
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("federation: cannot reach %s: %v", e.Destination, e.Err)
}

func (e *ConnectError) Unwrap() error { return e.Err }

// maxTransports bounds the connection pools kept (one per target).
const maxTransports = 512

// Client is the one path of every outbound federation request: the
// allowlist gate, the backoff, server discovery, the X-Matrix signature and
// TLS verified for the server's name, in that order (see Do).
type Client struct {
	cfg      ClientConfig
	gate     Gate
	key      signingkey.Key
	log      zerolog.Logger
	now      func() time.Time
	roots    *x509.CertPool
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	backoff  *backoff
	resolver *resolver
	spreader *listSpreader

	// transports are the connection pools, one per target (address and
	// certificate name), so a connection checked for one name is never
	// reused for another.
	transportsMu sync.Mutex
	transports   *lru.Cache[target, *http.Client]
}

// NewClient builds the client. It fails only on an unreadable CAFile.
func NewClient(cfg ClientConfig, gate Gate, key signingkey.Key, log zerolog.Logger) (*Client, error) {
	roots, err := rootPool(cfg.CAFile)
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, gate: gate, key: key, log: log.With().Str("component", "federation").Logger(), now: cfg.Now, roots: roots, dial: cfg.Dial}
	if c.now == nil {
		c.now = time.Now
	}
	if c.dial == nil {
		c.dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	if c.cfg.RequestTimeout <= 0 {
		c.cfg.RequestTimeout = 30 * time.Second
	}
	if c.cfg.BackoffInitial <= 0 {
		c.cfg.BackoffInitial = 5 * time.Second
	}
	c.cfg.BackoffMax = max(c.cfg.BackoffMax, c.cfg.BackoffInitial)
	lookupSRV := cfg.LookupSRV
	if lookupSRV == nil {
		lookupSRV = net.DefaultResolver.LookupSRV
	}
	c.backoff = newBackoff(c.cfg.BackoffInitial, c.cfg.BackoffMax, c.now, gate.Allowed)
	wk := newWellKnownCache(c.fetchWellKnown, c.now)
	c.resolver = &resolver{pinned: c.pinnedEndpoint, lookupSRV: lookupSRV, wellKnown: wk.lookup}
	c.transports, _ = lru.NewWithEvict(maxTransports, func(_ target, hc *http.Client) { hc.CloseIdleConnections() })
	c.spreader = newListSpreader(c, cfg.Lists, c.log)
	return c, nil
}

// rootPool is the system's roots plus the PEM bundle at caFile.
func rootPool(caFile string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if caFile == "" {
		return pool, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("federation.ca_file: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("federation.ca_file: %s holds no PEM certificate", caFile)
	}
	return pool, nil
}

// Close stops the background list fetches and closes idle connections.
func (c *Client) Close() {
	c.spreader.close()
	c.transportsMu.Lock()
	defer c.transportsMu.Unlock()
	c.transports.Purge()
}

// CloseIdleConnections closes the connections kept for reuse: the next
// request to each server dials again.
func (c *Client) CloseIdleConnections() {
	c.transportsMu.Lock()
	defer c.transportsMu.Unlock()
	for _, hc := range c.transports.Values() {
		hc.CloseIdleConnections()
	}
}

// ReadyAt is the end of dest's backoff, zero when it has none.
func (c *Client) ReadyAt(dest string) time.Time { return c.backoff.readyAt(dest) }

// Do sends req and decodes a 2xx JSON answer into out (which may be nil;
// a *json.RawMessage gets the body as is). Failures:
//   - ErrDisabled when federation is off;
//   - the gate's *allowlist.NotAllowedError when the destination is not
//     allowed: nothing is resolved or dialled;
//   - *BackoffError while the destination is backed off;
//   - *ConnectError when it cannot be reached, *RemoteError for a non-2xx
//     answer. Connection failures, 5xx and 429 extend the backoff; any
//     other answer ends it (and so do the media 5xx of deliberate).
func (c *Client) Do(ctx context.Context, req Request, out any) error {
	return c.DoRaw(ctx, req, func(resp *http.Response) error {
		return decodeJSON(req.Destination, resp.Body, out)
	})
}

// ErrResponseTooLarge is what reading an answer body beyond the request's
// MaxResponseBytes returns.
var ErrResponseTooLarge = errors.New("the answer is larger than this request accepts")

// DoRaw is Do for answers that are not JSON (media, in multipart/mixed):
// the same gate, backoff, discovery, signature and TLS, then read gets a
// 2xx answer to consume while the request's time runs. Its body is capped
// at MaxResponseBytes (reading beyond fails with ErrResponseTooLarge), and
// a failure to read it is a *ConnectError; the body is closed after read
// returns. A non-2xx answer is a *RemoteError and read is not called.
// The backoff learns from the status, and from the errors read returns.
func (c *Client) DoRaw(ctx context.Context, req Request, read func(*http.Response) error) error {
	if err := c.checkEnabled(); err != nil {
		return err
	}
	if err := checkRequest(req); err != nil {
		return err
	}
	if err := c.gate.Check(req.Destination); err != nil {
		return err
	}
	if err := c.backoff.check(req.Destination); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	err := c.exchange(ctx, req, read)
	c.recordOutcome(ctx, req.Destination, err)
	return err
}

func (c *Client) checkEnabled() error {
	if !c.cfg.Enabled {
		return ErrDisabled
	}
	return nil
}

// checkRequest refuses malformed requests, and unsigned requests other than
// those the spec makes before keys are known.
func checkRequest(req Request) error {
	if req.Destination == "" || req.Method == "" || !strings.HasPrefix(req.Path, "/") {
		return fmt.Errorf("federation: bad request %s %q to %q", req.Method, req.Path, req.Destination)
	}
	if req.Unsigned && req.Path != KeyPath && req.Path != VersionPath && !strings.HasPrefix(req.Path, "/.well-known/") {
		return fmt.Errorf("federation: %s must be signed", req.Path)
	}
	return nil
}

// exchange resolves the destination, signs, sends and reads the answer.
func (c *Client) exchange(ctx context.Context, req Request, read func(*http.Response) error) error {
	targets, err := c.resolver.resolve(ctx, req.Destination)
	if err != nil {
		return &ConnectError{Destination: req.Destination, Err: err}
	}
	built, err := c.build(req)
	if err != nil {
		return err
	}
	resp, err := c.send(ctx, req.Destination, targets, built)
	if err != nil {
		return err
	}
	c.spreader.noteResponse(req.Destination, resp.Header)
	defer resp.Body.Close()
	if err := checkStatus(req.Destination, resp); err != nil {
		return err
	}
	resp.Body = capBody(req.Destination, resp.Body, req.MaxResponseBytes)
	return read(resp)
}

// recordOutcome feeds the backoff: connection failures, 5xx and 429 extend
// it, any other answer ends it. Our own errors (a bad body, a caller that
// gave up) leave it alone.
func (c *Client) recordOutcome(ctx context.Context, dest string, err error) {
	var remote *RemoteError
	var conn *ConnectError
	switch {
	case err == nil:
		c.backoff.succeeded(dest)
	case errors.As(err, &remote):
		if (remote.Status >= 500 || remote.Status == http.StatusTooManyRequests) && !deliberate(remote) {
			until := c.backoff.failed(dest)
			c.log.Warn().Str("destination", dest).Int("status", remote.Status).Time("retry_after", until).Msg("federation request failed; backing off")
		} else {
			c.backoff.succeeded(dest)
		}
	case errors.As(err, &conn):
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return // the caller gave up
		}
		until := c.backoff.failed(dest)
		c.log.Warn().Str("destination", dest).Err(conn.Err).Time("retry_after", until).Msg("federation destination unreachable; backing off")
	}
}

// deliberate tells the 5xx answers that say nothing of the server's health:
// the content repository's 504 M_NOT_YET_UPLOADED (the media is still
// being uploaded there) and 502 M_TOO_LARGE (it will not proxy a large
// file). Spec: content_repository.yaml.
func deliberate(e *RemoteError) bool {
	return e.ErrCode == "M_NOT_YET_UPLOADED" || e.ErrCode == "M_TOO_LARGE"
}

// builtRequest is a signed request, ready for any target.
type builtRequest struct {
	method, uri string
	body        []byte // nil: no body
	header      http.Header
}

// build encodes the body and signs the request.
// Spec: server-server-api.md, "Request Authentication".
func (c *Client) build(req Request) (builtRequest, error) {
	b := builtRequest{method: strings.ToUpper(req.Method), uri: req.Path, header: http.Header{}}
	if len(req.Query) > 0 {
		b.uri += "?" + req.Query.Encode()
	}
	switch body := req.Body.(type) {
	case nil:
	case json.RawMessage:
		b.body = body
	case []byte:
		b.body = body
	default:
		data, err := json.Marshal(body)
		if err != nil {
			return b, fmt.Errorf("federation: encoding the request body: %w", err)
		}
		b.body = data
	}
	if b.body != nil {
		if !json.Valid(b.body) {
			return b, errors.New("federation: the request body is not JSON")
		}
		b.header.Set("Content-Type", "application/json")
	}
	b.header.Set("Accept", cmp.Or(req.Accept, "application/json"))
	b.header.Set("User-Agent", "Chappe")
	if c.spreader.lists != nil {
		if serial := c.spreader.lists.Serial(); serial > 0 {
			b.header.Set(SerialHeader, strconv.FormatInt(serial, 10))
		}
	}
	if !req.Unsigned {
		auth, err := signRequest(c.key, b.method, b.uri, c.cfg.ServerName, req.Destination, b.body)
		if err != nil {
			return b, fmt.Errorf("federation: signing the request: %w", err)
		}
		b.header.Set("Authorization", auth)
	}
	return b, nil
}

// send tries the targets in order until one answers.
func (c *Client) send(ctx context.Context, dest string, targets []target, b builtRequest) (*http.Response, error) {
	var errs []error
	for _, t := range targets {
		hreq, err := b.httpRequest(ctx, t)
		if err != nil {
			return nil, err
		}
		resp, err := c.httpClient(t).Do(hreq)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, &ConnectError{Destination: dest, Err: errors.Join(errs...)}
}

// httpRequest is the request for target t: its address in the URL, its
// Host header.
func (b builtRequest) httpRequest(ctx context.Context, t target) (*http.Request, error) {
	u, err := url.Parse("https://" + t.addr + b.uri)
	if err != nil {
		return nil, fmt.Errorf("federation: bad request target %q: %w", b.uri, err)
	}
	if u.RequestURI() != b.uri {
		return nil, fmt.Errorf("federation: the request target %q does not survive URL encoding (got %q)", b.uri, u.RequestURI())
	}
	var body io.Reader
	if b.body != nil {
		body = bytes.NewReader(b.body)
	}
	hreq, err := http.NewRequestWithContext(ctx, b.method, u.String(), body)
	if err != nil {
		return nil, err
	}
	hreq.URL = u
	hreq.Header = b.header.Clone()
	hreq.Host = t.host
	return hreq, nil
}

// httpClient is the connection pool of target t: it dials t.addr whatever
// the URL says, and verifies the certificate for t.tlsName against the
// system's roots and ca_file. Redirects are not followed.
func (c *Client) httpClient(t target) *http.Client {
	c.transportsMu.Lock()
	defer c.transportsMu.Unlock()
	if hc, ok := c.transports.Get(t); ok {
		return hc
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return c.dial(ctx, network, t.addr)
		},
		TLSClientConfig:       &tls.Config{ServerName: t.tlsName, RootCAs: c.roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: c.cfg.RequestTimeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   8,
	}
	hc := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	c.transports.Add(t, hc)
	return hc
}

// readResponse reads at most limit bytes of the answer: a 2xx is decoded
// into out, anything else becomes a *RemoteError.
func readResponse(dest string, resp *http.Response, limit int64, out any) error {
	defer resp.Body.Close()
	if err := checkStatus(dest, resp); err != nil {
		return err
	}
	return decodeJSON(dest, capBody(dest, resp.Body, limit), out)
}

// maxErrorBody bounds what is read of a non-2xx answer, for its Matrix error.
const maxErrorBody = 64 << 10

// checkStatus is nil for a 2xx answer, else the *RemoteError it makes,
// with the Matrix error of its body when it has one.
func checkStatus(dest string, resp *http.Response) error {
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return nil
	}
	e := &RemoteError{Destination: dest, Status: resp.StatusCode}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var mx struct {
		ErrCode string `json:"errcode"`
		Error   string `json:"error"`
	}
	if json.Unmarshal(body, &mx) == nil {
		e.ErrCode, e.Message = mx.ErrCode, mx.Error
	}
	return e
}

// decodeJSON reads the whole (capped) body into out; out nil: the body is
// read and dropped.
func decodeJSON(dest string, body io.Reader, out any) error {
	data, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("federation: the answer of %s is not the expected JSON: %w", dest, err)
	}
	return nil
}

// cappedBody is an answer body that fails with ErrResponseTooLarge beyond
// its limit, and turns read failures into *ConnectError.
type cappedBody struct {
	dest  string
	r     io.ReadCloser
	limit int64
	left  int64 // bytes still allowed
}

// capBody caps body at limit bytes (0: DefaultMaxResponseBytes).
func capBody(dest string, body io.ReadCloser, limit int64) io.ReadCloser {
	if limit <= 0 {
		limit = DefaultMaxResponseBytes
	}
	return &cappedBody{dest: dest, r: body, limit: limit, left: limit}
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One more byte tells a body of exactly the limit from a larger one.
		var one [1]byte
		if n, _ := io.ReadFull(b.r, one[:]); n > 0 {
			return 0, fmt.Errorf("federation: the answer of %s is larger than %d bytes: %w", b.dest, b.limit, ErrResponseTooLarge)
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if err != nil && err != io.EOF {
		err = &ConnectError{Destination: b.dest, Err: fmt.Errorf("reading the answer: %w", err)}
	}
	return n, err
}

func (b *cappedBody) Close() error { return b.r.Close() }

// pinnedEndpoint is the endpoint the allowlist pins for server, "" if none.
func (c *Client) pinnedEndpoint(server string) string {
	srv, _ := c.gate.Pinned(server)
	return srv.Endpoint
}

// maxWellKnownRedirects bounds the redirects followed for .well-known.
const maxWellKnownRedirects = 5

// fetchWellKnown gets https://hostname/.well-known/matrix/server through
// the same transport as every request (TLS verified for hostname),
// unsigned, following https redirects without loops.
// Spec: server-server-api.md, "Resolving server names", step 3, and
// GET /.well-known/matrix/server.
func (c *Client) fetchWellKnown(ctx context.Context, hostname string) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	u := &url.URL{Scheme: "https", Host: hostname, Path: "/.well-known/matrix/server"}
	seen := map[string]bool{}
	for range maxWellKnownRedirects + 1 {
		if seen[u.String()] {
			return "", 0, fmt.Errorf("redirect loop at %s", u)
		}
		seen[u.String()] = true
		resp, err := c.getDirect(ctx, u)
		if err != nil {
			return "", 0, err
		}
		if loc := resp.Header.Get("Location"); resp.StatusCode >= 300 && resp.StatusCode < 400 && loc != "" {
			resp.Body.Close()
			next, err := u.Parse(loc)
			if err != nil || next.Scheme != "https" {
				return "", 0, fmt.Errorf("refusing the redirect to %q: .well-known is fetched over HTTPS only", loc)
			}
			u = next
			continue
		}
		maxAge := cacheMaxAge(resp.Header.Get("Cache-Control"))
		var raw json.RawMessage
		if err := readResponse(hostname, resp, maxWellKnownBytes, &raw); err != nil {
			return "", 0, err
		}
		delegated, err := parseWellKnown(raw)
		return delegated, maxAge, err
	}
	return "", 0, errors.New("too many redirects")
}

// getDirect GETs u on its own host and port (443 by default), the
// certificate checked for that host: how .well-known is reached.
func (c *Client) getDirect(ctx context.Context, u *url.URL) (*http.Response, error) {
	port := u.Port()
	if port == "" {
		port = "443"
	}
	t := target{addr: net.JoinHostPort(u.Hostname(), port), tlsName: u.Hostname(), host: u.Host}
	b := builtRequest{method: http.MethodGet, uri: u.RequestURI(), header: http.Header{"Accept": {"application/json"}, "User-Agent": {"Chappe"}}}
	hreq, err := b.httpRequest(ctx, t)
	if err != nil {
		return nil, err
	}
	return c.httpClient(t).Do(hreq)
}
