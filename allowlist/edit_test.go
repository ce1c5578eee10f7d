package allowlist_test

import (
	"strings"
	"testing"
	"time"

	"chappe/allowlist"
)

func TestEditDropsInvalidatedSignatures(t *testing.T) {
	d := build(t, listSpec{})
	if len(d.Signatures) != 3 {
		t.Fatalf("fixture has %d signers", len(d.Signatures))
	}
	// An edit that changes nothing keeps the signatures.
	rep, err := allowlist.Edit(d, allowlist.AddServer("justice.gouv.fr", allowlist.Server{Organisation: "Org of justice.gouv.fr"}, true))
	if err != nil || rep.Changed || len(rep.Dropped) != 0 || len(d.Signatures) != 3 {
		t.Fatalf("a no-op edit: %+v, %v, %d signers left", rep, err, len(d.Signatures))
	}
	// A failed edit leaves the document as it was.
	if _, err := allowlist.Edit(d, allowlist.AddServer("justice.gouv.fr", allowlist.Server{}, false)); err == nil || !strings.Contains(err.Error(), "already listed") {
		t.Fatalf("adding a listed server without replace: %v", err)
	}
	if _, err := allowlist.Edit(d, allowlist.AddServer("Bad.Name", allowlist.Server{}, false)); err == nil {
		t.Fatal("adding a bad server name was accepted")
	}
	if len(d.Signatures) != 3 || len(d.Servers) != 3 {
		t.Fatalf("a failed edit changed the document: %d signers, %d servers", len(d.Signatures), len(d.Servers))
	}
	// A real change drops every signature and names them, and the serial
	// was already signed, so a bump is needed.
	rep, err = allowlist.Edit(d, allowlist.AddServer("culture.gouv.fr", allowlist.Server{Endpoint: "matrix.culture.gouv.fr:443"}, false))
	if err != nil {
		t.Fatal(err)
	}
	want := "alice ed25519:k1,bob ed25519:k1,carol ed25519:k1"
	if !rep.Changed || strings.Join(rep.Dropped, ",") != want || len(d.Signatures) != 0 || !rep.SerialAlreadySigned {
		t.Fatalf("edit report %+v (signatures left: %d), want changed, dropped %s, serial already signed", rep, len(d.Signatures), want)
	}
	// Signing it now is refused: serial 1 was signed with other content.
	if _, err := allowlist.Sign(d, officers[0], t0); err == nil || !strings.Contains(err.Error(), "bump") {
		t.Fatalf("signing an edited list without bump: %v", err)
	}
	// After bump it signs.
	if _, err := allowlist.Edit(d, allowlist.Bump(t0.Add(time.Hour), 0)); err != nil {
		t.Fatal(err)
	}
	if d.Serial != 2 || d.IssuedAt != t0.Add(time.Hour).UnixMilli() || d.ExpiresAt != t0.Add(time.Hour+listValidity).UnixMilli() {
		t.Fatalf("bump: serial %d, issued %d, expires %d", d.Serial, d.IssuedAt, d.ExpiresAt)
	}
	added, err := allowlist.Sign(d, officers[0], t0.Add(time.Hour))
	if err != nil || !added {
		t.Fatalf("signing after bump: %v, %v", added, err)
	}
	// Signing again with the same key adds nothing; a second officer adds one.
	if added, err := allowlist.Sign(d, officers[0], t0.Add(time.Hour)); err != nil || added {
		t.Fatalf("signing twice with the same key: added=%v, %v", added, err)
	}
	if added, err := allowlist.Sign(d, officers[1], t0.Add(time.Hour)); err != nil || !added || len(d.Signatures) != 2 {
		t.Fatalf("second officer: added=%v, %v, %d signers", added, err, len(d.Signatures))
	}
	// And the result verifies.
	policy := allowlist.Policy{Federation: testFederation, TrustedKeys: trusted(officers...), Threshold: 2}
	if v := policy.Judge(encode(t, d), allowlist.Applied{Serial: 1}, t0.Add(2*time.Hour)); v.Outcome != allowlist.Apply {
		t.Fatalf("the edited, bumped and signed list: %s %s", v.Outcome, v.Reason)
	}
}

func TestSignRefusesExpired(t *testing.T) {
	d := build(t, listSpec{signers: []allowlist.SecretKey{}, validity: time.Hour})
	if _, err := allowlist.Sign(d, officers[0], t0.Add(time.Hour)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("signing an expired list: %v", err)
	}
	if len(d.Signatures) != 0 {
		t.Fatal("a refused signature was added")
	}
}

func TestRemoveAndReAdd(t *testing.T) {
	d := build(t, listSpec{signers: []allowlist.SecretKey{}})
	if _, err := allowlist.Edit(d, allowlist.RemoveServer("nowhere.fr", "r", t0)); err == nil {
		t.Fatal("removing an unlisted server was accepted")
	}
	if _, err := allowlist.Edit(d, allowlist.RemoveServer("justice.gouv.fr", "   ", t0)); err == nil {
		t.Fatal("removing without a reason was accepted")
	}
	if _, err := allowlist.Edit(d, allowlist.RemoveServer("justice.gouv.fr", "compromised", t0)); err != nil {
		t.Fatal(err)
	}
	if _, listed := d.Servers["justice.gouv.fr"]; listed || d.Removed["justice.gouv.fr"].Reason != "compromised" {
		t.Fatalf("after remove: servers %v, removed %v", d.Servers, d.Removed)
	}
	if _, err := allowlist.Edit(d, allowlist.AddServer("justice.gouv.fr", allowlist.Server{}, false)); err != nil {
		t.Fatal(err)
	}
	if _, removed := d.Removed["justice.gouv.fr"]; removed {
		t.Fatal("re-adding a server kept its removal record")
	}
}
