package clientapi

import (
	"context"
	"encoding/json"
	"net/http"

	"chappe/mxerr"
	"chappe/mxhttp"
)

// getProfile returns a whole profile. Spec: GET /_matrix/client/v3/profile/{userId}.
func (a *API) getProfile(r *http.Request) (any, error) {
	return a.profile(r.Context(), pathParam(r, "userId"), "")
}

// getProfileField returns one field.
// Spec: GET /_matrix/client/v3/profile/{userId}/{keyName}.
func (a *API) getProfileField(r *http.Request) (any, error) {
	key := pathParam(r, "keyName")
	if key == "" {
		return nil, mxerr.New(mxerr.InvalidParam, "The profile key must not be empty")
	}
	return a.profile(r.Context(), pathParam(r, "userId"), key)
}

// profile is userID's whole profile (field "") or only one field of it: a
// local user's from the accounts component, another server's user's from
// that server over federation, which refuses a server outside the
// federation with M_FORBIDDEN.
func (a *API) profile(ctx context.Context, userID, field string) (map[string]json.RawMessage, error) {
	if _, local := a.accounts.LocalpartOf(userID); !local {
		return a.remote.Profile(ctx, userID, field)
	}
	if field == "" {
		return a.accounts.GetProfile(ctx, userID)
	}
	v, err := a.accounts.GetProfileField(ctx, userID, field)
	if err != nil {
		return nil, err
	}
	return map[string]json.RawMessage{field: v}, nil
}

// putProfileField sets one field of the caller's own profile.
// Spec: PUT /_matrix/client/v3/profile/{userId}/{keyName}.
func (a *API) putProfileField(w http.ResponseWriter, r *http.Request) {
	userID := pathParam(r, "userId")
	if userID != session(r).UserID {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.Forbidden, "You can only change your own profile"))
		return
	}
	var body map[string]json.RawMessage
	if err := a.decode(r, false, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	key := pathParam(r, "keyName")
	v, ok := body[key]
	if !ok {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.MissingParam, "The body must contain the field %q", key))
		return
	}
	if len(body) != 1 {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.BadJSON, "The body must contain exactly one field, %q", key))
		return
	}
	if err := a.accounts.SetProfileField(r.Context(), userID, key, v); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if key == "displayname" || key == "avatar_url" {
		// Spec: "Events on Change of Profile Information": new member events
		// in the joined rooms. The profile change itself has succeeded.
		_ = a.rooms.RefreshMemberProfile(r.Context(), userID)
	}
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}

// deleteProfileField removes one field of the caller's own profile.
// Spec: DELETE /_matrix/client/v3/profile/{userId}/{keyName}.
func (a *API) deleteProfileField(w http.ResponseWriter, r *http.Request) {
	userID := pathParam(r, "userId")
	if userID != session(r).UserID {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.Forbidden, "You can only change your own profile"))
		return
	}
	key := pathParam(r, "keyName")
	if err := a.accounts.DeleteProfileField(r.Context(), userID, key); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if key == "displayname" || key == "avatar_url" {
		_ = a.rooms.RefreshMemberProfile(r.Context(), userID)
	}
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}
