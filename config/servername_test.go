package config

import "testing"

func TestValidServerName(t *testing.T) {
	cases := []struct {
		name string
		ok   bool
	}{
		{"localhost", true},
		{"interieur.gouv.fr", true},
		{"matrix.justice.gouv.fr:8448", true},
		{"1.2.3.4", true},
		{"1.2.3.4:443", true},
		{"[2001:db8::1]", true},
		{"[2001:db8::1]:8448", true},
		{"", false},
		{"under_score.fr", false},
		{"gouv.fr:", false},
		{"gouv.fr:0", false},
		{"gouv.fr:65536", false},
		{"gouv.fr:abc", false},
		{"[2001:db8::1", false},
		{"[1.2.3.4]", false},
		{"[2001:db8::1]x", false},
		{"*.gouv.fr", false},
		{"exa mple.fr", false},
	}
	for _, tc := range cases {
		if err := ValidServerName(tc.name); (err == nil) != tc.ok {
			t.Errorf("ValidServerName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestEnvNamesAreUnique(t *testing.T) {
	names := EnvNames()
	seen := map[string]bool{}
	for env, path := range names {
		if seen[path] {
			t.Errorf("two env names for %s", path)
		}
		seen[path] = true
		if env != envName(path) {
			t.Errorf("%s for %s", env, path)
		}
	}
	for _, must := range []string{"CHAPPE_SERVER_NAME", "CHAPPE_DATA_DIR", "CHAPPE_DATABASE_URL", "CHAPPE_CLIENT_API_LISTEN",
		"CHAPPE_REGISTRATION_MODE", "CHAPPE_REGISTRATION_SHARED_SECRET", "CHAPPE_RATE_LIMIT_ENABLED", "CHAPPE_LOG_LEVEL", "CHAPPE_LOG_FORMAT"} {
		if _, ok := names[must]; !ok {
			t.Errorf("%s is not a configuration variable", must)
		}
	}
}
