package allowlist_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"chappe/allowlist"
)

func TestValidServerName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"interieur.gouv.fr", true},
		{"matrix.interieur.gouv.fr:8448", true},
		{"localhost", true},
		{"a-b.c0.fr", true},
		{"10.1.2.3", true},
		{"10.1.2.3:443", true},
		{"[2001:db8::1]", true},
		{"[2001:db8::1]:8448", true},
		{"", false},
		{"Interieur.gouv.fr", false},      // compared exactly: lower case only
		{"*.gouv.fr", false},              // no wildcards
		{"gouv.fr.", false},               // trailing dot
		{"-bad.gouv.fr", false},           // label starts with a hyphen
		{"bad-.gouv.fr", false},           // label ends with a hyphen
		{"a..fr", false},                  // empty label
		{"gouv.fr:0", false},              // port 0
		{"gouv.fr:08448", false},          // leading zero
		{"gouv.fr:65536", false},          // port too high
		{"gouv.fr:", false},               // empty port
		{"010.1.2.3", false},              // IPv4 with a leading zero
		{"1.2.3", false},                  // numeric last label, not an IPv4
		{"256.1.2.3", false},              // not an IPv4
		{"[2001:DB8::1]", false},          // IPv6 in upper case
		{"[2001:db8:0:0:0:0:0:1]", false}, // IPv6 not compressed
		{"2001:db8::1", false},            // IPv6 without brackets
		{"[1.2.3.4]", false},              // IPv4 in brackets
		{"[fe80::1%eth0]", false},         // zone
		{"gouv.fr/x", false},
		{"gouv_fr", false},
		{strings.Repeat("a", 64) + ".fr", false}, // label over 63
	}
	for _, tt := range tests {
		err := allowlist.ValidServerName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidServerName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestParseRefusesAmbiguousDocuments(t *testing.T) {
	good := encode(t, build(t, listSpec{}))
	var obj map[string]any
	if err := json.Unmarshal(good, &obj); err != nil {
		t.Fatal(err)
	}
	if _, err := allowlist.Parse(good); err != nil {
		t.Fatalf("Parse of the tool's own output: %v", err)
	}
	compact := bytes.ReplaceAll(bytes.ReplaceAll(good, []byte("\n"), nil), []byte("  "), nil)
	if _, err := allowlist.Parse(compact); err != nil {
		t.Fatalf("Parse of the compact form: %v", err)
	}
	// withField returns good with a top-level field set to raw JSON.
	withField := func(key, raw string) []byte {
		m := map[string]json.RawMessage{}
		_ = json.Unmarshal(good, &m)
		m[key] = json.RawMessage(raw)
		b, _ := json.Marshal(m)
		return b
	}
	tests := []struct {
		name    string
		doc     []byte
		wantErr string
	}{
		{"empty", []byte(""), "not a JSON object"},
		{"array", []byte("[1]"), "not a JSON object"},
		{"invalid UTF-8", append([]byte(`{"federation":"`), 0xff, '"', '}'), "UTF-8"},
		{"duplicate top-level key", []byte(strings.Replace(string(good), "{", `{"serial": 99,`, 1)), "appears twice"},
		{"duplicate nested key", []byte(strings.Replace(string(good), `"servers": {`, `"servers": {"x.fr": {}, "x.fr": {},`, 1)), "appears twice"},
		{"trailing data", append(append([]byte{}, good...), []byte(`{}`)...), "data after its JSON object"},
		{"unknown field", withField("wildcards", `["*.gouv.fr"]`), "unknown field"},
		{"field in another case", bytes.Replace(good, []byte(`"federation"`), []byte(`"Federation"`), 1), "normal form"},
		{"null removed", withField("removed", `null`), "normal form"},
		{"serial as a fraction", withField("serial", `1.0`), "shape"},
		{"serial too big", withField("serial", `9007199254740993`), "serial"},
		{"expiry before issue", withField("expires_at", `1`), "expires_at"},
		{"bad server name", withField("servers", `{"Bad.fr":{}}`), "lower case"},
		{"bad pinned key", withField("servers", `{"a.fr":{"verify_keys":{"ed25519:x":"short"}}}`), "32-byte"},
		{"bad endpoint", withField("servers", `{"a.fr":{"endpoint":"a.fr"}}`), "with the port"},
		{"listed and removed", withField("removed", `{"justice.gouv.fr":{"removed_at":1,"reason":"r"}}`), "either listed or removed"},
		{"removal without reason", withField("removed", `{"old.fr":{"removed_at":1,"reason":""}}`), "must say why"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := allowlist.Parse(tt.doc)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse: %v, want an error mentioning %q", err, tt.wantErr)
			}
		})
	}
}

