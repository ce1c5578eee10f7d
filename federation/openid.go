package federation

import (
	"net/http"

	"chappe/mxerr"
	"chappe/mxhttp"
)

// openIDUserInfo answers GET /openid/userinfo?access_token=…: the user an
// OpenID token was issued to, for the third-party service the user handed
// it to. The caller is not a server of the federation and signs nothing,
// so the route is outside the X-Matrix group (ServerDeps.RegisterOpen):
// the token is the whole proof, it opens nothing else, and lives an hour.
// Spec: server-server-api.md, "OpenID".
func (e *QueryEndpoints) openIDUserInfo(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("access_token")
	if token == "" {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.MissingParam, "access_token is required"))
		return
	}
	userID, err := e.accounts.OpenIDUser(r.Context(), token)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"sub": userID})
}
