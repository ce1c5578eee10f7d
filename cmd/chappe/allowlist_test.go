package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"chappe/allowlist"
	"chappe/app"
	"chappe/config"
	"chappe/sqlstore"
	"chappe/sqlstore/sqltest"
)

// tool runs `chappe allowlist …` in-process at the clock's time.
type tool struct {
	t      *testing.T
	dir    string
	offset time.Duration // added to the real time
}

type toolResult struct {
	stdout, stderr string
	err            error
}

func (tl *tool) run(args ...string) toolResult {
	tl.t.Helper()
	var out, errOut bytes.Buffer
	at := allowlistTool{stdout: &out, stderr: &errOut, now: func() time.Time { return time.Now().Add(tl.offset) }}
	err := at.run(args)
	return toolResult{stdout: out.String(), stderr: errOut.String(), err: err}
}

// ok runs a command that must succeed.
func (tl *tool) ok(args ...string) toolResult {
	tl.t.Helper()
	r := tl.run(args...)
	if r.err != nil {
		tl.t.Fatalf("chappe allowlist %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r
}

// fails runs a command that must fail with an error or output mentioning want.
func (tl *tool) fails(want string, args ...string) toolResult {
	tl.t.Helper()
	r := tl.run(args...)
	if r.err == nil {
		tl.t.Fatalf("chappe allowlist %s succeeded, want a failure about %q\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), want, r.stdout, r.stderr)
	}
	if !strings.Contains(r.err.Error()+r.stdout+r.stderr, want) {
		tl.t.Fatalf("chappe allowlist %s: %v\nstdout:\n%s\nstderr:\n%s\nwant it to mention %q", strings.Join(args, " "), r.err, r.stdout, r.stderr, want)
	}
	return r
}

func (tl *tool) path(name string) string { return filepath.Join(tl.dir, name) }

func mustContain(t *testing.T, what, text string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Errorf("%s does not contain %q:\n%s", what, w, text)
		}
	}
}

// TestAllowlistToolEndToEnd drives the officers' whole workflow on files:
// keys, a first list signed by two officers, a change, a bump, signatures,
// verification, display, diff; then a server applies the list and
// `status` reports it from the database.
func TestAllowlistToolEndToEnd(t *testing.T) {
	tl := &tool{t: t, dir: t.TempDir()}
	list := tl.path("allowlist.json")

	// keygen: a 0600 secret file and the public line on stdout.
	pub := map[string]string{}
	for _, who := range []string{"alice", "bob", "carol"} {
		r := tl.ok("keygen", "--signer", who, "--out", tl.path(who+".key"))
		pub[who] = strings.TrimSpace(r.stdout)
		k, err := allowlist.ParseTrustedKey(pub[who])
		if err != nil || k.Signer != who {
			t.Fatalf("keygen printed %q, not a trusted key line of %s: %v", r.stdout, who, err)
		}
		info, err := os.Stat(tl.path(who + ".key"))
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Fatalf("key file mode: %v, %v", info.Mode(), err)
		}
		secret, _ := os.ReadFile(tl.path(who + ".key"))
		if strings.Contains(r.stdout+r.stderr, strings.Fields(string(secret))[3]) {
			t.Fatal("keygen printed the secret seed")
		}
	}
	tl.fails("exists", "keygen", "--signer", "alice", "--out", tl.path("alice.key"))
	if err := os.Chmod(tl.path("carol.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	tl.fails("readable by others", "sign", "--file", list, "--key", tl.path("carol.key"))
	if err := os.Chmod(tl.path("carol.key"), 0o600); err != nil {
		t.Fatal(err)
	}
	trust := func(who ...string) []string {
		var args []string
		for _, w := range who {
			args = append(args, "--trusted-key", pub[w])
		}
		return args
	}

	// A first list.
	tl.ok("new", "--file", list, "--federation", "etat.gouv.fr", "--validity", "720h")
	tl.fails("exists", "new", "--file", list, "--federation", "etat.gouv.fr")
	tl.ok("add", "interieur.gouv.fr", "--file", list, "--org", "Ministère de l'Intérieur", "--endpoint", "matrix.interieur.gouv.fr:443",
		"--key", "ed25519:a1=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8")
	tl.ok("add", "--file", list, "justice.gouv.fr")
	tl.ok("add", "--file", list, "armees.gouv.fr")
	tl.fails("lower case", "add", "--file", list, "Culture.gouv.fr")
	tl.fails("already listed", "add", "--file", list, "justice.gouv.fr")
	tl.fails("32-byte", "add", "--file", list, "culture.gouv.fr", "--key", "ed25519:x=short")
	tl.fails("give one SERVER", "add", "--file", list)

	// Two officers sign; verify names each signature.
	r := tl.ok("sign", "--file", list, "--key", tl.path("alice.key"))
	mustContain(t, "sign stderr", r.stderr, "signed serial 1 as alice")
	tl.ok("sign", "--file", list, "--key", tl.path("bob.key"))
	r = tl.ok("sign", "--file", list, "--key", tl.path("bob.key"))
	mustContain(t, "second sign by bob", r.stderr, "already signed")
	r = tl.ok(append([]string{"verify", "--file", list, "--threshold", "2", "--federation", "etat.gouv.fr"}, trust("alice", "bob", "carol")...)...)
	mustContain(t, "verify", r.stdout, "valid    alice ed25519:", "valid    bob ed25519:", "OK: 2 of 2")
	r = tl.fails("REFUSED", append([]string{"verify", "--file", list, "--threshold", "3"}, trust("alice", "bob", "carol")...)...)
	mustContain(t, "verify k=3", r.stdout, "2 of 3 required")
	r = tl.fails("REFUSED", append([]string{"verify", "--file", list, "--threshold", "1"}, trust("carol")...)...)
	mustContain(t, "verify with carol only", r.stdout, "INVALID  alice", "unknown key")
	tl.fails("not \"other\"", append([]string{"verify", "--file", list, "--threshold", "2", "--federation", "other"}, trust("alice", "bob")...)...)
	// A key with bob's name but another public key: bob's signature is bad.
	tl.ok("keygen", "--signer", "bob", "--key-id", strings.Fields(pub["bob"])[1], "--out", tl.path("fake-bob.key"))
	fake := strings.TrimSpace(tl.ok("keygen", "--signer", "bob", "--key-id", strings.Fields(pub["bob"])[1], "--out", tl.path("fake-bob2.key")).stdout)
	r = tl.fails("REFUSED", "verify", "--file", list, "--threshold", "2", "--trusted-key", pub["alice"], "--trusted-key", fake)
	mustContain(t, "verify with a wrong key for bob", r.stdout, "INVALID  bob", "bad signature")
	// Tampering with the signed file: every signature fails.
	raw, _ := os.ReadFile(list)
	tampered := tl.path("tampered.json")
	if err := os.WriteFile(tampered, bytes.Replace(raw, []byte(`"justice.gouv.fr"`), []byte(`"evil.example.org"`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	r = tl.fails("REFUSED", append([]string{"verify", "--file", tampered}, trust("alice", "bob")...)...)
	mustContain(t, "verify tampered", r.stdout, "INVALID  alice", "INVALID  bob", "0 of 2")
	v1 := tl.path("v1.json")
	if err := os.WriteFile(v1, raw, 0o644); err != nil {
		t.Fatal(err)
	}

	// An edit drops the signatures and says so; signing needs a bump.
	r = tl.ok("remove", "justice.gouv.fr", "--file", list, "--reason", "server compromised")
	mustContain(t, "remove stderr", r.stderr, "dropped 2 signature(s)", "alice ed25519:", "bob ed25519:", "bump",
		"warning: justice.gouv.fr had no pinned keys")
	tl.fails("--reason is required", "remove", "armees.gouv.fr", "--file", list)
	tl.fails("run bump first", "sign", "--file", list, "--key", tl.path("carol.key"))
	r = tl.ok("bump", "--file", list)
	mustContain(t, "bump stderr", r.stderr, "serial 2")
	tl.ok("add", "culture.gouv.fr", "--file", list, "--org", "Ministère de la Culture")
	r = tl.ok("add", "culture.gouv.fr", "--file", list, "--org", "Ministère de la Culture", "--replace")
	mustContain(t, "no-op add", r.stderr, "nothing changed")
	tl.ok("sign", "--file", list, "--key", tl.path("alice.key"))
	r = tl.ok("add", "culture.gouv.fr", "--file", list, "--org", "Culture", "--replace")
	mustContain(t, "edit after one signature", r.stderr, "dropped 1 signature(s)", "alice ed25519:", "serial 2 was already signed")
	// Serial 2 was signed with the old content (perhaps already published):
	// the new content needs serial 3.
	tl.fails("run bump first", "sign", "--file", list, "--key", tl.path("alice.key"))
	tl.ok("bump", "--file", list)
	tl.ok("sign", "--file", list, "--key", tl.path("alice.key"))
	tl.ok("sign", "--file", list, "--key", tl.path("carol.key"))
	tl.ok(append([]string{"verify", "--file", list, "--threshold", "2"}, trust("alice", "bob", "carol")...)...)

	// show and diff.
	r = tl.ok("show", "--file", list)
	mustContain(t, "show", r.stdout, "etat.gouv.fr", "serial      3", "culture.gouv.fr", "Culture",
		"interieur.gouv.fr", "endpoint matrix.interieur.gouv.fr:443", "key ed25519:a1=", "justice.gouv.fr", "server compromised",
		"alice ed25519:", "carol ed25519:", "days)")
	r = tl.ok("diff", v1, list)
	mustContain(t, "diff", r.stdout, "serial: 1 → 3", "+ culture.gouv.fr", "- justice.gouv.fr  removed: server compromised")
	r = tl.ok("diff", list, v1)
	mustContain(t, "reverse diff", r.stdout, "not higher", "+ justice.gouv.fr", "- culture.gouv.fr")
	tl.fails("give OLD and NEW", "diff", v1)

	// After expiry: no signing, and verify says why.
	later := &tool{t: t, dir: tl.dir, offset: 31 * 24 * time.Hour}
	later.fails("expired", "sign", "--file", list, "--key", tl.path("bob.key"))
	r = later.fails("REFUSED", append([]string{"verify", "--file", list}, trust("alice", "bob", "carol")...)...)
	mustContain(t, "verify after expiry", r.stdout, "it has expired")
	mustContain(t, "show after expiry", later.ok("show", "--file", list).stdout, "EXPIRED")

	// A server applies the list from the file; status reports it from the database.
	cfgPath := tl.path("chappe.yaml")
	cfg := config.Defaults()
	cfg.ServerName = "interieur.gouv.fr"
	cfg.DataDir = tl.path("data")
	cfg.Database.URL = sqltest.NewDatabase(t, "allowlist_status")
	cfg.Allowlist.Federation = "etat.gouv.fr"
	cfg.Allowlist.TrustedKeys = []string{pub["alice"], pub["bob"], pub["carol"]}
	cfg.Allowlist.File = list
	writeConfig(t, cfgPath, cfg)

	r = tl.ok("status", "--config", cfgPath)
	mustContain(t, "status before any list", r.stdout, "CLOSED", "no valid allowlist", "list in force  none")

	st, err := sqlstore.Open(context.Background(), cfg.Database.URL, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	svc, err := app.NewAllowlist(cfg, st, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A refused list (v1 has a lower serial) for the refusals section.
	if _, err := svc.Offer(context.Background(), raw, "peer:justice.gouv.fr"); err != nil {
		t.Fatal(err)
	}
	r = tl.ok("status", "--config", cfgPath)
	mustContain(t, "status", r.stdout, "open to the listed servers", "serial 3", "file:"+list, "alice ed25519:", "carol ed25519:",
		"3 listed, 1 removed", "last refresh", "applied (serial 3)", "recent refusals", "rollback: serial 1", "recent changes")
	r = tl.ok("status", "--config", cfgPath, "--json")
	var got allowlist.Status
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	if got.Current == nil || got.Current.Serial != 3 || got.FederationClosed || len(got.RecentRefusals) != 1 || got.Mode != allowlist.Enforce {
		t.Fatalf("status --json: %+v", got)
	}
}

// writeConfig writes cfg as a YAML file the way an operator would.
func writeConfig(t *testing.T, path string, cfg config.Config) {
	t.Helper()
	var b strings.Builder
	b.WriteString("server_name: " + cfg.ServerName + "\n")
	b.WriteString("data_dir: " + cfg.DataDir + "\n")
	b.WriteString("database:\n  url: \"" + cfg.Database.URL + "\"\n")
	b.WriteString("allowlist:\n  federation: " + cfg.Allowlist.Federation + "\n  file: " + cfg.Allowlist.File + "\n  trusted_keys:\n")
	for _, k := range cfg.Allowlist.TrustedKeys {
		b.WriteString("    - \"" + k + "\"\n")
	}
	b.WriteString("federation:\n  listen: \"\"\n") // no certificate here: no listener
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(path, nil); err != nil {
		t.Fatalf("the test configuration does not load: %v", err)
	}
}
