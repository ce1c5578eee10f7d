package clientapi

import (
	"net/http"

	"chappe/mxerr"
)

// requestOpenIDToken issues the caller an OpenID token, which a third-party
// service exchanges for the caller's user ID at our federation endpoint
// GET /_matrix/federation/v1/openid/userinfo. The body is an empty object.
// Spec: client-server-api/_index.md, "OpenID",
// POST /_matrix/client/v3/user/{userId}/openid/request_token.
func (a *API) requestOpenIDToken(r *http.Request, _ *struct{}) (any, error) {
	userID := pathParam(r, "userId")
	if userID != session(r).UserID {
		return nil, mxerr.New(mxerr.Forbidden, "You can only request OpenID tokens for yourself, not for %s", userID)
	}
	return a.accounts.RequestOpenIDToken(r.Context(), userID)
}
