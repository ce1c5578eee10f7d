package config

import (
	"strings"
	"testing"
	"time"
)

// Two well-formed trusted keys of two signers, and a second key of the first.
const (
	keyAlice  = "alice ed25519:a1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
	keyBob    = "bob ed25519:b1 ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8"
	keyAlice2 = "alice ed25519:a2 QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8"
)

func TestAllowlistVerify(t *testing.T) {
	tests := []struct {
		name    string
		set     func(*Allowlist)
		wantErr string // "" = valid
	}{
		{"defaults", func(a *Allowlist) {}, ""},
		{"two officers, two of two", func(a *Allowlist) {
			a.Federation, a.TrustedKeys, a.Threshold = "etat.gouv.fr", []string{keyAlice, keyBob}, 2
		}, ""},
		{"open mode", func(a *Allowlist) { a.Mode = AllowlistOpen }, ""},
		{"https URL and file", func(a *Allowlist) {
			a.URL, a.File = "https://listes.gouv.fr/allowlist.json", "/etc/chappe/allowlist.json"
		}, ""},
		{"bad mode", func(a *Allowlist) { a.Mode = "permissive" }, `allowlist.mode: must be enforce or open, got "permissive"`},
		{"garbled key", func(a *Allowlist) {
			a.Federation, a.TrustedKeys = "f", []string{"alice ed25519:a1"}
		}, "allowlist.trusted_keys"},
		{"key not 32 bytes", func(a *Allowlist) {
			a.Federation, a.TrustedKeys = "f", []string{"alice ed25519:a1 AAEC"}
		}, "not a 32-byte ed25519 public key"},
		{"same key twice", func(a *Allowlist) {
			a.Federation, a.TrustedKeys, a.Threshold = "f", []string{keyAlice, keyBob, keyAlice}, 1
		}, "given twice"},
		{"threshold above the signers", func(a *Allowlist) {
			// Two keys, but one officer: two signatures can never count.
			a.Federation, a.TrustedKeys, a.Threshold = "f", []string{keyAlice, keyAlice2}, 2
		}, "only 1 signers"},
		{"threshold zero", func(a *Allowlist) { a.Threshold = 0 }, "allowlist.threshold: must be at least 1"},
		{"keys without federation", func(a *Allowlist) {
			a.TrustedKeys, a.Threshold = []string{keyAlice}, 1
		}, "allowlist.federation"},
		{"plain http URL", func(a *Allowlist) { a.URL = "http://listes.gouv.fr/a.json" }, "allowlist.url: must be an https:// URL"},
		{"refresh too short", func(a *Allowlist) { a.RefreshInterval = Duration(10 * time.Millisecond) }, "allowlist.refresh_interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Defaults()
			c.Federation.Listen = "" // no certificate here: no listener
			tt.set(&c.Allowlist)
			err := c.Verify()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Verify: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("Verify accepted %+v, want an error about %s", c.Allowlist, tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("Verify: %v\nwant it to mention %s", err, tt.wantErr)
			}
		})
	}
}

func TestAllowlistDefaultsAndEnv(t *testing.T) {
	d := Defaults().Allowlist
	if d.Mode != AllowlistEnforce || len(d.TrustedKeys) != 0 || d.Threshold != 2 || d.RefreshInterval.D() != 5*time.Minute {
		t.Errorf("allowlist defaults = %+v, want enforce, no keys, threshold 2, 5m", d)
	}
	cfg, err := Load("", []string{
		"CHAPPE_ALLOWLIST_TRUSTED_KEYS=" + keyAlice + ", " + keyBob,
		"CHAPPE_ALLOWLIST_FEDERATION=etat.gouv.fr",
		"CHAPPE_ALLOWLIST_MODE=open",
		"CHAPPE_ALLOWLIST_REFRESH_INTERVAL=30s",
		"CHAPPE_FEDERATION_LISTEN=", // no certificate here: no listener
	})
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Allowlist
	if len(a.TrustedKeys) != 2 || a.TrustedKeys[1] != keyBob || a.Federation != "etat.gouv.fr" || a.Mode != AllowlistOpen || a.RefreshInterval.D() != 30*time.Second {
		t.Errorf("environment overrides not applied: %+v", a)
	}
}
