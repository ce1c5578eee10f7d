package federation

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"chappe/sqlstore"
)

// benchRoom is a fixture with a room of a local user and two members on
// each of servers remote servers, all listed. The Sender does not run: the
// queue only grows, as for destinations that are down.
func benchRoom(b *testing.B, servers int, withOutbox bool) (*fixture, string, string) {
	gate := newGate()
	var users []string
	for i := range servers {
		s := fmt.Sprintf("s%d.gouv.fr", i)
		gate.set(s, true)
		users = append(users, "@a:"+s, "@b:"+s)
	}
	f := newFixture(b, SenderConfig{}, gate)
	if !withOutbox {
		f.outbox.gate = newGate() // admits no one: nothing is queued
	}
	roomID, alice := f.room(users...)
	return f, roomID, alice
}

// BenchmarkLocalSend is a local message (roomserver.Send: one database
// transaction) in a room with members on 20 remote servers, with the
// outbox queuing it for the 20 servers and without.
func BenchmarkLocalSend(b *testing.B) {
	for _, withOutbox := range []bool{false, true} {
		b.Run(fmt.Sprintf("outbox=%v", withOutbox), func(b *testing.B) {
			f, roomID, alice := benchRoom(b, 20, withOutbox)
			for i := 0; b.Loop(); i++ {
				f.mustSay(alice, roomID, fmt.Sprintf("m%d", i))
			}
		})
	}
}

// BenchmarkCommitToSend is the time from the commit of a local message to
// the transport's call for it, with the Sender running and the destination
// idle: the wake-up path (a worker started, its batch read).
func BenchmarkCommitToSend(b *testing.B) {
	f, roomID, alice := benchRoom(b, 1, true)
	w := &timedWaker{Waker: f.sender}
	f.outbox.waker = w
	called := make(chan time.Time, 1)
	f.rec.onSend = func() { called <- time.Now() }
	f.start()
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		f.mustSay(alice, roomID, fmt.Sprintf("m%d", i))
		total += (<-called).Sub(w.at)
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs-commit-to-send/op")
}

// timedWaker notes when the last wake-up came.
type timedWaker struct {
	Waker
	at time.Time
}

func (w *timedWaker) Wake(dests ...string) {
	w.at = time.Now()
	w.Waker.Wake(dests...)
}

// BenchmarkEventStored is the outbox's own work for one event, inside an
// open transaction: the joined servers of the room, the gate, 20 rows.
func BenchmarkEventStored(b *testing.B) {
	f, roomID, alice := benchRoom(b, 20, true)
	ctx := context.Background()
	ev, err := f.store.EventByID(ctx, f.mustSay(alice, roomID, "x"))
	if err != nil {
		b.Fatal(err)
	}
	stop := errors.New("rollback")
	err = f.store.InTx(ctx, func(q *sqlstore.Queries) error {
		for b.Loop() {
			if err := f.outbox.EventStored(ctx, q, ev, 0); err != nil {
				return err
			}
		}
		b.StopTimer()
		return stop
	})
	if !errors.Is(err, stop) {
		b.Fatal(err)
	}
}
