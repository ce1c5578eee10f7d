package e2e

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/synapseadmin"

	"chappe/app/apptest"
)

// sharedSecret is the registration shared secret apptest configures.
const sharedSecret = "test-shared-secret"

// newClient is a mautrix client for base, authenticated when token is set.
func newClient(t *testing.T, base string, user id.UserID, token string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(base, user, token)
	if err != nil {
		t.Fatalf("mautrix.NewClient: %v", err)
	}
	cli.DefaultHTTPRetries = 0
	return cli
}

// wantMatrixError fails unless err is an HTTP error with this status and errcode.
func wantMatrixError(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want HTTP %d %s", what, status, code)
	}
	var he mautrix.HTTPError
	if !errors.As(err, &he) {
		t.Fatalf("%s: error %v is not an HTTP error, want HTTP %d %s", what, err, status, code)
	}
	got := 0
	if he.Response != nil {
		got = he.Response.StatusCode
	}
	gotCode := ""
	if he.RespError != nil {
		gotCode = he.RespError.ErrCode
	}
	if got != status || gotCode != code {
		t.Fatalf("%s: got HTTP %d %q, want HTTP %d %s (%v)", what, got, gotCode, status, code, err)
	}
}

// passwordAuth is the auth dict of the m.login.password stage, with the
// identifier form current clients send.
type passwordAuth struct {
	mautrix.BaseAuthData
	Identifier mautrix.UserIdentifier `json:"identifier"`
	Password   string                 `json:"password"`
}

func newPasswordAuth(session string, user id.UserID, password string) passwordAuth {
	return passwordAuth{
		BaseAuthData: mautrix.BaseAuthData{Type: mautrix.AuthTypePassword, Session: session},
		Identifier:   mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: string(user)},
		Password:     password,
	}
}

// startPasswordUIA sends a request without auth and checks that the server
// answers with a user-interactive auth challenge (401, no errcode) offering
// the single-stage password flow; it returns the session.
func startPasswordUIA(t *testing.T, cli *mautrix.Client, method, url string, body any) string {
	t.Helper()
	raw, err := cli.MakeRequest(t.Context(), method, url, body, nil)
	var he mautrix.HTTPError
	if !errors.As(err, &he) || !he.IsStatus(http.StatusUnauthorized) || he.RespError != nil {
		t.Fatalf("%s %s without auth: got %v, want a 401 UIA challenge without errcode", method, url, err)
	}
	var uia mautrix.RespUserInteractive
	if err := json.Unmarshal(raw, &uia); err != nil {
		t.Fatalf("UIA challenge %s: %v", raw, err)
	}
	if !uia.HasSingleStageFlow(mautrix.AuthTypePassword) {
		t.Fatalf("UIA challenge offers %+v, want the single-stage m.login.password flow", uia.Flows)
	}
	if uia.Session == "" {
		t.Fatalf("UIA challenge %s has no session", raw)
	}
	return uia.Session
}

// login logs user in on a new device with a display name.
func login(t *testing.T, base string, user, password, deviceName string, refresh bool) *mautrix.RespLogin {
	t.Helper()
	resp, err := newClient(t, base, "", "").Login(t.Context(), &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypePassword,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user},
		Password:                 password,
		InitialDeviceDisplayName: deviceName,
		RefreshToken:             refresh,
	})
	if err != nil {
		t.Fatalf("login as %s (%s): %v", user, deviceName, err)
	}
	if resp.AccessToken == "" || resp.DeviceID == "" {
		t.Fatalf("login as %s: no access token or device ID in %+v", user, resp)
	}
	return resp
}

// wantWhoami checks that cli's token belongs to user on device.
func wantWhoami(t *testing.T, what string, cli *mautrix.Client, user id.UserID, device id.DeviceID) {
	t.Helper()
	who, err := cli.Whoami(t.Context())
	if err != nil {
		t.Fatalf("%s: whoami: %v", what, err)
	}
	if who.UserID != user || who.DeviceID != device {
		t.Fatalf("%s: whoami says %s on %s, want %s on %s", what, who.UserID, who.DeviceID, user, device)
	}
}

