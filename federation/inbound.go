package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"chappe/allowlist"
	"chappe/mxerr"
	"chappe/mxhttp"
)

type originKey struct{}

// Origin is the server that sent the request, as the authentication
// middleware verified it; "" outside an authenticated federation route.
func Origin(ctx context.Context) string {
	s, _ := ctx.Value(originKey{}).(string)
	return s
}

// requestKeys finds the key that signed a request (*KeyRing).
type requestKeys interface {
	ServerKey(ctx context.Context, server, keyID string) (ed25519.PublicKey, error)
}

// serialNoter takes note of a peer's allowlist serial (*Client).
type serialNoter interface {
	NotePeerSerial(peer string, serial int64)
}

// authenticator is the middleware of every authenticated federation route.
type authenticator struct {
	serverName string
	gate       Gate
	keys       requestKeys
	peers      serialNoter
	maxBody    int64
}

// authenticate checks a federation request before its handler runs.
// Spec: server-server-api.md, "Request Authentication". In order:
//  1. the X-Matrix Authorization headers parse (else 401 M_UNAUTHORIZED);
//  2. the origin is in the federation (else 403 M_FORBIDDEN): this comes
//     before any body reading, signature work or key fetch, so a server
//     outside the list costs us nothing and learns nothing;
//  3. the destination, when given, is us (else 401);
//  4. the body fits in max_request_bytes (else 413 M_TOO_LARGE) and is
//     JSON (else 400 M_NOT_JSON);
//  5. one of the signatures verifies with the origin's key (else 401).
//
// The handler then finds the origin with Origin(r.Context()) and the body
// in r.Body as usual. The origin's allowlist serial header is noted.
func (a *authenticator) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auths, err := parseAuthorization(r.Header.Values("Authorization"))
		if err == nil {
			err = allowlist.ValidServerName(auths[0].Origin)
		}
		if err != nil {
			mxhttp.WriteError(w, r, mxerr.New(mxerr.Unauthorized, "Bad federation authentication: %v", err))
			return
		}
		origin := auths[0].Origin
		if err := a.gate.Check(origin); err != nil {
			zerolog.Ctx(r.Context()).Warn().Str("origin", origin).Msg("federation request from a server outside the federation refused")
			mxhttp.WriteError(w, r, mxerr.New(mxerr.Forbidden, "%s is outside the federation of this server: %v", origin, err))
			return
		}
		destination := auths[0].Destination
		if destination == "" {
			destination = a.serverName // what senders older than v1.3 signed
		}
		if destination != a.serverName {
			mxhttp.WriteError(w, r, mxerr.New(mxerr.Unauthorized, "This server is %s, not %s", a.serverName, destination))
			return
		}
		body, err := a.readBody(r)
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		if err := a.verify(r, auths, destination, body); err != nil {
			zerolog.Ctx(r.Context()).Warn().Str("origin", origin).Err(err).Msg("federation request signature refused")
			mxhttp.WriteError(w, r, mxerr.New(mxerr.Unauthorized, "The request signature of %s does not verify: %v", origin, err))
			return
		}
		if serial, ok := parseSerial(r.Header.Get(SerialHeader)); ok {
			a.peers.NotePeerSerial(origin, serial)
		}
		l := zerolog.Ctx(r.Context()).With().Str("origin", origin).Logger()
		ctx := context.WithValue(l.WithContext(r.Context()), originKey{}, origin)
		r = r.WithContext(ctx)
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	})
}

// limitBody is step 4 of authenticate alone, for the routes the spec does
// not authenticate: the body fits in max_request_bytes (else 413
// M_TOO_LARGE) and is JSON (else 400 M_NOT_JSON).
func (a *authenticator) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := a.readBody(r)
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	})
}

// readBody reads the body, capped, and checks it is JSON when not empty;
// nil when there is none.
func (a *authenticator) readBody(r *http.Request) ([]byte, error) {
	body, err := mxhttp.ReadBody(r, a.maxBody)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	if !utf8.Valid(body) || !json.Valid(body) {
		return nil, mxerr.New(mxerr.NotJSON, "The request body is not valid JSON in UTF-8")
	}
	return body, nil
}

// verify checks that one of the signatures is good.
func (a *authenticator) verify(r *http.Request, auths []xMatrix, destination string, body []byte) error {
	uri := r.RequestURI
	if uri == "" {
		uri = r.URL.RequestURI()
	}
	var errs []error
	for _, auth := range auths {
		pub, err := a.keys.ServerKey(r.Context(), auth.Origin, auth.Key)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := verifyRequestSignature(pub, auth, r.Method, uri, destination, body); err != nil {
			errs = append(errs, fmt.Errorf("key %s: %w", auth.Key, err))
			continue
		}
		return nil
	}
	return errors.Join(errs...)
}

// serialHeader adds our allowlist serial to every federation response.
func serialHeader(serial func() int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if n := serial(); n > 0 {
				w.Header().Set(SerialHeader, strconv.FormatInt(n, 10))
			}
			next.ServeHTTP(w, r)
		})
	}
}
