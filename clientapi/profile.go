package clientapi

import (
	"encoding/json"
	"net/http"

	"chappe/mxerr"
	"chappe/mxhttp"
)

// profileOwner returns the {userId} of a profile route if it is a local user.
// Profiles of other servers come with federation (and its allowlist gate).
func (a *API) profileOwner(r *http.Request) (string, error) {
	userID := pathParam(r, "userId")
	if _, ok := a.accounts.LocalpartOf(userID); !ok {
		return "", mxerr.New(mxerr.NotFound, "Profile not found: %q is not a user of this server", userID)
	}
	return userID, nil
}

// getProfile returns a whole profile. Spec: GET /_matrix/client/v3/profile/{userId}.
func (a *API) getProfile(w http.ResponseWriter, r *http.Request) {
	userID, err := a.profileOwner(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	p, err := a.accounts.GetProfile(r.Context(), userID)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, p)
}

// getProfileField returns one field.
// Spec: GET /_matrix/client/v3/profile/{userId}/{keyName}.
func (a *API) getProfileField(w http.ResponseWriter, r *http.Request) {
	userID, err := a.profileOwner(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	key := pathParam(r, "keyName")
	v, err := a.accounts.GetProfileField(r.Context(), userID, key)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]json.RawMessage{key: v})
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
