package clientapi

import (
	"context"
	"net/http"

	"chappe/allowlist"
	"chappe/mxerr"
	"chappe/mxhttp"
)

// AllowlistStatus is what the admin endpoint needs from the allowlist.
type AllowlistStatus interface {
	Status(ctx context.Context) (allowlist.Status, error)
}

// adminAllowlist answers GET /_chappe/admin/v1/allowlist, for server
// administrators only: the mode, whether federation is closed and why, the
// list in force (serial, federation, expiry, signers, servers), the latest
// refresh and its result, and the recent refusals and changes.
func (a *API) adminAllowlist(w http.ResponseWriter, r *http.Request) {
	if !session(r).IsAdmin {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.Forbidden, "Only server administrators may see the allowlist status"))
		return
	}
	if a.allowlist == nil {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.NotFound, "This server has no allowlist component"))
		return
	}
	st, err := a.allowlist.Status(r.Context())
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, st)
}
