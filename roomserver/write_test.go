package roomserver

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"chappe/sqlstore"
)

// TestConcurrentSendersNeverFork: 16 senders into one room at once. Every
// event is accepted exactly once, the graph stays a single chain (each event's
// prev_events is exactly the one before it) and /messages returns them all in
// one order.
func TestConcurrentSendersNeverFork(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	creator := f.user("host")
	room := f.NewRoom(creator, PresetPublic, "10")
	const senders, each = 16, 25
	users := make([]string, senders)
	for i := range users {
		users[i] = f.user("sender")
		f.join(users[i], room)
	}
	var wg sync.WaitGroup
	errs := make(chan error, senders*each)
	for i, u := range users {
		wg.Add(1)
		go func(i int, u string) {
			defer wg.Done()
			for n := 0; n < each; n++ {
				_, err := f.rs.Send(ctx, SendRequest{UserID: u, DeviceID: "D", RoomID: room, Type: "m.room.message",
					Content: mustJSON(map[string]string{"msgtype": "m.text", "body": fmt.Sprintf("%d-%d", i, n)}), TxnID: fmt.Sprintf("t%d", n)})
				if err != nil {
					errs <- err
				}
			}
		}(i, u)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent send failed: %v", err)
	}
	// Walk the whole room forwards.
	resp, err := f.rs.Messages(ctx, Viewer{UserID: creator}, room, MessagesRequest{Forwards: true, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	perSender := map[string]int{}
	prevID := ""
	for _, ev := range resp.Chunk {
		row, err := f.rs.store.EventByID(ctx, ev.EventID)
		if err != nil {
			t.Fatal(err)
		}
		prevs := gjson.Get(row.JSON, "prev_events").Array()
		if prevID != "" && (len(prevs) != 1 || prevs[0].String() != prevID) {
			t.Fatalf("event %s has prev_events %v, want [%s]: the graph forked", ev.EventID, prevs, prevID)
		}
		prevID = ev.EventID
		if ev.Type != "m.room.message" {
			continue
		}
		body := gjson.GetBytes(ev.Content, "body").String()
		if seen[body] {
			t.Fatalf("message %s stored twice", body)
		}
		seen[body] = true
		// Each sender's own messages keep their order.
		var i, n int
		fmt.Sscanf(body, "%d-%d", &i, &n)
		if n != perSender[ev.Sender] {
			t.Fatalf("sender %s: message %d came before %d", ev.Sender, n, perSender[ev.Sender])
		}
		perSender[ev.Sender]++
	}
	if len(seen) != senders*each {
		t.Fatalf("%d messages stored, want %d", len(seen), senders*each)
	}
}

// TestTransactionIDIsIdempotent: a retried send returns the first event,
// even when both tries race.
func TestTransactionIDIsIdempotent(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	u := f.user("retry")
	room := f.NewRoom(u, PresetPrivate, "10")
	req := SendRequest{UserID: u, DeviceID: "PHONE", RoomID: room, Type: "m.room.message", Content: mustJSON(map[string]string{"body": "once"}), TxnID: "abc"}
	ids := make([]string, 8)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id, err := f.rs.Send(ctx, req)
			if err != nil {
				t.Errorf("send %d: %v", i, err)
			}
			ids[i] = id
		}(i)
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] || id == "" {
			t.Fatalf("one transaction gave several events: %v", ids)
		}
	}
	other := req
	other.DeviceID = "LAPTOP"
	id2, err := f.rs.Send(ctx, other)
	if err != nil || id2 == ids[0] {
		t.Fatalf("the same txnId from another device must be a new event: %s %v", id2, err)
	}
	resp, _ := f.rs.Messages(ctx, Viewer{UserID: u, DeviceID: "PHONE"}, room, MessagesRequest{Limit: 2})
	if len(resp.Chunk) < 2 || resp.Chunk[1].Unsigned["transaction_id"] != "abc" || resp.Chunk[0].Unsigned["transaction_id"] != nil {
		t.Fatalf("transaction_id must be echoed to the sending device only: %+v", resp.Chunk)
	}
}

