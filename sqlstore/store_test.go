package sqlstore_test

import (
	"context"
	"slices"
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
	later, flush := sqlstore.FlushLater(ctx)
	if got := setting(later); got != "off" {
		t.Errorf("under FlushLater: synchronous_commit = %s, want off", got)
	}
	flush()
	if got := setting(ctx); got != "on" {
		t.Errorf("otherwise: synchronous_commit = %s, want on (SET LOCAL must not leak to the pooled connection)", got)
	}
	if got, err := st.SynchronousCommit(ctx); err != nil || got != "on" {
		t.Errorf("outside transactions: synchronous_commit = %s, %v; want on", got, err)
	}
}

// TestFlushLaterDefersHooks: what transactions under FlushLater leave for
// after their commit (AfterCommit hooks, WhenDurable work) waits for the
// flush, in order; without FlushLater it runs at once.
func TestFlushLaterDefersHooks(t *testing.T) {
	st := sqltest.Store(t)
	var ran []string
	run := func(ctx context.Context, name string) {
		t.Helper()
		if err := st.InTx(ctx, func(q *sqlstore.Queries) error {
			q.AfterCommit(func() { ran = append(ran, name+" hook") })
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		sqlstore.WhenDurable(ctx, func() { ran = append(ran, name+" durable") })
	}
	later, flush := sqlstore.FlushLater(context.Background())
	run(later, "a")
	run(later, "b")
	if len(ran) != 0 {
		t.Fatalf("before the flush: %v ran", ran)
	}
	flush()
	want := []string{"a hook", "a durable", "b hook", "b durable"}
	if !slices.Equal(ran, want) {
		t.Fatalf("after the flush: %v, want %v", ran, want)
	}
	flush() // a second flush runs nothing again
	ran = nil
	run(context.Background(), "c")
	if !slices.Equal(ran, []string{"c hook", "c durable"}) {
		t.Fatalf("without FlushLater: %v", ran)
	}
}
