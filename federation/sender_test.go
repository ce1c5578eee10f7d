package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"chappe/sqlstore"
)

const remote = "remote.gouv.fr:8448"

// bodiesFrom0 is "m0" … "m<n-1>".
func bodiesFrom0(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("m%d", i)
	}
	return out
}

func TestSenderKeepsOrderAcrossBatches(t *testing.T) {
	f := newFixture(t, SenderConfig{}, newGate(remote))
	roomID, alice := f.room("@bob:" + remote)
	// The first transaction is held until all 500 events are queued, so the
	// rest go in full transactions.
	release := make(chan struct{})
	f.rec.block = release
	f.start()
	want := bodiesFrom0(500)
	for _, body := range want {
		f.mustSay(alice, roomID, body)
	}
	close(release)
	eventually(t, "500 events delivered", func() bool { return len(f.rec.delivered(remote)) >= 500 })
	if got := f.rec.delivered(remote); !slices.Equal(got, want) {
		t.Fatalf("delivered out of order or twice: %v", got)
	}
	txns := f.rec.sent(remote)
	ids := map[string]bool{}
	full := 0
	for _, tx := range txns {
		if len(tx.pdus) > MaxTransactionPDUs || len(tx.pdus) == 0 {
			t.Fatalf("transaction %s has %d PDUs", tx.txnID, len(tx.pdus))
		}
		if ids[tx.txnID] {
			t.Fatalf("transaction ID %s used twice", tx.txnID)
		}
		ids[tx.txnID] = true
		if len(tx.pdus) == MaxTransactionPDUs {
			full++
		}
	}
	if full < 9 {
		t.Fatalf("%d transactions of 50 PDUs among %d: the backlog was not batched", full, len(txns))
	}
	eventually(t, "the queue emptied and the worker exited", func() bool {
		return len(f.queued(remote)) == 0 && f.sender.activeWorkers() == 0
	})
	t.Logf("%d transactions, %d of 50 PDUs", len(txns), full)
}

func TestSenderRetriesTheSameTransaction(t *testing.T) {
	f := newFixture(t, SenderConfig{}, newGate(remote))
	// Retries wait until m1 is queued, so a retry that read the queue
	// again would carry m1 too.
	m1Queued := make(chan struct{})
	f.retryWhen(m1Queued)
	roomID, alice := f.room("@bob:" + remote)
	// The receiver processes the first three attempts but the replies are
	// lost (or it fails): the sender cannot tell, and must retry the same
	// transaction under the same ID.
	attempts := 0
	f.rec.setFail(func(sentTxn) error {
		attempts++
		if attempts <= 3 {
			return errUnreachable
		}
		return nil
	})
	f.mustSay(alice, roomID, "m0")
	f.start()
	eventually(t, "the first attempt", func() bool { return len(f.rec.sent(remote)) >= 1 })
	f.mustSay(alice, roomID, "m1") // queued while the first is being retried
	close(m1Queued)
	eventually(t, "both delivered", func() bool { return len(f.rec.delivered(remote)) == 2 })
	txns := f.rec.sent(remote)
	if len(txns) != 5 {
		t.Fatalf("%d transactions, want 3 failures, the retry that succeeds, then m1's", len(txns))
	}
	for i, tx := range txns[:4] {
		if tx.txnID != txns[0].txnID || !slices.Equal(tx.bodies(), []string{"m0"}) {
			t.Fatalf("attempt %d: %s %v, want %s [m0]", i, tx.txnID, tx.bodies(), txns[0].txnID)
		}
	}
	if txns[4].txnID == txns[0].txnID || !slices.Equal(txns[4].bodies(), []string{"m1"}) {
		t.Fatalf("after the retry: %s %v", txns[4].txnID, txns[4].bodies())
	}
}

func TestSenderBackoffGrowsAndResets(t *testing.T) {
	cfg := SenderConfig{InitialBackoff: 10 * time.Millisecond, MaxBackoff: 80 * time.Millisecond}
	f := newFixture(t, cfg, newGate(remote))
	f.recordSleeps()
	roomID, alice := f.room("@bob:" + remote)
	var failuresLeft atomic.Int32
	failuresLeft.Store(6)
	f.rec.setFail(func(sentTxn) error {
		if failuresLeft.Add(-1) >= 0 {
			return errUnreachable
		}
		return nil
	})
	f.start()
	f.mustSay(alice, roomID, "m0")
	eventually(t, "m0 delivered", func() bool { return len(f.rec.delivered(remote)) == 1 })
	ms := time.Millisecond
	want := []time.Duration{10 * ms, 20 * ms, 40 * ms, 80 * ms, 80 * ms, 80 * ms}
	if got := f.sleepsSoFar(); !slices.Equal(got, want) {
		t.Fatalf("backoff waits %v, want %v", got, want)
	}
	// A success resets it.
	failuresLeft.Store(2)
	f.mustSay(alice, roomID, "m1")
	eventually(t, "m1 delivered", func() bool { return len(f.rec.delivered(remote)) == 2 })
	want = append(want, 10*ms, 20*ms)
	if got := f.sleepsSoFar(); !slices.Equal(got, want) {
		t.Fatalf("backoff waits %v, want %v", got, want)
	}
}

