package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"

	"chappe/allowlist"
	"chappe/mxerr"
	"chappe/mxhttp"
)

// maxProfileField bounds the field parameter, as profile keys are bounded
// (spec: PUT /_matrix/client/v3/profile/{userId}/{keyName}).
const maxProfileField = 255

// queryProfile answers GET /query/profile?user_id=…&field=…: the profile of
// one of our users, or only the field asked for.
// Spec: server-server-api.md, "Querying for information", GET /query/profile.
func (e *QueryEndpoints) queryProfile(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	userID, field := q.Get("user_id"), q.Get("field")
	if err := e.checkProfileQuery(userID, field, q.Has("field")); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	profile, err := e.accounts.GetProfile(r.Context(), userID)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if !q.Has("field") {
		mxhttp.WriteJSON(w, http.StatusOK, profile)
		return
	}
	v, ok := profile[field]
	if !ok {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.NotFound, "The profile of %s has no field %q", userID, field))
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]json.RawMessage{field: v})
}

// checkProfileQuery refuses a query we cannot answer: no user, a user of
// another server (the spec lets servers ask only the user's own server),
// an empty or oversized field.
func (e *QueryEndpoints) checkProfileQuery(userID, field string, hasField bool) error {
	switch {
	case userID == "":
		return mxerr.New(mxerr.MissingParam, "user_id is required")
	case serverOfUser(userID) == "":
		return mxerr.New(mxerr.InvalidParam, "user_id %q is not a user ID", userID)
	case hasField && field == "":
		return mxerr.New(mxerr.InvalidParam, "field must not be empty; leave it out for the whole profile")
	case len(field) > maxProfileField:
		return mxerr.New(mxerr.InvalidParam, "field is longer than %d bytes", maxProfileField)
	}
	if _, ok := e.accounts.LocalpartOf(userID); !ok {
		return mxerr.New(mxerr.InvalidParam, "%s is not a user of %s; ask its own server", userID, e.cfg.ServerName)
	}
	return nil
}

// Profile asks the server of userID (another server) for the user's
// profile, or only for field when it is not "". Fields the answer leaves
// unset (absent or null) are left out; a field asked for and unset is
// M_NOT_FOUND.
// Spec: server-server-api.md, GET /_matrix/federation/v1/query/profile,
// called for GET /_matrix/client/v3/profile/{userId}[/{keyName}].
func (q *RemoteQueries) Profile(ctx context.Context, userID, field string) (map[string]json.RawMessage, error) {
	server := serverOfUser(userID)
	if err := allowlist.ValidServerName(server); err != nil {
		return nil, mxerr.New(mxerr.InvalidParam, "%q is not a valid user ID: %v", userID, err)
	}
	query := url.Values{"user_id": {userID}}
	if field != "" {
		query.Set("field", field)
	}
	var profile map[string]json.RawMessage
	req := Request{Destination: server, Method: http.MethodGet, Path: "/_matrix/federation/v1/query/profile", Query: query, MaxResponseBytes: maxProfileAnswer}
	if err := q.c.Do(ctx, req, &profile); err != nil {
		return nil, MatrixError(server, err)
	}
	for k, v := range profile {
		if bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			delete(profile, k)
		}
	}
	if field == "" {
		if profile == nil {
			profile = map[string]json.RawMessage{}
		}
		return profile, nil
	}
	v, ok := profile[field]
	if !ok {
		return nil, mxerr.New(mxerr.NotFound, "The profile of %s has no field %q", userID, field)
	}
	return map[string]json.RawMessage{field: v}, nil
}
