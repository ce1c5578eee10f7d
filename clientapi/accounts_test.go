package clientapi_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"chappe/app/apptest"
	"chappe/config"
)

const c = "/_matrix/client/v3"

func passwordAuth(localpart, password, session string) map[string]any {
	a := map[string]any{"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": localpart}, "password": password}
	if session != "" {
		a["session"] = session
	}
	return a
}

func TestRegistrationModes(t *testing.T) {
	t.Run("closed", func(t *testing.T) {
		srv := apptest.Start(t, func(c *config.Config) { c.Registration.Mode = config.RegistrationClosed })
		r := call(t, "POST", srv.URL+c+"/register", "", `{"username":"eve","password":"long-enough"}`)
		if r.Status != 403 || r.errcode() != "M_FORBIDDEN" {
			t.Fatalf("closed registration: %d %s", r.Status, r.Raw)
		}
		if !strings.Contains(r.Body["error"].(string), "closed") {
			t.Errorf("the message should say registration is closed: %s", r.Raw)
		}
	})
	t.Run("open: UIA with a session, generated user name, inhibit_login", func(t *testing.T) {
		srv := apptest.Start(t)
		r := call(t, "POST", srv.URL+c+"/register", "", `{"password":"long-enough"}`)
		if r.Status != 401 || r.Body["session"] == nil {
			t.Fatalf("first step must be 401 with a session: %d %s", r.Status, r.Raw)
		}
		flows := mustJSON(r.Body["flows"])
		if flows != `[{"stages":["m.login.dummy"]}]` {
			t.Fatalf("flows %s", flows)
		}
		r = call(t, "POST", srv.URL+c+"/register", "", mustJSON(map[string]any{
			"password": "long-enough", "inhibit_login": true,
			"auth": map[string]any{"type": "m.login.dummy", "session": r.Body["session"]},
		}))
		if r.Status != 200 {
			t.Fatalf("second step: %d %s", r.Status, r.Raw)
		}
		uid, _ := r.Body["user_id"].(string)
		if !strings.HasPrefix(uid, "@") || !strings.HasSuffix(uid, ":localhost") {
			t.Fatalf("generated user ID %q", uid)
		}
		if _, has := r.Body["access_token"]; has {
			t.Fatalf("inhibit_login must not log in: %s", r.Raw)
		}
		local := strings.TrimSuffix(strings.TrimPrefix(uid, "@"), ":localhost")
		if r := login(t, srv, local, "long-enough", nil); r.Status != 200 {
			t.Fatalf("generated account cannot log in: %d %s", r.Status, r.Raw)
		}
	})
	t.Run("token", func(t *testing.T) {
		srv := apptest.Start(t, func(c *config.Config) { c.Registration.Mode = config.RegistrationToken })
		one := 1
		if err := srv.Accounts.CreateRegistrationToken(context.Background(), "invite-42", &one, nil); err != nil {
			t.Fatal(err)
		}
		past := time.Now().Add(-time.Hour)
		if err := srv.Accounts.CreateRegistrationToken(context.Background(), "expired", nil, &past); err != nil {
			t.Fatal(err)
		}
		valid := func(tok string) any {
			return call(t, "GET", srv.URL+"/_matrix/client/v1/register/m.login.registration_token/validity?token="+tok, "", "").Body["valid"]
		}
		if valid("invite-42") != true || valid("expired") != false || valid("unknown") != false {
			t.Fatalf("validity: invite-42=%v expired=%v unknown=%v", valid("invite-42"), valid("expired"), valid("unknown"))
		}
		r := call(t, "POST", srv.URL+c+"/register", "", `{"username":"newcomer","password":"long-enough"}`)
		if r.Status != 401 || mustJSON(r.Body["flows"]) != `[{"stages":["m.login.registration_token"]}]` {
			t.Fatalf("token flow: %d %s", r.Status, r.Raw)
		}
		session := r.Body["session"]
		r = call(t, "POST", srv.URL+c+"/register", "", mustJSON(map[string]any{"username": "newcomer", "password": "long-enough",
			"auth": map[string]any{"type": "m.login.registration_token", "token": "expired", "session": session}}))
		if r.Status != 401 || r.errcode() != "M_FORBIDDEN" {
			t.Fatalf("expired token: %d %s", r.Status, r.Raw)
		}
		r = call(t, "POST", srv.URL+c+"/register", "", mustJSON(map[string]any{"username": "newcomer", "password": "long-enough",
			"auth": map[string]any{"type": "m.login.dummy", "session": session}}))
		if r.Status != 401 {
			t.Fatalf("dummy stage must not be accepted in token mode: %d %s", r.Status, r.Raw)
		}
		r = call(t, "POST", srv.URL+c+"/register", "", mustJSON(map[string]any{"username": "newcomer", "password": "long-enough",
			"auth": map[string]any{"type": "m.login.registration_token", "token": "invite-42", "session": session}}))
		if r.Status != 200 || r.Body["user_id"] != "@newcomer:localhost" {
			t.Fatalf("valid token: %d %s", r.Status, r.Raw)
		}
		if valid("invite-42") != false {
			t.Fatal("a one-use token is still valid after use")
		}
		r = call(t, "POST", srv.URL+c+"/register", "", mustJSON(map[string]any{"username": "second", "password": "long-enough",
			"auth": map[string]any{"type": "m.login.registration_token", "token": "invite-42"}}))
		if r.Status != 401 || r.errcode() != "M_FORBIDDEN" {
			t.Fatalf("used-up token: %d %s", r.Status, r.Raw)
		}
	})
}

