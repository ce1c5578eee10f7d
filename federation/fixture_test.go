package federation

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tidwall/gjson"

	"chappe/roomserver"
	"chappe/signingkey"
	"chappe/sqlstore"
	"chappe/sqlstore/sqltest"
	"chappe/streams"
)

// ours is the server name of the fixtures.
const ours = "ours.gouv.fr"

// testGate is an allowlist that tests change as they go.
type testGate struct {
	mu      sync.Mutex
	servers map[string]bool
}

func newGate(servers ...string) *testGate {
	g := &testGate{servers: map[string]bool{ours: true}}
	for _, s := range servers {
		g.servers[s] = true
	}
	return g
}

func (g *testGate) Allowed(s string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.servers[s]
}

func (g *testGate) set(s string, allowed bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.servers[s] = allowed
}

// sentTxn is a transaction the recorder received.
type sentTxn struct {
	dest, txnID string
	pdus        []json.RawMessage
	edus        []EDU
	failed      bool // the transport answered with an error
}

// bodies are the message bodies of the PDUs ("" for other events).
func (s sentTxn) bodies() []string {
	var out []string
	for _, p := range s.pdus {
		out = append(out, gjson.GetBytes(p, "content.body").String())
	}
	return out
}

// recorder is the in-test Transport: it records every transaction and fails
// when fail says so. It stands where the outbound HTTP client will.
type recorder struct {
	mu      sync.Mutex
	txns    []sentTxn
	started int // calls so far, finished or not
	// fail, when set, decides the outcome of each call (nil: success).
	fail func(t sentTxn) error
	// block, when set, is received from before each call returns.
	block chan struct{}
	// onSend, when set, is called at each call, before anything else.
	onSend func()
}

func newRecorder() *recorder { return &recorder{} }

var errUnreachable = errors.New("destination unreachable")

func (r *recorder) SendTransaction(ctx context.Context, dest, txnID string, pdus []json.RawMessage, edus []EDU) (map[string]string, error) {
	if r.onSend != nil {
		r.onSend()
	}
	t := sentTxn{dest: dest, txnID: txnID, pdus: slices.Clone(pdus), edus: slices.Clone(edus)}
	r.mu.Lock()
	fail, block := r.fail, r.block
	r.started++
	r.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	var err error
	if fail != nil {
		err = fail(t)
	}
	t.failed = err != nil
	r.mu.Lock()
	r.txns = append(r.txns, t)
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	results := map[string]string{}
	for _, p := range pdus {
		results[gjson.GetBytes(p, "event_id").String()] = ""
	}
	return results, nil
}

// inFlight is the number of calls not finished yet.
func (r *recorder) inFlight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.started - len(r.txns)
}

func (r *recorder) setFail(f func(t sentTxn) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = f
}

// sent returns the transactions received so far for dest.
func (r *recorder) sent(dest string) []sentTxn {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []sentTxn
	for _, t := range r.txns {
		if t.dest == dest {
			out = append(out, t)
		}
	}
	return out
}

// delivered is the bodies of the PDUs dest acknowledged, in order.
func (r *recorder) delivered(dest string) []string {
	var out []string
	for _, t := range r.sent(dest) {
		if !t.failed {
			out = append(out, t.bodies()...)
		}
	}
	return out
}

// fixture is a roomserver whose events go through a real Outbox to a
// Sender with a recording transport, on a database of its own.
type fixture struct {
	t      testing.TB
	url    string // of the fixture's database
	store  *sqlstore.Store
	gate   *testGate
	rec    *recorder
	sender *Sender
	outbox *Outbox
	rs     *roomserver.Roomserver
	// rollback makes the transaction of an event whose body it names
	// roll back, after the outbox queued it; its wake function, if set, is
	// called inside that transaction first.
	rollback     string
	wakeInRollTx func()
	// sleeps records the backoff waits asked for when fastSleep is set.
	mu     sync.Mutex
	sleeps []time.Duration
	stop   context.CancelFunc
	done   chan struct{}
	seq    int
}

