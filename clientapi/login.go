package clientapi

import (
	"net/http"

	"chappe/accounts"
	"chappe/mxerr"
	"chappe/mxhttp"
)

// loginFlows lists the login types. Spec: GET /_matrix/client/v3/login.
func (a *API) loginFlows(w http.ResponseWriter, r *http.Request) {
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"flows": []map[string]string{{"type": "m.login.password"}},
	})
}

type loginBody struct {
	Type                     string               `json:"type"`
	Identifier               *accounts.Identifier `json:"identifier"`
	User                     string               `json:"user"`
	Password                 *string              `json:"password"`
	DeviceID                 string               `json:"device_id"`
	InitialDeviceDisplayName *string              `json:"initial_device_display_name"`
	RefreshToken             bool                 `json:"refresh_token"`
}

type loginResponse struct {
	accounts.Tokens
	HomeServer string         `json:"home_server"`
	WellKnown  map[string]any `json:"well_known,omitempty"`
}

// loginPassword logs in with a password. Spec: POST /_matrix/client/v3/login.
func (a *API) loginPassword(w http.ResponseWriter, r *http.Request) {
	var body loginBody
	if err := a.decode(r, false, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	switch body.Type {
	case "":
		mxhttp.WriteError(w, r, mxerr.New(mxerr.BadJSON, "The login type is missing"))
		return
	case "m.login.password":
	default:
		mxhttp.WriteError(w, r, mxerr.New(mxerr.Unknown, "Unknown login type %q; this server offers m.login.password", body.Type))
		return
	}
	if body.Password == nil {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.BadJSON, "The password is missing"))
		return
	}
	tokens, err := a.accounts.Login(r.Context(), accounts.LoginRequest{
		Identifier: body.Identifier, LegacyUser: body.User, Password: *body.Password,
		DeviceID: body.DeviceID, DisplayName: body.InitialDeviceDisplayName, WantRefresh: body.RefreshToken,
	})
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	resp := loginResponse{Tokens: tokens, HomeServer: a.cfg.ServerName}
	if a.cfg.WellKnownClient != "" {
		resp.WellKnown = map[string]any{"m.homeserver": map[string]string{"base_url": a.cfg.WellKnownClient}}
	}
	mxhttp.WriteJSON(w, http.StatusOK, resp)
}

type refreshBody struct {
	RefreshToken *string `json:"refresh_token"`
}

// refresh trades a refresh token for new tokens. Spec: POST /_matrix/client/v3/refresh.
func (a *API) refresh(w http.ResponseWriter, r *http.Request) {
	var body refreshBody
	if err := a.decode(r, false, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if body.RefreshToken == nil || *body.RefreshToken == "" {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.BadJSON, "refresh_token is required"))
		return
	}
	tokens, err := a.accounts.Refresh(r.Context(), *body.RefreshToken)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, tokens)
}

// logout deletes the calling device. Spec: POST /_matrix/client/v3/logout.
func (a *API) logout(w http.ResponseWriter, r *http.Request) {
	if err := a.accounts.Logout(r.Context(), session(r)); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	a.devicesDeleted(r, session(r).UserID)
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}

// logoutAll deletes every device of the user. Spec: POST /_matrix/client/v3/logout/all.
func (a *API) logoutAll(w http.ResponseWriter, r *http.Request) {
	if err := a.accounts.LogoutAll(r.Context(), session(r)); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	a.devicesDeleted(r, session(r).UserID)
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}

// whoami says who the token belongs to. Spec: GET /_matrix/client/v3/account/whoami.
func (a *API) whoami(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"user_id": s.UserID, "device_id": s.DeviceID, "is_guest": false})
}
