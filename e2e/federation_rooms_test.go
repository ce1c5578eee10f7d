package e2e

import (
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"chappe/app/apptest"
	"chappe/sqlstore"
)

// Room membership across two servers: invites accepted and rejected in
// both directions, redactions, leaving, kicks, bans and knocks, each
// checked on both servers. Spec: server-server-api.md ("Inviting to a
// room", "Leaving Rooms (Rejecting Invites)", "Knocking upon a room",
// "Redactions") and client-server-api "Room membership".

// syncOnce is one /sync of cli from since ("" for an initial sync) that
// does not wait for news.
func syncOnce(t *testing.T, cli *mautrix.Client, since string) *mautrix.RespSync {
	t.Helper()
	resp, err := cli.SyncRequest(t.Context(), 0, since, "", false, "")
	if err != nil {
		t.Fatalf("%s /sync since %q: %v", cli.UserID, since, err)
	}
	return resp
}

// strippedName is the room name in a stripped state list, "" if absent.
func strippedName(evs []*event.Event) string {
	for _, ev := range evs {
		if ev.Type == event.StateRoomName {
			name, _ := ev.Content.Raw["name"].(string)
			return name
		}
	}
	return ""
}

// memberEvent is user's m.room.member event in the room's current state as
// cli's server serves it (nil when there is none).
func memberEvent(t *testing.T, cli *mautrix.Client, roomID id.RoomID, user id.UserID) *event.Event {
	t.Helper()
	state, err := cli.State(t.Context(), roomID)
	if err != nil {
		t.Fatalf("%s /state of %s: %v", cli.UserID, roomID, err)
	}
	return state[event.StateMember][string(user)]
}

// membershipOf is the membership in ev ("" when ev is nil).
func membershipOf(ev *event.Event) string {
	if ev == nil {
		return ""
	}
	m, _ := ev.Content.Raw["membership"].(string)
	return m
}

// waitMembership waits until cli's server holds user's membership m in the
// room, and returns that member event.
func waitMembership(t *testing.T, cli *mautrix.Client, roomID id.RoomID, user id.UserID, m string) *event.Event {
	t.Helper()
	var ev *event.Event
	waitFor(t, string(user)+" "+m+" on "+string(cli.UserID)+"'s server", 10*time.Second, func() bool {
		ev = memberEvent(t, cli, roomID, user)
		return membershipOf(ev) == m
	})
	return ev
}

// waitInvite waits until cli's initial /sync lists an invite to the room
// and returns its stripped state.
func waitInvite(t *testing.T, cli *mautrix.Client, roomID id.RoomID) []*event.Event {
	t.Helper()
	var state []*event.Event
	waitFor(t, string(cli.UserID)+"'s invite in /sync", 10*time.Second, func() bool {
		inv := syncOnce(t, cli, "").Rooms.Invite[roomID]
		if inv != nil {
			state = inv.State.Events
		}
		return inv != nil
	})
	return state
}

// waitBothJoined waits until both servers list both users as joined.
func waitBothJoined(t *testing.T, a, b *mautrix.Client, roomID id.RoomID) {
	t.Helper()
	for _, c := range []*mautrix.Client{a, b} {
		waitFor(t, "both joined on "+string(c.UserID)+"'s server", 10*time.Second, func() bool {
			m, err := c.JoinedMembers(t.Context(), roomID)
			if err != nil {
				return false
			}
			_, hasA := m.Joined[a.UserID]
			_, hasB := m.Joined[b.UserID]
			return hasA && hasB
		})
	}
}

// waitMessage waits until body is in the room's messages as cli's server serves them.
func waitMessage(t *testing.T, cli *mautrix.Client, roomID id.RoomID, body string) {
	t.Helper()
	waitFor(t, "\""+body+"\" on "+string(cli.UserID)+"'s server", 10*time.Second, func() bool {
		return slices.Contains(roomMessages(t, cli, roomID), body)
	})
}

