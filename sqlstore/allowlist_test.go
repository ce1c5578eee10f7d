package sqlstore_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"chappe/sqlstore"
	"chappe/sqlstore/sqltest"
)

// The allowlist tables share one database per package: each test reads what
// it wrote, knowing what the others may have left.

func TestAllowlistCurrentOnlyMovesForward(t *testing.T) {
	st := sqltest.Store(t)
	ctx := context.Background()
	list := func(serial int64, hash string) sqlstore.AllowlistCurrent {
		return sqlstore.AllowlistCurrent{Serial: serial, ContentHash: hash, Document: []byte(`{"serial":` + hash + `}`), Source: "file:/x", AppliedTS: serial}
	}
	audit := func(serial int64) sqlstore.AllowlistAudit {
		return sqlstore.AllowlistAudit{TS: serial, Outcome: "applied", Serial: &serial, ContentHash: "h", Source: "test-forward"}
	}
	// Whatever another test left, start above it.
	base := int64(1000)
	steps := []struct {
		serial  int64
		applied bool
	}{
		{base + 1, true},
		{base + 1, false}, // equal serial: never replaces
		{base, false},     // lower: never replaces
		{base + 5, true},
		{base + 4, false},
	}
	for _, s := range steps {
		ok, err := st.ApplyAllowlist(ctx, list(s.serial, "h"), audit(s.serial))
		if err != nil {
			t.Fatalf("ApplyAllowlist(%d): %v", s.serial, err)
		}
		if ok != s.applied {
			t.Fatalf("ApplyAllowlist(%d) = %v, want %v", s.serial, ok, s.applied)
		}
	}
	cur, err := st.AllowlistCurrent(ctx)
	if err != nil || cur.Serial != base+5 || cur.Source != "file:/x" {
		t.Fatalf("current = %+v, %v; want serial %d", cur, err, base+5)
	}
	// Only the two applied lists were audited: a refused replacement writes nothing.
	rows, err := st.RecentAllowlistAudit(ctx, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	var serials []int64
	for _, r := range rows {
		if r.Source == "test-forward" {
			serials = append(serials, *r.Serial)
		}
	}
	if len(serials) != 2 || serials[0] != base+5 || serials[1] != base+1 {
		t.Fatalf("audited serials (newest first) = %v, want [%d %d]", serials, base+5, base+1)
	}
}

func TestAllowlistAuditIsAppendOnly(t *testing.T) {
	st := sqltest.Store(t)
	ctx := context.Background()
	fed := "gouv"
	if err := st.InsertAllowlistAudit(ctx, sqlstore.AllowlistAudit{
		TS: 1, Outcome: "refused", Reason: "expired: x", Federation: &fed, ContentHash: "abc",
		Signers: []string{"alice ed25519:a"}, Source: "test-append-only",
	}); err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		"UPDATE allowlist_audit SET reason = 'rewritten'",
		"DELETE FROM allowlist_audit",
		"TRUNCATE allowlist_audit",
	} {
		_, err := st.Pool().Exec(ctx, stmt)
		if err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: err = %v, want the append-only refusal", stmt, err)
		}
	}
	rows, err := st.RecentAllowlistAudit(ctx, "refused", 100)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rows {
		if r.Source == "test-append-only" {
			found = r.Reason == "expired: x" && r.Serial == nil && *r.Federation == "gouv" &&
				len(r.Signers) == 1 && r.ServersAdded != nil && len(r.ServersAdded) == 0
		}
		if r.Outcome != "refused" {
			t.Errorf("RecentAllowlistAudit(refused) returned a %s row", r.Outcome)
		}
	}
	if !found {
		t.Fatalf("the refusal row is missing or altered: %+v", rows)
	}
	// An outcome outside the two allowed values is refused by the table.
	if err := st.InsertAllowlistAudit(ctx, sqlstore.AllowlistAudit{TS: 1, Outcome: "maybe", ContentHash: "x", Source: "t"}); err == nil {
		t.Error("an audit row with outcome 'maybe' was accepted")
	}
}

func TestAllowlistRefreshRow(t *testing.T) {
	st := sqltest.Store(t)
	ctx := context.Background()
	if err := st.SaveAllowlistRefresh(ctx, 10, []byte(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := st.SaveAllowlistRefresh(ctx, 20, []byte(`{"n":2}`)); err != nil {
		t.Fatal(err)
	}
	ts, result, err := st.AllowlistRefresh(ctx)
	if err != nil || ts != 20 || string(result) != `{"n": 2}` {
		t.Fatalf("AllowlistRefresh = %d %s %v, want only the second refresh", ts, result, err)
	}
}

func TestAllowlistCurrentNotFoundOnFreshDatabase(t *testing.T) {
	sqltest.Store(t) // migrations on the package database
	st, err := sqlstore.Open(context.Background(), sqltest.NewDatabase(t, "allowlist_empty"), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.AllowlistCurrent(context.Background()); !errors.Is(err, sqlstore.ErrNotFound) {
		t.Fatalf("AllowlistCurrent on a fresh database: %v, want ErrNotFound", err)
	}
	if _, _, err := st.AllowlistRefresh(context.Background()); !errors.Is(err, sqlstore.ErrNotFound) {
		t.Fatalf("AllowlistRefresh on a fresh database: %v, want ErrNotFound", err)
	}
}
