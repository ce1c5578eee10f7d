package ephemeral_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"chappe/accountdata"
	"chappe/ephemeral"
	"chappe/mxerr"
	"chappe/roomserver"
	"chappe/signingkey"
	"chappe/sqlstore"
	"chappe/sqlstore/sqltest"
	"chappe/streams"
)

func TestMain(m *testing.M) { sqltest.Main(m) }

const serverName = "test.gouv.fr"

var seq atomic.Int64

// clock is a manual clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fixture is a roomserver, account data and the ephemeral components on one
// real database and Hub, with a manual clock.
type fixture struct {
	t     *testing.T
	store *sqlstore.Store
	hub   *streams.Hub
	rs    *roomserver.Roomserver
	ad    *accountdata.Service
	eph   *ephemeral.Service
	clock *clock
}

func newFixture(t *testing.T, presence bool) *fixture {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	store := sqltest.Store(t)
	last, err := store.MaxStreamPosition(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	hub := streams.NewHub(last)
	f := &fixture{t: t, store: store, hub: hub, clock: newClock()}
	f.rs = roomserver.New(roomserver.Config{ServerName: serverName, DefaultVersion: "10"}, store,
		signingkey.Key{ID: "ed25519:test", Private: priv}, nil, hub)
	f.ad = accountdata.New(store, hub)
	f.eph = ephemeral.New(store, hub, f.ad, ephemeral.PresenceConfig{Enabled: presence, ServerName: serverName}, nil, f.clock.Now)
	return f
}

func (f *fixture) user(name string) string {
	return fmt.Sprintf("@%s%d:%s", name, seq.Add(1), serverName)
}

func (f *fixture) room(creator string, preset string, joiners ...string) string {
	f.t.Helper()
	ctx := context.Background()
	id, err := f.rs.CreateRoom(ctx, creator, roomserver.CreateRoomRequest{Preset: preset})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, u := range joiners {
		if _, err := f.rs.Join(ctx, roomserver.MembershipRequest{Sender: u, RoomID: id}); err != nil {
			f.t.Fatalf("%s joins: %v", u, err)
		}
	}
	return id
}

func (f *fixture) send(user, roomID string, content map[string]any) string {
	f.t.Helper()
	c, _ := json.Marshal(content)
	id, err := f.rs.Send(context.Background(), roomserver.SendRequest{UserID: user, DeviceID: "DEV", RoomID: roomID,
		Type: "m.room.message", Content: c, TxnID: fmt.Sprintf("t%d", seq.Add(1))})
	if err != nil {
		f.t.Fatalf("send: %v", err)
	}
	return id
}

func (f *fixture) say(user, roomID, text string) string {
	return f.send(user, roomID, map[string]any{"msgtype": "m.text", "body": text})
}

func (f *fixture) pos() int64 { return f.hub.Current().Stream }

// signalled tells whether sub has a wake-up pending: Wait from the current
// position returns before its deadline only if it was signalled.
func (f *fixture) signalled(sub *streams.Subscription) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	sub.Wait(ctx, f.hub.Current())
	return ctx.Err() == nil
}

func wantErr(t *testing.T, err error, code mxerr.Code, what string) {
	t.Helper()
	if e, ok := mxerr.As(err); !ok || e.Code != code {
		t.Errorf("%s: want %s, got %v", what, code, err)
	}
}

func ptr(s string) *string { return &s }