// A signature made by the tool verifies with gomatrixserverlib.VerifyJSON on
// the file, whatever its whitespace and key order, is exactly the one
// gomatrixserverlib.SignJSON makes on the canonical content, and breaks when
// any signed byte changes; "unsigned" is not covered.
func TestCanonicalSigningRoundTrip(t *testing.T) {
	alice := officers[0]
	d := build(t, listSpec{signers: []allowlist.SecretKey{alice}})
	file := encode(t, d)

	content, err := d.Content()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := gomatrixserverlib.SignJSON(alice.Signer, gomatrixserverlib.KeyID(alice.KeyID), alice.Private, content)
	if err != nil {
		t.Fatal(err)
	}
	var refSigs struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(ref, &refSigs); err != nil {
		t.Fatal(err)
	}
	if got, want := d.Signatures[alice.Signer][alice.KeyID], refSigs.Signatures[alice.Signer][alice.KeyID]; got != want || got == "" {
		t.Fatalf("tool signature %q, SignJSON on the canonical content %q", got, want)
	}

	pub := alice.Private.Public().(ed25519.PublicKey)
	verify := func(doc []byte) error {
		return gomatrixserverlib.VerifyJSON(alice.Signer, gomatrixserverlib.KeyID(alice.KeyID), pub, doc)
	}
	canonical, err := gomatrixserverlib.CanonicalJSON(file)
	if err != nil {
		t.Fatal(err)
	}
	for name, doc := range map[string][]byte{"indented file": file, "canonical": canonical} {
		if err := verify(doc); err != nil {
			t.Errorf("%s: VerifyJSON: %v", name, err)
		}
	}
	// Re-parse and re-encode: byte-identical (the file form is stable).
	back, err := allowlist.Parse(file)
	if err != nil {
		t.Fatal(err)
	}
	if again := encode(t, back); !bytes.Equal(again, file) {
		t.Errorf("Parse then Encode changed the file:\n%s\n---\n%s", file, again)
	}
	// The tool's note in "unsigned" is not covered by the signature.
	if _, ok := back.LastSigned(); !ok {
		t.Error("Sign did not record last_signed in unsigned")
	}
	noted := bytes.Replace(file, []byte(`"content_sha256"`), []byte(`"other_note": 1, "content_sha256"`), 1)
	if err := verify(noted); err != nil {
		t.Errorf("a change in unsigned broke the signature: %v", err)
	}
	// Any signed byte changed: the signature fails.
	for _, tamper := range [][2]string{
		{`"serial": 1`, `"serial": 2`},
		{`"justice.gouv.fr"`, `"justice.gouv.fx"`},
		{`"Org of armees.gouv.fr:8448"`, `"Org of armees.gouv.fr:8449"`},
		{`"federation": "etat.gouv.fr"`, `"federation": "etat.gouv.fs"`},
	} {
		changed := bytes.Replace(file, []byte(tamper[0]), []byte(tamper[1]), 1)
		if bytes.Equal(changed, file) {
			t.Fatalf("tamper %q did not apply", tamper[0])
		}
		if err := verify(changed); err == nil {
			t.Errorf("VerifyJSON accepted the document with %s → %s", tamper[0], tamper[1])
		}
	}
}

func TestTrustedAndSecretKeyFormats(t *testing.T) {
	k := officers[1]
	line := k.Trusted().String()
	back, err := allowlist.ParseTrustedKey(line)
	if err != nil || back.Name() != "bob ed25519:k1" || !back.Public.Equal(k.Trusted().Public) {
		t.Fatalf("ParseTrustedKey(%q) = %+v, %v", line, back, err)
	}
	sk, err := allowlist.ParseSecretKey(k.Marshal())
	if err != nil || !sk.Private.Equal(k.Private) || sk.Signer != "bob" || sk.KeyID != "ed25519:k1" {
		t.Fatalf("ParseSecretKey round trip: %+v, %v", sk, err)
	}
	// A secret key file is never taken for a trusted key, nor the reverse.
	if _, err := allowlist.ParseTrustedKey(string(k.Marshal())); err == nil {
		t.Error("a secret key file parsed as a trusted key")
	}
	if _, err := allowlist.ParseSecretKey([]byte(line)); err == nil {
		t.Error("a trusted key line parsed as a secret key")
	}
	// The same public key under two names is refused in a configuration.
	twin := k.Trusted()
	twin.Signer = "bobby"
	if _, err := allowlist.ParseTrustedKeys([]string{line, twin.String()}); err == nil || !strings.Contains(err.Error(), "same public key") {
		t.Errorf("ParseTrustedKeys accepted one key under two names: %v", err)
	}
}
