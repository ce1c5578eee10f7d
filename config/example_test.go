package config

import (
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

const examplePath = "../chappe.example.yaml"

// The example file must load, and must state exactly the built-in defaults:
// it is the documentation of those defaults.
func TestExampleFileEqualsDefaults(t *testing.T) {
	got, err := Load(examplePath, nil)
	if err != nil {
		t.Fatalf("loading %s: %v", examplePath, err)
	}
	if want := Defaults(); !reflect.DeepEqual(got, want) {
		t.Errorf("%s differs from Defaults():\n got: %+v\nwant: %+v", examplePath, got, want)
	}
}

// Every leaf key must be documented in the example, with its variable name.
func TestExampleFileNamesEveryEnvVar(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	names := EnvNames()
	if len(names) == 0 {
		t.Fatal("EnvNames returned nothing")
	}
	var missing []string
	for name, path := range names {
		if !strings.Contains(text, name) {
			missing = append(missing, name+" ("+path+")")
		}
		leaf := path[strings.LastIndex(path, ".")+1:]
		if !strings.Contains(text, leaf+":") {
			missing = append(missing, "key "+path)
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("%s is not documented in %s", m, examplePath)
	}
}

// The defaults the first issue asks for.
func TestDefaultsAsSpecified(t *testing.T) {
	d := Defaults()
	checks := []struct {
		name      string
		got, want any
	}{
		{"server_name", d.ServerName, "localhost"},
		{"data_dir", d.DataDir, "./data"},
		{"database.url", d.Database.URL, ""},
		{"client_api.listen", d.ClientAPI.Listen, "127.0.0.1:8008"},
		{"registration.mode", d.Registration.Mode, RegistrationClosed},
		{"rate_limit.enabled", d.RateLimit.Enabled, true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("default %s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
	if err := d.Verify(); err != nil {
		t.Errorf("the defaults do not verify: %v", err)
	}
}

func TestEnvOverrides(t *testing.T) {
	tests := []struct {
		env   string
		value string
		check func(Config) bool
	}{
		{"CHAPPE_SERVER_NAME", "interieur.gouv.fr", func(c Config) bool { return c.ServerName == "interieur.gouv.fr" }},
		{"CHAPPE_DATA_DIR", "/var/lib/chappe", func(c Config) bool { return c.DataDir == "/var/lib/chappe" }},
		{"CHAPPE_DATABASE_URL", "postgres://chappe:pw@db:5432/chappe?sslmode=disable", func(c Config) bool {
			return c.Database.URL == "postgres://chappe:pw@db:5432/chappe?sslmode=disable"
		}},
		{"CHAPPE_CLIENT_API_LISTEN", "0.0.0.0:8008", func(c Config) bool { return c.ClientAPI.Listen == "0.0.0.0:8008" }},
		{"CHAPPE_REGISTRATION_MODE", "open", func(c Config) bool { return c.Registration.Mode == RegistrationOpen }},
		{"CHAPPE_REGISTRATION_MODE", "token", func(c Config) bool { return c.Registration.Mode == RegistrationToken }},
		{"CHAPPE_REGISTRATION_SHARED_SECRET", "s3cr3t=with=equals", func(c Config) bool {
			return c.Registration.SharedSecret == "s3cr3t=with=equals"
		}},
		{"CHAPPE_RATE_LIMIT_ENABLED", "false", func(c Config) bool { return !c.RateLimit.Enabled }},
		{"CHAPPE_RATE_LIMIT_ENABLED", "0", func(c Config) bool { return !c.RateLimit.Enabled }},
		{"CHAPPE_LOG_LEVEL", "debug", func(c Config) bool { return c.Log.Level == "debug" }},
		{"CHAPPE_LOG_FORMAT", "console", func(c Config) bool { return c.Log.Format == "console" }},
		{"CHAPPE_AUTH_UIA_SESSION_LIFETIME", "1h", func(c Config) bool { return c.Auth.UIASessionLifetime.D() == time.Hour }},
		{"CHAPPE_RATE_LIMIT_LOGIN_PER_SECOND", "2.5", func(c Config) bool { return c.RateLimit.LoginPerSecond == 2.5 }},
	}
	for _, tt := range tests {
		t.Run(tt.env+"="+tt.value, func(t *testing.T) {
			environ := []string{tt.env + "=" + tt.value, "UNRELATED=1", "CHAPPE_NOT_A_KEY=x"}
			// Without a file and over the example file: the environment wins both times.
			for _, path := range []string{"", examplePath} {
				cfg, err := Load(path, environ)
				if err != nil {
					t.Fatalf("Load(%q): %v", path, err)
				}
				if !tt.check(cfg) {
					t.Errorf("Load(%q) with %s=%s: override not applied: %+v", path, tt.env, tt.value, cfg)
				}
			}
		})
	}
}

// Every bad value is reported in the one error Load returns, not just the first.
func TestLoadReportsAllErrorsTogether(t *testing.T) {
	environ := []string{
		"CHAPPE_REGISTRATION_MODE=invite-only",
		"CHAPPE_LOG_LEVEL=verbose",
		"CHAPPE_RATE_LIMIT_ENABLED=perhaps",
		"CHAPPE_AUTH_UIA_SESSION_LIFETIME=a-while",
		"CHAPPE_DATABASE_MAX_CONNS=many",
	}
	for _, path := range []string{"", examplePath} {
		_, err := Load(path, environ)
		if err == nil {
			t.Fatalf("Load(%q) accepted bad values", path)
		}
		msg := err.Error()
		for _, want := range []string{
			"registration.mode", `"invite-only"`,
			"log.level", `"verbose"`,
			"CHAPPE_RATE_LIMIT_ENABLED", `"perhaps"`,
			"CHAPPE_AUTH_UIA_SESSION_LIFETIME", `"a-while"`,
			"CHAPPE_DATABASE_MAX_CONNS", `"many"`,
		} {
			if !strings.Contains(msg, want) {
				t.Errorf("Load(%q) error does not mention %s:\n%s", path, want, msg)
			}
		}
	}
}

// Unknown keys in the file are refused (KnownFields), so a typo cannot be
// silently ignored.
func TestLoadRefusesUnknownKeys(t *testing.T) {
	path := t.TempDir() + "/chappe.yaml"
	if err := os.WriteFile(path, []byte("server_name: example.gouv.fr\nregistraton:\n  mode: open\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path, nil)
	if err == nil || !strings.Contains(err.Error(), "registraton") {
		t.Fatalf("Load accepted a misspelt key: err = %v", err)
	}
}
