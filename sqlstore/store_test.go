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
