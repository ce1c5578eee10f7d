package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"

	"chappe/sqlstore"
	"chappe/sqlstore/sqltest"
)

var outboxSeq atomic.Int64

// uniqueName makes names that no other test of the shared database uses.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s%d.gouv.fr", prefix, outboxSeq.Add(1))
}

// outboxRoom creates a room with n message events and returns their NIDs.
func outboxRoom(t *testing.T, st *sqlstore.Store, n int) (string, []int64) {
	t.Helper()
	ctx := context.Background()
	roomID := "!" + uniqueName("room")
	if err := st.InsertRoom(ctx, sqlstore.Room{RoomID: roomID, RoomVersion: "10", Creator: "@a:test", ForwardExtremities: []string{}}); err != nil {
		t.Fatal(err)
	}
	var nids []int64
	for i := range n {
		pos, err := st.MaxStreamPosition(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ev := sqlstore.Event{EventID: fmt.Sprintf("$%d-%s", i, roomID[1:]), RoomID: roomID, Type: "m.room.message", Sender: "@a:test",
			StreamPos: pos + 1, JSON: fmt.Sprintf(`{"n":%d}`, i)}
		if err := st.InsertEvent(ctx, &ev); err != nil {
			t.Fatal(err)
		}
		nids = append(nids, ev.NID)
	}
	return roomID, nids
}

func TestOutboxBatchKeepsOrderWithinLimits(t *testing.T) {
	st := sqltest.Store(t)
	ctx := context.Background()
	_, nids := outboxRoom(t, st, 8)
	dest, other := uniqueName("dest"), uniqueName("other")
	// Queue, in this order: P0 E0 E1 P1 E2 P2 P3 E3 P4 … for dest; other
	// gets the PDUs only.
	type want struct {
		pdu  string
		edu  string
		kind string
	}
	var wanted []want
	err := st.InTx(ctx, func(q *sqlstore.Queries) error {
		e := 0
		for i, nid := range nids {
			if err := q.EnqueuePDU(ctx, []string{dest, other}, nid, int64(100+i)); err != nil {
				return err
			}
			wanted = append(wanted, want{pdu: fmt.Sprintf(`{"n":%d}`, i)})
			for range i % 3 {
				c := fmt.Sprintf(`{"k": %d}`, e)
				if err := q.EnqueueEDU(ctx, []string{dest}, "m.test", []byte(c), 1); err != nil {
					return err
				}
				wanted = append(wanted, want{edu: fmt.Sprintf(`{"k": %d}`, e), kind: "m.test"})
				e++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// At most 3 PDUs and 2 EDUs per batch: the prefix stops before the
	// first item that does not fit.
	var got []want
	var sizes []int
	for range 20 {
		items, err := st.OutboxBatch(ctx, dest, 3, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(items) == 0 {
			break
		}
		var ids []int64
		pdus, edus := 0, 0
		for i, it := range items {
			if i > 0 && it.ID <= items[i-1].ID {
				t.Fatalf("batch out of order: %v", items)
			}
			ids = append(ids, it.ID)
			if it.IsPDU() {
				pdus++
				got = append(got, want{pdu: string(it.PDU)})
			} else {
				edus++
				got = append(got, want{edu: string(it.EDUContent), kind: it.EDUType})
			}
		}
		if pdus > 3 || edus > 2 {
			t.Fatalf("batch of %d PDUs and %d EDUs exceeds 3 and 2", pdus, edus)
		}
		sizes = append(sizes, len(items))
		if err := st.DeleteOutboxItems(ctx, dest, ids); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(got, wanted) {
		t.Fatalf("items in the wrong order or content:\n got %v\nwant %v", got, wanted)
	}
	// P0 P1 E0 E1 | P2 E2 P3 E3 | P4 E4 P5 E5 …: the limits cut each batch.
	if len(sizes) < 3 {
		t.Fatalf("batch sizes %v: want several batches", sizes)
	}
	// Deleting dest's items left other's alone.
	items, err := st.OutboxBatch(ctx, other, 50, 100)
	if err != nil || len(items) != len(nids) {
		t.Fatalf("other destination: %d items (%v), want %d", len(items), err, len(nids))
	}
	if items[0].QueuedTS != 100 || items[0].EventNID != nids[0] {
		t.Fatalf("first item of other: %+v", items[0])
	}
}

func TestOutboxRollbackQueuesNothingAndAfterCommitWaits(t *testing.T) {
	st := sqltest.Store(t)
	ctx := context.Background()
	_, nids := outboxRoom(t, st, 1)
	dest := uniqueName("rollback")
	boom := errors.New("boom")
	ran := false
	err := st.InTx(ctx, func(q *sqlstore.Queries) error {
		if err := q.EnqueuePDU(ctx, []string{dest}, nids[0], 1); err != nil {
			return err
		}
		q.AfterCommit(func() { ran = true })
		return boom
	})
	if !errors.Is(err, boom) || ran {
		t.Fatalf("rolled back: err %v, after-commit ran %v", err, ran)
	}
	if items, _ := st.OutboxBatch(ctx, dest, 50, 100); len(items) != 0 {
		t.Fatalf("rolled-back items are queued: %v", items)
	}
	// On commit, the hook runs after the rows are visible to others.
	var seen int
	err = st.InTx(ctx, func(q *sqlstore.Queries) error {
		if err := q.EnqueueEDU(ctx, []string{dest}, "m.typing", []byte(`{"typing":true}`), 1); err != nil {
			return err
		}
		q.AfterCommit(func() {
			items, err := st.OutboxBatch(ctx, dest, 50, 100) // the pool: another connection
			if err != nil {
				t.Error(err)
			}
			seen = len(items)
		})
		if items, _ := st.OutboxBatch(ctx, dest, 50, 100); len(items) != 0 {
			t.Error("rows visible to another connection before the commit")
		}
		return nil
	})
	if err != nil || seen != 1 {
		t.Fatalf("committed: err %v, the hook saw %d items, want 1", err, seen)
	}
	// On the pool, the hook runs at once.
	ran = false
	st.AfterCommit(func() { ran = true })
	if !ran {
		t.Fatal("AfterCommit on the pool did not run at once")
	}
	// Content that is not JSON is refused.
	if err := st.EnqueueEDU(ctx, []string{dest}, "m.typing", []byte(`{nope`), 1); err == nil {
		t.Fatal("EnqueueEDU accepted content that is not JSON")
	}
}

func TestOutboxDestinationsAndPurge(t *testing.T) {
	st := sqltest.Store(t)
	ctx := context.Background()
	_, nids := outboxRoom(t, st, 3)
	a, b := uniqueName("a"), "[2001:db8::1]:8448"
	for _, nid := range nids {
		if err := st.EnqueuePDU(ctx, []string{a, b}, nid, 1); err != nil {
			t.Fatal(err)
		}
	}
	dests, err := st.OutboxDestinations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(dests, a) || !slices.Contains(dests, b) || !slices.IsSorted(dests) {
		t.Fatalf("destinations %v: want %s and %s, sorted", dests, a, b)
	}
	n, err := st.PurgeOutbox(ctx, b)
	if err != nil || n != 3 {
		t.Fatalf("purge: %d, %v; want 3", n, err)
	}
	dests, _ = st.OutboxDestinations(ctx)
	if slices.Contains(dests, b) || !slices.Contains(dests, a) {
		t.Fatalf("after the purge of %s: %v", b, dests)
	}
	if _, err := st.PurgeOutbox(ctx, a); err != nil {
		t.Fatal(err)
	}
}

func TestJoinedServers(t *testing.T) {
	st := sqltest.Store(t)
	ctx := context.Background()
	roomID, _ := outboxRoom(t, st, 1)
	members := map[string]string{
		"@a:one.gouv.fr":                "join",
		"@b:one.gouv.fr":                "join",
		"@c:two.gouv.fr:8448":           "join",
		"@d:[2001:db8::1]:8448":         "join",
		"@e:left.gouv.fr":               "leave",
		"@f:banned.gouv.fr":             "ban",
		"@g:invited.gouv.fr":            "invite",
		"@h:[2001:db8::1]":              "join",
		"@i:one.gouv.fr":                "leave",
		"@weird-no-colon":               "join",
		"@j:two.gouv.fr:8448":           "join",
		"@k:knock.gouv.fr":              "knock",
		"@l:three.gouv.fr:with:colons:": "join",
	}
	for user, m := range members {
		if err := st.SetCurrentState(ctx, roomID, sqlstore.StateEntry{Type: "m.room.member", StateKey: user, EventNID: 1, Membership: &m}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := st.JoinedServers(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	want := []string{"[2001:db8::1]", "[2001:db8::1]:8448", "one.gouv.fr", "three.gouv.fr:with:colons:", "two.gouv.fr:8448"}
	if !slices.Equal(got, want) {
		t.Fatalf("JoinedServers = %v, want %v", got, want)
	}
}
