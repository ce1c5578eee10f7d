package roomserver

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"

	"chappe/signingkey"
	"chappe/sqlstore/sqltest"
	"chappe/streams"
)

func TestMain(m *testing.M) { sqltest.Main(m) }

// testServerName is the server name of every fixture room.
const testServerName = "test.gouv.fr"

var userSeq atomic.Int64

// fixture is a roomserver on the package's real database.
type fixture struct {
	t  testing.TB
	rs *Roomserver
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	key := signingkey.Key{ID: "ed25519:test", Private: priv}
	store := sqltest.Store(t)
	last, err := store.MaxStreamPosition(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, rs: New(Config{ServerName: testServerName, DefaultVersion: "10"}, store, key, nil, streams.NewHub(last))}
}

// user returns a fresh user ID (users need no account in the roomserver).
func (f *fixture) user(name string) string {
	return fmt.Sprintf("@%s%d:%s", name, userSeq.Add(1), testServerName)
}

// NewRoom creates a real signed room of the given version and preset, created by creator.
func (f *fixture) NewRoom(creator, preset, version string) string {
	f.t.Helper()
	id, err := f.rs.CreateRoom(context.Background(), creator, CreateRoomRequest{Preset: preset, RoomVersion: version})
	if err != nil {
		f.t.Fatalf("NewRoom(%s, %s, v%s): %v", creator, preset, version, err)
	}
	return id
}

// join makes user join roomID or fails the test.
func (f *fixture) join(user, roomID string) {
	f.t.Helper()
	if _, err := f.rs.Join(context.Background(), MembershipRequest{Sender: user, RoomID: roomID}); err != nil {
		f.t.Fatalf("%s joining %s: %v", user, roomID, err)
	}
}

// say sends a text message and returns its event ID.
func (f *fixture) say(user, roomID, text string) string {
	f.t.Helper()
	id, err := f.rs.Send(context.Background(), SendRequest{UserID: user, DeviceID: "DEV", RoomID: roomID, Type: "m.room.message",
		Content: mustJSON(map[string]string{"msgtype": "m.text", "body": text}), TxnID: fmt.Sprintf("txn-%d", userSeq.Add(1))})
	if err != nil {
		f.t.Fatalf("%s saying %q: %v", user, text, err)
	}
	return id
}

// setState sends a state event.
func (f *fixture) setState(user, roomID, typ, key string, c any) (string, error) {
	return f.rs.Send(context.Background(), SendRequest{UserID: user, DeviceID: "DEV", RoomID: roomID, Type: typ, StateKey: &key, Content: mustJSON(c)})
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
