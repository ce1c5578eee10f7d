package media

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/charset"

	"chappe/mxerr"
	"chappe/netguard"
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
	filter := netguard.NewAddrFilter(cfg.AllowedNetworks, cfg.DeniedNetworks)
	return &Previewer{cfg: cfg, client: netguard.NewClient(filter, cfg.Timeout, maxRedirects)}
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
		var blocked *netguard.BlockedAddrError
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