func TestLoginVariants(t *testing.T) {
	srv := apptest.Start(t)
	register(t, srv, "dora", "dora-password")
	for name, body := range map[string]string{
		"legacy user field":  `{"type":"m.login.password","user":"dora","password":"dora-password"}`,
		"full user ID":       `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"@dora:localhost"},"password":"dora-password"}`,
		"upper-case name":    `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"DORA"},"password":"dora-password"}`,
		"with a device name": `{"type":"m.login.password","user":"dora","password":"dora-password","initial_device_display_name":"Poste de travail"}`,
	} {
		r := call(t, "POST", srv.URL+c+"/login", "", body)
		if r.Status != 200 || r.Body["user_id"] != "@dora:localhost" || r.Body["access_token"] == nil || r.Body["device_id"] == nil {
			t.Errorf("%s: %d %s", name, r.Status, r.Raw)
		}
	}
	r := call(t, "GET", srv.URL+c+"/login", "", "")
	if mustJSON(r.Body["flows"]) != `[{"type":"m.login.password"}]` {
		t.Errorf("login flows: %s", r.Raw)
	}
}

func TestLoginWithExistingDeviceRevokesItsOldToken(t *testing.T) {
	srv := apptest.Start(t)
	u := register(t, srv, "erin", "erin-password")
	r := login(t, srv, "erin", "erin-password", map[string]any{"device_id": u.DeviceID})
	if r.Status != 200 || r.Body["device_id"] != u.DeviceID {
		t.Fatalf("login on named device: %d %s", r.Status, r.Raw)
	}
	if r := call(t, "GET", srv.URL+c+"/account/whoami", u.Token, ""); r.errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("old token of the device still works: %d %s", r.Status, r.Raw)
	}
	who := call(t, "GET", srv.URL+c+"/account/whoami", r.Body["access_token"].(string), "")
	if who.Body["device_id"] != u.DeviceID || who.Body["user_id"] != u.ID || who.Body["is_guest"] != false {
		t.Fatalf("whoami: %s", who.Raw)
	}
	devices := call(t, "GET", srv.URL+c+"/devices", r.Body["access_token"].(string), "").Body["devices"].([]any)
	if len(devices) != 1 {
		t.Fatalf("re-using a device ID must not add a device: %v", devices)
	}
}

func TestAccessTokenInQueryParameter(t *testing.T) {
	srv := apptest.Start(t)
	u := register(t, srv, "fred", "fred-password")
	r := call(t, "GET", srv.URL+c+"/account/whoami?access_token="+u.Token, "", "")
	if r.Status != 200 || r.Body["user_id"] != u.ID {
		t.Fatalf("query-parameter token: %d %s", r.Status, r.Raw)
	}
}

