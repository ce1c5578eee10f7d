package clientapi

import (
	"net/http"

	"chappe/mxerr"
	"chappe/mxhttp"
	"chappe/roomserver"
)

// supportedVersions are the spec versions advertised by /versions. Each one
// is listed because the endpoints Chappe serves follow that version's rules
// for them (refresh tokens v1.3, registration tokens v1.2...). No unstable
// feature is advertised: a client must never be told of something that is not
// there. Spec: GET /_matrix/client/versions.
var supportedVersions = []string{
	"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12",
}

func (a *API) versions(w http.ResponseWriter, r *http.Request) {
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"versions":          supportedVersions,
		"unstable_features": map[string]bool{},
	})
}

// wellKnownClient serves /.well-known/matrix/client when a base URL is configured.
// Spec: client-server-api/_index.md, "Well-known URIs".
func (a *API) wellKnownClient(w http.ResponseWriter, r *http.Request) {
	if a.cfg.WellKnownClient == "" {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.NotFound, "No client discovery information is configured"))
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"m.homeserver": map[string]string{"base_url": a.cfg.WellKnownClient},
	})
}

// wellKnownServer serves /.well-known/matrix/server when delegation is configured.
// Spec: server-server-api.md, "Server discovery".
func (a *API) wellKnownServer(w http.ResponseWriter, r *http.Request) {
	if a.cfg.WellKnownServer == "" {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.NotFound, "No server delegation is configured"))
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"m.server": a.cfg.WellKnownServer})
}

// capabilities tells clients what they may do here.
// Spec: GET /_matrix/client/v3/capabilities.
func (a *API) capabilities(w http.ResponseWriter, r *http.Request) {
	enabled := map[string]bool{"enabled": true}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"capabilities": map[string]any{
			"m.change_password": enabled,
			"m.set_displayname": enabled,
			"m.set_avatar_url":  enabled,
			"m.profile_fields":  enabled,
			"m.3pid_changes":    map[string]bool{"enabled": false},
			"m.get_login_token": map[string]bool{"enabled": false},
			"m.room_versions":   a.roomVersions(),
		},
	})
}

// roomVersions is the m.room_versions capability: the default version and
// every version rooms can be created in, all stable.
// Spec: "m.room_versions capability".
func (a *API) roomVersions() map[string]any {
	available := map[string]string{}
	for _, v := range roomserver.SupportedVersions() {
		available[v] = "stable"
	}
	return map[string]any{"default": a.cfg.DefaultRoomVersion, "available": available}
}
