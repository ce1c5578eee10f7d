package ephemeral_test

import (
	"context"
	"encoding/json"
	"testing"

	"chappe/ephemeral"
	"chappe/mxerr"
)

func ephemeralMarkers(fullyRead, read, readPrivate string) ephemeral.ReadMarkers {
	return ephemeral.ReadMarkers{FullyRead: fullyRead, Read: read, ReadPrivate: readPrivate}
}

type receiptUser struct {
	TS       int64  `json:"ts"`
	ThreadID string `json:"thread_id"`
}

// receiptContent is an m.receipt content: event → type → user → receipt.
type receiptContent map[string]map[string]map[string]receiptUser

func (f *fixture) receipts(viewer string, rooms []string, from, to int64) map[string]receiptContent {
	f.t.Helper()
	got, err := f.eph.ReceiptsSince(context.Background(), viewer, rooms, from, to)
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string]receiptContent{}
	for room, raw := range got {
		var ev struct {
			Type    string         `json:"type"`
			Content receiptContent `json:"content"`
		}
		if err := json.Unmarshal(raw, &ev); err != nil || ev.Type != "m.receipt" {
			f.t.Fatalf("room %s: not an m.receipt event: %s (%v)", room, raw, err)
		}
		out[room] = ev.Content
	}
	return out
}

func (f *fixture) receipt(user, room, typ, event string, thread *string) {
	f.t.Helper()
	if err := f.eph.Receipts.PostReceipt(context.Background(), user, room, typ, event, thread); err != nil {
		f.t.Fatalf("%s %s on %s: %v", user, typ, event, err)
	}
}

// TestReceiptsSince: ranges, replacement, private receipts only to their owner.
func TestReceiptsSince(t *testing.T) {
	f := newFixture(t, true)
	alice, bob := f.user("alice"), f.user("bob")
	room := f.room(alice, "public_chat", bob)
	other := f.room(alice, "private_chat")
	m1, m2, m3 := f.say(alice, room, "1"), f.say(alice, room, "2"), f.say(alice, room, "3")
	o1 := f.say(alice, other, "o")
	start := f.pos()

	f.receipt(bob, room, "m.read", m1, nil)
	f.receipt(alice, room, "m.read.private", m2, nil)
	f.receipt(alice, other, "m.read", o1, nil)
	mid := f.pos()
	f.receipt(bob, room, "m.read", m3, nil)
	end := f.pos()

	// Bob's view of everything: his latest m.read only, never Alice's private one.
	got := f.receipts(bob, []string{room}, 0, end)
	c := got[room]
	if len(got) != 1 || c[m3]["m.read"][bob].TS == 0 {
		t.Fatalf("bob initial: %v", got)
	}
	if _, ok := c[m1]; ok {
		t.Error("the replaced receipt on m1 is still shown")
	}
	if _, ok := c[m2]; ok {
		t.Error("alice's private receipt shown to bob")
	}
	// Alice sees her private receipt.
	c = f.receipts(alice, []string{room}, 0, end)[room]
	if c[m2]["m.read.private"][alice].TS == 0 || c[m3]["m.read"][bob].TS == 0 {
		t.Errorf("alice initial: %v", c)
	}
	// Incremental: only what changed after mid.
	got = f.receipts(alice, []string{room, other}, mid, end)
	if len(got) != 1 || len(got[room]) != 1 || got[room][m3]["m.read"][bob].TS == 0 {
		t.Errorf("incremental: %v", got)
	}
	// Up to mid: bob's first receipt was replaced after mid, so it is not
	// shown there (the next range shows the new one).
	got = f.receipts(alice, []string{room, other}, start, mid)
	if _, ok := got[room][m1]; ok || got[other][o1]["m.read"][alice].TS == 0 || got[room][m2]["m.read.private"][alice].TS == 0 {
		t.Errorf("up to mid: %v", got)
	}
	// Only the rooms asked for.
	if got = f.receipts(bob, []string{other}, 0, end); len(got) != 1 {
		t.Errorf("other room for bob: %v", got)
	}
	if got = f.receipts(bob, nil, 0, end); len(got) != 0 {
		t.Errorf("no rooms: %v", got)
	}
}

