package e2e

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"chappe/app/apptest"
)

// fedPair starts two listed servers, hs1 and hs2, and publishes the list.
func fedPair(t *testing.T) (*apptest.Federation, *apptest.FedServer, *apptest.FedServer) {
	t.Helper()
	fed := apptest.NewFederation(t)
	hs1 := fed.Start(t, "hs1.chappe.test")
	hs2 := fed.Start(t, "hs2.chappe.test")
	fed.Publish(t)
	return fed, hs1, hs2
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// roomMessages pages the whole room backwards and returns the bodies of its
// m.room.message events, oldest first.
func roomMessages(t *testing.T, cli *mautrix.Client, roomID id.RoomID) []string {
	t.Helper()
	var bodies []string
	from := ""
	for i := 0; i < 100; i++ {
		resp, err := cli.Messages(t.Context(), roomID, from, "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			t.Fatalf("%s /messages: %v", cli.UserID, err)
		}
		for _, ev := range resp.Chunk {
			if ev.Type == event.EventMessage {
				bodies = append([]string{bodyOf(ev)}, bodies...)
			}
		}
		if resp.End == "" || len(resp.Chunk) == 0 {
			break
		}
		from = resp.End
	}
	return bodies
}

func TestFederationJoinByAliasAndChat(t *testing.T) {
	_, hs1, hs2 := fedPair(t)
	alice := registerUser(t, hs1.URL, "alice")
	bob := registerUser(t, hs2.URL, "bob")

	room, err := alice.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "ministeres", Name: "Ministères"})
	if err != nil {
		t.Fatal(err)
	}
	sendText(t, alice, room.RoomID, "before bob")

	joined, err := bob.JoinRoom(t.Context(), "#ministeres:hs1.chappe.test", nil)
	if err != nil {
		t.Fatalf("bob joins by alias: %v", err)
	}
	if joined.RoomID != room.RoomID {
		t.Fatalf("bob joined %s, want %s", joined.RoomID, room.RoomID)
	}
	// hs2 holds the room's state: its name and both members.
	var name event.RoomNameEventContent
	if err := bob.StateEvent(t.Context(), room.RoomID, event.StateRoomName, "", &name); err != nil || name.Name != "Ministères" {
		t.Fatalf("room name on hs2: %q %v", name.Name, err)
	}
	members, err := bob.JoinedMembers(t.Context(), room.RoomID)
	if err != nil || len(members.Joined) != 2 {
		t.Fatalf("members on hs2: %v %v", members, err)
	}
	// hs1 took the join in.
	waitFor(t, "bob's join on hs1", 10*time.Second, func() bool {
		m, err := alice.JoinedMembers(t.Context(), room.RoomID)
		return err == nil && len(m.Joined) == 2
	})

	// Messages both ways.
	sendText(t, alice, room.RoomID, "bonjour de hs1")
	sendText(t, bob, room.RoomID, "bonjour de hs2")
	waitFor(t, "both messages on hs2", 10*time.Second, func() bool {
		b := roomMessages(t, bob, room.RoomID)
		return contains(b, "bonjour de hs1") && contains(b, "bonjour de hs2")
	})
	waitFor(t, "both messages on hs1", 10*time.Second, func() bool {
		b := roomMessages(t, alice, room.RoomID)
		return contains(b, "bonjour de hs1") && contains(b, "bonjour de hs2")
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// httpStatus is the HTTP status of a mautrix error, 0 if none.
func httpStatus(err error) int {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil {
		return httpErr.Response.StatusCode
	}
	return 0
}

var _ = http.StatusOK
