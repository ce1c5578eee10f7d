package media

import (
	"mime"
	"net/http"
	"testing"
)

func TestDisposition(t *testing.T) {
	cases := []struct {
		contentType, name string
		wantKind          string
	}{
		{"image/png", "", "inline"},
		{"IMAGE/PNG", "photo.png", "inline"},
		{"text/plain; charset=utf-8", "notes.txt", "inline"},
		{"video/mp4", "film.mp4", "inline"},
		{"text/html", "page.html", "attachment"},
		{"text/html; charset=utf-8", "", "attachment"},
		{"image/svg+xml", "logo.svg", "attachment"},
		{"application/xhtml+xml", "x.xhtml", "attachment"},
		{"application/javascript", "a.js", "attachment"},
		{"application/pdf", "rapport.pdf", "attachment"},
		{"application/octet-stream", "blob", "attachment"},
		{"not a type", "x", "attachment"},
		{"", "", "attachment"},
	}
	for _, c := range cases {
		d := Disposition(c.contentType, c.name)
		kind, params, err := mime.ParseMediaType(d)
		if err != nil || kind != c.wantKind || params["filename"] != c.name {
			t.Errorf("Disposition(%q, %q) = %q: kind %q filename %q, want %q %q", c.contentType, c.name, d, kind, params["filename"], c.wantKind, c.name)
		}
	}
	// Names that need quoting or encoding come back intact, and cannot
	// inject a parameter or a header.
	for _, name := range []string{`quote".html`, "rapport d'activité.pdf", "a; filename=evil.html", "日本語.txt", `back\slash`} {
		d := Disposition("application/pdf", name)
		if _, params, err := mime.ParseMediaType(d); err != nil || params["filename"] != name {
			t.Errorf("Disposition with name %q = %q, which reads back as %q (%v)", name, d, params["filename"], err)
		}
	}
}

func TestSetHeaders(t *testing.T) {
	h := http.Header{}
	SetHeaders(h, &Content{ContentType: "text/html", SHA256: []byte{0xab, 0xcd}}, "page.html")
	want := map[string]string{
		"Content-Type":                 "text/html",
		"Content-Disposition":          `attachment; filename=page.html`,
		"X-Content-Type-Options":       "nosniff",
		"Cross-Origin-Resource-Policy": "cross-origin",
		"Content-Security-Policy":      ContentSecurityPolicy,
		"ETag":                         `"abcd"`,
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	h = http.Header{}
	SetHeaders(h, &Content{}, "")
	if h.Get("Content-Type") != "application/octet-stream" || h.Get("Content-Disposition") != "attachment" {
		t.Errorf("no type: %v", h)
	}
}