// chatBothWays sends a message from each user and waits for both on both servers.
func chatBothWays(t *testing.T, a, b *mautrix.Client, roomID id.RoomID) {
	t.Helper()
	fromA, fromB := "de "+string(a.UserID), "de "+string(b.UserID)
	sendText(t, a, roomID, fromA)
	sendText(t, b, roomID, fromB)
	for _, c := range []*mautrix.Client{a, b} {
		waitMessage(t, c, roomID, fromA)
		waitMessage(t, c, roomID, fromB)
	}
}

// privateRoomWithInvite has inviter create a private room named name and
// invite invitee (of another server), and waits for the invite in the
// invitee's /sync, whose stripped state must carry the room's name.
func privateRoomWithInvite(t *testing.T, inviter, invitee *mautrix.Client, name string) id.RoomID {
	t.Helper()
	room, err := inviter.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "private_chat", Name: name})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inviter.InviteUser(t.Context(), room.RoomID, &mautrix.ReqInviteUser{UserID: invitee.UserID}); err != nil {
		t.Fatalf("%s invites %s: %v", inviter.UserID, invitee.UserID, err)
	}
	if got := strippedName(waitInvite(t, invitee, room.RoomID)); got != name {
		t.Errorf("invite_state of the invite on %s's server names the room %q, want %q", invitee.UserID, got, name)
	}
	if m := membershipOf(memberEvent(t, inviter, room.RoomID, invitee.UserID)); m != "invite" {
		t.Errorf("%s's membership on the inviter's server is %q, want invite", invitee.UserID, m)
	}
	return room.RoomID
}

// acceptInvite has invitee join the room it was invited to, and checks
// that both servers agree and carry messages both ways.
func acceptInvite(t *testing.T, inviter, invitee *mautrix.Client, roomID id.RoomID) {
	t.Helper()
	if _, err := invitee.JoinRoom(t.Context(), string(roomID), nil); err != nil {
		t.Fatalf("%s accepts the invite: %v", invitee.UserID, err)
	}
	waitBothJoined(t, inviter, invitee, roomID)
	if inv := syncOnce(t, invitee, "").Rooms.Invite[roomID]; inv != nil {
		t.Errorf("%s's /sync still lists the invite after joining", invitee.UserID)
	}
	chatBothWays(t, inviter, invitee, roomID)
}

func TestFederationInvites(t *testing.T) {
	_, hs1, hs2 := fedPair(t)

	t.Run("accepted", func(t *testing.T) {
		alice, bob := registerUser(t, hs1.URL, "alice"), registerUser(t, hs2.URL, "bob")
		roomID := privateRoomWithInvite(t, alice, bob, "Cabinet")
		acceptInvite(t, alice, bob, roomID)
	})

	t.Run("from hs2 to hs1", func(t *testing.T) {
		carol, dave := registerUser(t, hs2.URL, "carol"), registerUser(t, hs1.URL, "dave")
		roomID := privateRoomWithInvite(t, carol, dave, "Préfecture")
		acceptInvite(t, carol, dave, roomID)
	})

	t.Run("rejected", func(t *testing.T) {
		erin, frank := registerUser(t, hs1.URL, "erin"), registerUser(t, hs2.URL, "frank")
		roomID := privateRoomWithInvite(t, erin, frank, "Refusé")
		since := syncOnce(t, frank, "").NextBatch
		// Rejecting is leaving the invited room: make_leave and send_leave
		// through hs1, since hs2 is not in the room.
		if _, err := frank.LeaveRoom(t.Context(), roomID); err != nil {
			t.Fatalf("frank rejects the invite: %v", err)
		}
		waitMembership(t, erin, roomID, frank.UserID, "leave")
		inc := syncOnce(t, frank, since)
		if inc.Rooms.Invite[roomID] != nil {
			t.Error("frank's incremental /sync still lists the invite")
		}
		if inc.Rooms.Leave[roomID] == nil {
			t.Errorf("frank's incremental /sync does not list the rejected invite under leave: %+v", inc.Rooms)
		}
		if syncOnce(t, frank, "").Rooms.Invite[roomID] != nil {
			t.Error("frank's initial /sync still lists the rejected invite")
		}
		// frank can no longer join: he is not invited any more.
		_, err := frank.JoinRoom(t.Context(), string(roomID), nil)
		wantMatrixError(t, "frank joins the private room after rejecting", err, http.StatusForbidden, "M_FORBIDDEN")
	})
}