func TestRefreshTokens(t *testing.T) {
	srv := apptest.Start(t)
	register(t, srv, "gina", "gina-password")
	r := login(t, srv, "gina", "gina-password", map[string]any{"refresh_token": true})
	oldAccess, _ := r.Body["access_token"].(string)
	oldRefresh, _ := r.Body["refresh_token"].(string)
	if oldRefresh == "" || r.Body["expires_in_ms"] == nil {
		t.Fatalf("login with refresh_token: %s", r.Raw)
	}
	r = call(t, "POST", srv.URL+c+"/refresh", "", mustJSON(map[string]string{"refresh_token": oldRefresh}))
	newAccess, _ := r.Body["access_token"].(string)
	newRefresh, _ := r.Body["refresh_token"].(string)
	if r.Status != 200 || newAccess == "" || newRefresh == "" || newAccess == oldAccess || newRefresh == oldRefresh {
		t.Fatalf("refresh: %d %s", r.Status, r.Raw)
	}
	// Until the new pair is used, the old refresh token still works (the
	// client may have lost the answer); repeating it gives yet another pair.
	retry := call(t, "POST", srv.URL+c+"/refresh", "", mustJSON(map[string]string{"refresh_token": oldRefresh}))
	if retry.Status != 200 {
		t.Fatalf("old refresh token refused before the new pair was used: %d %s", retry.Status, retry.Raw)
	}
	if r := call(t, "GET", srv.URL+c+"/account/whoami", newAccess, ""); r.Status != 200 {
		t.Fatalf("new access token: %d %s", r.Status, r.Raw)
	}
	if r := call(t, "POST", srv.URL+c+"/refresh", "", mustJSON(map[string]string{"refresh_token": oldRefresh})); r.errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("old refresh token must die once the new access token is used: %d %s", r.Status, r.Raw)
	}
	if r := call(t, "GET", srv.URL+c+"/account/whoami", oldAccess, ""); r.errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("old access token must die with its refresh token: %d %s", r.Status, r.Raw)
	}
	if r := call(t, "POST", srv.URL+c+"/refresh", "", mustJSON(map[string]string{"refresh_token": newRefresh})); r.Status != 200 {
		t.Fatalf("new refresh token: %d %s", r.Status, r.Raw)
	}
}

