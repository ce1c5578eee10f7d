package clientapi

import (
	"net/http"

	"chappe/accounts"
	"chappe/mxerr"
	"chappe/mxhttp"
)

type registerBody struct {
	Auth                     *accounts.AuthDict `json:"auth"`
	Username                 string             `json:"username"`
	Password                 string             `json:"password"`
	DeviceID                 string             `json:"device_id"`
	InitialDeviceDisplayName *string            `json:"initial_device_display_name"`
	InhibitLogin             bool               `json:"inhibit_login"`
	RefreshToken             bool               `json:"refresh_token"`
}

// register creates an account through user-interactive auth.
// Spec: POST /_matrix/client/v3/register.
func (a *API) register(w http.ResponseWriter, r *http.Request) {
	switch kind := r.URL.Query().Get("kind"); kind {
	case "", "user":
	case "guest":
		mxhttp.WriteError(w, r, mxerr.New(mxerr.GuestAccessForbidden, "Guest access is not allowed on this server"))
		return
	default:
		mxhttp.WriteError(w, r, mxerr.New(mxerr.InvalidParam, "kind must be user or guest, not %q", kind))
		return
	}
	var body registerBody
	if err := a.decode(r, false, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	flows, err := a.accounts.RegistrationFlows()
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	ctx := r.Context()
	// Check what can be checked before asking the client to authenticate.
	if body.Username != "" {
		if err := a.accounts.CheckAvailable(ctx, body.Username); err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
	}
	if body.Password != "" {
		if err := a.accounts.CheckPasswordStrength(body.Password); err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
	}
	done, err := a.accounts.Authorize(ctx, accounts.Operation{Name: "register", Flows: flows}, body.Auth)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	tokens, err := a.accounts.Register(ctx, accounts.RegisterRequest{
		Localpart:         body.Username,
		Password:          body.Password,
		DeviceID:          body.DeviceID,
		DeviceName:        body.InitialDeviceDisplayName,
		InhibitLogin:      body.InhibitLogin,
		WantRefresh:       body.RefreshToken,
		RegistrationToken: done.RegistrationToken,
	})
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if err := a.accounts.FinishUIA(ctx, done.SessionID); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, tokens)
}

// registerAvailable says whether a user name can be registered.
// Spec: GET /_matrix/client/v3/register/available.
func (a *API) registerAvailable(w http.ResponseWriter, r *http.Request) {
	username := r.URL.Query().Get("username")
	if username == "" {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.MissingParam, "The username query parameter is required"))
		return
	}
	if err := a.accounts.CheckAvailable(r.Context(), username); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]bool{"available": true})
}

// registrationTokenValidity says whether a registration token can be used.
// Spec: GET /_matrix/client/v1/register/m.login.registration_token/validity.
func (a *API) registrationTokenValidity(w http.ResponseWriter, r *http.Request) {
	if a.cfg.RegistrationMode != "token" {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.Forbidden, "Registration tokens are not used on this server"))
		return
	}
	token := r.URL.Query().Get("token")
	if token == "" {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.MissingParam, "The token query parameter is required"))
		return
	}
	valid, err := a.accounts.RegistrationTokenValid(r.Context(), token)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]bool{"valid": valid})
}

// sharedSecretNonce starts a shared-secret registration (Synapse admin API).
func (a *API) sharedSecretNonce(w http.ResponseWriter, r *http.Request) {
	if a.cfg.SharedSecret == "" {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.Forbidden, "Shared-secret registration is not enabled on this server"))
		return
	}
	nonce, err := a.accounts.NewSharedSecretNonce(r.Context())
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"nonce": nonce})
}

type sharedSecretBody struct {
	Nonce       *string `json:"nonce"`
	Username    *string `json:"username"`
	DisplayName string  `json:"displayname"`
	Password    *string `json:"password"`
	Admin       bool    `json:"admin"`
	UserType    string  `json:"user_type"`
	MAC         *string `json:"mac"`
}

// sharedSecretRegister creates an account authorised by an HMAC of the
// shared secret, the way Synapse's admin API does, for operators and test suites.
func (a *API) sharedSecretRegister(w http.ResponseWriter, r *http.Request) {
	if a.cfg.SharedSecret == "" {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.Forbidden, "Shared-secret registration is not enabled on this server"))
		return
	}
	var body sharedSecretBody
	if err := a.decode(r, false, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if body.Nonce == nil || body.Username == nil || body.Password == nil || body.MAC == nil {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.BadJSON, "nonce, username, password and mac are required"))
		return
	}
	tokens, err := a.accounts.RegisterWithSharedSecret(r.Context(), a.cfg.SharedSecret, accounts.SharedSecretRequest{
		Nonce: *body.Nonce, Username: *body.Username, DisplayName: body.DisplayName, Password: *body.Password,
		Admin: body.Admin, UserType: body.UserType, MAC: *body.MAC,
	})
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, tokens)
}