// joinPublicRoom has alice create a public room with the alias and bob,
// of another server, join it by that alias.
func joinPublicRoom(t *testing.T, alice, bob *mautrix.Client, aliceServer, alias string) id.RoomID {
	t.Helper()
	room, err := alice.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: alias})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(t.Context(), "#"+alias+":"+aliceServer, nil); err != nil {
		t.Fatalf("bob joins: %v", err)
	}
	waitBothJoined(t, alice, bob, room.RoomID)
	return room.RoomID
}

// waitRedacted waits until cli's server serves eventID redacted by redaction.
func waitRedacted(t *testing.T, cli *mautrix.Client, roomID id.RoomID, eventID, redaction id.EventID) {
	t.Helper()
	var ev *event.Event
	waitFor(t, string(eventID)+" redacted on "+string(cli.UserID)+"'s server", 10*time.Second, func() bool {
		var err error
		ev, err = cli.GetEvent(t.Context(), roomID, eventID)
		return err == nil && len(ev.Content.Raw) == 0
	})
	wantRedacted(t, string(cli.UserID)+"'s GET /event of the redacted message", ev, redaction)
}

func TestFederationRedactions(t *testing.T) {
	_, hs1, hs2 := fedPair(t)
	alice, bob, roomID := sharedRoom(t, hs1, hs2, "redactions")

	redact := func(by *mautrix.Client, sender *mautrix.Client, body string) {
		t.Helper()
		msg := sendText(t, sender, roomID, body)
		waitMessage(t, by, roomID, body)
		resp, err := by.RedactEvent(t.Context(), roomID, msg, mautrix.ReqRedact{Reason: "erreur"})
		if err != nil {
			t.Fatalf("%s redacts %s's message: %v", by.UserID, sender.UserID, err)
		}
		for _, c := range []*mautrix.Client{alice, bob} {
			waitRedacted(t, c, roomID, msg, resp.EventID)
		}
	}
	// alice redacts her own message; then, as the room's creator
	// (moderator), a message of bob's.
	redact(alice, alice, "à effacer")
	redact(alice, bob, "message de bob à effacer")
	// bob may redact his own message too; alice's server applies it.
	redact(bob, bob, "bob se corrige")
}

// waitLeftInSync waits until cli's /sync since the token lists the room
// under leave with a leave of cli's user sent by sender in its timeline.
func waitLeftInSync(t *testing.T, cli *mautrix.Client, roomID id.RoomID, since string, sender id.UserID, membership string) {
	t.Helper()
	waitFor(t, string(cli.UserID)+"'s "+membership+" in /sync", 10*time.Second, func() bool {
		left := syncOnce(t, cli, since).Rooms.Leave[roomID]
		if left == nil {
			return false
		}
		for _, ev := range left.Timeline.Events {
			if ev.Type == event.StateMember && ev.GetStateKey() == string(cli.UserID) {
				return membershipOf(ev) == membership && ev.Sender == sender
			}
		}
		return false
	})
}

