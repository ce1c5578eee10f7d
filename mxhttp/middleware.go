package mxhttp

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"chappe/mxerr"
)

// WithRequestLog gives each request an id (sent back in X-Request-Id), puts a
// logger carrying it into the context, and writes one access-log line when the
// request ends. The line has the path without the query string: the deprecated
// access_token query parameter must never reach a log.
func WithRequestLog(base zerolog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			id := newRequestID()
			logger := base.With().Str("request_id", id).Logger()
			w.Header().Set("X-Request-Id", id)
			rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
			r = r.WithContext(logger.WithContext(r.Context()))
			next.ServeHTTP(rec, r)
			// The handler may have added fields (the user, once authenticated).
			l := zerolog.Ctx(r.Context())
			ev := l.Info()
			if rec.status >= 500 {
				ev = l.Warn()
			}
			ev.Str("method", r.Method).
				Str("path", r.URL.Path).
				Str("remote", ClientIP(r)).
				Int("status", rec.status).
				Int64("bytes", rec.bytes).
				Dur("duration", time.Since(start)).
				Msg("request")
		})
	}
}

// Recover turns a panic in a handler into a logged 500 M_UNKNOWN instead of a
// dropped connection.
func Recover(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				zerolog.Ctx(r.Context()).Error().Interface("panic", v).Bytes("stack", debug.Stack()).Msg("handler panicked")
				WriteJSON(w, http.StatusInternalServerError, mxerr.New(mxerr.Unknown, "Internal server error"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// CORS adds the headers the spec requires so browser clients (Element Web) can
// call the API, and answers preflight OPTIONS requests without authentication.
// Spec: client-server-api/_index.md, "Web Browser Clients".
func CORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
		h.Set("Access-Control-Expose-Headers", "X-Request-Id, Retry-After")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// NotFound answers an unknown endpoint: 404 M_UNRECOGNIZED.
func NotFound(w http.ResponseWriter, r *http.Request) {
	WriteJSON(w, http.StatusNotFound, mxerr.New(mxerr.Unrecognized, "Unrecognized request: %s %s", r.Method, r.URL.Path))
}

// MethodNotAllowed answers a known endpoint called with the wrong method:
// 405 M_UNRECOGNIZED.
func MethodNotAllowed(w http.ResponseWriter, r *http.Request) {
	e := mxerr.New(mxerr.Unrecognized, "Method %s is not allowed on %s", r.Method, r.URL.Path)
	e.HTTPStatus = http.StatusMethodNotAllowed
	WriteJSON(w, e.Status(), e)
}

// RealClientAddr rewrites RemoteAddr for requests that come through one of
// the trusted reverse proxies: the client is the right-most X-Forwarded-For
// entry that is not itself a trusted proxy (entries left of it could be
// forged by the client). From anyone else the header is ignored.
func RealClientAddr(trusted []netip.Prefix) func(http.Handler) http.Handler {
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a.Unmap()) {
				return true
			}
		}
		return false
	}
	return func(next http.Handler) http.Handler {
		if len(trusted) == 0 {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			peer, err := netip.ParseAddr(ClientIP(r))
			if err != nil || !isTrusted(peer) {
				next.ServeHTTP(w, r)
				return
			}
			var hops []string
			for _, h := range r.Header.Values("X-Forwarded-For") {
				hops = append(hops, strings.Split(h, ",")...)
			}
			for i := len(hops) - 1; i >= 0; i-- {
				a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
				if err != nil {
					break // a garbled hop: stop at the last address we can vouch for
				}
				peer = a
				if !isTrusted(a) {
					break
				}
			}
			r2 := r.Clone(r.Context())
			r2.RemoteAddr = netip.AddrPortFrom(peer, 0).String()
			next.ServeHTTP(w, r2)
		})
	}
}

// ClientIP is the remote address of the request without its port (after
// RealClientAddr has put the real client there, behind trusted proxies).
func ClientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.status = code
		s.wrote = true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wrote = true
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

// Flush lets long-polls and streamed downloads flush through the recorder.
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// RefuseUnstorableText refuses requests whose path or query holds a NUL
// character or invalid UTF-8: no Matrix identifier contains them, and
// PostgreSQL cannot store them, so they get 400 M_INVALID_PARAM up front.
func RefuseUnstorableText(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bad := !storable(r.URL.Path)
		for _, values := range r.URL.Query() {
			for _, v := range values {
				bad = bad || !storable(v)
			}
		}
		if bad {
			WriteError(w, r, mxerr.New(mxerr.InvalidParam, "The request path or query contains a NUL character or invalid UTF-8"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func storable(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }
