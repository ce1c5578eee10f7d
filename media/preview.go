package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/charset"

	"chappe/mxerr"
)

// PreviewConfig configures /preview_url, which makes the server fetch
// arbitrary URLs: it is off unless enabled, and only reaches addresses the
// filter admits.
type PreviewConfig struct {
	Enabled bool
	// AllowedNetworks are let through even inside the built-in denied ranges.
	AllowedNetworks []netip.Prefix
	// DeniedNetworks are refused in addition to the built-in ranges.
	DeniedNetworks []netip.Prefix
	// MaxPageBytes is how much of a page is read.
	MaxPageBytes int64
	// Timeout bounds a whole preview, redirects included.
	Timeout time.Duration
}

// builtinDenied are the networks never fetched unless allowed explicitly:
// this machine, private and shared networks, link-local (cloud metadata),
// multicast, reserved and documentation ranges, and the IPv6 transition
// prefixes that embed an IPv4 address (NAT64, 6to4, Teredo), which could
// otherwise reach a private IPv4 address in disguise.
var builtinDenied = mustPrefixes(
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
	"192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
	"198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
	"::/128", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23",
	"2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// AddrFilter decides which IP addresses the preview fetcher may connect to.
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

// Previewer fetches pages for /preview_url and extracts their OpenGraph data.
type Previewer struct {
	cfg    PreviewConfig
	client *http.Client
}

// maxRedirects is how many redirects a preview follows.
const maxRedirects = 5

// NewPreviewer builds the fetcher: its own transport, never any proxy from the
// environment (which would make the address check meaningless), and the
// filter on every connection.
func NewPreviewer(cfg PreviewConfig) *Previewer {
	filter := NewAddrFilter(cfg.AllowedNetworks, cfg.DeniedNetworks)
	dialer := &net.Dialer{Timeout: cfg.Timeout, Control: filter.control}
	transport := &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  cfg.Timeout,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConns:           10,
		IdleConnTimeout:        30 * time.Second,
		ForceAttemptHTTP2:      true,
	}
	client := &http.Client{
		Transport: transport,
		Timeout:   cfg.Timeout,
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
	return &Previewer{cfg: cfg, client: client}
}

// maxPreviewValue caps each text value of a preview, in characters.
const maxPreviewValue = 1000

// Preview fetches rawURL and returns its OpenGraph properties.
// Spec: GET /_matrix/client/v1/media/preview_url. Images (og:image) are not
// fetched, so none is returned.
func (p *Previewer) Preview(ctx context.Context, rawURL string) (map[string]any, error) {
	if !p.cfg.Enabled {
		return nil, mxerr.New(mxerr.Forbidden, "URL previews are disabled on this server")
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return nil, mxerr.New(mxerr.InvalidParam, "url must be an absolute http or https URL")
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, mxerr.New(mxerr.InvalidParam, "url cannot be fetched: %v", err)
	}
	req.Header.Set("User-Agent", "Chappe URL preview (Matrix homeserver)")
	req.Header.Set("Accept", "text/html, application/xhtml+xml;q=0.9, */*;q=0.1")
	resp, err := p.client.Do(req)
	if err != nil {
		var blocked *BlockedAddrError
		if errors.As(err, &blocked) {
			return nil, mxerr.New(mxerr.Forbidden, "URL previews of %s are not allowed: it leads to %s, in a network this server does not fetch from", u.Hostname(), blocked.Addr)
		}
		return nil, badGateway("Could not fetch %s for a preview: %v", u.Redacted(), unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, badGateway("Could not fetch %s for a preview: it answered HTTP %d", u.Redacted(), resp.StatusCode)
	}
	out := map[string]any{}
	ct := resp.Header.Get("Content-Type")
	if mt, _, _ := mime.ParseMediaType(ct); mt != "text/html" && mt != "application/xhtml+xml" {
		return out, nil
	}
	body, err := charset.NewReader(io.LimitReader(resp.Body, p.cfg.MaxPageBytes), ct)
	if err != nil {
		return out, nil
	}
	return extractOpenGraph(body), nil
}

func badGateway(format string, args ...any) error {
	e := mxerr.New(mxerr.Unknown, format, args...)
	e.HTTPStatus = http.StatusBadGateway
	return e
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// extractOpenGraph reads the og:* meta properties of a page, with the title
// and the description meta as fallbacks. Image properties are left out: an
// og:image must be an mxc:// URI, and images are not fetched.
func extractOpenGraph(r io.Reader) map[string]any {
	out := map[string]any{}
	var title, description string
	z := html.NewTokenizer(r)
	inTitle := false
	for {
		switch z.Next() {
		case html.ErrorToken:
			if _, ok := out["og:title"]; !ok && title != "" {
				out["og:title"] = title
			}
			if _, ok := out["og:description"]; !ok && description != "" {
				out["og:description"] = description
			}
			return out
		case html.StartTagToken, html.SelfClosingTagToken:
			tok := z.Token()
			switch tok.Data {
			case "title":
				inTitle = title == ""
			case "meta":
				var prop, name, content string
				for _, a := range tok.Attr {
					switch strings.ToLower(a.Key) {
					case "property":
						prop = strings.ToLower(strings.TrimSpace(a.Val))
					case "name":
						name = strings.ToLower(strings.TrimSpace(a.Val))
					case "content":
						content = clip(strings.TrimSpace(a.Val))
					}
				}
				if prop == "" && strings.HasPrefix(name, "og:") {
					prop = name
				}
				if strings.HasPrefix(prop, "og:") && !strings.HasPrefix(prop, "og:image") && content != "" {
					if _, seen := out[prop]; !seen {
						out[prop] = content
					}
				}
				if name == "description" && description == "" {
					description = content
				}
			}
		case html.TextToken:
			if inTitle {
				title = clip(strings.Join(strings.Fields(string(z.Text())), " "))
			}
		case html.EndTagToken:
			inTitle = false
		}
	}
}

// clip shortens s to maxPreviewValue characters.
func clip(s string) string {
	if utf8.RuneCountInString(s) <= maxPreviewValue {
		return s
	}
	return string([]rune(s)[:maxPreviewValue]) + "…"
}

// Preview is the content repository's /preview_url.
func (s *Service) Preview(ctx context.Context, rawURL string) (map[string]any, error) {
	return s.preview.Preview(ctx, rawURL)
}