func TestFederationLeaveKickBan(t *testing.T) {
	_, hs1, hs2 := fedPair(t)
	alice, bob, roomID := sharedRoom(t, hs1, hs2, "depart")

	t.Run("leave and rejoin by alias", func(t *testing.T) {
		since := syncOnce(t, bob, "").NextBatch
		if _, err := bob.LeaveRoom(t.Context(), roomID); err != nil {
			t.Fatalf("bob leaves: %v", err)
		}
		waitMembership(t, alice, roomID, bob.UserID, "leave")
		waitLeftInSync(t, bob, roomID, since, bob.UserID, "leave")
		// hs2 has no member left: what alice says now does not reach it.
		after := sendText(t, alice, roomID, "après le départ de bob")
		time.Sleep(time.Second) // time for a delivery that must not happen
		if _, err := hs2.Store.EventByID(t.Context(), string(after)); !errors.Is(err, sqlstore.ErrNotFound) {
			t.Errorf("hs2 holds %s, sent after its last member left (err %v)", after, err)
		}
		if slices.Contains(roomMessages(t, bob, roomID), "après le départ de bob") {
			t.Error("bob's /messages shows a message sent after he left")
		}
		if _, err := bob.JoinRoom(t.Context(), "#depart:"+hs1.Name, nil); err != nil {
			t.Fatalf("bob rejoins by alias: %v", err)
		}
		waitBothJoined(t, alice, bob, roomID)
		chatBothWays(t, alice, bob, roomID)
	})

	t.Run("kick", func(t *testing.T) {
		since := syncOnce(t, bob, "").NextBatch
		if _, err := alice.KickUser(t.Context(), roomID, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "dehors"}); err != nil {
			t.Fatalf("alice kicks bob: %v", err)
		}
		if ev := waitMembership(t, alice, roomID, bob.UserID, "leave"); ev.Sender != alice.UserID {
			t.Errorf("bob's leave on hs1 is sent by %s, want alice", ev.Sender)
		}
		// The kick reaches hs2 although it removes hs2's last member.
		waitLeftInSync(t, bob, roomID, since, alice.UserID, "leave")
		_, err := bob.SendText(t.Context(), roomID, "encore là ?")
		wantMatrixError(t, "kicked bob sends", err, http.StatusForbidden, "M_FORBIDDEN")
	})

	t.Run("ban and unban", func(t *testing.T) {
		if _, err := alice.BanUser(t.Context(), roomID, &mautrix.ReqBanUser{UserID: bob.UserID, Reason: "interdit"}); err != nil {
			t.Fatalf("alice bans bob: %v", err)
		}
		waitMembership(t, alice, roomID, bob.UserID, "ban")
		_, err := bob.JoinRoom(t.Context(), "#depart:"+hs1.Name, nil)
		wantMatrixError(t, "banned bob rejoins", err, http.StatusForbidden, "M_FORBIDDEN")
		if m := membershipOf(memberEvent(t, alice, roomID, bob.UserID)); m != "ban" {
			t.Errorf("bob's membership on hs1 after his refused join is %q, want ban", m)
		}
		if _, err := alice.UnbanUser(t.Context(), roomID, &mautrix.ReqUnbanUser{UserID: bob.UserID}); err != nil {
			t.Fatalf("alice unbans bob: %v", err)
		}
		if _, err := bob.JoinRoom(t.Context(), "#depart:"+hs1.Name, nil); err != nil {
			t.Fatalf("bob rejoins after the unban: %v", err)
		}
		waitBothJoined(t, alice, bob, roomID)
		chatBothWays(t, alice, bob, roomID)
	})
}

// knockWithServerName is POST /knock/{roomId}?server_name=…, the older
// name of via that mautrix no longer sends.
func knockWithServerName(t *testing.T, cli *mautrix.Client, roomID id.RoomID, server string) error {
	t.Helper()
	u := cli.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "knock", roomID}, map[string]string{"server_name": server})
	_, err := cli.MakeRequest(t.Context(), http.MethodPost, u, map[string]any{"reason": "bonjour"}, nil)
	return err
}