// TestRedactionPerVersion: the room version's algorithm strips the content
// for good, and the event stays readable as redacted.
func TestRedactionPerVersion(t *testing.T) {
	for _, v := range []string{"1", "6", "10", "11", "12"} {
		t.Run("v"+v, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			u := f.user("writer")
			room := f.NewRoom(u, PresetPrivate, v)
			secret := f.say(u, room, "secret plans")
			if _, err := f.rs.Redact(ctx, RedactRequest{UserID: u, DeviceID: "D", RoomID: room, EventID: secret, Reason: "oops", TxnID: "r1"}); err != nil {
				t.Fatalf("redact: %v", err)
			}
			f.rs.events.Purge() // read from the database, not the cache
			ev, err := f.rs.GetEvent(ctx, Viewer{UserID: u}, room, secret)
			if err != nil {
				t.Fatal(err)
			}
			if string(ev.Content) != "{}" {
				t.Fatalf("redacted content still served: %s", ev.Content)
			}
			because, ok := ev.Unsigned["redacted_because"].(ClientEvent)
			if !ok || because.Type != "m.room.redaction" {
				t.Fatalf("redacted_because missing: %#v", ev.Unsigned)
			}
			row, _ := f.rs.store.EventByID(ctx, secret)
			if gjson.Get(row.JSON, "content.body").Exists() {
				t.Fatal("the stored JSON still holds the content")
			}
		})
	}
}

// TestSnapshotsRebuildExactly: with more state changes than a delta chain
// allows, every snapshot read back from the database equals the state
// replayed in memory.
func TestSnapshotsRebuildExactly(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	u := f.user("state")
	room := f.NewRoom(u, PresetPrivate, "10")
	for i := 0; i < 3*fullSnapshotEvery; i++ {
		if _, err := f.setState(u, room, "org.example.counter", fmt.Sprintf("k%d", i%7), map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	q := &f.rs.store.Queries
	rows, err := q.EventsPage(ctx, room, Position{}, true, 1000, sqlstore.EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	replay := map[stateKey]int64{}
	for _, row := range rows {
		f.rs.snapshots.Purge()
		got, err := f.rs.loadSnapshot(ctx, q, row.StateBefore)
		if err != nil {
			t.Fatal(err)
		}
		if !sameState(got.state, replay) {
			t.Fatalf("state before %s differs: got %d entries, want %d", row.EventID, len(got.state), len(replay))
		}
		if got.chainLen >= fullSnapshotEvery {
			t.Fatalf("delta chain of %d links", got.chainLen)
		}
		if row.StateKey != nil {
			replay[stateKey{row.Type, *row.StateKey}] = row.NID
		}
	}
}

func sameState(a, b map[stateKey]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// BenchmarkSend measures the send path on real PostgreSQL: 16 concurrent
// senders over 8 rooms. It reports events/s and p50/p99 latency.
func BenchmarkSend(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()
	const senders, rooms = 16, 8
	roomIDs := make([]string, rooms)
	users := make([]string, senders)
	for i := range roomIDs {
		roomIDs[i] = f.NewRoom(f.user("owner"), PresetPublic, "10")
	}
	for i := range users {
		users[i] = f.user("bench")
		f.join(users[i], roomIDs[i%rooms])
	}
	latencies := make([][]time.Duration, senders)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < senders; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for n := i; n < b.N; n += senders {
				t0 := time.Now()
				_, err := f.rs.Send(ctx, SendRequest{UserID: users[i], DeviceID: "D", RoomID: roomIDs[i%rooms], Type: "m.room.message",
					Content: mustJSON(map[string]string{"msgtype": "m.text", "body": "benchmark message"}), TxnID: fmt.Sprintf("b%d", n)})
				if err != nil {
					b.Error(err)
					return
				}
				latencies[i] = append(latencies[i], time.Since(t0))
			}
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range latencies {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	if len(all) > 0 {
		b.ReportMetric(float64(len(all))/elapsed.Seconds(), "events/s")
		b.ReportMetric(float64(percentile(all, 50).Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(percentile(all, 99).Microseconds())/1000, "p99-ms")
	}
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	if i < 0 {
		i = 0
	}
	return sorted[i]
}
