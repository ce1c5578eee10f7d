package federation_test

import (
	"context"
	"net/http"
	"slices"
	"testing"

	"chappe/allowlist"
	"chappe/app/apptest"
	"chappe/config"
	"chappe/federation"
)

// A newer list spreads between listed servers through the serial header,
// in requests and in responses; a list that fails the receiver's checks is
// refused and audited.
func TestPeerListSpreading(t *testing.T) {
	ctx := context.Background()
	fed := apptest.NewFederation(t)
	// hs1 accepts lists signed by one officer, hs2 wants both.
	hs1 := fed.Start(t, "hs1.chappe.test", func(c *config.Config) { c.Allowlist.Threshold = 1 })
	hs2 := fed.Start(t, "hs2.chappe.test")
	fed.Publish(t)
	authenticated := func(from, to *apptest.FedServer) {
		t.Helper()
		if err := from.Federation.Do(ctx, federation.Request{Destination: to.Name, Method: http.MethodGet, Path: federation.PeerListPath}, nil); err != nil {
			t.Fatalf("%s → %s: %v", from.Name, to.Name, err)
		}
	}

	// hs2 learns hs1's key now, so that what follows goes through the
	// serial header of hs1's requests (not of hs1's key document).
	authenticated(hs1, hs2)

	// Serial 2 reaches hs1 only; hs1's next request shows it to hs2, which
	// fetches it from hs1 and applies it.
	hs1.Deliver(t, fed.NextList(t))
	if hs1.Allowlist.Serial() != 2 || hs2.Allowlist.Serial() != 1 {
		t.Fatalf("serials %d and %d", hs1.Allowlist.Serial(), hs2.Allowlist.Serial())
	}
	authenticated(hs1, hs2)
	eventually(t, "hs2 applies serial 2 from hs1", func() bool { return hs2.Allowlist.Serial() == 2 })
	st, err := hs2.Allowlist.Status(ctx)
	if err != nil || st.Current.Source != "peer:"+hs1.Name {
		t.Fatalf("hs2's list came from %q (%v)", st.Current.Source, err)
	}

	// Serial 3 reaches hs2 only; hs2's answer to an (unauthenticated)
	// request of hs1 shows it, and hs1 fetches it.
	hs2.Deliver(t, fed.NextList(t))
	if err := hs1.Federation.Do(ctx, federation.Request{Destination: hs2.Name, Method: http.MethodGet, Path: "/_matrix/federation/v1/version"}, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "hs1 applies serial 3 from hs2", func() bool { return hs1.Allowlist.Serial() == 3 })

	// Serial 4 signed by one officer: hs1 applies it, hs2 refuses it when
	// hs1 offers it, audits the refusal, and keeps serial 3.
	d, err := allowlist.Parse(fed.NextList(t))
	if err != nil {
		t.Fatal(err)
	}
	delete(d.Signatures, "officer2")
	weak, err := d.Encode()
	if err != nil {
		t.Fatal(err)
	}
	hs1.Deliver(t, weak)
	if hs1.Allowlist.Serial() != 4 {
		t.Fatalf("hs1 did not apply the list signed once: %d", hs1.Allowlist.Serial())
	}
	authenticated(hs1, hs2)
	eventually(t, "hs2 audits the refusal of hs1's list", func() bool {
		st, err := hs2.Allowlist.Status(ctx)
		return err == nil && slices.ContainsFunc(st.RecentRefusals, func(e allowlist.AuditEntry) bool {
			return e.Source == "peer:"+hs1.Name && e.Serial == 4
		})
	})
	if hs2.Allowlist.Serial() != 3 {
		t.Errorf("hs2 applied a list that fails its checks: serial %d", hs2.Allowlist.Serial())
	}
}