// newFixture builds the fixture; the Sender does not run until start.
func newFixture(t testing.TB, cfg SenderConfig, gate *testGate) *fixture {
	t.Helper()
	ctx := context.Background()
	url := sqltest.NewDatabase(t, "federation")
	store, err := sqlstore.Open(ctx, url, 10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	f := &fixture{t: t, url: url, store: store, gate: gate, rec: newRecorder()}
	f.sender = NewSender(cfg, store, gate, f.rec, zerolog.Nop())
	f.outbox = NewOutbox(ours, gate, f.sender)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	last, err := store.MaxStreamPosition(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.rs = roomserver.New(roomserver.Config{ServerName: ours, DefaultVersion: "10"}, store,
		signingkey.Key{ID: "ed25519:test", Private: priv}, nil, streams.NewHub(last), f.outbox, rollbackListener{f})
	return f
}

// rollbackListener fails the event the fixture names, after the outbox.
type rollbackListener struct{ f *fixture }

func (l rollbackListener) EventStored(_ context.Context, _ *sqlstore.Queries, ev sqlstore.Event, _ int64) error {
	if l.f.rollback != "" && gjson.Get(ev.JSON, "content.body").String() == l.f.rollback {
		if l.f.wakeInRollTx != nil {
			l.f.wakeInRollTx()
		}
		return errors.New("rolled back by the test")
	}
	return nil
}

// start runs the Sender until the test ends (or stopSender).
func (f *fixture) start() {
	ctx, cancel := context.WithCancel(context.Background())
	f.stop, f.done = cancel, make(chan struct{})
	go func() { f.sender.Run(ctx); close(f.done) }()
	f.t.Cleanup(f.stopSender)
}

// stopSender stops the Sender and waits for its workers.
func (f *fixture) stopSender() {
	if f.stop == nil {
		return
	}
	f.stop()
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		f.t.Fatal("the Sender did not stop")
	}
	f.stop = nil
}

// recordSleeps makes backoff waits instant and records them.
func (f *fixture) recordSleeps() {
	f.sender.sleep = func(ctx context.Context, d time.Duration) bool {
		f.mu.Lock()
		f.sleeps = append(f.sleeps, d)
		f.mu.Unlock()
		return ctx.Err() == nil
	}
}

// retryWhen makes backoff waits last until ch is closed.
func (f *fixture) retryWhen(ch <-chan struct{}) {
	f.sender.sleep = func(ctx context.Context, _ time.Duration) bool {
		select {
		case <-ch:
			return true
		case <-ctx.Done():
			return false
		}
	}
}

func (f *fixture) sleepsSoFar() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.sleeps)
}

// room creates a public room of a local user and makes the remote users
// join it (stored as this server's events, as a federation join would
// leave the state); it returns the room ID and the local creator.
func (f *fixture) room(remoteUsers ...string) (string, string) {
	f.t.Helper()
	ctx := context.Background()
	f.seq++
	alice := fmt.Sprintf("@alice%d:%s", f.seq, ours)
	roomID, err := f.rs.CreateRoom(ctx, alice, roomserver.CreateRoomRequest{Preset: roomserver.PresetPublic})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, u := range remoteUsers {
		if _, err := f.rs.Join(ctx, roomserver.MembershipRequest{Sender: u, RoomID: roomID}); err != nil {
			f.t.Fatalf("%s joining: %v", u, err)
		}
	}
	return roomID, alice
}

// say sends a message and returns its event ID (or the error).
func (f *fixture) say(user, roomID, body string) (string, error) {
	f.seq++
	content, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": body})
	return f.rs.Send(context.Background(), roomserver.SendRequest{UserID: user, DeviceID: "DEV", RoomID: roomID,
		Type: "m.room.message", Content: content, TxnID: fmt.Sprintf("t%d", f.seq)})
}

func (f *fixture) mustSay(user, roomID, body string) string {
	f.t.Helper()
	id, err := f.say(user, roomID, body)
	if err != nil {
		f.t.Fatalf("saying %q: %v", body, err)
	}
	return id
}

// queued is what the outbox holds for dest: message bodies for PDUs
// ("<type> <state_key>" for other events), "edu:<type>" for EDUs.
func (f *fixture) queued(dest string) []string {
	f.t.Helper()
	items, err := f.store.OutboxBatch(context.Background(), dest, 50, 100)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, it := range items {
		switch {
		case !it.IsPDU():
			out = append(out, "edu:"+it.EDUType)
		case gjson.GetBytes(it.PDU, "content.body").Exists():
			out = append(out, gjson.GetBytes(it.PDU, "content.body").String())
		default:
			out = append(out, strings.TrimSpace(gjson.GetBytes(it.PDU, "type").String()+" "+gjson.GetBytes(it.PDU, "state_key").String()))
		}
	}
	return out
}

// eventually waits until cond holds.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// workers is the number of running workers.
func (s *Sender) activeWorkers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.workers)
}
