package media

import (
	"net/url"
	"strconv"
	"time"

	"chappe/mxerr"
)

// The query parameters of the download and thumbnail endpoints, read the
// same way for our clients (client-server authed-content-repo.yaml) and for
// other servers (server-server content_repository.yaml).

// ParseWait reads timeout_ms: how long to wait for the content of an
// asynchronous upload. Absent: DefaultWait; capped at MaxWait.
func ParseWait(raw string) (time.Duration, error) {
	if raw == "" {
		return DefaultWait, nil
	}
	ms, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || ms < 0 {
		return 0, mxerr.New(mxerr.InvalidParam, "timeout_ms must be a number of milliseconds, not %q", raw)
	}
	return time.Duration(min(ms, MaxWait.Milliseconds())) * time.Millisecond, nil
}

// ParseThumbnailQuery reads width and height (required), method, animated
// and timeout_ms (ParseWait). Thumbnails are never animated, which the spec
// allows whatever animated asks for; it is only checked. The values
// themselves are checked by Thumbnail.
func ParseThumbnailQuery(q url.Values) (ThumbnailRequest, time.Duration, error) {
	var req ThumbnailRequest
	for _, p := range []struct {
		name string
		dst  *int
	}{{"width", &req.Width}, {"height", &req.Height}} {
		raw := q.Get(p.name)
		if raw == "" {
			return req, 0, mxerr.New(mxerr.MissingParam, "The %s query parameter is required", p.name)
		}
		n, err := strconv.Atoi(raw)
		if err != nil {
			return req, 0, mxerr.New(mxerr.InvalidParam, "%s must be a whole number of pixels, not %q", p.name, raw)
		}
		*p.dst = n
	}
	req.Method = q.Get("method")
	if anim := q.Get("animated"); anim != "" && anim != "true" && anim != "false" {
		return req, 0, mxerr.New(mxerr.InvalidParam, "animated must be true or false, not %q", anim)
	}
	wait, err := ParseWait(q.Get("timeout_ms"))
	return req, wait, err
}
