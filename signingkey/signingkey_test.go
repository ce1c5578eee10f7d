package signingkey

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGenerateThenReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "signing.key")
	k1, err := LoadOrGenerate(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(k1.ID), "ed25519:a_") {
		t.Fatalf("key id %q", k1.ID)
	}
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", info.Mode(), err)
	}
	k2, err := LoadOrGenerate(path)
	if err != nil {
		t.Fatal(err)
	}
	if k1.ID != k2.ID || !k1.Private.Equal(k2.Private) {
		t.Fatal("reloading gave another key")
	}
}

func TestParseRejectsBadFiles(t *testing.T) {
	for _, text := range []string{
		"",
		"ed25519 a_x",
		"rsa a_x AAAA",
		"ed25519 a_x not-base64!!",
		"ed25519 a_x AAAA",
	} {
		if _, err := Parse(text); err == nil {
			t.Errorf("Parse(%q) accepted", text)
		}
	}
	// Synapse writes the same format; padded base64 is tolerated.
	k, err := Parse("ed25519 a_abcd nOAYmDi8bb1eJ0DGD3TRyBy1xAk6bzIjc+0GACqKW2s=\n")
	if err != nil || k.ID != "ed25519:a_abcd" {
		t.Fatalf("valid file: %v %v", k.ID, err)
	}
}

// Load reads an existing key and never creates one.
func TestLoadNeverGenerates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signing.key")
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "chappe serve") {
		t.Fatalf("missing key: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("Load created %s: %v", path, err)
	}
	k1, err := LoadOrGenerate(path)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := Load(path)
	if err != nil || k1.ID != k2.ID || !k1.Private.Equal(k2.Private) {
		t.Fatalf("Load gave another key: %v", err)
	}
}
