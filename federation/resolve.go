package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"chappe/allowlist"
)

// target is where a request goes: the address dialled, the name the TLS
// certificate must be valid for (sent as SNI unless it is an IP address)
// and the Host header.
type target struct {
	addr    string
	tlsName string
	host    string
}

// defaultPort is the federation port when discovery finds no other.
const defaultPort = "8448"

// resolver turns a server name into targets.
// Spec: server-server-api.md, "Resolving server names".
type resolver struct {
	// pinned is the endpoint the allowlist pins for a server, "" if none.
	pinned func(server string) string
	// lookupSRV is net.Resolver.LookupSRV (tests inject their records).
	lookupSRV func(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
	// wellKnown is the m.server delegation of a hostname (cached), ok false
	// when there is none or it could not be had.
	wellKnown func(ctx context.Context, hostname string) (delegated string, ok bool)
}

// resolve finds the targets of serverName, to be tried in order.
//
// A server whose endpoint the allowlist pins is reached there, and nowhere
// else: no .well-known, no DNS SRV (so a hijacked DNS name cannot divert
// it), with the certificate still checked for the server name. Otherwise
// the spec's steps, in order: an IP literal; an explicit port; the
// .well-known delegation (and its own steps 3.1 to 3.5); SRV
// _matrix-fed._tcp then the deprecated _matrix._tcp; the name on port 8448.
func (r *resolver) resolve(ctx context.Context, serverName string) ([]target, error) {
	host, port, err := splitServerName(serverName)
	if err != nil {
		return nil, err
	}
	if ep := r.pinned(serverName); ep != "" {
		traceStep(ctx, "the allowlist pins the endpoint %s: no .well-known, no DNS SRV lookup", ep)
		return []target{{addr: ep, tlsName: certName(host), host: serverName}}, nil
	}
	// Step 1: an IP literal, with its port or 8448.
	if isIPLiteral(host) {
		traceStep(ctx, "step 1: %s is an IP address literal", host)
		return []target{{addr: joinHostPort(host, port), tlsName: certName(host), host: serverName}}, nil
	}
	// Step 2: a hostname with an explicit port.
	if port != "" {
		traceStep(ctx, "step 2: %s gives its port explicitly", serverName)
		return []target{{addr: serverName, tlsName: host, host: serverName}}, nil
	}
	// Step 3: the .well-known delegation.
	if delegated, ok := r.wellKnown(ctx, host); ok {
		traceStep(ctx, "step 3: https://%s/.well-known/matrix/server delegates to %s", host, delegated)
		return r.resolveDelegated(ctx, delegated)
	}
	// Steps 4 to 6: SRV records of the hostname, then the hostname itself.
	return r.srvOrDefault(ctx, host, host), nil
}

// resolveDelegated is step 3's sub-steps, for the delegated server name of
// a valid .well-known: the certificate and Host are the delegated name's.
func (r *resolver) resolveDelegated(ctx context.Context, delegated string) ([]target, error) {
	host, port, err := splitServerName(delegated)
	if err != nil {
		return nil, fmt.Errorf("the .well-known delegation: %w", err)
	}
	switch {
	case isIPLiteral(host): // 3.1
		traceStep(ctx, "step 3.1: the delegated name is an IP address literal")
		return []target{{addr: joinHostPort(host, port), tlsName: certName(host), host: delegated}}, nil
	case port != "": // 3.2
		traceStep(ctx, "step 3.2: the delegated name gives its port explicitly")
		return []target{{addr: delegated, tlsName: host, host: delegated}}, nil
	}
	return r.srvOrDefault(ctx, host, host), nil // 3.3 to 3.5
}

// srvOrDefault looks up _matrix-fed._tcp.hostname, then the deprecated
// _matrix._tcp.hostname, and falls back on hostname:8448. The certificate
// must be valid for hostname whatever the SRV target (which DNS, insecure,
// chose) and Host is hostHeader.
func (r *resolver) srvOrDefault(ctx context.Context, hostname, hostHeader string) []target {
	for _, service := range []string{"matrix-fed", "matrix"} {
		_, records, err := r.lookupSRV(ctx, service, "tcp", hostname)
		if err != nil {
			traceStep(ctx, "DNS SRV _%s._tcp.%s: none (%v)", service, hostname, err)
			continue
		}
		var out []target
		for _, rec := range records {
			t := strings.TrimSuffix(rec.Target, ".")
			if t == "" { // "." says the service is not offered
				continue
			}
			out = append(out, target{addr: net.JoinHostPort(t, strconv.Itoa(int(rec.Port))), tlsName: hostname, host: hostHeader})
		}
		if len(out) > 0 {
			traceStep(ctx, "DNS SRV _%s._tcp.%s: %s", service, hostname, describeTargets(out))
			return out
		}
		traceStep(ctx, "DNS SRV _%s._tcp.%s: no usable record", service, hostname)
	}
	traceStep(ctx, "no SRV record: %s on the default port %s", hostname, defaultPort)
	return []target{{addr: net.JoinHostPort(hostname, defaultPort), tlsName: hostname, host: hostHeader}}
}

// describeTargets lists targets for people: "a:1, b:2".
func describeTargets(ts []target) string {
	addrs := make([]string, len(ts))
	for i, t := range ts {
		addrs[i] = t.addr
	}
	return strings.Join(addrs, ", ")
}

// resolveTraceKey is the context key of a discovery trace (see Discover).
type resolveTraceKey struct{}

// withResolveTrace returns a context whose discovery steps are told to fn.
func withResolveTrace(ctx context.Context, fn func(step string)) context.Context {
	return context.WithValue(ctx, resolveTraceKey{}, fn)
}

// traceStep tells the context's trace, if any, about a discovery step.
// Without a trace it costs a context lookup and formats nothing.
func traceStep(ctx context.Context, format string, args ...any) {
	if fn, ok := ctx.Value(resolveTraceKey{}).(func(string)); ok {
		fn(fmt.Sprintf(format, args...))
	}
}

// splitServerName splits a server name (appendices.md, "Server Name") into
// its host, brackets kept for IPv6, and its port ("" when none).
func splitServerName(name string) (host, port string, err error) {
	if err := allowlist.ValidServerName(name); err != nil {
		return "", "", err
	}
	if strings.HasPrefix(name, "[") {
		end := strings.IndexByte(name, ']')
		host, rest := name[:end+1], name[end+1:]
		return host, strings.TrimPrefix(rest, ":"), nil
	}
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		return name[:i], name[i+1:], nil
	}
	return name, "", nil
}

