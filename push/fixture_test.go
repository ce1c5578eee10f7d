package push

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"chappe/ephemeral"
	"chappe/roomserver"
	"chappe/signingkey"
	"chappe/sqlstore"
	"chappe/sqlstore/sqltest"
	"chappe/streams"
)

func TestMain(m *testing.M) { sqltest.Main(m) }

const serverName = "test.gouv.fr"

var seq atomic.Int64

// profiles gives member events the display names tests choose.
type profiles struct {
	mu    sync.Mutex
	names map[string]string
}

func (p *profiles) MemberProfile(_ context.Context, userID string) (string, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.names[userID], ""
}

func (p *profiles) UserExists(context.Context, string) (bool, error) { return true, nil }

// env is a roomserver whose events go through a push Service, with the real
// receipts component, on the package's database.
type env struct {
	t        testing.TB
	ctx      context.Context
	store    *sqlstore.Store
	hub      *streams.Hub
	key      signingkey.Key
	profiles *profiles
	push     *Service
	rs       *roomserver.Roomserver
	receipts *ephemeral.Receipts
}

func newEnv(t testing.TB, extra ...roomserver.EventListener) *env {
	t.Helper()
	return newEnvOn(t, sqltest.Store(t), extra...)
}

// newEnvOn is newEnv on a given store.
func newEnvOn(t testing.TB, store *sqlstore.Store, extra ...roomserver.EventListener) *env {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	e := &env{t: t, ctx: context.Background(), store: store, key: signingkey.Key{ID: "ed25519:test", Private: priv},
		profiles: &profiles{names: map[string]string{}}}
	last, err := e.store.MaxStreamPosition(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.hub = streams.NewHub(last)
	e.start(extra...)
	return e
}

// start builds fresh components on the same database and Hub: what a
// restart does, caches included.
func (e *env) start(extra ...roomserver.EventListener) {
	e.push = New(Config{ServerName: serverName}, e.store, e.hub)
	listeners := append([]roomserver.EventListener{e.push}, extra...)
	e.rs = roomserver.New(roomserver.Config{ServerName: serverName, DefaultVersion: "11"}, e.store, e.key, e.profiles, e.hub, listeners...)
	e.receipts = ephemeral.NewReceipts(e.store, e.hub, nil, nil)
}

// user returns a fresh local user ID.
// user creates an account with a device "DEV" (pushers belong to a device).
func (e *env) user(name string) string {
	e.t.Helper()
	id := fmt.Sprintf("@%s%d:%s", name, seq.Add(1), serverName)
	if err := e.store.CreateUser(e.ctx, sqlstore.User{UserID: id, CreatedTS: 1}, nil); err != nil {
		e.t.Fatal(err)
	}
	if err := e.store.UpsertDevice(e.ctx, sqlstore.Device{UserID: id, DeviceID: "DEV", CreatedTS: 1}); err != nil {
		e.t.Fatal(err)
	}
	return id
}

// room creates a public room of creator joined by the others.
func (e *env) room(creator string, others ...string) string {
	e.t.Helper()
	id, err := e.rs.CreateRoom(e.ctx, creator, roomserver.CreateRoomRequest{Preset: roomserver.PresetPublic})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, u := range others {
		e.join(u, id)
	}
	return id
}

func (e *env) join(user, roomID string) {
	e.t.Helper()
	if _, err := e.rs.Join(e.ctx, roomserver.MembershipRequest{Sender: user, RoomID: roomID}); err != nil {
		e.t.Fatalf("%s joins: %v", user, err)
	}
}

func (e *env) leave(user, roomID string) {
	e.t.Helper()
	if err := e.rs.Leave(e.ctx, roomserver.MembershipRequest{Sender: user, RoomID: roomID}); err != nil {
		e.t.Fatalf("%s leaves: %v", user, err)
	}
}

// send sends a message event and returns its ID.
func (e *env) send(user, roomID, typ string, content map[string]any) string {
	e.t.Helper()
	id, err := e.trySend(user, roomID, typ, content)
	if err != nil {
		e.t.Fatalf("%s sends %s: %v", user, typ, err)
	}
	return id
}

func (e *env) trySend(user, roomID, typ string, content map[string]any) (string, error) {
	c, _ := json.Marshal(content)
	return e.rs.Send(e.ctx, roomserver.SendRequest{UserID: user, DeviceID: "DEV", RoomID: roomID, Type: typ, Content: c,
		TxnID: fmt.Sprintf("t%d", seq.Add(1))})
}

func (e *env) say(user, roomID, body string) string {
	e.t.Helper()
	return e.send(user, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": body})
}

func (e *env) state(user, roomID, typ, key string, content map[string]any) {
	e.t.Helper()
	c, _ := json.Marshal(content)
	if _, err := e.rs.Send(e.ctx, roomserver.SendRequest{UserID: user, DeviceID: "DEV", RoomID: roomID, Type: typ, StateKey: &key, Content: c}); err != nil {
		e.t.Fatalf("%s sets %s: %v", user, typ, err)
	}
}

// inThread sends a message in the thread of root.
func (e *env) inThread(user, roomID, root, body string) string {
	e.t.Helper()
	return e.send(user, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": body,
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
}

// receipt posts a read receipt (thread nil: unthreaded).
func (e *env) receipt(user, roomID, typ, eventID string, thread *string) {
	e.t.Helper()
	if err := e.receipts.PostReceipt(e.ctx, user, roomID, typ, eventID, thread); err != nil {
		e.t.Fatalf("receipt %s %s: %v", typ, eventID, err)
	}
}

// counts returns the user's counts in one room.
func (e *env) counts(user, roomID string) RoomCounts {
	e.t.Helper()
	c, err := e.push.UnreadCounts(e.ctx, user, []string{roomID})
	if err != nil {
		e.t.Fatal(err)
	}
	return c[roomID]
}

// wantCounts checks the whole-room counts.
func (e *env) wantCounts(user, roomID string, notifications, highlights int, what string) {
	e.t.Helper()
	c := e.counts(user, roomID)
	if c.Notifications != notifications || c.Highlights != highlights {
		e.t.Errorf("%s: %s has %d notifications, %d highlights; want %d, %d", what, user, c.Notifications, c.Highlights, notifications, highlights)
	}
}

// notifications returns the user's newest notifications.
func (e *env) notifications(user string, only string) []Notification {
	e.t.Helper()
	page, err := e.push.Notifications(e.ctx, user, "", 100, only)
	if err != nil {
		e.t.Fatal(err)
	}
	return page.Notifications
}

func strp(s string) *string { return &s }
