package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"chappe/app/apptest"
	"chappe/config"
)

// servePublicRooms lets the other servers list a server's room directory.
func servePublicRooms(c *config.Config) { c.Federation.ServePublicRooms = true }

// fedQueryServers starts hs1 (which serves its room directory to the
// federation), hs2 (which does not) and hs3, which is outside the
// federation, and publishes the list.
func fedQueryServers(t *testing.T) (fed *apptest.Federation, hs1, hs2, hs3 *apptest.FedServer) {
	t.Helper()
	fed = apptest.NewFederation(t)
	hs1 = fed.Start(t, "hs1.chappe.test", fastRetry, servePublicRooms)
	hs2 = fed.Start(t, "hs2.chappe.test", fastRetry)
	hs3 = fed.StartUnlisted(t, "hs3.chappe.test")
	fed.Publish(t)
	return fed, hs1, hs2, hs3
}

// Profiles and room directories of other servers, asked through one's own
// server: found on listed servers, refused for a server outside the
// federation without a single connection to it.
func TestFederationQueries(t *testing.T) {
	fed, hs1, hs2, hs3 := fedQueryServers(t)
	ctx := t.Context()
	alice := registerUser(t, hs1.URL, "alice")
	bob := registerUser(t, hs2.URL, "bob")
	carol := registerUser(t, hs3.URL, "carol")
	avatar := id.ContentURI{Homeserver: hs1.Name, FileID: "avatarofalice"}
	if err := alice.SetDisplayName(ctx, "Alice de hs1"); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetAvatarURL(ctx, avatar); err != nil {
		t.Fatal(err)
	}

	t.Run("profile of a user of another server", func(t *testing.T) {
		p, err := bob.GetProfile(ctx, alice.UserID)
		if err != nil || p.DisplayName != "Alice de hs1" || p.AvatarURL != avatar {
			t.Fatalf("bob reads alice's profile: %+v %v", p, err)
		}
		name, err := bob.GetDisplayName(ctx, alice.UserID)
		if err != nil || name.DisplayName != "Alice de hs1" {
			t.Fatalf("bob reads alice's display name: %+v %v", name, err)
		}
		got, err := bob.GetAvatarURL(ctx, alice.UserID)
		if err != nil || got != avatar {
			t.Fatalf("bob reads alice's avatar: %v %v", got, err)
		}
		var tz string
		wantMatrixError(t, "a field alice has not set", bob.GetProfileField(ctx, alice.UserID, "m.tz", &tz), http.StatusNotFound, "M_NOT_FOUND")
		_, err = bob.GetProfile(ctx, id.UserID("@nobody:"+hs1.Name))
		wantMatrixError(t, "profile of an unknown user of hs1", err, http.StatusNotFound, "M_NOT_FOUND")
		_, err = bob.GetDisplayName(ctx, id.UserID("@nobody:"+hs1.Name))
		wantMatrixError(t, "display name of an unknown user of hs1", err, http.StatusNotFound, "M_NOT_FOUND")
	})

	t.Run("room directory of another server", func(t *testing.T) {
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Annuaire de hs1", RoomAliasName: "annuaire"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Annuaire de hs2"}); err != nil {
			t.Fatal(err)
		}
		page, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: hs1.Name})
		if err != nil || len(page.Chunk) != 1 || page.Chunk[0].RoomID != room.RoomID || page.Chunk[0].Name != "Annuaire de hs1" ||
			page.Chunk[0].CanonicalAlias != id.RoomAlias("#annuaire:"+hs1.Name) || page.Chunk[0].NumJoinedMembers != 1 {
			t.Fatalf("hs1's directory seen from hs2: %+v %v", page, err)
		}
		// Filtered (POST), with and without a match.
		for search, want := range map[string]int{"annuaire": 1, "cantine": 0} {
			var filtered mautrix.RespPublicRooms
			_, err := bob.MakeRequest(ctx, http.MethodPost, directoryURL(bob, hs1.Name),
				map[string]any{"filter": map[string]any{"generic_search_term": search}}, &filtered)
			if err != nil || len(filtered.Chunk) != want {
				t.Errorf("hs1's directory searched for %q from hs2: %+v %v, want %d rooms", search, filtered, err, want)
			}
		}
		// hs2 keeps its directory to itself.
		_, err = alice.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: hs2.Name})
		wantMatrixError(t, "hs2's directory seen from hs1", err, http.StatusForbidden, "M_FORBIDDEN")
		if own, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{}); err != nil || len(own.Chunk) != 1 || own.Chunk[0].Name != "Annuaire de hs2" {
			t.Errorf("hs2's own directory: %+v %v", own, err)
		}
	})

	t.Run("server outside the federation", func(t *testing.T) {
		_, err := bob.GetProfile(ctx, carol.UserID)
		wantForbidden(t, "profile of a user of hs3", err)
		_, err = bob.GetDisplayName(ctx, carol.UserID)
		wantForbidden(t, "display name of a user of hs3", err)
		_, err = bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: hs3.Name})
		wantForbidden(t, "hs3's directory", err)
		_, err = bob.MakeRequest(ctx, http.MethodPost, directoryURL(bob, hs3.Name), map[string]any{"limit": 5}, nil)
		wantForbidden(t, "hs3's directory, filtered", err)
		// hs3 asking about hs1's users and rooms is refused by hs1.
		_, err = carol.GetProfile(ctx, alice.UserID)
		wantMatrixError(t, "hs3 asks hs1 for alice's profile", err, http.StatusForbidden, "M_FORBIDDEN")
		_, err = carol.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: hs1.Name})
		wantMatrixError(t, "hs3 asks hs1 for its directory", err, http.StatusForbidden, "M_FORBIDDEN")
		if n := hs3.FedAccepts(); n != 0 {
			t.Fatalf("the listed servers connected %d times to the unlisted server", n)
		}
	})

	t.Run("openid", func(t *testing.T) {
		tok, err := alice.RequestOpenIDToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if tok.TokenType != "Bearer" || tok.MatrixServerName != hs1.Name || tok.ExpiresIn != 3600 || tok.AccessToken == "" {
			t.Fatalf("token: %+v", tok)
		}
		// A third party (it need not be a homeserver) asks hs1 who the
		// bearer is, at the server name the token names.
		sub, status, code := openIDUserInfo(t, fed.CA, hs1, tok.AccessToken)
		if status != http.StatusOK || sub != string(alice.UserID) {
			t.Fatalf("userinfo: %d %s %q, want %s", status, code, sub, alice.UserID)
		}
		for name, bad := range map[string]string{"wrong token": "cho_made-up", "alice's access token": alice.AccessToken} {
			if _, status, code := openIDUserInfo(t, fed.CA, hs1, bad); status != http.StatusUnauthorized || code != "M_UNKNOWN_TOKEN" {
				t.Errorf("userinfo with the %s: %d %s, want 401 M_UNKNOWN_TOKEN", name, status, code)
			}
		}
		// The token is worth nothing on another server.
		if _, status, code := openIDUserInfo(t, fed.CA, hs2, tok.AccessToken); status != http.StatusUnauthorized || code != "M_UNKNOWN_TOKEN" {
			t.Errorf("alice's token on hs2: %d %s", status, code)
		}
	})
}

// directoryURL is /publicRooms?server=server on cli's server.
func directoryURL(cli *mautrix.Client, server string) string {
	return cli.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "publicRooms"}, map[string]string{"server": server})
}

// openIDUserInfo asks hs's federation listener, over TLS checked against
// the test CA, who an OpenID token names: the sub, or the status and
// errcode of the refusal.
func openIDUserInfo(t *testing.T, ca *apptest.TestCA, hs *apptest.FedServer, token string) (sub string, status int, errcode string) {
	t.Helper()
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, hs.FedAddr) // the test's DNS: the name is the listener
		},
		TLSClientConfig: &tls.Config{ServerName: hs.Name, RootCAs: ca.Pool, MinVersion: tls.VersionTLS12},
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + hs.Name + "/_matrix/federation/v1/openid/userinfo?access_token=" + url.QueryEscape(token))
	if err != nil {
		t.Fatalf("userinfo on %s: %v", hs.Name, err)
	}
	defer resp.Body.Close()
	var body struct {
		Sub     string `json:"sub"`
		ErrCode string `json:"errcode"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("userinfo on %s: the answer is not JSON: %v", hs.Name, err)
	}
	return body.Sub, resp.StatusCode, body.ErrCode
}
