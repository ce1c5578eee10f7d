// Package netguard is how Chappe makes HTTP requests to addresses chosen by
// users (URL previews, push gateways): only to IP addresses a filter admits,
// checked on the address actually dialled, so neither DNS rebinding nor a
// redirect can reach this machine or a private network.
package netguard

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// builtinDenied are the networks never fetched unless allowed explicitly:
// this machine, private and shared networks, link-local (cloud metadata),
// multicast, reserved and documentation ranges, and the IPv6 transition
// prefixes that embed an IPv4 address (NAT64, 6to4, Teredo), which could
// otherwise reach a private IPv4 address in disguise.
var builtinDenied = MustPrefixes(
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
	"192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
	"198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
	"::/128", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23",
	"2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)

// MustPrefixes parses CIDR networks; for constants and tests.
func MustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// AddrFilter decides which IP addresses may be connected to.
// The most specific matching network decides; between networks of the same
// size, a configured denial beats a configured allowance, which beats the
// built-in denial. An address in no listed network is allowed.
type AddrFilter struct {
	rules []addrRule
}

type addrRule struct {
	prefix   netip.Prefix
	allow    bool
	priority int // among equally long prefixes, the highest wins
}

// NewAddrFilter builds the filter from the configured networks.
func NewAddrFilter(allowed, denied []netip.Prefix) *AddrFilter {
	f := &AddrFilter{}
	for _, p := range builtinDenied {
		f.rules = append(f.rules, addrRule{p.Masked(), false, 0})
	}
	for _, p := range allowed {
		f.rules = append(f.rules, addrRule{unmapPrefix(p), true, 1})
	}
	for _, p := range denied {
		f.rules = append(f.rules, addrRule{unmapPrefix(p), false, 2})
	}
	return f
}

// unmapPrefix turns ::ffff:a.b.c.d/n into a.b.c.d/(n-96), as addresses are
// unmapped before matching.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked()
	}
	return p.Masked()
}

// Allowed tells whether a connection to a may be made.
func (f *AddrFilter) Allowed(a netip.Addr) bool {
	a = a.WithZone("").Unmap()
	best, bestBits, bestPrio := true, -1, -1
	for _, r := range f.rules {
		if !r.prefix.Contains(a) {
			continue
		}
		if b := r.prefix.Bits(); b > bestBits || (b == bestBits && r.priority > bestPrio) {
			best, bestBits, bestPrio = r.allow, b, r.priority
		}
	}
	return best
}

// BlockedAddrError is the refusal to connect to an address the filter denies.
type BlockedAddrError struct{ Addr netip.Addr }

func (e *BlockedAddrError) Error() string {
	return fmt.Sprintf("connecting to %s is not allowed", e.Addr)
}

// control runs for each connection attempt with the address actually being
// dialled, after DNS resolution: checking it there, rather than the name
// before resolving, leaves no gap for a name that resolves differently the
// second time (DNS rebinding), and covers every redirect.
func (f *AddrFilter) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("unexpected dial address %q", address)
	}
	if !f.Allowed(ap.Addr()) {
		return &BlockedAddrError{Addr: ap.Addr().Unmap()}
	}
	return nil
}

// NewClient is an HTTP client that connects only where filter allows: its
// own transport (never a proxy from the environment, which would make the
// check meaningless), the filter on every connection, at most maxRedirects
// redirects and only to http(s).
func NewClient(filter *AddrFilter, timeout time.Duration, maxRedirects int) *http.Client {
	dialer := &net.Dialer{Timeout: timeout, Control: filter.control}
	transport := &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  timeout,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConns:           10,
		IdleConnTimeout:        30 * time.Second,
		ForceAttemptHTTP2:      true,
	}
	return &http.Client{
		Transport: transport,
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return fmt.Errorf("more than %d redirects", maxRedirects)
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to a %s: URL", req.URL.Scheme)
			}
			return nil
		},
	}
}
