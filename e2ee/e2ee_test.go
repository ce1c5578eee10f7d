package e2ee_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"chappe/e2ee"
	"chappe/sqlstore"
	"chappe/sqlstore/sqltest"
	"chappe/streams"
)

func TestMain(m *testing.M) { sqltest.Main(m) }

// The spec's rule for replacing a backed-up session key.
func TestShouldReplace(t *testing.T) {
	k := func(verified bool, fmi, fwd int64) e2ee.KeyBackupData {
		return e2ee.KeyBackupData{IsVerified: verified, FirstMessageIndex: fmi, ForwardedCount: fwd}
	}
	cases := []struct {
		name                string
		existing, candidate e2ee.KeyBackupData
		replace             bool
	}{
		{"verified beats unverified", k(false, 0, 0), k(true, 9, 9), true},
		{"unverified never beats verified", k(true, 9, 9), k(false, 0, 0), false},
		{"lower first index wins", k(false, 5, 0), k(false, 4, 9), true},
		{"higher first index loses", k(false, 4, 9), k(false, 5, 0), false},
		{"same index: fewer forwards win", k(true, 3, 2), k(true, 3, 1), true},
		{"same index: more forwards lose", k(true, 3, 1), k(true, 3, 2), false},
		{"tie keeps the stored key", k(false, 3, 1), k(false, 3, 1), false},
	}
	for _, c := range cases {
		if got := e2ee.ShouldReplace(c.existing, c.candidate); got != c.replace {
			t.Errorf("%s: ShouldReplace = %v, want %v", c.name, got, c.replace)
		}
	}
}

// fixture is a relay on the package database with a user and devices.
func fixture(t *testing.T, cfg e2ee.Config, userID string, devices ...string) (*e2ee.Service, *streams.Hub) {
	t.Helper()
	ctx := context.Background()
	store := sqltest.Store(t)
	if err := store.CreateUser(ctx, sqlstore.User{UserID: userID, CreatedTS: 1}, nil); err != nil {
		t.Fatal(err)
	}
	for _, d := range devices {
		if err := store.UpsertDevice(ctx, sqlstore.Device{UserID: userID, DeviceID: d, CreatedTS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	last, err := store.MaxStreamPosition(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hub := streams.NewHub(last)
	cfg.ServerName = "localhost"
	return e2ee.New(cfg, store, hub, nil), hub
}

// A device that never syncs keeps at most MaxPendingToDevice messages: the
// newest.
func TestToDeviceBoundedPerDevice(t *testing.T) {
	ctx := context.Background()
	svc, hub := fixture(t, e2ee.Config{MaxPendingToDevice: 3}, "@bounded:localhost", "SENDER", "IDLE")
	for i := 1; i <= 5; i++ {
		msgs := map[string]map[string]json.RawMessage{"@bounded:localhost": {"IDLE": json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}}
		if err := svc.SendToDevice(ctx, "@bounded:localhost", "SENDER", "m.test", fmt.Sprint("t", i), msgs); err != nil {
			t.Fatal(err)
		}
	}
	got, err := svc.ToDeviceSince(ctx, "@bounded:localhost", "IDLE", 0, hub.Current().Stream)
	if err != nil {
		t.Fatal(err)
	}
	var ns []float64
	for _, raw := range got {
		var ev struct {
			Content struct{ N float64 } `json:"content"`
		}
		_ = json.Unmarshal(raw, &ev)
		ns = append(ns, ev.Content.N)
	}
	if fmt.Sprint(ns) != "[3 4 5]" {
		t.Errorf("pending messages %v, want the newest three [3 4 5]", ns)
	}
}
