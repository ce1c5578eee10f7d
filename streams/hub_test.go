package streams

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestCurrentWaitsForLowerPositions: a change committed while a lower
// position is still in flight becomes visible only when the lower one ends.
func TestCurrentWaitsForLowerPositions(t *testing.T) {
	h := NewHub(100)
	a, b, c := h.Alloc(), h.Alloc(), h.Alloc()
	if a != 101 || b != 102 || c != 103 {
		t.Fatalf("positions %d %d %d", a, b, c)
	}
	h.Commit(c, Change{})
	if got := h.Current().Stream; got != 100 {
		t.Fatalf("current %d while 101 and 102 are in flight", got)
	}
	h.Commit(a, Change{})
	if got := h.Current().Stream; got != 101 {
		t.Fatalf("current %d, want 101", got)
	}
	h.Abort(b)
	if got := h.Current().Stream; got != 103 {
		t.Fatalf("current %d after the abort, want 103", got)
	}
}

// TestSubscriberWokenOnlyWhenVisible: the subscriber of a room is woken by a
// change in it, but not before the change is visible, and not by other rooms.
func TestSubscriberWokenOnlyWhenVisible(t *testing.T) {
	h := NewHub(0)
	sub := h.Subscribe("@alice:x", []string{"!a:x"})
	defer sub.Close()
	since := h.Current()
	low, high := h.Alloc(), h.Alloc()
	h.Commit(high, Change{Rooms: []string{"!a:x"}})
	h.Commit(h.Alloc(), Change{Rooms: []string{"!other:x"}})

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if got := sub.Wait(ctx, since); got.After(since) {
		t.Fatalf("woken at %+v while position %d is still in flight", got, low)
	}
	done := make(chan Position)
	go func() { done <- sub.Wait(context.Background(), since) }()
	h.Commit(low, Change{})
	select {
	case got := <-done:
		if got.Stream != 3 {
			t.Fatalf("woken at %d, want 3", got.Stream)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("not woken when the change became visible")
	}
}

// TestUserChangesAndTyping wake by user and by typing.
func TestUserChangesAndTyping(t *testing.T) {
	h := NewHub(0)
	sub := h.Subscribe("@bob:x", []string{"!r:x"})
	defer sub.Close()
	since := h.Current()
	go func() {
		time.Sleep(10 * time.Millisecond)
		h.Commit(h.Alloc(), Change{Users: []string{"@bob:x"}})
	}()
	if got := sub.Wait(context.Background(), since); got.Stream != 1 {
		t.Fatalf("user change: %+v", got)
	}
	since = h.Current()
	go func() {
		time.Sleep(10 * time.Millisecond)
		h.Typed("!r:x")
	}()
	if got := sub.Wait(context.Background(), since); got.Typing != 1 {
		t.Fatalf("typing: %+v", got)
	}
}

// TestNoWakeupLost: many writers and a subscriber re-waiting from what it
// read; it must end having seen the last position.
func TestNoWakeupLost(t *testing.T) {
	h := NewHub(0)
	sub := h.Subscribe("@c:x", []string{"!r:x"})
	defer sub.Close()
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < each; n++ {
				h.Commit(h.Alloc(), Change{Rooms: []string{"!r:x"}})
			}
		}()
	}
	since := Position{}
	deadline := time.After(5 * time.Second)
	for since.Stream < writers*each {
		got := make(chan Position, 1)
		go func(s Position) { got <- sub.Wait(context.Background(), s) }(since)
		select {
		case since = <-got:
		case <-deadline:
			t.Fatalf("stuck at %d of %d: a wake-up was lost", since.Stream, writers*each)
		}
	}
	wg.Wait()
}

// TestSubscriptionsDoNotLeak: closed subscriptions leave nothing behind.
func TestSubscriptionsDoNotLeak(t *testing.T) {
	h := NewHub(0)
	for i := 0; i < 1000; i++ {
		s := h.Subscribe(fmt.Sprintf("@u%d:x", i), []string{fmt.Sprintf("!r%d:x", i), "!common:x"})
		s.Close()
		s.Close()
	}
	if len(h.byUser) != 0 || len(h.byRoom) != 0 {
		t.Fatalf("%d users and %d rooms still indexed", len(h.byUser), len(h.byRoom))
	}
}

// TestChangedSince: kinds are remembered per room and user once visible;
// unknown kinds and positions older than the process answer "changed".
func TestChangedSince(t *testing.T) {
	h := NewHub(10)
	if !h.ChangedSince(KindReceipt, "!r:x", 5) {
		t.Fatal("a position older than the process's memory must count as changed")
	}
	a, b := h.Alloc(), h.Alloc()
	h.Commit(b, Change{Rooms: []string{"!r:x"}, Kind: KindEvent})
	if h.ChangedSince(KindEvent, "!r:x", 10) {
		t.Fatal("a change that is not visible yet was reported")
	}
	h.Commit(a, Change{Users: []string{"@u:x"}, Kind: KindAccountData})
	if !h.ChangedSince(KindEvent, "!r:x", 10) || h.ChangedSince(KindEvent, "!r:x", b) {
		t.Fatal("event change of the room")
	}
	if h.ChangedSince(KindReceipt, "!r:x", 10) || h.ChangedSince(KindAccountData, "!r:x", 10) {
		t.Fatal("other kinds reported for the room")
	}
	if !h.ChangedSince(KindAccountData, "@u:x", 10) || h.ChangedSince(KindAccountData, "@v:x", 10) {
		t.Fatal("account data of the user")
	}
	h.Commit(h.Alloc(), Change{Users: []string{"@v:x"}})
	if !h.ChangedSince(KindPresence, "@v:x", 12) {
		t.Fatal("a change of unknown kind must count for every kind")
	}
}

// TestMembershipKind: a room event naming users marks the room's membership.
func TestMembershipKind(t *testing.T) {
	h := NewHub(0)
	h.Commit(h.Alloc(), Change{Rooms: []string{"!r:x"}, Kind: KindEvent})
	if h.ChangedSince(KindMembership, "!r:x", 0) {
		t.Fatal("a message marked the membership as changed")
	}
	h.Commit(h.Alloc(), Change{Rooms: []string{"!r:x"}, Users: []string{"@u:x"}, Kind: KindEvent})
	if !h.ChangedSince(KindMembership, "!r:x", 1) {
		t.Fatal("a membership event did not mark the room")
	}
}
