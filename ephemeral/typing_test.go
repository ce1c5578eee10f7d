package ephemeral_test

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"chappe/mxerr"
)

// typingSince decodes TypingSince's m.typing event.
func (f *fixture) typingSince(room string, since int64) ([]string, bool) {
	f.t.Helper()
	raw, ok := f.eph.TypingSince(room, since)
	if !ok {
		return nil, false
	}
	var ev struct {
		Type    string `json:"type"`
		Content struct {
			UserIDs []string `json:"user_ids"`
		} `json:"content"`
	}
	if err := json.Unmarshal(raw, &ev); err != nil || ev.Type != "m.typing" || ev.Content.UserIDs == nil {
		f.t.Fatalf("not an m.typing event: %s", raw)
	}
	return ev.Content.UserIDs, true
}

func (f *fixture) typingPos() int64 { return f.hub.Current().Typing }

// TestTypingExpiresByItself: expiry is seen on read at once, and the sweep
// tells the room (a new typing position, a wake-up, an empty list).
func TestTypingExpiresByItself(t *testing.T) {
	f := newFixture(t, true)
	ctx := context.Background()
	alice, bob := f.user("alice"), f.user("bob")
	room := f.room(alice, "public_chat", bob)
	sub := f.hub.Subscribe(alice, []string{room})
	defer sub.Close()

	t0 := f.typingPos()
	if err := f.eph.Typing.PutTyping(ctx, bob, room, true, 10_000); err != nil {
		t.Fatal(err)
	}
	if err := f.eph.Typing.PutTyping(ctx, alice, room, true, 30_000); err != nil {
		t.Fatal(err)
	}
	if got := f.eph.Typing.Typing(room); !reflect.DeepEqual(got, sortedPair(alice, bob)) {
		t.Fatalf("typing = %v", got)
	}
	if !f.signalled(sub) || f.typingPos() <= t0 {
		t.Fatal("starting to type did not wake the room")
	}
	t1 := f.typingPos()
	// Refreshing does not change the list: no wake-up.
	if err := f.eph.Typing.PutTyping(ctx, bob, room, true, 10_000); err != nil {
		t.Fatal(err)
	}
	if f.signalled(sub) || f.typingPos() != t1 {
		t.Error("a refresh woke the room")
	}

	f.clock.Advance(10*time.Second + time.Millisecond)
	if got := f.eph.Typing.Typing(room); !reflect.DeepEqual(got, []string{alice}) {
		t.Errorf("after bob's timeout, typing = %v (expiry is checked on read)", got)
	}
	f.eph.Typing.Sweep()
	if !f.signalled(sub) || f.typingPos() <= t1 {
		t.Fatal("the sweep of an expired notification did not wake the room")
	}
	if got, ok := f.typingSince(room, t1); !ok || !reflect.DeepEqual(got, []string{alice}) {
		t.Errorf("TypingSince after expiry = %v %v", got, ok)
	}
	t2 := f.typingPos()
	if _, ok := f.typingSince(room, t2); ok {
		t.Error("TypingSince reports a change that did not happen")
	}
	f.eph.Typing.Sweep()
	if f.signalled(sub) {
		t.Error("a sweep with nothing expired woke the room")
	}
	// Stopping explicitly.
	if err := f.eph.Typing.PutTyping(ctx, alice, room, false, 0); err != nil {
		t.Fatal(err)
	}
	if got, ok := f.typingSince(room, t2); !ok || len(got) != 0 {
		t.Errorf("after the last one stopped: %v %v, want an empty list", got, ok)
	}
	// Initial sync: always an event.
	if got, ok := f.typingSince(room, 0); !ok || len(got) != 0 {
		t.Errorf("initial: %v %v", got, ok)
	}
	if got, ok := f.typingSince("!never:x", 0); !ok || len(got) != 0 {
		t.Errorf("initial, unknown room: %v %v", got, ok)
	}
}

func sortedPair(a, b string) []string {
	if a < b {
		return []string{a, b}
	}
	return []string{b, a}
}

// TestTypingTimeoutBounds: negative refused, 0 is the default, huge capped.
func TestTypingTimeoutBounds(t *testing.T) {
	f := newFixture(t, true)
	ctx := context.Background()
	alice, bob, eve := f.user("alice"), f.user("bob"), f.user("eve")
	room := f.room(alice, "public_chat", bob)

	wantErr(t, f.eph.Typing.PutTyping(ctx, alice, room, true, -1), mxerr.InvalidParam, "negative timeout")
	wantErr(t, f.eph.Typing.PutTyping(ctx, eve, room, true, 1000), mxerr.Forbidden, "not joined")
	wantErr(t, f.eph.Typing.PutTyping(ctx, alice, "!unknown:x", true, 1000), mxerr.Forbidden, "unknown room")

	if err := f.eph.Typing.PutTyping(ctx, alice, room, true, 1<<62); err != nil {
		t.Fatal(err)
	}
	if err := f.eph.Typing.PutTyping(ctx, bob, room, true, 0); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(30*time.Second - time.Millisecond)
	if got := f.eph.Typing.Typing(room); len(got) != 2 {
		t.Errorf("before the default timeout: %v", got)
	}
	f.clock.Advance(time.Millisecond)
	if got := f.eph.Typing.Typing(room); !reflect.DeepEqual(got, []string{alice}) {
		t.Errorf("at the default timeout: %v", got)
	}
	f.clock.Advance(90 * time.Second)
	if got := f.eph.Typing.Typing(room); len(got) != 0 {
		t.Errorf("a huge timeout was not capped at 120 s: %v", got)
	}
}

// TestTypingForgetsRooms: memory does not grow with rooms once typed in; a
// sync from before a forgotten change still learns the list is empty.
func TestTypingForgetsRooms(t *testing.T) {
	f := newFixture(t, true)
	alice := f.user("alice")
	const rooms = 50
	var ids []string
	for i := 0; i < rooms; i++ {
		id := "!r" + string(rune('a'+i%26)) + f.user("x") // any room ID: Start skips the membership check
		ids = append(ids, id)
		if err := f.eph.Typing.Start(id, alice, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	old := f.typingPos()
	f.clock.Advance(6 * time.Second)
	f.eph.Typing.Sweep()
	afterExpiry := f.typingPos()
	for _, id := range ids {
		if got, ok := f.typingSince(id, old); !ok || len(got) != 0 {
			t.Fatalf("expired room %s: %v %v", id, got, ok)
		}
	}
	f.clock.Advance(11 * time.Minute)
	f.eph.Typing.Sweep()
	// Forgotten: a reader from before the change still gets an empty list,
	// one from after it gets nothing.
	if got, ok := f.typingSince(ids[0], old); !ok || len(got) != 0 {
		t.Errorf("forgotten room, old token: %v %v", got, ok)
	}
	if _, ok := f.typingSince(ids[0], afterExpiry); ok {
		t.Error("forgotten room, recent token: reported as changed")
	}
	// The limit on entries is free again: start and stop work as before.
	if err := f.eph.Typing.Start(ids[0], alice, time.Second); err != nil {
		t.Fatal(err)
	}
	f.eph.Typing.Stop(ids[0], alice)
	if got := f.eph.Typing.Typing(ids[0]); len(got) != 0 {
		t.Errorf("after stop: %v", got)
	}
}