func TestFederationKnock(t *testing.T) {
	fed := apptest.NewFederation(t)
	hs1 := fed.Start(t, "hs1.chappe.test", fastRetry)
	hs2 := fed.Start(t, "hs2.chappe.test", fastRetry)
	fed.Publish(t)
	alice := registerUser(t, hs1.URL, "alice")

	knockRoom := func(t *testing.T, alias, name string) id.RoomID {
		t.Helper()
		room, err := alice.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{
			Preset: "private_chat", RoomVersion: "10", RoomAliasName: alias, Name: name,
			InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return room.RoomID
	}

	for _, tc := range []struct {
		name  string
		knock func(t *testing.T, bob *mautrix.Client, roomID id.RoomID, alias string) error
	}{
		{"by alias with via", func(t *testing.T, bob *mautrix.Client, _ id.RoomID, alias string) error {
			resp, err := bob.KnockRoom(t.Context(), alias, &mautrix.ReqKnockRoom{Via: []string{hs1.Name}, Reason: "bonjour"})
			if err == nil && resp.RoomID == "" {
				t.Error("POST /knock answered no room_id")
			}
			return err
		}},
		{"by room ID with server_name", func(t *testing.T, bob *mautrix.Client, roomID id.RoomID, _ string) error {
			return knockWithServerName(t, bob, roomID, hs1.Name)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			local := map[string]string{"by alias with via": "bob", "by room ID with server_name": "bobby"}[tc.name]
			bob := registerUser(t, hs2.URL, local)
			name := "Porte de " + local
			roomID := knockRoom(t, "porte"+local, name)
			since := syncOnce(t, bob, "").NextBatch
			if err := tc.knock(t, bob, roomID, "#porte"+local+":"+hs1.Name); err != nil {
				t.Fatalf("bob knocks: %v", err)
			}
			// bob's server shows the room he knocked on, with the stripped
			// state hs1 sent back (knock_room_state).
			knocked := syncOnce(t, bob, since).Rooms.Knock[roomID]
			if knocked == nil {
				t.Fatalf("bob's /sync has no knock on %s", roomID)
			}
			if got := strippedName(knocked.State.Events); got != name {
				t.Errorf("knock_state on hs2 names the room %q, want %q (%d events)", got, name, len(knocked.State.Events))
			}
			if ev := waitMembership(t, alice, roomID, bob.UserID, "knock"); ev.Content.Raw["reason"] != "bonjour" {
				t.Errorf("bob's knock on hs1 has reason %v", ev.Content.Raw["reason"])
			}
			// alice lets him in: an invite, then his join.
			if _, err := alice.InviteUser(t.Context(), roomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
				t.Fatalf("alice invites bob after his knock: %v", err)
			}
			waitInvite(t, bob, roomID)
			if syncOnce(t, bob, "").Rooms.Knock[roomID] != nil {
				t.Error("bob's /sync still lists the knock once invited")
			}
			acceptInvite(t, alice, bob, roomID)
		})
	}

	t.Run("refused knock, then withdrawn knock", func(t *testing.T) {
		gus := registerUser(t, hs2.URL, "gus")
		roomID := knockRoom(t, "retrait", "Retrait")
		if _, err := gus.KnockRoom(t.Context(), string(roomID), &mautrix.ReqKnockRoom{Via: []string{hs1.Name}}); err != nil {
			t.Fatalf("gus knocks: %v", err)
		}
		waitMembership(t, alice, roomID, gus.UserID, "knock")
		// Withdrawing the knock is leaving, through hs1.
		if _, err := gus.LeaveRoom(t.Context(), roomID); err != nil {
			t.Fatalf("gus withdraws his knock: %v", err)
		}
		waitMembership(t, alice, roomID, gus.UserID, "leave")
		if syncOnce(t, gus, "").Rooms.Knock[roomID] != nil {
			t.Error("gus's /sync still lists the withdrawn knock")
		}
		// A room whose join rule is not knock refuses knocks.
		public, err := alice.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = gus.KnockRoom(t.Context(), string(public.RoomID), &mautrix.ReqKnockRoom{Via: []string{hs1.Name}})
		wantMatrixError(t, "knock on a public room", err, http.StatusForbidden, "M_FORBIDDEN")
		if m := membershipOf(memberEvent(t, alice, public.RoomID, gus.UserID)); m != "" {
			t.Errorf("gus's refused knock left membership %q on hs1", m)
		}
		// A room ID with no server to ask is a clear error, not a 500.
		_, err = gus.KnockRoom(t.Context(), "!inconnue:hs1.chappe.test", &mautrix.ReqKnockRoom{Via: []string{hs1.Name}})
		wantMatrixError(t, "knock on an unknown room", err, http.StatusNotFound, "M_NOT_FOUND")
		_, err = gus.KnockRoom(t.Context(), "pas une salle", nil)
		wantMatrixError(t, "knock on something that is no room", err, http.StatusBadRequest, "M_INVALID_PARAM")
	})
}
