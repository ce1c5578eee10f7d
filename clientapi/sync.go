package clientapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"chappe/mxerr"
	"chappe/mxhttp"
	"chappe/syncapi"
)

// Sync is what the client API needs from the sync component.
type Sync interface {
	Sync(ctx context.Context, req syncapi.Request) (*syncapi.Response, error)
	ResolveFilter(ctx context.Context, userID, param string) (syncapi.Filter, error)
	SaveFilter(ctx context.Context, userID string, raw []byte) (string, error)
	LoadFilter(ctx context.Context, userID, filterID string) (syncapi.Filter, error)
}

// maxSyncTimeout caps the long-poll; clients ask for 30 s.
const maxSyncTimeout = 5 * time.Minute

func (a *API) syncRoutes(r routeAdder) {
	const v3 = "/_matrix/client/v3"
	r.Get(v3+"/sync", handle(a.sync))
	r.Post(v3+"/user/{userId}/filter", a.postFilter)
	r.Get(v3+"/user/{userId}/filter/{filterId}", handle(a.getFilter))
}

var presenceStates = map[string]bool{"online": true, "offline": true, "unavailable": true}

// sync is GET /_matrix/client/v3/sync.
func (a *API) sync(r *http.Request) (any, error) {
	q := r.URL.Query()
	timeout, err := queryInt(r, "timeout", 0)
	if err != nil {
		return nil, err
	}
	if p := q.Get("set_presence"); p != "" && !presenceStates[p] {
		return nil, mxerr.New(mxerr.InvalidParam, "set_presence must be online, offline or unavailable")
	}
	fullState := false
	if v := q.Get("full_state"); v != "" {
		if fullState, err = strconv.ParseBool(v); err != nil {
			return nil, mxerr.New(mxerr.InvalidParam, "full_state must be true or false")
		}
	}
	s := session(r)
	filter, err := a.syncer.ResolveFilter(r.Context(), s.UserID, q.Get("filter"))
	if err != nil {
		return nil, err
	}
	wait := min(time.Duration(timeout)*time.Millisecond, maxSyncTimeout)
	return a.syncer.Sync(r.Context(), syncapi.Request{
		UserID: s.UserID, DeviceID: s.DeviceID, Since: q.Get("since"), Filter: filter,
		FullState: fullState, Timeout: wait, SetPresence: q.Get("set_presence"),
	})
}

// ownUser refuses requests about another user's filters.
func ownUser(r *http.Request) error {
	if pathParam(r, "userId") != session(r).UserID {
		return mxerr.New(mxerr.Forbidden, "You can only manage your own filters")
	}
	return nil
}

// postFilter stores a filter. Spec: POST /user/{userId}/filter.
func (a *API) postFilter(w http.ResponseWriter, r *http.Request) {
	if err := ownUser(r); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	body, err := mxhttp.ReadBody(r, a.cfg.MaxRequestBytes)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	id, err := a.syncer.SaveFilter(r.Context(), session(r).UserID, body)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"filter_id": id})
}

// getFilter returns a stored filter. Spec: GET /user/{userId}/filter/{filterId}.
func (a *API) getFilter(r *http.Request) (any, error) {
	if err := ownUser(r); err != nil {
		return nil, err
	}
	return a.syncer.LoadFilter(r.Context(), session(r).UserID, pathParam(r, "filterId"))
}
