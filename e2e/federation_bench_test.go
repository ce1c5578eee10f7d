package e2e

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"chappe/app/apptest"
)

// BenchmarkFederationJoin200 is the time for a user of hs2 to join a room
// of 200 members created on hs1 (make_join, send_join, the whole state and
// auth chain checked and stored).
//
//	go test ./e2e -run '^$' -bench FederationJoin200 -benchtime 3x
func BenchmarkFederationJoin200(b *testing.B) {
	fed := apptest.NewFederation(b)
	hs1 := fed.Start(b, "hs1.chappe.test")
	hs2 := fed.Start(b, "hs2.chappe.test")
	fed.Publish(b)
	owner := registerUserB(b, hs1.URL, "owner")
	var members []*mautrix.Client
	for i := 0; i < 199; i++ {
		members = append(members, registerUserB(b, hs1.URL, fmt.Sprintf("m%03d", i)))
	}
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		b.StopTimer()
		room, err := owner.CreateRoom(b.Context(), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			b.Fatal(err)
		}
		for _, m := range members {
			if _, err := m.JoinRoomByID(b.Context(), room.RoomID); err != nil {
				b.Fatal(err)
			}
		}
		joiner := registerUserB(b, hs2.URL, fmt.Sprintf("joiner%d", n))
		b.StartTimer()
		if _, err := joiner.JoinRoom(b.Context(), string(room.RoomID), &mautrix.ReqJoinRoom{Via: []string{hs1.Name}}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFederationDelivery measures, for 500 messages sent one after the
// other by a user of hs1, the time from the send's HTTP 200 to their
// arrival in the /sync of a user of hs2 (long-polling).
//
//	go test ./e2e -run '^$' -bench FederationDelivery -benchtime 1x
func BenchmarkFederationDelivery(b *testing.B) {
	fed := apptest.NewFederation(b)
	hs1 := fed.Start(b, "hs1.chappe.test")
	hs2 := fed.Start(b, "hs2.chappe.test")
	fed.Publish(b)
	alice := registerUserB(b, hs1.URL, "alice")
	bob := registerUserB(b, hs2.URL, "bob")
	room, err := alice.CreateRoom(b.Context(), &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := bob.JoinRoom(b.Context(), string(room.RoomID), &mautrix.ReqJoinRoom{Via: []string{hs1.Name}}); err != nil {
		b.Fatal(err)
	}
	const messages = 500
	for n := 0; n < b.N; n++ {
		sent := make([]time.Time, messages)
		arrived := make([]time.Time, messages)
		var mu sync.Mutex
		resp, err := bob.SyncRequest(b.Context(), 0, "", "", false, "")
		if err != nil {
			b.Fatal(err)
		}
		since := resp.NextBatch
		done := make(chan struct{})
		go func() {
			defer close(done)
			seen := 0
			for seen < messages {
				// A timeline limit above a transaction's 50 PDUs: a received
				// transaction's events become visible together.
				r, err := bob.SyncRequest(b.Context(), 30000, since, `{"room":{"timeline":{"limit":500}}}`, false, "")
				if err != nil {
					b.Error(err)
					return
				}
				now := time.Now()
				since = r.NextBatch
				joined := r.Rooms.Join[room.RoomID]
				if joined == nil {
					continue // woken by something else (presence, device lists)
				}
				for _, ev := range joined.Timeline.Events {
					var i int
					if ev.Type == event.EventMessage {
						_ = ev.Content.ParseRaw(ev.Type)
						if _, err := fmt.Sscanf(bodyOf(ev), "latence %d", &i); err == nil && i < messages {
							mu.Lock()
							if arrived[i].IsZero() {
								arrived[i] = now
								seen++
							}
							mu.Unlock()
						}
					}
				}
			}
		}()
		for i := 0; i < messages; i++ {
			if _, err := alice.SendText(b.Context(), room.RoomID, fmt.Sprintf("latence %d", i)); err != nil {
				b.Fatal(err)
			}
			mu.Lock()
			sent[i] = time.Now()
			mu.Unlock()
		}
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			b.Fatal("not every message arrived on hs2 within 2 minutes")
		}
		var lat []time.Duration
		for i := range sent {
			lat = append(lat, max(0, arrived[i].Sub(sent[i])))
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
	}
}

// registerUserB is registerUser for benchmarks.
func registerUserB(b *testing.B, base, username string) *mautrix.Client {
	b.Helper()
	cli, err := mautrix.NewClient(base, "", "")
	if err != nil {
		b.Fatal(err)
	}
	reg, err := cli.RegisterDummy(b.Context(), &mautrix.ReqRegister[any]{Username: username, Password: "correct horse battery " + username})
	if err != nil {
		b.Fatalf("register %s: %v", username, err)
	}
	out, err := mautrix.NewClient(base, reg.UserID, reg.AccessToken)
	if err != nil {
		b.Fatal(err)
	}
	return out
}
