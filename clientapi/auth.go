package clientapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/rs/zerolog"

	"chappe/accounts"
	"chappe/mxerr"
	"chappe/mxhttp"
)

type sessionKey struct{}

// session is the authenticated session of a request that went through authenticate.
func session(r *http.Request) accounts.Session {
	s, _ := r.Context().Value(sessionKey{}).(accounts.Session)
	return s
}

// accessToken extracts the token from "Authorization: Bearer" or, as the spec
// still allows, the deprecated access_token query parameter.
// Spec: client-server-api/_index.md, "Using access tokens".
func accessToken(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
			return "", mxerr.New(mxerr.MissingToken, "The Authorization header must be 'Bearer <access token>'")
		}
		return strings.TrimSpace(token), nil
	}
	if t := r.URL.Query().Get("access_token"); t != "" {
		return t, nil
	}
	return "", mxerr.New(mxerr.MissingToken, "Missing access token")
}

// authenticate lets only requests with a valid access token through, with
// their session in the context and the user in the request's log line.
func (a *API) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, err := accessToken(r)
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		sess, err := a.accounts.Authenticate(r.Context(), token, mxhttp.ClientIP(r))
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		// Name the user in every log line of this request, the access log included.
		zerolog.Ctx(r.Context()).UpdateContext(func(c zerolog.Context) zerolog.Context {
			return c.Str("user_id", sess.UserID).Str("device_id", sess.DeviceID)
		})
		ctx := context.WithValue(r.Context(), sessionKey{}, sess)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// authenticateIfToken is authenticate for endpoints the spec leaves open to
// anonymous clients: a request without a token passes as anonymous, one with
// a token must have a valid one.
func (a *API) authenticateIfToken(next http.Handler) http.Handler {
	withAuth := a.authenticate(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" && r.URL.Query().Get("access_token") == "" {
			next.ServeHTTP(w, r)
			return
		}
		withAuth.ServeHTTP(w, r)
	})
}
