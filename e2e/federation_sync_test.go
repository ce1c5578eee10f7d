package e2e

import (
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestFederationSyncOfARoomJoinedAfterAnInvite: bob on hs2 is invited to an
// encrypted room of hs1 and joins it before his client syncs again. The
// sync that covers both, and a new device's initial sync, give the room's
// state (name, encryption): hs2 held none of it when the invite came, so
// the state before the invite is not the state to show.
func TestFederationSyncOfARoomJoinedAfterAnInvite(t *testing.T) {
	_, hs1, hs2 := fedPair(t)
	alice := registerUser(t, hs1.URL, "alice")
	bob := registerUser(t, hs2.URL, "bob")
	before, err := bob.SyncRequest(t.Context(), 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	room, err := alice.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{
		Preset: "private_chat", Name: "Chiffré", Invite: []id.UserID{bob.UserID},
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the invite on hs2", 10*time.Second, func() bool {
		_, err := bob.JoinRoomByID(t.Context(), room.RoomID)
		return err == nil
	})

	wantState := func(what string, resp *mautrix.RespSync) {
		t.Helper()
		joined, ok := resp.Rooms.Join[room.RoomID]
		if !ok {
			t.Fatalf("%s: the room is not in rooms.join", what)
		}
		seen := map[event.Type]bool{}
		for _, ev := range append(joined.State.Events, joined.Timeline.Events...) {
			seen[ev.Type] = true
		}
		for _, want := range []event.Type{event.StateCreate, event.StateEncryption, event.StateRoomName, event.StatePowerLevels} {
			if !seen[want] {
				t.Errorf("%s: no %s in the room's state or timeline", what, want.Type)
			}
		}
	}
	incremental, err := bob.SyncRequest(t.Context(), 0, before.NextBatch, "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	wantState("incremental sync over the invite and the join", incremental)
	initial, err := bob.SyncRequest(t.Context(), 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	wantState("initial sync", initial)
}
