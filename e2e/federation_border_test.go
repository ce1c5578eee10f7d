package e2e

import (
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"chappe/app/apptest"
)

// TestFederationRemovedServerLeavesRoomsJoinable: hs3 created a room and
// was then removed from the list. The room stays joinable: bob on hs2 joins
// it through hs1, although its create event and history are hs3's (checked
// with the keys the removal record carries), and reads hs3's messages from
// before the removal. Nothing new from hs3 gets in, and no server contacts
// hs3 any more.
func TestFederationRemovedServerLeavesRoomsJoinable(t *testing.T) {
	fed := apptest.NewFederation(t)
	hs1 := fed.Start(t, "hs1.chappe.test", fastRetry)
	hs2 := fed.Start(t, "hs2.chappe.test", fastRetry)
	hs3 := fed.Start(t, "hs3.chappe.test", fastRetry)
	fed.PinKey(hs3.Name)
	fed.Publish(t)
	alice := registerUser(t, hs1.URL, "alice")
	bob := registerUser(t, hs2.URL, "bob")
	carol := registerUser(t, hs3.URL, "carol")

	room, err := carol.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "patrimoine"})
	if err != nil {
		t.Fatal(err)
	}
	sendText(t, carol, room.RoomID, "de hs3 avant le retrait")
	if _, err := alice.JoinRoom(t.Context(), "#patrimoine:hs3.chappe.test", nil); err != nil {
		t.Fatalf("alice joins through hs3: %v", err)
	}
	waitFor(t, "hs3's message on hs1 (backfilled)", 10*time.Second, func() bool {
		return slices.Contains(roomMessages(t, alice, room.RoomID), "de hs3 avant le retrait")
	})

	fed.Remove(t, hs3.Name)
	fed.Publish(t)
	accepts := hs3.FedAccepts()

	if _, err := bob.JoinRoom(t.Context(), room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{hs1.Name}}); err != nil {
		t.Fatalf("bob joins through hs1 a room hs3 created, after hs3's removal: %v", err)
	}
	var create event.CreateEventContent
	if err := bob.StateEvent(t.Context(), room.RoomID, event.StateCreate, "", &create); err != nil {
		t.Fatalf("the create event on hs2: %v", err)
	}
	waitFor(t, "hs3's old message on hs2, backfilled from hs1", 10*time.Second, func() bool {
		return slices.Contains(roomMessages(t, bob, room.RoomID), "de hs3 avant le retrait")
	})
	sendText(t, alice, room.RoomID, "de hs1")
	waitFor(t, "hs1's message on hs2", 10*time.Second, func() bool {
		return slices.Contains(roomMessages(t, bob, room.RoomID), "de hs1")
	})

	sendText(t, carol, room.RoomID, "de hs3 après le retrait")
	time.Sleep(2 * time.Second) // time for a delivery that should not happen
	for _, c := range []*mautrix.Client{alice, bob} {
		if slices.Contains(roomMessages(t, c, room.RoomID), "de hs3 après le retrait") {
			t.Fatalf("%s sees a message hs3 sent after its removal", c.UserID)
		}
	}
	if n := hs3.FedAccepts(); n != accepts {
		t.Fatalf("hs3 was contacted %d times after its removal", n-accepts)
	}
}