func TestBackoff(t *testing.T) {
	s, m := time.Second, time.Minute
	for _, tc := range []struct {
		failures int
		want     time.Duration
	}{{1, s}, {2, 2 * s}, {3, 4 * s}, {6, 32 * s}, {7, m}, {8, m}, {1000, m}} {
		if got := Backoff(s, m, tc.failures); got != tc.want {
			t.Errorf("Backoff(1s, 1m, %d) = %v, want %v", tc.failures, got, tc.want)
		}
	}
}

func TestSenderStopsWhenTheAllowlistDropsTheDestination(t *testing.T) {
	gate := newGate(remote)
	f := newFixture(t, SenderConfig{PollInterval: 20 * time.Millisecond}, gate)
	roomID, alice := f.room("@bob:" + remote)
	// A failed transaction waits for its retry until the test says.
	retry := make(chan struct{})
	f.retryWhen(retry)
	f.start()
	f.mustSay(alice, roomID, "m0")
	eventually(t, "m0 delivered", func() bool { return len(f.rec.delivered(remote)) == 1 })

	// m1 fails and waits for its retry; meanwhile the server is dropped.
	f.rec.setFail(func(sentTxn) error { return errUnreachable })
	f.mustSay(alice, roomID, "m1")
	eventually(t, "m1 attempted", func() bool { return len(f.rec.sent(remote)) == 2 })
	gate.set(remote, false)
	f.rec.setFail(nil)
	f.mustSay(alice, roomID, "m2") // not queued: the gate refuses it
	close(retry)
	eventually(t, "the worker stopped", func() bool { return f.sender.activeWorkers() == 0 })
	time.Sleep(100 * time.Millisecond) // several polls: none restarts it
	if n := len(f.rec.sent(remote)); n != 2 {
		t.Fatalf("%d transactions after the removal, want none", n-2)
	}
	if f.sender.activeWorkers() != 0 {
		t.Fatal("a worker runs for an unlisted server")
	}
	// What was queued while it was listed stays, and goes once it is back.
	if got := f.queued(remote); !slices.Equal(got, []string{"m1"}) {
		t.Fatalf("queued while unlisted: %v, want [m1]", got)
	}
	gate.set(remote, true)
	eventually(t, "m1 delivered after the server is listed again", func() bool { return len(f.rec.delivered(remote)) == 2 })
	if got := f.rec.delivered(remote); !slices.Equal(got, []string{"m0", "m1"}) {
		t.Fatalf("delivered %v", got)
	}
}

