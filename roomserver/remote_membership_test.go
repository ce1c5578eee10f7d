package roomserver

import (
	"context"
	"testing"
	"time"

	"chappe/mxerr"
)

// Room memberships across two servers, through the requests of the
// server-server API (see peers). Spec: server-server-api.md, "Inviting to a
// room", "Leaving Rooms (Rejecting Invites)", "Knocking upon a room".

const serverA, serverB = "a.gouv.fr", "b.gouv.fr"

// An invite of a user of another server is signed by both servers, shows
// the room's preview in the invitee's /sync, can be rejected, and the same
// user can be invited again to the room their server knows only through
// the first invite.
func TestRemoteInviteRejectAndReinvite(t *testing.T) {
	for _, version := range []string{"10", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			ctx := context.Background()
			p := newPeers(t, serverA, serverB)
			a, b := p.servers[serverA], p.servers[serverB]
			alice, bob := "@alice:"+serverA, "@bob:"+serverB
			name := "Salon"
			roomID, err := a.CreateRoom(ctx, alice, CreateRoomRequest{Preset: PresetPrivate, RoomVersion: version, Name: &name})
			if err != nil {
				t.Fatal(err)
			}
			for round := 1; round <= 2; round++ {
				if err := a.Invite(ctx, MembershipRequest{Sender: alice, RoomID: roomID, Target: bob}); err != nil {
					t.Fatalf("invite %d: %v", round, err)
				}
				sr, ok := p.strippedRoom(serverB, bob, roomID, "invite")
				if !ok {
					t.Fatalf("invite %d: not in bob's sync on %s", round, serverB)
				}
				if got := previewName(sr.StrippedState); got != name {
					t.Errorf("invite %d: preview names the room %q, want %q (%d events)", round, got, name, len(sr.StrippedState))
				}
				if err := b.Leave(ctx, MembershipRequest{Sender: bob, RoomID: roomID}); err != nil {
					t.Fatalf("rejecting invite %d: %v", round, err)
				}
				for _, server := range []string{serverA, serverB} {
					if m := p.membership(server, bob, roomID); m != "leave" {
						t.Errorf("after rejecting invite %d, bob's membership on %s is %q", round, server, m)
					}
				}
			}
		})
	}
}

// A knock through the resident server answers the room's preview, which the
// knocker's /sync shows; the knock can be withdrawn.
func TestRemoteKnockPreviewAndWithdraw(t *testing.T) {
	ctx := context.Background()
	p := newPeers(t, serverA, serverB)
	a, b := p.servers[serverA], p.servers[serverB]
	alice, bob := "@alice:"+serverA, "@bob:"+serverB
	name := "Porte"
	roomID, err := a.CreateRoom(ctx, alice, CreateRoomRequest{Preset: PresetPrivate, RoomVersion: "10", Name: &name,
		InitialState: []StateEventInput{{Type: "m.room.join_rules", Content: mustJSON(map[string]string{"join_rule": "knock"})}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Knock(ctx, MembershipRequest{Sender: bob, RoomID: roomID, Via: []string{serverA}, Reason: "bonjour"}); err != nil {
		t.Fatalf("bob knocks: %v", err)
	}
	if m := p.membership(serverA, bob, roomID); m != "knock" {
		t.Errorf("bob's membership on the resident server is %q, want knock", m)
	}
	sr, ok := p.strippedRoom(serverB, bob, roomID, "knock")
	if !ok {
		t.Fatal("the knock is not in bob's sync")
	}
	types := map[string]bool{}
	for _, se := range sr.StrippedState {
		types[se.Type] = true
	}
	if previewName(sr.StrippedState) != name || !types["m.room.create"] || !types["m.room.join_rules"] {
		t.Errorf("knock preview %+v: want the create event, the join rules and the name %q", sr.StrippedState, name)
	}
	if err := b.Leave(ctx, MembershipRequest{Sender: bob, RoomID: roomID}); err != nil {
		t.Fatalf("bob withdraws his knock: %v", err)
	}
	if m := p.membership(serverA, bob, roomID); m != "leave" {
		t.Errorf("after the withdrawal bob's membership on the resident server is %q", m)
	}
}

// A knock on a room whose join rule does not allow it is refused by the
// resident server with M_FORBIDDEN, and leaves nothing behind; so is a
// knock sent without make_knock, which the auth rules reject.
func TestRemoteKnockRefused(t *testing.T) {
	ctx := context.Background()
	p := newPeers(t, serverA, serverB)
	roomID, err := p.servers[serverA].CreateRoom(ctx, "@alice:"+serverA, CreateRoomRequest{Preset: PresetPublic, RoomVersion: "10"})
	if err != nil {
		t.Fatal(err)
	}
	bob := "@bob:" + serverB
	_, err = p.servers[serverB].Knock(ctx, MembershipRequest{Sender: bob, RoomID: roomID, Via: []string{serverA}})
	if e, ok := mxerr.As(err); !ok || e.Code != mxerr.Forbidden {
		t.Fatalf("knock on a public room: %v, want M_FORBIDDEN", err)
	}
	for _, server := range []string{serverA, serverB} {
		if m := p.membership(server, bob, roomID); m != "" {
			t.Errorf("bob's refused knock left membership %q on %s", m, server)
		}
	}
	// The auth rules reject the knock itself (a join template turned into
	// a knock): 403, not an internal error.
	a := p.servers[serverA]
	tmpl, err := a.MakeMembership(ctx, serverB, roomID, bob, "join", []string{"10"})
	if err != nil {
		t.Fatal(err)
	}
	ver, _ := roomVersion("10")
	knock, err := buildFromTemplate(ver, tmpl.Event, roomID, bob, "knock", nil, serverB, p.keys[serverB], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.SendMembership(ctx, serverB, roomID, knock.EventID(), "knock", knock.JSON())
	if e, ok := mxerr.As(err); !ok || e.Code != mxerr.Forbidden {
		t.Fatalf("send_knock of a knock the auth rules reject: %v, want M_FORBIDDEN", err)
	}
}