func TestDevicesAndUIA(t *testing.T) {
	srv := apptest.Start(t)
	u := register(t, srv, "hugo", "hugo-password")
	second := login(t, srv, "hugo", "hugo-password", map[string]any{"initial_device_display_name": "Téléphone"})
	secondID := second.Body["device_id"].(string)
	secondToken := second.Body["access_token"].(string)

	list := call(t, "GET", srv.URL+c+"/devices", u.Token, "")
	devices, _ := list.Body["devices"].([]any)
	if len(devices) != 2 {
		t.Fatalf("devices: %s", list.Raw)
	}
	d := call(t, "GET", srv.URL+c+"/devices/"+secondID, u.Token, "")
	if d.Body["display_name"] != "Téléphone" || d.Body["device_id"] != secondID {
		t.Fatalf("device: %s", d.Raw)
	}
	if r := call(t, "PUT", srv.URL+c+"/devices/"+secondID, u.Token, `{"display_name":"Ancien téléphone"}`); r.Status != 200 {
		t.Fatalf("rename: %d %s", r.Status, r.Raw)
	}
	if d := call(t, "GET", srv.URL+c+"/devices/"+secondID, u.Token, ""); d.Body["display_name"] != "Ancien téléphone" {
		t.Fatalf("renamed device: %s", d.Raw)
	}
	// last_seen is recorded from authenticated requests.
	if d := call(t, "GET", srv.URL+c+"/devices/"+u.DeviceID, u.Token, ""); d.Body["last_seen_ts"] == nil || d.Body["last_seen_ip"] != "127.0.0.1" {
		t.Fatalf("last seen not recorded: %s", d.Raw)
	}

	// UIA: the first call returns the flow and a session.
	r := call(t, "DELETE", srv.URL+c+"/devices/"+secondID, u.Token, "")
	session, _ := r.Body["session"].(string)
	if r.Status != 401 || session == "" || mustJSON(r.Body["flows"]) != `[{"stages":["m.login.password"]}]` {
		t.Fatalf("delete without auth: %d %s", r.Status, r.Raw)
	}
	// That session cannot be spent on another operation.
	r = call(t, "POST", srv.URL+c+"/account/deactivate", u.Token, mustJSON(map[string]any{"auth": passwordAuth("hugo", "hugo-password", session)}))
	if r.Status != 403 || r.errcode() != "M_FORBIDDEN" {
		t.Fatalf("session reused for deactivation: %d %s", r.Status, r.Raw)
	}
	if r := call(t, "GET", srv.URL+c+"/account/whoami", u.Token, ""); r.Status != 200 {
		t.Fatal("the account was deactivated with a session meant for a device deletion")
	}
	r = call(t, "DELETE", srv.URL+c+"/devices/"+secondID, u.Token, mustJSON(map[string]any{"auth": passwordAuth("hugo", "hugo-password", session)}))
	if r.Status != 200 {
		t.Fatalf("delete with auth: %d %s", r.Status, r.Raw)
	}
	if r := call(t, "GET", srv.URL+c+"/account/whoami", secondToken, ""); r.Status != 401 || r.errcode() != "M_UNKNOWN_TOKEN" || r.Body["soft_logout"] == true {
		t.Fatalf("deleted device's token still works or claims soft logout: %d %s", r.Status, r.Raw)
	}
	// A finished session cannot be replayed.
	third := login(t, srv, "hugo", "hugo-password", nil)
	thirdID := third.Body["device_id"].(string)
	r = call(t, "DELETE", srv.URL+c+"/devices/"+thirdID, u.Token, mustJSON(map[string]any{"auth": map[string]any{"session": session}}))
	if r.Status == 200 {
		t.Fatal("a completed UIA session was accepted again")
	}
	// delete_devices in one request, with the auth directly (no prior session).
	r = call(t, "POST", srv.URL+c+"/delete_devices", u.Token, mustJSON(map[string]any{"devices": []string{thirdID}, "auth": passwordAuth("hugo", "hugo-password", "")}))
	if r.Status != 200 {
		t.Fatalf("delete_devices: %d %s", r.Status, r.Raw)
	}
	if r := call(t, "GET", srv.URL+c+"/devices/"+thirdID, u.Token, ""); r.Status != 404 {
		t.Fatalf("device survived delete_devices: %d %s", r.Status, r.Raw)
	}
}

func TestLogout(t *testing.T) {
	srv := apptest.Start(t)
	u := register(t, srv, "ines", "ines-password")
	other := login(t, srv, "ines", "ines-password", nil).Body["access_token"].(string)
	if r := call(t, "POST", srv.URL+c+"/logout", u.Token, ""); r.Status != 200 {
		t.Fatalf("logout: %d %s", r.Status, r.Raw)
	}
	if r := call(t, "GET", srv.URL+c+"/account/whoami", u.Token, ""); r.errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("token alive after logout: %s", r.Raw)
	}
	if r := call(t, "GET", srv.URL+c+"/account/whoami", other, ""); r.Status != 200 {
		t.Fatalf("logout killed another device: %s", r.Raw)
	}
	third := login(t, srv, "ines", "ines-password", nil).Body["access_token"].(string)
	if r := call(t, "POST", srv.URL+c+"/logout/all", other, "{}"); r.Status != 200 {
		t.Fatalf("logout/all: %d %s", r.Status, r.Raw)
	}
	for _, tok := range []string{other, third} {
		if r := call(t, "GET", srv.URL+c+"/account/whoami", tok, ""); r.errcode() != "M_UNKNOWN_TOKEN" {
			t.Fatalf("token alive after logout/all: %s", r.Raw)
		}
	}
}