// TestReceiptsNeverGoBack: a receipt for an earlier event is ignored (no
// change in the stream); the same event again changes nothing either.
func TestReceiptsNeverGoBack(t *testing.T) {
	f := newFixture(t, true)
	alice, bob := f.user("alice"), f.user("bob")
	room := f.room(alice, "public_chat", bob)
	m1, m2 := f.say(alice, room, "1"), f.say(alice, room, "2")
	f.receipt(bob, room, "m.read", m2, nil)
	before := f.pos()
	f.receipt(bob, room, "m.read", m1, nil)
	f.receipt(bob, room, "m.read", m2, nil)
	if got := f.receipts(bob, []string{room}, before, f.pos()); len(got) != 0 {
		t.Errorf("changes after ignored receipts: %v", got)
	}
	if c := f.receipts(bob, []string{room}, 0, f.pos())[room]; c[m2]["m.read"][bob].TS == 0 || c[m1] != nil {
		t.Errorf("receipts: %v", c)
	}
	// Another thread is another row.
	f.receipt(bob, room, "m.read", m1, ptr("main"))
	c := f.receipts(bob, []string{room}, before, f.pos())[room]
	if c[m1]["m.read"][bob].ThreadID != "main" {
		t.Errorf("threaded receipt: %v", c)
	}
}

