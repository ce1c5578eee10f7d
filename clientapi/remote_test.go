package clientapi_test

import (
	"context"
	"strings"
	"testing"

	"chappe/app/apptest"
	"chappe/config"
)

// Profiles and room directories of other servers go over federation, which
// refuses what the allowlist does not admit, saying why; with federation
// switched off they are refused too, saying so. Our own keep working.
func TestRemoteProfileAndDirectoryRefused(t *testing.T) {
	const c = "/_matrix/client/v3"
	for _, tc := range []struct {
		name      string
		configure func(*config.Config)
		wantMsg   string
	}{
		{"outside the federation", func(*config.Config) {}, "is outside the federation"},
		{"federation switched off", func(c *config.Config) { c.Federation.Enabled = false }, "federation is switched off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := apptest.Start(t, tc.configure)
			alice := register(t, srv, "alice", "alice-password")
			for _, req := range []struct{ method, path, token, body string }{
				{"GET", c + "/profile/@bob:elsewhere.gouv.fr", alice.Token, ""},
				{"GET", c + "/profile/@bob:elsewhere.gouv.fr/displayname", alice.Token, ""},
				{"GET", c + "/publicRooms?server=elsewhere.gouv.fr", "", ""},
				{"POST", c + "/publicRooms?server=elsewhere.gouv.fr", alice.Token, `{"limit":5}`},
			} {
				r := call(t, req.method, srv.URL+req.path, req.token, req.body)
				if msg := errMessage(r); r.Status != 403 || r.errcode() != "M_FORBIDDEN" || !strings.Contains(msg, "elsewhere.gouv.fr") || !strings.Contains(msg, tc.wantMsg) {
					t.Errorf("%s %s: %d %s, want 403 M_FORBIDDEN saying %q", req.method, req.path, r.Status, r.Raw, tc.wantMsg)
				}
			}
			// Our own server, named or not, is answered locally.
			if r := call(t, "GET", srv.URL+c+"/profile/"+alice.ID, alice.Token, ""); r.Status != 200 || r.Body["displayname"] != "alice" {
				t.Errorf("own profile: %d %s", r.Status, r.Raw)
			}
			if r := call(t, "GET", srv.URL+c+"/profile/"+alice.ID+"/displayname", alice.Token, ""); r.Status != 200 || r.Body["displayname"] != "alice" {
				t.Errorf("own display name: %d %s", r.Status, r.Raw)
			}
			for _, q := range []string{"", "?server=localhost"} {
				if r := call(t, "GET", srv.URL+c+"/publicRooms"+q, "", ""); r.Status != 200 || r.Body["chunk"] == nil {
					t.Errorf("own directory%s: %d %s", q, r.Status, r.Raw)
				}
			}
		})
	}
}

// An OpenID token names its user, and only for OpenID: it is no access
// token.
func TestOpenIDRequestToken(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "alice-password")
	url := srv.URL + "/_matrix/client/v3/user/" + alice.ID + "/openid/request_token"
	r := call(t, "POST", url, alice.Token, `{}`)
	if r.Status != 200 || r.Body["token_type"] != "Bearer" || r.Body["matrix_server_name"] != "localhost" || r.Body["expires_in"] != float64(3600) {
		t.Fatalf("request_token: %d %s", r.Status, r.Raw)
	}
	token, _ := r.Body["access_token"].(string)
	if user, err := srv.Accounts.OpenIDUser(context.Background(), token); err != nil || user != alice.ID {
		t.Fatalf("the token names %q (%v), want %s", user, err, alice.ID)
	}
	if r := call(t, "GET", srv.URL+"/_matrix/client/v3/account/whoami", token, ""); r.Status != 401 || r.errcode() != "M_UNKNOWN_TOKEN" {
		t.Errorf("the OpenID token as an access token: %d %s", r.Status, r.Raw)
	}
	if r := call(t, "POST", url, token, `{}`); r.Status != 401 || r.errcode() != "M_UNKNOWN_TOKEN" {
		t.Errorf("an OpenID token asking for another: %d %s", r.Status, r.Raw)
	}
	// An empty body is taken as the empty object; two tokens differ.
	r2 := call(t, "POST", url, alice.Token, "")
	if r2.Status != 200 || r2.Body["access_token"] == token {
		t.Errorf("second token: %d %s", r2.Status, r2.Raw)
	}
}