func TestChangePassword(t *testing.T) {
	srv := apptest.Start(t)
	u := register(t, srv, "jade", "jade-password")
	other := login(t, srv, "jade", "jade-password", nil).Body["access_token"].(string)
	r := call(t, "POST", srv.URL+c+"/account/password", u.Token, mustJSON(map[string]any{
		"new_password": "jade-new-password", "auth": passwordAuth("jade", "jade-password", ""),
	}))
	if r.Status != 200 {
		t.Fatalf("change password: %d %s", r.Status, r.Raw)
	}
	if r := login(t, srv, "jade", "jade-password", nil); r.Status != 403 {
		t.Fatalf("old password still works: %d", r.Status)
	}
	if r := login(t, srv, "jade", "jade-new-password", nil); r.Status != 200 {
		t.Fatalf("new password refused: %d %s", r.Status, r.Raw)
	}
	if r := call(t, "GET", srv.URL+c+"/account/whoami", u.Token, ""); r.Status != 200 {
		t.Fatalf("the requesting device must stay logged in: %s", r.Raw)
	}
	if r := call(t, "GET", srv.URL+c+"/account/whoami", other, ""); r.errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("other devices must be logged out by default: %s", r.Raw)
	}
}

func TestDeactivate(t *testing.T) {
	srv := apptest.Start(t)
	u := register(t, srv, "karl", "karl-password")
	call(t, "PUT", srv.URL+c+"/profile/"+u.ID+"/displayname", u.Token, `{"displayname":"Karl K."}`)
	watcher := register(t, srv, "lea", "lea-password")
	r := call(t, "POST", srv.URL+c+"/account/deactivate", u.Token, mustJSON(map[string]any{
		"erase": true, "auth": passwordAuth("karl", "karl-password", ""),
	}))
	if r.Status != 200 || r.Body["id_server_unbind_result"] != "no-support" {
		t.Fatalf("deactivate: %d %s", r.Status, r.Raw)
	}
	if r := call(t, "GET", srv.URL+c+"/account/whoami", u.Token, ""); r.errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("token alive after deactivation: %s", r.Raw)
	}
	if r := login(t, srv, "karl", "karl-password", nil); r.Status != 403 || r.errcode() != "M_USER_DEACTIVATED" {
		t.Fatalf("login after deactivation: %d %s", r.Status, r.Raw)
	}
	if r := call(t, "GET", srv.URL+c+"/register/available?username=karl", "", ""); r.errcode() != "M_USER_IN_USE" {
		t.Fatalf("a deactivated name must stay taken: %d %s", r.Status, r.Raw)
	}
	r = call(t, "POST", srv.URL+c+"/register", "", `{"username":"karl","password":"long-enough","auth":{"type":"m.login.dummy"}}`)
	if r.errcode() != "M_USER_IN_USE" {
		t.Fatalf("re-registering a deactivated name: %d %s", r.Status, r.Raw)
	}
	if r := call(t, "GET", srv.URL+c+"/profile/"+u.ID, watcher.Token, ""); r.Status != 200 || len(r.Body) != 0 {
		t.Fatalf("erase must empty the profile: %d %s", r.Status, r.Raw)
	}
}

