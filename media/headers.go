package media

import (
	"encoding/hex"
	"mime"
	"net/http"
	"strings"
)

// inlineTypes are the only content types served inline; anything else is an
// attachment, so that a browser never renders an uploaded HTML page or SVG
// with scripts. Spec: content_repo.md, "Serving inline content".
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true,
	"application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true,
	"audio/wave": true, "audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// ContentSecurityPolicy is sent with every piece of media: the spec's
// recommended policy, which sandboxes the document and forbids scripts.
// Spec: content_repo.md, "Content repository".
const ContentSecurityPolicy = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"

// Disposition is the Content-Disposition for content of this type: inline
// only for the spec's safe types, attachment otherwise, with the file name
// (RFC 6266, non-ASCII names in the filename* form) when there is one.
func Disposition(contentType, fileName string) string {
	kind := "attachment"
	if mt, _, err := mime.ParseMediaType(contentType); err == nil && inlineTypes[strings.ToLower(mt)] {
		kind = "inline"
	}
	if fileName == "" {
		return kind
	}
	if d := mime.FormatMediaType(kind, map[string]string{"filename": fileName}); d != "" {
		return d
	}
	return kind
}

// SetHeaders sets the headers every piece of served media gets: its type, its
// disposition, a sandboxing CSP, no type sniffing, and the cross-origin
// policy that lets web clients use it.
func SetHeaders(h http.Header, c *Content, fileName string) {
	ct := c.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	h.Set("Content-Type", ct)
	h.Set("Content-Disposition", Disposition(ct, fileName))
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("Referrer-Policy", "no-referrer")
	// Private: the response needs an access token; a day, because quarantine
	// must take effect for everyone reasonably soon.
	h.Set("Cache-Control", "private, max-age=86400")
	h.Set("ETag", `"`+hex.EncodeToString(c.SHA256)+`"`)
}
