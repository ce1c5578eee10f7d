package clientapi_test

import (
	"strings"
	"testing"

	"chappe/app/apptest"
	"chappe/config"
)

// TestBadInput is the table of wrong requests: each gets its Matrix error and
// changes nothing (checked after the table).
func TestBadInput(t *testing.T) {
	srv := apptest.Start(t, func(c *config.Config) { c.ClientAPI.MaxRequestBytes = 4096 })
	alice := register(t, srv, "alice", "alice-password")
	bob := register(t, srv, "bob", "bob-password")
	c := "/_matrix/client/v3"
	bigBody := `{"username":"` + strings.Repeat("x", 5000) + `"}`

	cases := []struct {
		name         string
		method, path string
		token        string
		body         string
		wantStatus   int
		wantErrcode  string
	}{
		{"unknown endpoint", "GET", "/_matrix/client/v3/nope", "", "", 404, "M_UNRECOGNIZED"},
		{"unknown top-level path", "GET", "/nowhere", "", "", 404, "M_UNRECOGNIZED"},
		{"wrong method", "PUT", c + "/login", "", "{}", 405, "M_UNRECOGNIZED"},
		{"wrong method on authed endpoint", "DELETE", c + "/account/whoami", alice.Token, "", 405, "M_UNRECOGNIZED"},
		{"not JSON", "POST", c + "/login", "", "{bad", 400, "M_NOT_JSON"},
		{"empty body", "POST", c + "/login", "", "", 400, "M_NOT_JSON"},
		{"JSON but not an object", "POST", c + "/login", "", "[1,2]", 400, "M_BAD_JSON"},
		{"JSON string", "POST", c + "/register", "", `"hello"`, 400, "M_BAD_JSON"},
		{"mistyped field", "POST", c + "/login", "", `{"type":"m.login.password","password":12}`, 400, "M_BAD_JSON"},
		{"mistyped nested field", "POST", c + "/login", "", `{"type":"m.login.password","identifier":"alice","password":"x"}`, 400, "M_BAD_JSON"},
		{"missing login type", "POST", c + "/login", "", `{"password":"x"}`, 400, "M_BAD_JSON"},
		{"missing password", "POST", c + "/login", "", `{"type":"m.login.password","user":"alice"}`, 400, "M_BAD_JSON"},
		{"unknown login type", "POST", c + "/login", "", `{"type":"m.login.carrier_pigeon"}`, 400, "M_UNKNOWN"},
		{"third-party identifier", "POST", c + "/login", "", `{"type":"m.login.password","identifier":{"type":"m.id.thirdparty","medium":"email","address":"a@b"},"password":"x"}`, 400, "M_UNKNOWN"},
		{"wrong password", "POST", c + "/login", "", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"nope"}`, 403, "M_FORBIDDEN"},
		{"unknown user", "POST", c + "/login", "", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"nobody"},"password":"nope-nope"}`, 403, "M_FORBIDDEN"},
		{"other server's user", "POST", c + "/login", "", `{"type":"m.login.password","user":"@alice:elsewhere.gouv.fr","password":"alice-password"}`, 403, "M_FORBIDDEN"},
		{"body too large", "POST", c + "/register", "", bigBody, 413, "M_TOO_LARGE"},
		{"guest registration", "POST", c + "/register?kind=guest", "", `{}`, 403, "M_GUEST_ACCESS_FORBIDDEN"},
		{"unknown registration kind", "POST", c + "/register?kind=robot", "", `{}`, 400, "M_INVALID_PARAM"},
		{"invalid user name", "POST", c + "/register", "", `{"username":"Bad Name","password":"long-enough"}`, 400, "M_INVALID_USERNAME"},
		{"user name taken", "POST", c + "/register", "", `{"username":"alice","password":"long-enough","auth":{"type":"m.login.dummy"}}`, 400, "M_USER_IN_USE"},
		{"weak password", "POST", c + "/register", "", `{"username":"carol","password":"short","auth":{"type":"m.login.dummy"}}`, 400, "M_WEAK_PASSWORD"},
		{"stage not offered", "POST", c + "/register", "", `{"username":"carol","password":"long-enough","auth":{"type":"m.login.password"}}`, 401, "M_UNKNOWN"},
		{"unknown UIA session", "POST", c + "/register", "", `{"username":"carol","password":"long-enough","auth":{"type":"m.login.dummy","session":"made-up"}}`, 400, "M_UNKNOWN"},
		{"availability of a taken name", "GET", c + "/register/available?username=alice", "", "", 400, "M_USER_IN_USE"},
		{"availability without a name", "GET", c + "/register/available", "", "", 400, "M_MISSING_PARAM"},
		{"availability of an invalid name", "GET", c + "/register/available?username=%C3%A9lise", "", "", 400, "M_INVALID_USERNAME"},
		{"token validity when tokens are off", "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=x", "", "", 403, "M_FORBIDDEN"},
		{"no access token", "GET", c + "/account/whoami", "", "", 401, "M_MISSING_TOKEN"},
		{"unknown access token", "GET", c + "/account/whoami", "chp_not-a-real-token", "", 401, "M_UNKNOWN_TOKEN"},
		{"refresh without token", "POST", c + "/refresh", "", `{}`, 400, "M_BAD_JSON"},
		{"refresh with unknown token", "POST", c + "/refresh", "", `{"refresh_token":"chr_nope"}`, 401, "M_UNKNOWN_TOKEN"},
		{"get unknown device", "GET", c + "/devices/NOSUCHDEV", alice.Token, "", 404, "M_NOT_FOUND"},
		{"rename unknown device", "PUT", c + "/devices/NOSUCHDEV", alice.Token, `{"display_name":"x"}`, 404, "M_NOT_FOUND"},
		{"rename another user's device", "PUT", c + "/devices/" + bob.DeviceID, alice.Token, `{"display_name":"mine now"}`, 404, "M_NOT_FOUND"},
		{"mistyped device name", "PUT", c + "/devices/" + alice.DeviceID, alice.Token, `{"display_name":5}`, 400, "M_BAD_JSON"},
		{"delete unknown device", "DELETE", c + "/devices/NOSUCHDEV", alice.Token, "", 404, "M_NOT_FOUND"},
		{"delete_devices without list", "POST", c + "/delete_devices", alice.Token, `{}`, 400, "M_BAD_JSON"},
		{"delete with wrong password", "POST", c + "/delete_devices", alice.Token, `{"devices":["` + alice.DeviceID + `"],"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"wrong"}}`, 401, "M_FORBIDDEN"},
		{"delete authenticating as someone else", "POST", c + "/delete_devices", alice.Token, `{"devices":["` + alice.DeviceID + `"],"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"bob"},"password":"bob-password"}}`, 401, "M_FORBIDDEN"},
		{"set another user's profile", "PUT", c + "/profile/" + bob.ID + "/displayname", alice.Token, `{"displayname":"Bob the impostor"}`, 403, "M_FORBIDDEN"},
		{"profile body without the field", "PUT", c + "/profile/" + alice.ID + "/displayname", alice.Token, `{}`, 400, "M_MISSING_PARAM"},
		{"profile body with extra fields", "PUT", c + "/profile/" + alice.ID + "/displayname", alice.Token, `{"displayname":"A","avatar_url":"mxc://a/b"}`, 400, "M_BAD_JSON"},
		{"mistyped display name", "PUT", c + "/profile/" + alice.ID + "/displayname", alice.Token, `{"displayname":5}`, 400, "M_BAD_JSON"},
		{"avatar that is not mxc", "PUT", c + "/profile/" + alice.ID + "/avatar_url", alice.Token, `{"avatar_url":"https://example.org/a.png"}`, 400, "M_INVALID_PARAM"},
		{"invalid profile key", "PUT", c + "/profile/" + alice.ID + "/NotNamespaced", alice.Token, `{"NotNamespaced":1}`, 400, "M_INVALID_PARAM"},
		{"profile key too long", "PUT", c + "/profile/" + alice.ID + "/org." + strings.Repeat("a", 300), alice.Token, `{"org.` + strings.Repeat("a", 300) + `":1}`, 400, "M_KEY_TOO_LARGE"},
		{"null profile value", "PUT", c + "/profile/" + alice.ID + "/org.example.x", alice.Token, `{"org.example.x":null}`, 400, "M_INVALID_PARAM"},
		{"profile of unknown user", "GET", c + "/profile/@nobody:localhost", alice.Token, "", 404, "M_NOT_FOUND"},
		{"missing profile field", "GET", c + "/profile/" + alice.ID + "/m.tz", alice.Token, "", 404, "M_NOT_FOUND"},
		{"profile of a user outside the federation", "GET", c + "/profile/@x:elsewhere.gouv.fr", alice.Token, "", 403, "M_FORBIDDEN"},
		{"profile of something that is not a user ID", "GET", c + "/profile/elsewhere.gouv.fr", alice.Token, "", 400, "M_INVALID_PARAM"},
		{"profile of a user with a bad server name", "GET", c + "/profile/@x:bad%20name", alice.Token, "", 400, "M_INVALID_PARAM"},
		{"OpenID token for someone else", "POST", c + "/user/" + bob.ID + "/openid/request_token", alice.Token, `{}`, 403, "M_FORBIDDEN"},
		{"OpenID token with a body that is not JSON", "POST", c + "/user/" + alice.ID + "/openid/request_token", alice.Token, `{`, 400, "M_NOT_JSON"},
		{"OpenID token without an access token", "POST", c + "/user/" + alice.ID + "/openid/request_token", "", `{}`, 401, "M_MISSING_TOKEN"},
		{"directory of a server outside the federation", "GET", c + "/publicRooms?server=elsewhere.gouv.fr", "", "", 403, "M_FORBIDDEN"},
		{"filtered directory of a server outside the federation", "POST", c + "/publicRooms?server=elsewhere.gouv.fr", alice.Token, `{"filter":{"generic_search_term":"x"}}`, 403, "M_FORBIDDEN"},
		{"directory of a bad server name", "GET", c + "/publicRooms?server=Bad_Name!", "", "", 400, "M_INVALID_PARAM"},
		{"directory with a negative limit", "POST", c + "/publicRooms", alice.Token, `{"limit":-1}`, 400, "M_INVALID_PARAM"},
		{"directory with a bad since token", "GET", c + "/publicRooms?since=nope", "", "", 400, "M_INVALID_PARAM"},
		{"password change without new password", "POST", c + "/account/password", alice.Token, `{}`, 400, "M_BAD_JSON"},
		{"password change to a weak password", "POST", c + "/account/password", alice.Token, `{"new_password":"abc"}`, 400, "M_WEAK_PASSWORD"},
		{"password change with wrong password", "POST", c + "/account/password", alice.Token, `{"new_password":"another-long-one","auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"wrong"}}`, 401, "M_FORBIDDEN"},
		{"deactivate with wrong password", "POST", c + "/account/deactivate", alice.Token, `{"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"wrong"}}`, 401, "M_FORBIDDEN"},
		{"deactivate with mistyped erase", "POST", c + "/account/deactivate", alice.Token, `{"erase":"yes"}`, 400, "M_BAD_JSON"},
		{"shared-secret register with bad MAC", "POST", "/_synapse/admin/v1/register", "", `{"nonce":"n","username":"mallory","password":"long-enough","mac":"00"}`, 403, "M_FORBIDDEN"},
		{"shared-secret register without fields", "POST", "/_synapse/admin/v1/register", "", `{"username":"mallory"}`, 400, "M_BAD_JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := call(t, tc.method, srv.URL+tc.path, tc.token, tc.body)
			if r.Status != tc.wantStatus || r.errcode() != tc.wantErrcode {
				t.Fatalf("got %d %s, want %d %s (body %s)", r.Status, r.errcode(), tc.wantStatus, tc.wantErrcode, r.Raw)
			}
			if msg, _ := r.Body["error"].(string); msg == "" {
				t.Errorf("error without a message: %s", r.Raw)
			}
			if r.Header.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type %q", r.Header.Get("Content-Type"))
			}
		})
	}

	// Nothing above changed anything.
	t.Run("nothing changed", func(t *testing.T) {
		for _, name := range []string{"carol", "mallory"} {
			if r := call(t, "GET", srv.URL+c+"/register/available?username="+name, "", ""); r.Status != 200 {
				t.Errorf("%s was created by a refused request: %d %s", name, r.Status, r.Raw)
			}
		}
		if r := login(t, srv, "alice", "alice-password", nil); r.Status != 200 {
			t.Errorf("alice's password changed: %d %s", r.Status, r.Raw)
		}
		if r := call(t, "GET", srv.URL+c+"/account/whoami", alice.Token, ""); r.Status != 200 {
			t.Errorf("alice's first device was deleted or deactivated: %d %s", r.Status, r.Raw)
		}
		r := call(t, "GET", srv.URL+c+"/profile/"+bob.ID, bob.Token, "")
		if r.Body["displayname"] != "bob" {
			t.Errorf("bob's profile changed: %s", r.Raw)
		}
		r = call(t, "GET", srv.URL+c+"/devices/"+bob.DeviceID, bob.Token, "")
		if _, named := r.Body["display_name"]; named {
			t.Errorf("bob's device got renamed: %s", r.Raw)
		}
		r = call(t, "GET", srv.URL+c+"/profile/"+alice.ID, alice.Token, "")
		if len(r.Body) != 1 || r.Body["displayname"] != "alice" {
			t.Errorf("alice's profile changed: %s", r.Raw)
		}
	})
}
