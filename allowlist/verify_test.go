package allowlist_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"chappe/allowlist"
)

// TestJudge is the table of every verification case: what a server with
// the policy below does with a list, given the list in force.
func TestJudge(t *testing.T) {
	alice, bob, carol := officers[0], officers[1], officers[2]
	// bob2 is a second key of bob's: both are trusted, but bob counts once.
	bob2, err := allowlist.GenerateKey("bob", "k2")
	if err != nil {
		t.Fatal(err)
	}
	// mallory's key is not trusted.
	mallory, err := allowlist.GenerateKey("mallory", "k1")
	if err != nil {
		t.Fatal(err)
	}
	// alias is alice's public key configured a second time, under another
	// signer name; a signature made under that name must not count twice.
	aliasKey := allowlist.SecretKey{Signer: "alice-alias", KeyID: "ed25519:k1", Private: alice.Private}

	policy := allowlist.Policy{
		Federation:  testFederation,
		TrustedKeys: append(trusted(alice, bob, carol, bob2), aliasKey.Trusted()),
		Threshold:   2,
	}
	signed := func(spec listSpec) []byte { return encode(t, build(t, spec)) }
	keys := func(k ...allowlist.SecretKey) []allowlist.SecretKey { return k }

	current := build(t, listSpec{serial: 5})
	currentHash, err := current.ContentHash()
	if err != nil {
		t.Fatal(err)
	}
	applied := allowlist.Applied{Serial: 5, ContentHash: currentHash}

	// tampered: a valid list whose content was changed after signing.
	tampered := bytes.Replace(signed(listSpec{serial: 6}), []byte(`"justice.gouv.fr"`), []byte(`"evil.example.org"`), 1)
	// moved: alice's valid signature relabelled as carol's.
	moved := bytes.Replace(signed(listSpec{serial: 6, signers: keys(alice, bob)}), []byte(`"alice"`), []byte(`"carol"`), 1)
	// garbled: a signature that is not base64.
	garbled := []byte(strings.Replace(string(signed(listSpec{serial: 6, signers: keys(alice)})), `"ed25519:k1": "`, `"ed25519:k1": "!!`, 1))

	tests := []struct {
		name    string
		doc     []byte
		current allowlist.Applied
		now     time.Time
		want    allowlist.Outcome
		refusal allowlist.Refusal
		counted int      // signatures that count, when the judgement got that far
		problem string   // a per-signature problem that must be reported
		signers []string // counted signers, when checked
	}{
		{name: "first list, 2 of 3", doc: signed(listSpec{signers: keys(alice, bob)}), want: allowlist.Apply, counted: 2,
			signers: []string{"alice ed25519:k1", "bob ed25519:k1"}},
		{name: "first list, all three", doc: signed(listSpec{}), want: allowlist.Apply, counted: 3},
		{name: "higher serial", doc: signed(listSpec{serial: 6}), current: applied, want: allowlist.Apply, counted: 3},
		{name: "serial jump", doc: signed(listSpec{serial: 900}), current: applied, want: allowlist.Apply, counted: 3},
		{name: "threshold not met: one signature", doc: signed(listSpec{signers: keys(carol)}),
			want: allowlist.Refuse, refusal: allowlist.RefusedSignatures, counted: 1},
		{name: "threshold not met: unsigned", doc: signed(listSpec{signers: []allowlist.SecretKey{}}),
			want: allowlist.Refuse, refusal: allowlist.RefusedSignatures, counted: 0},
		{name: "duplicate signer: two keys of bob", doc: signed(listSpec{signers: keys(bob, bob2)}),
			want: allowlist.Refuse, refusal: allowlist.RefusedSignatures, counted: 1, problem: "duplicate signer"},
		{name: "duplicate key: alice under two names", doc: signed(listSpec{signers: keys(alice, aliasKey)}),
			want: allowlist.Refuse, refusal: allowlist.RefusedSignatures, counted: 1, problem: "same public key"},
		{name: "duplicate signer does not hide a third", doc: signed(listSpec{signers: keys(bob, bob2, carol)}),
			want: allowlist.Apply, counted: 2},
		{name: "unknown key", doc: signed(listSpec{signers: keys(alice, mallory)}),
			want: allowlist.Refuse, refusal: allowlist.RefusedSignatures, counted: 1, problem: "unknown key"},
		{name: "unknown keys do not add up", doc: signed(listSpec{signers: keys(mallory)}),
			want: allowlist.Refuse, refusal: allowlist.RefusedSignatures, counted: 0, problem: "unknown key"},
		{name: "tampered content", doc: tampered, current: applied,
			want: allowlist.Refuse, refusal: allowlist.RefusedSignatures, counted: 0, problem: "bad signature"},
		{name: "signature moved to another signer", doc: moved,
			want: allowlist.Refuse, refusal: allowlist.RefusedSignatures, counted: 1, problem: "bad signature"},
		{name: "garbled signature", doc: garbled,
			want: allowlist.Refuse, refusal: allowlist.RefusedSignatures, counted: 0, problem: "malformed signature"},
		{name: "wrong federation", doc: signed(listSpec{federation: "other.eu"}),
			want: allowlist.Refuse, refusal: allowlist.RefusedFederation},
		{name: "expired", doc: signed(listSpec{serial: 6}), current: applied, now: t0.Add(listValidity),
			want: allowlist.Refuse, refusal: allowlist.RefusedExpired, counted: 3},
		{name: "expired a millisecond ago", doc: signed(listSpec{serial: 6, validity: time.Hour}), now: t0.Add(time.Hour + time.Millisecond),
			want: allowlist.Refuse, refusal: allowlist.RefusedExpired, counted: 3},
		{name: "valid until the last millisecond", doc: signed(listSpec{serial: 6, validity: time.Hour}), now: t0.Add(time.Hour - time.Millisecond),
			want: allowlist.Apply, counted: 3},
		{name: "rollback: lower serial", doc: signed(listSpec{serial: 4}), current: applied,
			want: allowlist.Refuse, refusal: allowlist.RefusedRollback, counted: 3},
		{name: "equal serial, identical content", doc: encode(t, current), current: applied, want: allowlist.Unchanged},
		{name: "equal serial, identical content, other signatures", doc: signed(listSpec{serial: 5, signers: keys(alice)}),
			current: applied, want: allowlist.Unchanged},
		{name: "equal serial, other content", doc: signed(listSpec{serial: 5, servers: []string{self}}), current: applied,
			want: allowlist.Refuse, refusal: allowlist.RefusedRollback, counted: 3},
		{name: "malformed", doc: []byte(`{"federation": "etat.gouv.fr", "serial": "one"}`),
			want: allowlist.Refuse, refusal: allowlist.RefusedMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := tt.now
			if now.IsZero() {
				now = t0.Add(time.Minute)
			}
			v := policy.Judge(tt.doc, tt.current, now)
			if v.Outcome != tt.want || v.Refusal != tt.refusal {
				t.Fatalf("Judge = %s/%s (%s), want %s/%s", v.Outcome, v.Refusal, v.Reason, tt.want, tt.refusal)
			}
			if tt.want == allowlist.Refuse && !strings.HasPrefix(v.Reason, string(tt.refusal)+": ") {
				t.Errorf("reason %q does not start with the refusal kind", v.Reason)
			}
			if v.ContentHash == "" {
				t.Error("no content hash in the verdict")
			}
			if tt.refusal == allowlist.RefusedSignatures || tt.want == allowlist.Apply || tt.refusal == allowlist.RefusedExpired || tt.refusal == allowlist.RefusedRollback {
				if v.Verification.Counted != tt.counted {
					t.Errorf("counted %d signatures, want %d: %+v", v.Verification.Counted, tt.counted, v.Verification.Checks)
				}
			}
			if tt.problem != "" {
				found := false
				for _, c := range v.Verification.Checks {
					found = found || strings.Contains(c.Problem, tt.problem)
				}
				if !found || !strings.Contains(v.Reason, tt.problem) {
					t.Errorf("no signature reported as %q: reason %q, checks %+v", tt.problem, v.Reason, v.Verification.Checks)
				}
			}
			if tt.signers != nil && strings.Join(v.Verification.Signers(), ",") != strings.Join(tt.signers, ",") {
				t.Errorf("signers %v, want %v", v.Verification.Signers(), tt.signers)
			}
		})
	}
}

func TestDiff(t *testing.T) {
	old := build(t, listSpec{servers: []string{"a.fr", "b.fr", "c.fr"}})
	next := build(t, listSpec{servers: []string{"b.fr", "c.fr", "d.fr"}})
	next.Servers["c.fr"] = allowlist.Server{Organisation: "Org of c.fr", Endpoint: "c.fr:8448"}
	c := allowlist.Diff(old, next)
	if strings.Join(c.Added, ",") != "d.fr" || strings.Join(c.Removed, ",") != "a.fr" || strings.Join(c.Changed, ",") != "c.fr" {
		t.Fatalf("Diff = %+v, want added d.fr, removed a.fr, changed c.fr", c)
	}
	c = allowlist.Diff(nil, next)
	if len(c.Added) != 3 || len(c.Removed) != 0 {
		t.Fatalf("Diff from nothing = %+v", c)
	}
}