func TestProfile(t *testing.T) {
	srv := apptest.Start(t)
	u := register(t, srv, "mona", "mona-password")
	viewer := register(t, srv, "nils", "nils-password")
	base := srv.URL + c + "/profile/" + u.ID
	for key, body := range map[string]string{
		"displayname":       `{"displayname":"Mona Lisa"}`,
		"avatar_url":        `{"avatar_url":"mxc://localhost/abcDEF123"}`,
		"m.tz":              `{"m.tz":"Europe/Paris"}`,
		"fr.gouv.ministere": `{"fr.gouv.ministere":{"nom":"Intérieur"}}`,
	} {
		if r := call(t, "PUT", base+"/"+key, u.Token, body); r.Status != 200 {
			t.Fatalf("PUT %s: %d %s", key, r.Status, r.Raw)
		}
	}
	r := call(t, "GET", base, viewer.Token, "")
	if r.Body["displayname"] != "Mona Lisa" || r.Body["avatar_url"] != "mxc://localhost/abcDEF123" || r.Body["m.tz"] != "Europe/Paris" {
		t.Fatalf("profile: %s", r.Raw)
	}
	if r := call(t, "GET", base+"/displayname", viewer.Token, ""); r.Raw != `{"displayname":"Mona Lisa"}` {
		t.Fatalf("one field: %s", r.Raw)
	}
	// URL-encoded user IDs, as clients send them.
	enc := srv.URL + c + "/profile/%40mona%3Alocalhost/displayname"
	if r := call(t, "GET", enc, viewer.Token, ""); r.Body["displayname"] != "Mona Lisa" {
		t.Fatalf("encoded user ID: %d %s", r.Status, r.Raw)
	}
	if r := call(t, "DELETE", base+"/fr.gouv.ministere", u.Token, ""); r.Status != 200 {
		t.Fatalf("DELETE field: %d %s", r.Status, r.Raw)
	}
	if r := call(t, "GET", base+"/fr.gouv.ministere", viewer.Token, ""); r.Status != 404 {
		t.Fatalf("deleted field still there: %s", r.Raw)
	}
	// The whole profile stays under 64 KiB.
	big := strings.Repeat("x", 40*1024)
	if r := call(t, "PUT", base+"/org.example.one", u.Token, mustJSON(map[string]string{"org.example.one": big})); r.Status != 200 {
		t.Fatalf("40 KiB field: %d %s", r.Status, r.Raw)
	}
	r = call(t, "PUT", base+"/org.example.two", u.Token, mustJSON(map[string]string{"org.example.two": big}))
	if r.Status != 400 || r.errcode() != "M_PROFILE_TOO_LARGE" {
		t.Fatalf("profile over 64 KiB: %d %s", r.Status, r.Raw)
	}
	if r := call(t, "GET", base+"/org.example.two", viewer.Token, ""); r.Status != 404 {
		t.Fatalf("refused field was stored: %d", r.Status)
	}
}

func TestDiscoveryAndCapabilities(t *testing.T) {
	plain := apptest.Start(t)
	for _, p := range []string{"/.well-known/matrix/client", "/.well-known/matrix/server"} {
		if r := call(t, "GET", plain.URL+p, "", ""); r.Status != 404 {
			t.Errorf("%s without configuration: %d %s", p, r.Status, r.Raw)
		}
	}
	srv := apptest.Start(t, func(cfg *config.Config) {
		cfg.WellKnown.ClientBaseURL = "https://matrix.interieur.gouv.fr"
		cfg.WellKnown.Server = "matrix.interieur.gouv.fr:443"
	})
	if r := call(t, "GET", srv.URL+"/.well-known/matrix/client", "", ""); mustJSON(r.Body) != `{"m.homeserver":{"base_url":"https://matrix.interieur.gouv.fr"}}` {
		t.Errorf("well-known client: %s", r.Raw)
	}
	if r := call(t, "GET", srv.URL+"/.well-known/matrix/server", "", ""); r.Body["m.server"] != "matrix.interieur.gouv.fr:443" {
		t.Errorf("well-known server: %s", r.Raw)
	}
	r := call(t, "GET", srv.URL+"/_matrix/client/versions", "", "")
	versions, _ := r.Body["versions"].([]any)
	if len(versions) == 0 || mustJSON(r.Body["unstable_features"]) != "{}" {
		t.Errorf("versions: %s", r.Raw)
	}
	u := register(t, srv, "olga", "olga-password")
	r = call(t, "GET", srv.URL+c+"/capabilities", u.Token, "")
	caps, _ := r.Body["capabilities"].(map[string]any)
	if mustJSON(caps["m.change_password"]) != `{"enabled":true}` || mustJSON(caps["m.3pid_changes"]) != `{"enabled":false}` {
		t.Errorf("capabilities: %s", r.Raw)
	}
	rv, _ := caps["m.room_versions"].(map[string]any)
	avail, _ := rv["available"].(map[string]any)
	if rv["default"] != "10" || avail["10"] != "stable" || avail["1"] != "stable" || avail["12"] != "stable" {
		t.Errorf("m.room_versions: %s", mustJSON(rv))
	}
	if r := call(t, "GET", srv.URL+c+"/capabilities", "", ""); r.Status != 401 {
		t.Errorf("capabilities need a token: %d", r.Status)
	}
}

