package sqlstore_test

import (
	"context"
	"testing"

	"chappe/sqlstore"
	"chappe/sqlstore/sqltest"
)

func TestMain(m *testing.M) { sqltest.Main(m) }

func TestMigrationsApplyTwice(t *testing.T) {
	st := sqltest.Store(t)
	// A second Open on the same database finds nothing to migrate.
	st2, err := sqlstore.Open(context.Background(), sqltest.URL(t), 2)
	if err != nil {
		t.Fatalf("second open: %v", err)
	}
	st2.Close()
	if _, err := st.GetUser(context.Background(), "@nobody:localhost"); err != sqlstore.ErrNotFound {
		t.Fatalf("GetUser on empty db: got %v, want ErrNotFound", err)
	}
}

// TestFlushLater: transactions under FlushLater commit without waiting for
// the disk; the others, and plain statements, wait as usual.
func TestFlushLater(t *testing.T) {
	st := sqltest.Store(t)
	setting := func(ctx context.Context) string {
		t.Helper()
		var v string
		if err := st.InTx(ctx, func(q *sqlstore.Queries) (err error) {
			v, err = q.SynchronousCommit(ctx)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return v
	}
	ctx := context.Background()
	if got := setting(sqlstore.FlushLater(ctx)); got != "off" {
		t.Errorf("under FlushLater: synchronous_commit = %s, want off", got)
	}
	if got := setting(ctx); got != "on" {
		t.Errorf("otherwise: synchronous_commit = %s, want on (SET LOCAL must not leak to the pooled connection)", got)
	}
	if got, err := st.SynchronousCommit(ctx); err != nil || got != "on" {
		t.Errorf("outside transactions: synchronous_commit = %s, %v; want on", got, err)
	}
}
