package federation

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"

	"chappe/signingkey"
)

func TestParseXMatrix(t *testing.T) {
	tests := []struct {
		name, header string
		want         xMatrix
		wantErr      string // "" when valid
	}{
		{"as the spec writes it", `X-Matrix origin="a.example",destination="b.example",key="ed25519:k1",sig="ABC+/d"`,
			xMatrix{"a.example", "b.example", "ed25519:k1", "ABC+/d"}, ""},
		{"scheme in another case, several spaces, spaces and tabs around commas", "x-matrix   origin=\"a.example\" ,\tkey=\"ed25519:k1\" , sig=\"s\"",
			xMatrix{Origin: "a.example", Key: "ed25519:k1", Sig: "s"}, ""},
		{"names in upper case, any order", `X-Matrix SIG="s",Key="ed25519:k1",Origin="a.example",DESTINATION="b.example"`,
			xMatrix{"a.example", "b.example", "ed25519:k1", "s"}, ""},
		{"unquoted values with colons (older servers)", `X-Matrix origin=a.example:8448,key=ed25519:k1,sig=AB/c+d`,
			xMatrix{Origin: "a.example:8448", Key: "ed25519:k1", Sig: "AB/c+d"}, ""},
		{"backslash escapes are undone", `X-Matrix origin="a\.example",key="ed25519:k\1",sig="s"`,
			xMatrix{Origin: "a.example", Key: "ed25519:k1", Sig: "s"}, ""},
		{"unknown parameters are ignored", `X-Matrix origin="a.example",key="ed25519:k1",sig="s",future="x, y"`,
			xMatrix{Origin: "a.example", Key: "ed25519:k1", Sig: "s"}, ""},
		{"BWS around =", `X-Matrix origin = "a.example",key= "ed25519:k1",sig ="s"`,
			xMatrix{Origin: "a.example", Key: "ed25519:k1", Sig: "s"}, ""},
		{"another scheme", `Bearer abc`, xMatrix{}, "not an X-Matrix"},
		{"no sig", `X-Matrix origin="a.example",key="ed25519:k1"`, xMatrix{}, "required"},
		{"empty destination", `X-Matrix origin="a.example",destination="",key="ed25519:k1",sig="s"`, xMatrix{}, "destination parameter is empty"},
		{"unclosed quote", `X-Matrix key=k,sig=s,origin="a.example`, xMatrix{}, "not closed"},
		{"twice the same parameter", `X-Matrix origin="a.example",origin="b.example",key="ed25519:k1",sig="s"`, xMatrix{}, "twice"},
		{"no value", `X-Matrix origin,key="k",sig="s"`, xMatrix{}, "no value"},
		{"junk after a quoted value", `X-Matrix origin="a.example"junk,key="k",sig="s"`, xMatrix{}, "expected a comma"},
		{"control character", "X-Matrix origin=\"a\x01\",key=\"k\",sig=\"s\"", xMatrix{}, "control character"},
	}
	for _, tc := range tests {
		got, err := parseXMatrix(tc.header)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: want an error about %q, got %v (%+v)", tc.name, tc.wantErr, err, got)
		case tc.wantErr == "" && got != tc.want:
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestParseAuthorizationSeveralHeaders(t *testing.T) {
	got, err := parseAuthorization([]string{
		`Bearer ignored`,
		`X-Matrix origin="a.example",destination="b.example",key="ed25519:k1",sig="s1"`,
		`X-Matrix origin="a.example",destination="b.example",key="ed25519:k2",sig="s2"`,
	})
	if err != nil || len(got) != 2 || got[1].Key != "ed25519:k2" {
		t.Fatalf("got %+v, %v", got, err)
	}
	if _, err := parseAuthorization([]string{
		`X-Matrix origin="a.example",key="ed25519:k1",sig="s1"`,
		`X-Matrix origin="c.example",key="ed25519:k2",sig="s2"`,
	}); err == nil {
		t.Error("two origins accepted")
	}
	if _, err := parseAuthorization(nil); err == nil {
		t.Error("no header accepted")
	}
}

// What signRequest writes, parseXMatrix reads, and verifyRequestSignature
// accepts for exactly the request signed.
func TestSignAndVerifyRequest(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key := signingkey.Key{ID: "ed25519:t1", Private: priv}
	body := []byte(`{"b": 2, "a": [1, "é"]}`)
	header, err := signRequest(key, "PUT", "/_matrix/federation/v1/send/1?x=%2F", "a.example", "b.example:8448", body)
	if err != nil {
		t.Fatal(err)
	}
	a, err := parseXMatrix(header)
	if err != nil {
		t.Fatal(err)
	}
	if a.Origin != "a.example" || a.Destination != "b.example:8448" || a.Key != "ed25519:t1" {
		t.Fatalf("header %s parsed as %+v", header, a)
	}
	pub := key.Public()
	// The same JSON written differently verifies: the content is signed as parsed JSON.
	if err := verifyRequestSignature(pub, a, "PUT", "/_matrix/federation/v1/send/1?x=%2F", "b.example:8448", []byte(`{"a":[1,"\u00e9"],"b":2}`)); err != nil {
		t.Errorf("valid signature refused: %v", err)
	}
	for name, change := range map[string]func() (string, string, string, []byte){
		"method": func() (string, string, string, []byte) {
			return "POST", "/_matrix/federation/v1/send/1?x=%2F", "b.example:8448", body
		},
		"uri": func() (string, string, string, []byte) {
			return "PUT", "/_matrix/federation/v1/send/2?x=%2F", "b.example:8448", body
		},
		"query": func() (string, string, string, []byte) {
			return "PUT", "/_matrix/federation/v1/send/1?x=/", "b.example:8448", body
		},
		"destination": func() (string, string, string, []byte) {
			return "PUT", "/_matrix/federation/v1/send/1?x=%2F", "b.example", body
		},
		"body": func() (string, string, string, []byte) {
			return "PUT", "/_matrix/federation/v1/send/1?x=%2F", "b.example:8448", []byte(`{"b":3}`)
		},
		"no body": func() (string, string, string, []byte) {
			return "PUT", "/_matrix/federation/v1/send/1?x=%2F", "b.example:8448", nil
		},
	} {
		m, u, d, b := change()
		if err := verifyRequestSignature(pub, a, m, u, d, b); err == nil {
			t.Errorf("changed %s: signature still accepted", name)
		}
	}
}