func TestSenderResumesAfterRestart(t *testing.T) {
	f := newFixture(t, SenderConfig{}, newGate(remote))
	f.recordSleeps()
	roomID, alice := f.room("@bob:" + remote)
	// The first process cannot reach the destination and stops.
	f.rec.setFail(func(sentTxn) error { return errUnreachable })
	want := bodiesFrom0(120)
	for _, body := range want {
		f.mustSay(alice, roomID, body)
	}
	f.start()
	eventually(t, "an attempt", func() bool { return len(f.rec.sent(remote)) > 0 })
	f.stopSender()
	if f.sender.activeWorkers() != 0 {
		t.Fatal("workers left after Run returned")
	}
	first := f.rec.sent(remote)[0]

	// A new process on the same database delivers everything, in order.
	store2, err := sqlstore.Open(context.Background(), f.url, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer store2.Close()
	rec2 := newRecorder()
	s2 := NewSender(SenderConfig{}, store2, f.gate, rec2, f.sender.log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s2.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	eventually(t, "the backlog delivered", func() bool { return len(rec2.delivered(remote)) >= len(want) })
	if got := rec2.delivered(remote); !slices.Equal(got, want) {
		t.Fatalf("delivered after the restart: %v", got)
	}
	// The first transaction was the one the old process kept trying, with
	// the same ID.
	if tx := rec2.sent(remote)[0]; tx.txnID != first.txnID || !slices.Equal(tx.bodies(), first.bodies()) {
		t.Fatalf("after the restart the first transaction is %s %v, before it was %s %v", tx.txnID, tx.bodies(), first.txnID, first.bodies())
	}
}

func TestSenderNeverSendsARolledBackEvent(t *testing.T) {
	f := newFixture(t, SenderConfig{PollInterval: 10 * time.Millisecond}, newGate(remote))
	roomID, alice := f.room("@bob:" + remote)
	f.start()
	// The event is queued, the sender is even woken inside the
	// transaction, then the transaction rolls back.
	f.rollback = "secret"
	f.wakeInRollTx = func() {
		f.sender.Wake(remote)
		time.Sleep(30 * time.Millisecond) // the worker reads meanwhile and finds nothing
	}
	if _, err := f.say(alice, roomID, "secret"); err == nil {
		t.Fatal("the test listener did not roll the event back")
	}
	f.mustSay(alice, roomID, "after")
	eventually(t, "the next event delivered", func() bool { return len(f.rec.delivered(remote)) == 1 })
	time.Sleep(50 * time.Millisecond) // several polls
	if got := f.rec.delivered(remote); !slices.Equal(got, []string{"after"}) {
		t.Fatalf("delivered %v, want [after]", got)
	}
}

func TestSenderDeliversEDUsInOrderWithPDUs(t *testing.T) {
	const unlisted = "unlisted.gouv.fr"
	f := newFixture(t, SenderConfig{}, newGate(remote))
	roomID, alice := f.room("@bob:" + remote)
	ctx := context.Background()
	release := make(chan struct{})
	f.rec.block = release
	f.start()
	// A first event takes the worker into a held transaction, so the
	// next items travel together.
	f.mustSay(alice, roomID, "m0")
	eventually(t, "m0 in flight", func() bool { return f.rec.inFlight() == 1 })
	f.mustSay(alice, roomID, "m1")
	typing := EDU{Type: "m.typing", Content: json.RawMessage(`{"room_id":"` + roomID + `","user_id":"` + alice + `","typing":true}`)}
	err := f.store.InTx(ctx, func(q *sqlstore.Queries) error {
		return f.outbox.QueueEDU(ctx, q, []string{remote, ours, unlisted, remote}, typing)
	})
	if err != nil {
		t.Fatal(err)
	}
	// Straight on the pool too.
	if err := f.outbox.QueueEDU(ctx, &f.store.Queries, []string{remote}, EDU{Type: "m.receipt", Content: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	// A rolled-back EDU is never sent.
	_ = f.store.InTx(ctx, func(q *sqlstore.Queries) error {
		if err := f.outbox.QueueEDU(ctx, q, []string{remote}, EDU{Type: "m.rolled_back", Content: json.RawMessage(`{}`)}); err != nil {
			t.Error(err)
		}
		return fmt.Errorf("roll back")
	})
	f.mustSay(alice, roomID, "m2")
	for _, bad := range []EDU{{Type: "", Content: json.RawMessage(`{}`)}, {Type: "m.x", Content: json.RawMessage(`[1]`)}, {Type: "m.x", Content: json.RawMessage(`{`)}} {
		if err := f.outbox.QueueEDU(ctx, &f.store.Queries, []string{remote}, bad); err != ErrBadEDU {
			t.Errorf("QueueEDU(%s %s) = %v, want ErrBadEDU", bad.Type, bad.Content, err)
		}
	}
	if got := f.queued(unlisted); len(got) != 0 {
		t.Fatalf("queued for an unlisted server: %v", got)
	}
	close(release)
	eventually(t, "all delivered", func() bool { return len(f.rec.delivered(remote)) == 3 })
	txns := f.rec.sent(remote)
	if len(txns) != 2 {
		t.Fatalf("%d transactions, want 2", len(txns))
	}
	second := txns[1]
	if !slices.Equal(second.bodies(), []string{"m1", "m2"}) || len(second.edus) != 2 {
		t.Fatalf("second transaction: PDUs %v, %d EDUs", second.bodies(), len(second.edus))
	}
	if e := second.edus[0]; e.Type != "m.typing" || !gjson.GetBytes(e.Content, "typing").Bool() || gjson.GetBytes(e.Content, "room_id").String() != roomID {
		t.Fatalf("first EDU: %s %s", e.Type, e.Content)
	}
	if e := second.edus[1]; e.Type != "m.receipt" {
		t.Fatalf("second EDU: %s", e.Type)
	}
	eventually(t, "the queue emptied", func() bool { return len(f.queued(remote)) == 0 })
}

func TestSenderDropsItemsWhoseEventIsGone(t *testing.T) {
	f := newFixture(t, SenderConfig{}, newGate(remote))
	ctx := context.Background()
	const missing = 1 << 40
	if err := f.store.EnqueuePDU(ctx, []string{remote}, missing, 1); err != nil {
		t.Fatal(err)
	}
	if err := f.outbox.QueueEDU(ctx, &f.store.Queries, []string{remote}, EDU{Type: "m.receipt", Content: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if err := f.store.EnqueuePDU(ctx, []string{remote}, missing, 1); err != nil {
		t.Fatal(err)
	}
	f.start()
	eventually(t, "the queue emptied", func() bool { return len(f.queued(remote)) == 0 && f.sender.activeWorkers() == 0 })
	txns := f.rec.sent(remote)
	if len(txns) != 1 || len(txns[0].pdus) != 0 || len(txns[0].edus) != 1 {
		t.Fatalf("sent %+v, want one transaction with the EDU alone", txns)
	}
}

func TestTransactionBody(t *testing.T) {
	now := time.UnixMilli(1532991320875)
	body, err := TransactionBody(ours, now, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(body) != `{"origin":"ours.gouv.fr","origin_server_ts":1532991320875,"pdus":[]}` {
		t.Fatalf("empty transaction: %s", body)
	}
	body, err = TransactionBody(ours, now, []json.RawMessage{json.RawMessage(`{"type":"m.room.message"}`)},
		[]EDU{{Type: "m.typing", Content: json.RawMessage(`{"typing":true}`)}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"origin":"ours.gouv.fr","origin_server_ts":1532991320875,"pdus":[{"type":"m.room.message"}],"edus":[{"edu_type":"m.typing","content":{"typing":true}}]}`
	if string(body) != want {
		t.Fatalf("transaction:\n got %s\nwant %s", body, want)
	}
}

// testClock is a manual clock for the outbox and the senders.
type testClock struct{ ms atomic.Int64 }

func (c *testClock) now() time.Time          { return time.UnixMilli(c.ms.Load()) }
func (c *testClock) advance(d time.Duration) { c.ms.Add(d.Milliseconds()) }

// eduTypes is the types of the EDUs of txn.
func eduTypes(txn sentTxn) []string {
	var out []string
	for _, e := range txn.edus {
		out = append(out, e.Type)
	}
	return out
}

// Typing, presence and receipts queued too long ago are not sent, nor kept
// queued for a server that is down; to-device messages and device list
// updates are, however old.
func TestSenderDropsStaleEDUs(t *testing.T) {
	const down = "down.gouv.fr"
	f := newFixture(t, SenderConfig{InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, PollInterval: 10 * time.Millisecond}, newGate(remote, down))
	ctx := context.Background()
	clock := &testClock{}
	clock.ms.Store(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli())
	f.outbox.now, f.sender.now = clock.now, clock.now
	queue := func(dests []string, types ...string) {
		t.Helper()
		for _, typ := range types {
			if err := f.outbox.QueueEDU(ctx, &f.store.Queries, dests, EDU{Type: typ, Content: json.RawMessage(`{}`)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	both := []string{remote, down}
	queue(both, "m.receipt", "m.typing", "m.presence", "m.direct_to_device", "m.device_list_update")
	clock.advance(10 * time.Minute)
	queue(both, "m.typing")

	// The first attempt fails; by the retry, the fresh typing EDU is stale
	// too, and the day-old receipt as well: the retry leaves them out.
	var attempts atomic.Int32
	f.rec.setFail(func(txn sentTxn) error {
		switch {
		case txn.dest == down:
			return errUnreachable
		case attempts.Add(1) == 1:
			clock.advance(25 * time.Hour)
			return errUnreachable
		}
		return nil
	})
	f.start()
	eventually(t, "remote's queue emptied", func() bool { return len(f.queued(remote)) == 0 })
	var sent [][]string
	for _, txn := range f.rec.sent(remote) {
		sent = append(sent, eduTypes(txn))
	}
	want := fmt.Sprint([][]string{
		{"m.receipt", "m.direct_to_device", "m.device_list_update", "m.typing"},
		{"m.direct_to_device", "m.device_list_update"},
	})
	if fmt.Sprint(sent) != want {
		t.Errorf("sent to remote: %v, want %v", sent, want)
	}
	// The server that is down keeps only what must arrive.
	eventually(t, "the stale EDUs purged", func() bool {
		return slices.Equal(f.queued(down), []string{"edu:m.direct_to_device", "edu:m.device_list_update"})
	})
}