// isIPLiteral: an IPv4 address or a bracketed IPv6 address.
func isIPLiteral(host string) bool {
	_, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil
}

// certName is the name a certificate is checked against: the host, without
// the brackets of an IPv6 literal.
func certName(host string) string { return strings.Trim(host, "[]") }

// joinHostPort is host:port, with 8448 when port is empty (host keeps its
// IPv6 brackets).
func joinHostPort(host, port string) string {
	if port == "" {
		port = defaultPort
	}
	return host + ":" + port
}

// The cache times of server-server-api.md, "Resolving server names", step 3.
const (
	wellKnownDefaultTTL = 24 * time.Hour
	wellKnownMaxTTL     = 48 * time.Hour
	wellKnownErrorTTL   = time.Hour
	wellKnownCacheSize  = 1024
	// maxWellKnownBytes caps a .well-known document.
	maxWellKnownBytes = 64 << 10
)

// wellKnownCache keeps the .well-known answers, good or bad, for the time
// the spec recommends, and fetches each hostname once however many
// requests want it at the same moment.
type wellKnownCache struct {
	// fetch gets the document: the delegated server name and how long the
	// answer may be kept (negative: the response said nothing).
	fetch func(ctx context.Context, hostname string) (delegated string, maxAge time.Duration, err error)
	now   func() time.Time
	cache *lru.Cache[string, wellKnownEntry]
	group singleflight.Group
}

type wellKnownEntry struct {
	delegated string // "" when there is no valid delegation
	expires   time.Time
	// why says why there is no delegation (for the trace).
	why string
}

func newWellKnownCache(fetch func(context.Context, string) (string, time.Duration, error), now func() time.Time) *wellKnownCache {
	cache, _ := lru.New[string, wellKnownEntry](wellKnownCacheSize)
	return &wellKnownCache{fetch: fetch, now: now, cache: cache}
}

// lookup is the delegation of hostname, from the cache or fetched.
func (w *wellKnownCache) lookup(ctx context.Context, hostname string) (string, bool) {
	if e, ok := w.cache.Get(hostname); ok && w.now().Before(e.expires) {
		traceWellKnown(ctx, hostname, e)
		return e.delegated, e.delegated != ""
	}
	v, _, _ := w.group.Do(hostname, func() (any, error) {
		delegated, maxAge, err := w.fetch(ctx, hostname)
		ttl := wellKnownTTL(maxAge, err)
		if err != nil && ctx.Err() != nil {
			ttl = 0 // our own cancellation says nothing about the server
		}
		e := wellKnownEntry{delegated: delegated, expires: w.now().Add(ttl)}
		if err != nil {
			e.delegated, e.why = "", err.Error()
		}
		if ttl > 0 {
			w.cache.Add(hostname, e)
		}
		return e, nil
	})
	e := v.(wellKnownEntry)
	traceWellKnown(ctx, hostname, e)
	return e.delegated, e.delegated != ""
}

// traceWellKnown tells the trace that hostname has no delegation, and why.
// (A delegation is traced by resolve, which then follows it.)
func traceWellKnown(ctx context.Context, hostname string, e wellKnownEntry) {
	if e.delegated == "" {
		traceStep(ctx, "step 3: no .well-known delegation at https://%s/.well-known/matrix/server (%s)", hostname, e.why)
	}
}

// wellKnownTTL is how long an answer is kept: an error an hour, a valid
// answer what its Cache-Control says (24 hours when it says nothing), never
// more than 48 hours.
func wellKnownTTL(maxAge time.Duration, err error) time.Duration {
	switch {
	case err != nil:
		return wellKnownErrorTTL
	case maxAge < 0:
		return wellKnownDefaultTTL
	}
	return min(maxAge, wellKnownMaxTTL)
}

// cacheMaxAge reads a Cache-Control header: max-age, 0 for no-store or
// no-cache, -1 when it says neither.
func cacheMaxAge(header string) time.Duration {
	for _, d := range strings.Split(header, ",") {
		d = strings.ToLower(strings.TrimSpace(d))
		switch {
		case d == "no-store", d == "no-cache":
			return 0
		case strings.HasPrefix(d, "max-age="):
			if n, err := strconv.ParseInt(strings.Trim(d[len("max-age="):], `"`), 10, 64); err == nil && n >= 0 {
				return time.Duration(min(n, int64(wellKnownMaxTTL/time.Second))) * time.Second
			}
		}
	}
	return -1
}

// parseWellKnown reads the body of /.well-known/matrix/server: a JSON
// object whose m.server is a valid server name.
func parseWellKnown(body []byte) (string, error) {
	var doc struct {
		Server *string `json:"m.server"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("the .well-known document is not a JSON object: %v", err)
	}
	if doc.Server == nil {
		return "", errors.New("the .well-known document has no m.server")
	}
	if err := allowlist.ValidServerName(*doc.Server); err != nil {
		return "", fmt.Errorf("the .well-known m.server is not a server name: %v", err)
	}
	return *doc.Server, nil
}
