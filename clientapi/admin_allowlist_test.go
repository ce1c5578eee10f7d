package clientapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"chappe/accounts"
	"chappe/allowlist"
	"chappe/app/apptest"
	"chappe/config"
)

// signedTestList writes a list naming localhost (the test server) and
// justice.gouv.fr, signed by two of the returned officers' keys.
func signedTestList(t *testing.T) (path string, trustedKeys []string) {
	t.Helper()
	var keys []allowlist.SecretKey
	for _, who := range []string{"alice", "bob"} {
		k, err := allowlist.GenerateKey(who, "k1")
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
		trustedKeys = append(trustedKeys, k.Trusted().String())
	}
	d, err := allowlist.NewDocument("etat.gouv.fr", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"localhost", "justice.gouv.fr"} {
		if _, err := allowlist.Edit(d, allowlist.AddServer(s, allowlist.Server{Organisation: "test"}, false)); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range keys {
		if _, err := allowlist.Sign(d, k, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	data, err := d.Encode()
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "allowlist.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, trustedKeys
}

func adminToken(t *testing.T, srv *apptest.Server, localpart string) string {
	t.Helper()
	tok, err := srv.Accounts.Register(context.Background(), accounts.RegisterRequest{Localpart: localpart, Password: "admin password", IsAdmin: true})
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

func TestAdminAllowlistStatus(t *testing.T) {
	path, keys := signedTestList(t)
	srv := apptest.Start(t, func(c *config.Config) {
		c.Allowlist.Federation = "etat.gouv.fr"
		c.Allowlist.TrustedKeys = keys
		c.Allowlist.Threshold = 2
		c.Allowlist.File = path
	})
	endpoint := srv.URL + "/_chappe/admin/v1/allowlist"

	// The list from the file is in force in the running server's gate.
	if !srv.Allowlist.Allowed("justice.gouv.fr") || srv.Allowlist.Allowed("evil.example.org") {
		t.Fatal("the server's gate does not reflect the list")
	}

	if r := call(t, "GET", endpoint, "", ""); r.Status != 401 || r.errcode() != "M_MISSING_TOKEN" {
		t.Fatalf("without a token: %d %s", r.Status, r.Raw)
	}
	user := register(t, srv, "staff", "staff password")
	if r := call(t, "GET", endpoint, user.Token, ""); r.Status != 403 || r.errcode() != "M_FORBIDDEN" {
		t.Fatalf("as a non-admin: %d %s, want 403 M_FORBIDDEN", r.Status, r.Raw)
	}
	r := call(t, "GET", endpoint, adminToken(t, srv, "root"), "")
	if r.Status != 200 {
		t.Fatalf("as an admin: %d %s", r.Status, r.Raw)
	}
	var st allowlist.Status
	if err := json.Unmarshal([]byte(r.Raw), &st); err != nil {
		t.Fatal(err)
	}
	c := st.Current
	if st.Mode != allowlist.Enforce || st.FederationClosed || st.Federation != "etat.gouv.fr" || c == nil || c.Serial != 1 ||
		!c.Verified || len(c.Signers) != 2 || c.ExpiresAt == 0 || c.Expired || len(c.Servers) != 2 || c.Source != "file:"+path {
		t.Fatalf("status: %s", r.Raw)
	}
	if st.LastRefresh == nil || len(st.LastRefresh.Sources) != 1 || st.LastRefresh.Sources[0].Result != "applied" {
		t.Fatalf("last refresh: %s", r.Raw)
	}
	for _, key := range []string{`"recent_refusals":[]`, `"recent_changes":[{`, `"servers":{"justice.gouv.fr"`} {
		if !strings.Contains(r.Raw, key) {
			t.Errorf("status JSON lacks %s: %s", key, r.Raw)
		}
	}
	// The signed document itself (and its signatures) is not in the status.
	if strings.Contains(r.Raw, `"signatures"`) {
		t.Errorf("status exposes raw signatures: %s", r.Raw)
	}
}

// Open mode warns at start and says so in the status; with no list,
// enforce mode says federation is closed, and why.
func TestAdminAllowlistModes(t *testing.T) {
	var log bytes.Buffer
	open := apptest.StartWithLog(t, &log, func(c *config.Config) { c.Allowlist.Mode = config.AllowlistOpen })
	if !strings.Contains(log.String(), `"level":"warn"`) || !strings.Contains(log.String(), "allowlist.mode is open") {
		t.Errorf("open mode was not logged as a warning at start:\n%s", log.String())
	}
	r := call(t, "GET", open.URL+"/_chappe/admin/v1/allowlist", adminToken(t, open, "root"), "")
	if r.Status != 200 || r.Body["mode"] != "open" || r.Body["open_mode_warning"] == nil || r.Body["federation_closed"] != false {
		t.Fatalf("open mode status: %d %s", r.Status, r.Raw)
	}
	if !open.Allowlist.Allowed("anyone.example.org") {
		t.Error("open mode does not allow an unlisted server")
	}

	closed := apptest.Start(t)
	r = call(t, "GET", closed.URL+"/_chappe/admin/v1/allowlist", adminToken(t, closed, "root"), "")
	if r.Status != 200 || r.Body["federation_closed"] != true || !strings.Contains(r.Body["closed_reason"].(string), "trusted_keys is empty") || r.Body["current"] != nil {
		t.Fatalf("enforce mode without a list: %d %s", r.Status, r.Raw)
	}
	if closed.Allowlist.Allowed("justice.gouv.fr") || !closed.Allowlist.Allowed("localhost") {
		t.Error("without a list only our own server may be allowed")
	}
}