func TestCORS(t *testing.T) {
	srv := apptest.Start(t)
	for _, p := range []string{c + "/account/whoami", c + "/login", "/anything"} {
		r := call(t, "OPTIONS", srv.URL+p, "", "")
		if r.Status != 200 || r.Header.Get("Access-Control-Allow-Origin") != "*" ||
			!strings.Contains(r.Header.Get("Access-Control-Allow-Headers"), "Authorization") ||
			!strings.Contains(r.Header.Get("Access-Control-Allow-Methods"), "PUT") {
			t.Errorf("OPTIONS %s: %d %v", p, r.Status, r.Header)
		}
	}
	if r := call(t, "GET", srv.URL+"/_matrix/client/versions", "", ""); r.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("CORS header missing on GET")
	}
}

func TestRateLimit(t *testing.T) {
	srv := apptest.Start(t, func(cfg *config.Config) {
		cfg.RateLimit.Enabled = true
		cfg.RateLimit.LoginPerSecond = 0.01
		cfg.RateLimit.LoginBurst = 3
		cfg.RateLimit.PerSecond = 0.01
		cfg.RateLimit.Burst = 5
	})
	var last response
	for i := 0; i < 4; i++ {
		last = login(t, srv, "nobody", "whatever-pass", nil)
	}
	if last.Status != 429 || last.errcode() != "M_LIMIT_EXCEEDED" {
		t.Fatalf("4th login of a burst of 3: %d %s", last.Status, last.Raw)
	}
	if ms, _ := last.Body["retry_after_ms"].(float64); ms <= 0 {
		t.Fatalf("retry_after_ms missing: %s", last.Raw)
	}
	if last.Header.Get("Retry-After") == "" {
		t.Fatal("Retry-After header missing")
	}
	// The general limiter is separate: /versions still answers.
	if r := call(t, "GET", srv.URL+"/_matrix/client/versions", "", ""); r.Status != 200 {
		t.Fatalf("versions limited by the login limiter: %d", r.Status)
	}
}

func TestRateLimitOff(t *testing.T) {
	srv := apptest.Start(t) // apptest turns rate limiting off
	for i := 0; i < 30; i++ {
		if r := login(t, srv, "nobody", "whatever-pass", nil); r.Status == 429 {
			t.Fatalf("rate limited with rate_limit.enabled=false at request %d", i)
		}
	}
}

func TestServerKey(t *testing.T) {
	srv := apptest.Start(t)
	r := call(t, "GET", srv.URL+"/_matrix/key/v2/server", "", "")
	if r.Body["server_name"] != "localhost" {
		t.Fatalf("key: %s", r.Raw)
	}
	until, _ := r.Body["valid_until_ts"].(float64)
	if time.UnixMilli(int64(until)).Before(time.Now().Add(time.Hour)) {
		t.Fatalf("valid_until_ts too early: %v", until)
	}
	keys, _ := r.Body["verify_keys"].(map[string]any)
	if len(keys) != 1 {
		t.Fatalf("verify_keys: %s", r.Raw)
	}
	for id, v := range keys {
		pub, err := base64.RawStdEncoding.DecodeString(v.(map[string]any)["key"].(string))
		if err != nil || len(pub) != ed25519.PublicKeySize {
			t.Fatalf("key %s is not an ed25519 key", id)
		}
		if err := gomatrixserverlib.VerifyJSON("localhost", gomatrixserverlib.KeyID(id), pub, []byte(r.Raw)); err != nil {
			t.Fatalf("self-signature does not verify: %v", err)
		}
		if string(srv.Key.ID) != id {
			t.Fatalf("served key %s, server has %s", id, srv.Key.ID)
		}
	}
	// The key is kept: a server restarted on the same data dir serves it again.
	tampered := strings.Replace(r.Raw, `"localhost"`, `"evil.example"`, 1)
	for id, v := range keys {
		pub, _ := base64.RawStdEncoding.DecodeString(v.(map[string]any)["key"].(string))
		if gomatrixserverlib.VerifyJSON("localhost", gomatrixserverlib.KeyID(id), pub, []byte(tampered)) == nil {
			t.Fatal("a tampered key document verified")
		}
	}
}