// deviceNames maps device ID to display name for the client's user.
func deviceNames(t *testing.T, cli *mautrix.Client) map[id.DeviceID]string {
	t.Helper()
	resp, err := cli.GetDevicesInfo(t.Context())
	if err != nil {
		t.Fatalf("GET /devices: %v", err)
	}
	out := map[id.DeviceID]string{}
	for _, d := range resp.Devices {
		out[d.DeviceID] = d.DisplayName
	}
	if len(out) != len(resp.Devices) {
		t.Fatalf("GET /devices lists a device twice: %+v", resp.Devices)
	}
	return out
}

// TestAccountLifecycle walks one account through what a client does to it:
// registration, logins on two devices, profile, device management with
// user-interactive auth, password change and logout.
func TestAccountLifecycle(t *testing.T) {
	srv := apptest.Start(t)
	ctx := t.Context()
	const (
		oldPassword = "correct horse battery"
		newPassword = "staple and a second horse"
	)
	alice := id.UserID("@alice:localhost")

	// Registration with the dummy stage, through the library's own UIA dance.
	reg, err := newClient(t, srv.URL, "", "").RegisterDummy(ctx, &mautrix.ReqRegister[any]{
		Username: "alice", Password: oldPassword, InitialDeviceDisplayName: "Registration device",
	})
	if err != nil {
		t.Fatalf("RegisterDummy: %v", err)
	}
	if reg.UserID != alice || reg.AccessToken == "" || reg.DeviceID == "" {
		t.Fatalf("register answered %+v, want %s with a token and a device", reg, alice)
	}
	regCli := newClient(t, srv.URL, alice, reg.AccessToken)
	wantWhoami(t, "registration token", regCli, alice, reg.DeviceID)

	// The name is now taken.
	_, err = newClient(t, srv.URL, "", "").RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: oldPassword})
	wantMatrixError(t, "registering alice twice", err, http.StatusBadRequest, "M_USER_IN_USE")

	// Two more devices, each with the name the client gave at login.
	laptopLogin := login(t, srv.URL, "alice", oldPassword, "Alice's laptop", false)
	phoneLogin := login(t, srv.URL, "alice", oldPassword, "Alice's phone", false)
	if laptopLogin.UserID != alice || phoneLogin.UserID != alice {
		t.Fatalf("logins answered users %s and %s, want %s", laptopLogin.UserID, phoneLogin.UserID, alice)
	}
	if laptopLogin.DeviceID == phoneLogin.DeviceID || laptopLogin.AccessToken == phoneLogin.AccessToken {
		t.Fatalf("two logins share a device or a token: %+v %+v", laptopLogin, phoneLogin)
	}
	laptop := newClient(t, srv.URL, alice, laptopLogin.AccessToken)
	phone := newClient(t, srv.URL, alice, phoneLogin.AccessToken)
	wantWhoami(t, "laptop", laptop, alice, laptopLogin.DeviceID)
	wantWhoami(t, "phone", phone, alice, phoneLogin.DeviceID)

	// A wrong password is refused.
	_, err = newClient(t, srv.URL, "", "").Login(ctx, &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
		Password:   "not the password",
	})
	wantMatrixError(t, "login with a wrong password", err, http.StatusForbidden, "M_FORBIDDEN")

	want := map[id.DeviceID]string{
		reg.DeviceID:         "Registration device",
		laptopLogin.DeviceID: "Alice's laptop",
		phoneLogin.DeviceID:  "Alice's phone",
	}
	if got := deviceNames(t, phone); !maps.Equal(got, want) {
		t.Fatalf("devices: got %v, want %v", got, want)
	}

	// Display name: set, then read back through the profile endpoints.
	if err := laptop.SetDisplayName(ctx, "Alice Martin"); err != nil {
		t.Fatalf("set display name: %v", err)
	}
	profile, err := phone.GetProfile(ctx, alice)
	if err != nil {
		t.Fatalf("GET profile: %v", err)
	}
	if profile.DisplayName != "Alice Martin" {
		t.Fatalf("GET profile: displayname %q, want %q", profile.DisplayName, "Alice Martin")
	}
	dn, err := phone.GetDisplayName(ctx, alice)
	if err != nil {
		t.Fatalf("GET profile displayname: %v", err)
	}
	if dn.DisplayName != "Alice Martin" {
		t.Fatalf("GET profile/displayname: %q, want %q", dn.DisplayName, "Alice Martin")
	}

	// Rename the laptop.
	if err := phone.SetDeviceInfo(ctx, laptopLogin.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: "Work laptop"}); err != nil {
		t.Fatalf("rename device: %v", err)
	}
	dev, err := laptop.GetDeviceInfo(ctx, laptopLogin.DeviceID)
	if err != nil {
		t.Fatalf("GET device: %v", err)
	}
	if dev.DeviceID != laptopLogin.DeviceID || dev.DisplayName != "Work laptop" {
		t.Fatalf("GET device after rename: %+v, want %s named %q", dev, laptopLogin.DeviceID, "Work laptop")
	}
	want[laptopLogin.DeviceID] = "Work laptop"
	_, err = laptop.GetDeviceInfo(ctx, "NOSUCHDEVICE")
	wantMatrixError(t, "GET an unknown device", err, http.StatusNotFound, "M_NOT_FOUND")

	// Delete the phone from the laptop: UIA with the password stage.
	phoneURL := laptop.BuildClientURL("v3", "devices", phoneLogin.DeviceID)
	session := startPasswordUIA(t, laptop, http.MethodDelete, phoneURL, &mautrix.ReqDeleteDevice[any]{})
	err = laptop.DeleteDevice(ctx, phoneLogin.DeviceID, &mautrix.ReqDeleteDevice[any]{
		Auth: newPasswordAuth(session, alice, "not the password"),
	})
	wantMatrixError(t, "delete device with a wrong password", err, http.StatusUnauthorized, "M_FORBIDDEN")
	wantWhoami(t, "phone after a failed delete", phone, alice, phoneLogin.DeviceID)
	err = laptop.DeleteDevice(ctx, phoneLogin.DeviceID, &mautrix.ReqDeleteDevice[any]{
		Auth: newPasswordAuth(session, alice, oldPassword),
	})
	if err != nil {
		t.Fatalf("delete device with the password: %v", err)
	}
	// The phone's token dies at once; the laptop's keeps working.
	_, err = phone.Whoami(ctx)
	wantMatrixError(t, "whoami with the deleted device's token", err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	wantWhoami(t, "laptop after deleting the phone", laptop, alice, laptopLogin.DeviceID)
	delete(want, phoneLogin.DeviceID)
	if got := deviceNames(t, laptop); !maps.Equal(got, want) {
		t.Fatalf("devices after delete: got %v, want %v", got, want)
	}
	// The completed session cannot be replayed.
	err = laptop.DeleteDevice(ctx, reg.DeviceID, &mautrix.ReqDeleteDevice[any]{Auth: newPasswordAuth(session, alice, oldPassword)})
	if err == nil {
		t.Fatalf("a finished UIA session was accepted again to delete another device")
	}
	wantWhoami(t, "registration device after a replayed session", regCli, alice, reg.DeviceID)

	// Change the password (UIA); the other devices are logged out by default.
	pwURL := laptop.BuildClientURL("v3", "account", "password")
	session = startPasswordUIA(t, laptop, http.MethodPost, pwURL, map[string]any{"new_password": newPassword})
	_, err = laptop.MakeRequest(ctx, http.MethodPost, pwURL, map[string]any{
		"new_password": newPassword,
		"auth":         newPasswordAuth(session, alice, oldPassword),
	}, nil)
	if err != nil {
		t.Fatalf("change password: %v", err)
	}
	_, err = newClient(t, srv.URL, "", "").Login(ctx, &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
		Password:   oldPassword,
	})
	wantMatrixError(t, "login with the old password", err, http.StatusForbidden, "M_FORBIDDEN")
	fresh := login(t, srv.URL, "alice", newPassword, "After the change", false)
	wantWhoami(t, "login with the new password", newClient(t, srv.URL, alice, fresh.AccessToken), alice, fresh.DeviceID)
	wantWhoami(t, "laptop after changing the password", laptop, alice, laptopLogin.DeviceID)
	_, err = regCli.Whoami(ctx)
	wantMatrixError(t, "another device after a password change", err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

	// Log out: the laptop's token is dead, the fresh login's is not.
	if _, err := laptop.Logout(ctx); err != nil {
		t.Fatalf("logout: %v", err)
	}
	_, err = laptop.Whoami(ctx)
	wantMatrixError(t, "whoami after logout", err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	freshCli := newClient(t, srv.URL, alice, fresh.AccessToken)
	wantWhoami(t, "other device after logout", freshCli, alice, fresh.DeviceID)
	if got := deviceNames(t, freshCli); !maps.Equal(got, map[id.DeviceID]string{fresh.DeviceID: "After the change"}) {
		t.Fatalf("devices at the end: %v, want only %s", got, fresh.DeviceID)
	}
}

// TestRefreshTokens checks the refresh flow as a client performs it: the old
// access token works until the new pair is first used, then dies.
// Spec: "Refreshing access tokens".
func TestRefreshTokens(t *testing.T) {
	srv := apptest.Start(t)
	ctx := t.Context()
	bob := id.UserID("@bob:localhost")
	if _, err := newClient(t, srv.URL, "", "").RegisterDummy(ctx, &mautrix.ReqRegister[any]{
		Username: "bob", Password: "bob's password", InhibitLogin: true,
	}); err != nil {
		t.Fatalf("register: %v", err)
	}
	first := login(t, srv.URL, "bob", "bob's password", "Bob's tablet", true)
	if first.RefreshToken == "" || first.ExpiresInMS <= 0 {
		t.Fatalf("login with refresh_token: got refresh token %q, expires_in_ms %d", first.RefreshToken, first.ExpiresInMS)
	}
	oldCli := newClient(t, srv.URL, bob, first.AccessToken)
	wantWhoami(t, "first access token", oldCli, bob, first.DeviceID)

	var refreshed mautrix.RespRegister // access_token, refresh_token, expires_in_ms
	anon := newClient(t, srv.URL, "", "")
	if _, err := anon.MakeRequest(ctx, http.MethodPost, anon.BuildClientURL("v3", "refresh"),
		map[string]string{"refresh_token": first.RefreshToken}, &refreshed); err != nil {
		t.Fatalf("POST /refresh: %v", err)
	}
	if refreshed.AccessToken == "" || refreshed.RefreshToken == "" || refreshed.ExpiresInMS <= 0 {
		t.Fatalf("POST /refresh answered %+v, want new tokens and expires_in_ms", refreshed)
	}
	if refreshed.AccessToken == first.AccessToken || refreshed.RefreshToken == first.RefreshToken {
		t.Fatalf("POST /refresh handed back an old token")
	}

	// Until the new pair is used, the old access token still works.
	wantWhoami(t, "old access token before the new one is used", oldCli, bob, first.DeviceID)
	wantWhoami(t, "old access token, second use", oldCli, bob, first.DeviceID)

	newCli := newClient(t, srv.URL, bob, refreshed.AccessToken)
	wantWhoami(t, "new access token", newCli, bob, first.DeviceID)

	_, err := oldCli.Whoami(ctx)
	wantMatrixError(t, "old access token after the new one was used", err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	wantWhoami(t, "new access token, second use", newCli, bob, first.DeviceID)

	// The old refresh token died with its access token.
	_, err = anon.MakeRequest(ctx, http.MethodPost, anon.BuildClientURL("v3", "refresh"),
		map[string]string{"refresh_token": first.RefreshToken}, nil)
	wantMatrixError(t, "refresh with the replaced refresh token", err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

	// The new refresh token can refresh again, on the same device.
	var again mautrix.RespRegister
	if _, err := anon.MakeRequest(ctx, http.MethodPost, anon.BuildClientURL("v3", "refresh"),
		map[string]string{"refresh_token": refreshed.RefreshToken}, &again); err != nil {
		t.Fatalf("second refresh: %v", err)
	}
	wantWhoami(t, "token of the second refresh", newClient(t, srv.URL, bob, again.AccessToken), bob, first.DeviceID)
	againCli := newClient(t, srv.URL, bob, again.AccessToken)
	if got := deviceNames(t, againCli); len(got) != 1 || got[first.DeviceID] != "Bob's tablet" {
		t.Fatalf("devices after refreshes: %v, want only %s", got, first.DeviceID)
	}

	// Logging out ends the refresh token too.
	if _, err := againCli.Logout(ctx); err != nil {
		t.Fatalf("logout: %v", err)
	}
	_, err = againCli.Whoami(ctx)
	wantMatrixError(t, "whoami after logout", err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	_, err = anon.MakeRequest(ctx, http.MethodPost, anon.BuildClientURL("v3", "refresh"),
		map[string]string{"refresh_token": again.RefreshToken}, nil)
	wantMatrixError(t, "refresh after logout", err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
}

// macFor is the Synapse shared-secret registration MAC, computed here
// independently of both the server and the client library.
func macFor(secret, nonce, user, password string, admin bool) string {
	m := hmac.New(sha1.New, []byte(secret))
	role := "notadmin"
	if admin {
		role = "admin"
	}
	for i, part := range []string{nonce, user, password, role} {
		if i > 0 {
			m.Write([]byte{0})
		}
		m.Write([]byte(part))
	}
	return hex.EncodeToString(m.Sum(nil))
}

// TestSharedSecretRegistration checks Synapse's admin registration endpoint:
// a correct MAC creates the account (with the admin flag it covers), a wrong
// one is refused with 403 and creates nothing, and a nonce works once.
func TestSharedSecretRegistration(t *testing.T) {
	srv := apptest.Start(t)
	ctx := t.Context()
	anon := newClient(t, srv.URL, "", "")
	adminURL := anon.BuildURL(mautrix.SynapseAdminURLPath{"v1", "register"})

	nonce := func() string {
		t.Helper()
		var resp struct {
			Nonce string `json:"nonce"`
		}
		if _, err := anon.MakeRequest(ctx, http.MethodGet, adminURL, nil, &resp); err != nil {
			t.Fatalf("GET nonce: %v", err)
		}
		if resp.Nonce == "" {
			t.Fatalf("GET nonce: empty nonce")
		}
		return resp.Nonce
	}
	post := func(body map[string]any) (*mautrix.RespRegister, error) {
		var resp mautrix.RespRegister
		_, err := anon.MakeRequest(ctx, http.MethodPost, adminURL, body, &resp)
		return &resp, err
	}
	isAdmin := func(user id.UserID) (exists, admin bool) {
		t.Helper()
		u, err := srv.Store.GetUser(ctx, string(user))
		if err != nil {
			return false, false
		}
		return true, u.IsAdmin
	}

	// A correct MAC, computed by hand, for an administrator.
	n1 := nonce()
	if n2 := nonce(); n2 == n1 {
		t.Fatalf("two nonces are equal: %s", n1)
	}
	body := map[string]any{
		"nonce": n1, "username": "operator", "password": "operator password", "admin": true,
		"mac": macFor(sharedSecret, n1, "operator", "operator password", true),
	}
	resp, err := post(body)
	if err != nil {
		t.Fatalf("shared-secret registration with a correct MAC: %v", err)
	}
	operator := id.UserID("@operator:localhost")
	if resp.UserID != operator || resp.AccessToken == "" {
		t.Fatalf("shared-secret registration answered %+v, want %s with an access token", resp, operator)
	}
	wantWhoami(t, "shared-secret registration token", newClient(t, srv.URL, operator, resp.AccessToken), operator, resp.DeviceID)
	if exists, admin := isAdmin(operator); !exists || !admin {
		t.Fatalf("operator: exists %v admin %v, want an administrator", exists, admin)
	}
	login(t, srv.URL, "operator", "operator password", "", false)

	// The same nonce is spent.
	body["username"], body["password"] = "operator2", "operator password"
	body["mac"] = macFor(sharedSecret, n1, "operator2", "operator password", true)
	_, err = post(body)
	var he mautrix.HTTPError
	if !errors.As(err, &he) || !he.IsStatus(http.StatusBadRequest) {
		t.Fatalf("reusing a nonce: got %v, want 400", err)
	}
	if exists, _ := isAdmin("@operator2:localhost"); exists {
		t.Fatalf("a reused nonce created @operator2:localhost")
	}

	// A MAC under the wrong secret: 403, nothing created.
	n := nonce()
	_, err = post(map[string]any{
		"nonce": n, "username": "intruder", "password": "intruder password", "admin": true,
		"mac": macFor("not-the-secret", n, "intruder", "intruder password", true),
	})
	wantMatrixError(t, "shared-secret registration with a wrong MAC", err, http.StatusForbidden, "M_FORBIDDEN")
	// A MAC that covers notadmin cannot be used to ask for admin.
	_, err = post(map[string]any{
		"nonce": n, "username": "intruder", "password": "intruder password", "admin": true,
		"mac": macFor(sharedSecret, n, "intruder", "intruder password", false),
	})
	wantMatrixError(t, "shared-secret registration with admin outside the MAC", err, http.StatusForbidden, "M_FORBIDDEN")
	if exists, _ := isAdmin("@intruder:localhost"); exists {
		t.Fatalf("a wrong MAC created @intruder:localhost")
	}
	avail, err := anon.RegisterAvailable(ctx, "intruder")
	if err != nil || !avail.Available {
		t.Fatalf("intruder should still be available: %+v %v", avail, err)
	}
	_, err = anon.Login(ctx, &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "intruder"},
		Password:   "intruder password",
	})
	wantMatrixError(t, "login as the refused user", err, http.StatusForbidden, "M_FORBIDDEN")

	// The client library's own implementation agrees, for an ordinary user.
	admin := &synapseadmin.Client{Client: anon}
	lib, err := admin.SharedSecretRegister(ctx, sharedSecret, synapseadmin.ReqSharedSecretRegister{
		Username: "bot", Password: "bot password", Displayname: "The Bot",
	})
	if err != nil {
		t.Fatalf("synapseadmin.SharedSecretRegister: %v", err)
	}
	if lib.UserID != "@bot:localhost" {
		t.Fatalf("synapseadmin.SharedSecretRegister created %s, want @bot:localhost", lib.UserID)
	}
	if exists, isAdm := isAdmin(lib.UserID); !exists || isAdm {
		t.Fatalf("bot: exists %v admin %v, want an ordinary user", exists, isAdm)
	}
	botCli := newClient(t, srv.URL, lib.UserID, lib.AccessToken)
	dn, err := botCli.GetDisplayName(ctx, lib.UserID)
	if err != nil || dn.DisplayName != "The Bot" {
		t.Fatalf("bot's display name: %+v %v, want %q", dn, err, "The Bot")
	}
	_, err = (&synapseadmin.Client{Client: anon}).SharedSecretRegister(ctx, "wrong", synapseadmin.ReqSharedSecretRegister{
		Username: "bot2", Password: "bot password",
	})
	wantMatrixError(t, "synapseadmin.SharedSecretRegister with a wrong secret", err, http.StatusForbidden, "M_FORBIDDEN")
	if exists, _ := isAdmin("@bot2:localhost"); exists {
		t.Fatalf("a wrong secret created @bot2:localhost")
	}
}