// TestReadUpTo: the furthest of m.read and m.read.private, unthreaded
// receipts counting for every thread.
func TestReadUpTo(t *testing.T) {
	f := newFixture(t, true)
	ctx := context.Background()
	alice, bob := f.user("alice"), f.user("bob")
	room := f.room(alice, "public_chat", bob)
	root := f.say(alice, room, "root")
	m1 := f.say(alice, room, "1")
	inThread := f.send(alice, room, map[string]any{"msgtype": "m.text", "body": "t1",
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
	m2 := f.say(alice, room, "2")
	pos := func(id string) int64 {
		ev, err := f.store.EventByID(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return ev.StreamPos
	}
	readUpTo := func(thread string) int64 {
		p, err := f.eph.ReadUpTo(ctx, bob, room, thread)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if p := readUpTo(""); p != 0 {
		t.Errorf("no receipt: %d", p)
	}
	f.receipt(bob, room, "m.read", m1, nil)
	f.receipt(bob, room, "m.read.private", m2, ptr("main"))
	if p := readUpTo(""); p != pos(m2) {
		t.Errorf("main: %d, want the private threaded receipt's %d", p, pos(m2))
	}
	if p := readUpTo("main"); p != pos(m2) {
		t.Errorf("main by name: %d, want %d", p, pos(m2))
	}
	if p := readUpTo(root); p != pos(m1) {
		t.Errorf("thread before its receipt: %d, want the unthreaded %d", p, pos(m1))
	}
	f.receipt(bob, room, "m.read", inThread, ptr(root))
	if p := readUpTo(root); p != pos(inThread) {
		t.Errorf("thread: %d, want %d", p, pos(inThread))
	}
	if p, _ := f.eph.ReadUpTo(ctx, alice, room, ""); p != 0 {
		t.Errorf("another user's receipts counted: %d", p)
	}
}

// TestReceiptValidation: types, thread IDs, membership, events.
func TestReceiptValidation(t *testing.T) {
	f := newFixture(t, true)
	ctx := context.Background()
	alice, bob, eve := f.user("alice"), f.user("bob"), f.user("eve")
	room := f.room(alice, "public_chat", bob)
	elsewhere := f.room(eve, "private_chat")
	root := f.say(alice, room, "root")
	main1 := f.say(alice, room, "main")
	reply := f.send(alice, room, map[string]any{"msgtype": "m.text", "body": "in thread",
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
	reaction := f.send(alice, room, map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": reply, "key": "👍"}})
	foreign := f.say(eve, elsewhere, "not yours")

	post := func(user, typ, ev string, thread *string) error {
		return f.eph.Receipts.PostReceipt(ctx, user, room, typ, ev, thread)
	}
	before := f.pos()
	wantErr(t, post(bob, "m.unknown", main1, nil), mxerr.InvalidParam, "unknown receipt type")
	wantErr(t, post(bob, "m.read", "not-an-id", nil), mxerr.InvalidParam, "bad event ID")
	wantErr(t, post(bob, "m.read", main1, ptr("")), mxerr.InvalidParam, "empty thread_id")
	wantErr(t, post(bob, "m.read", main1, ptr("thread")), mxerr.InvalidParam, "thread_id neither main nor an event ID")
	wantErr(t, post(bob, "m.fully_read", main1, ptr("main")), mxerr.InvalidParam, "thread_id on m.fully_read")
	wantErr(t, post(bob, "m.read", main1, ptr(root)), mxerr.InvalidParam, "main-timeline event in a thread")
	wantErr(t, post(bob, "m.read", reply, ptr("main")), mxerr.InvalidParam, "thread event as main")
	wantErr(t, post(bob, "m.read", reaction, ptr("main")), mxerr.InvalidParam, "reaction to a thread event as main")
	wantErr(t, post(eve, "m.read", main1, nil), mxerr.Forbidden, "not a member")
	wantErr(t, post(bob, "m.read", foreign, nil), mxerr.NotFound, "event of another room")
	wantErr(t, post(bob, "m.read", "$unknown:"+serverName, nil), mxerr.NotFound, "unknown event")
	if f.pos() != before {
		t.Error("refused receipts took stream positions")
	}

	// Accepted: thread events in their thread (the reaction: via its
	// parent), the root in its own thread and in main, unthreaded anything.
	for _, ok := range []struct {
		ev     string
		thread *string
	}{{reply, ptr(root)}, {reaction, ptr(root)}, {root, ptr(root)}, {root, ptr("main")}, {main1, ptr("main")}, {reply, nil}} {
		if err := post(bob, "m.read.private", ok.ev, ok.thread); err != nil {
			t.Errorf("receipt on %s in %v: %v", ok.ev, ok.thread, err)
		}
	}
}

// TestReadMarkers: m.fully_read becomes room account data; receipts go with
// it; everything is checked before anything is written.
func TestReadMarkers(t *testing.T) {
	f := newFixture(t, true)
	ctx := context.Background()
	alice, bob := f.user("alice"), f.user("bob")
	room := f.room(alice, "public_chat", bob)
	m1, m2 := f.say(alice, room, "1"), f.say(alice, room, "2")

	f.receipt(bob, room, "m.fully_read", m1, nil)
	if got, err := f.ad.Get(ctx, bob, room, "m.fully_read"); err != nil || string(got) != `{"event_id":"`+m1+`"}` {
		t.Errorf("m.fully_read through the receipt API: %s %v", got, err)
	}
	if c := f.receipts(bob, []string{room}, 0, f.pos())[room]; len(c) != 0 {
		t.Errorf("m.fully_read appears as a receipt: %v", c)
	}

	before := f.pos()
	err := f.eph.Receipts.SetReadMarkers(ctx, bob, room, ephemeralMarkers(m2, m2, "$nope:"+serverName))
	wantErr(t, err, mxerr.NotFound, "read markers with an unknown event")
	if f.pos() != before {
		t.Error("a refused read markers request wrote something")
	}
	if err := f.eph.Receipts.SetReadMarkers(ctx, bob, room, ephemeralMarkers(m2, m1, m2)); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.ad.Get(ctx, bob, room, "m.fully_read"); string(got) != `{"event_id":"`+m2+`"}` {
		t.Errorf("m.fully_read: %s", got)
	}
	c := f.receipts(bob, []string{room}, before, f.pos())[room]
	if c[m1]["m.read"][bob].TS == 0 || c[m2]["m.read.private"][bob].TS == 0 {
		t.Errorf("receipts of read_markers: %v", c)
	}
	wantErr(t, f.eph.Receipts.SetReadMarkers(ctx, f.user("eve"), room, ephemeralMarkers(m1, "", "")), mxerr.Forbidden, "not a member")
}

// TestReceiptWakeUps: a public receipt wakes the room's members, a private
// one only its owner.
func TestReceiptWakeUps(t *testing.T) {
	f := newFixture(t, true)
	alice, bob := f.user("alice"), f.user("bob")
	room := f.room(alice, "public_chat", bob)
	m1, m2 := f.say(alice, room, "1"), f.say(alice, room, "2")
	subAlice := f.hub.Subscribe(alice, []string{room})
	defer subAlice.Close()
	subBob := f.hub.Subscribe(bob, []string{room})
	defer subBob.Close()
	f.signalled(subAlice) // drain
	f.signalled(subBob)

	f.receipt(bob, room, "m.read", m1, nil)
	if !f.signalled(subAlice) || !f.signalled(subBob) {
		t.Error("public receipt did not wake the room")
	}
	f.receipt(bob, room, "m.read.private", m2, nil)
	if !f.signalled(subBob) {
		t.Error("private receipt did not wake its owner")
	}
	if f.signalled(subAlice) {
		t.Error("private receipt woke another member")
	}
	f.receipt(bob, room, "m.read", m1, nil) // the same again: no change
	if f.signalled(subAlice) || f.signalled(subBob) {
		t.Error("a receipt that changed nothing woke someone")
	}
}
