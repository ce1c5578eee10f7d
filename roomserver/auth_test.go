package roomserver

import (
	"context"
	"testing"

	"chappe/mxerr"
)

// TestAuthRules is a table of real signed events, each marked allowed or not
// allowed by the room version's authorization rules, built on rooms made by
// the fixtures. Each step runs in order on the same rooms.
func TestAuthRules(t *testing.T) {
	for _, version := range []string{"1", "6", "10", "11", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			alice, bob, carol, mallory := f.user("alice"), f.user("bob"), f.user("carol"), f.user("mallory")
			private := f.NewRoom(alice, PresetPrivate, version)
			public := f.NewRoom(alice, PresetPublic, version)

			steps := []struct {
				name    string
				do      func() error
				allowed bool
			}{
				{"creator sends a message", func() error { f.say(alice, private, "hello"); return nil }, true},
				{"stranger sends a message", func() error { return sendText(f, mallory, private) }, false},
				{"stranger joins invite-only room", func() error { return joinErr(f, mallory, private) }, false},
				{"stranger joins public room", func() error { return joinErr(f, bob, public) }, true},
				{"member without power renames public room", func() error {
					_, err := f.setState(bob, public, "m.room.name", "", map[string]string{"name": "mine"})
					return err
				}, false},
				{"member without power kicks the creator", func() error {
					return f.rs.Kick(ctx, MembershipRequest{Sender: bob, RoomID: public, Target: alice})
				}, false},
				{"creator invites bob to private room", func() error {
					return f.rs.Invite(ctx, MembershipRequest{Sender: alice, RoomID: private, Target: bob})
				}, true},
				{"invited bob joins", func() error { return joinErr(f, bob, private) }, true},
				{"member with invite power 0 invites carol", func() error {
					return f.rs.Invite(ctx, MembershipRequest{Sender: bob, RoomID: private, Target: carol})
				}, true},
				{"creator bans mallory", func() error {
					return f.rs.Ban(ctx, MembershipRequest{Sender: alice, RoomID: public, Target: mallory, Reason: "spam"})
				}, true},
				{"banned mallory joins public room", func() error { return joinErr(f, mallory, public) }, false},
				{"bob unbans mallory without power", func() error {
					return f.rs.Unban(ctx, MembershipRequest{Sender: bob, RoomID: public, Target: mallory})
				}, false},
				{"creator raises bob to 100", func() error {
					_, err := f.setState(alice, public, "m.room.power_levels", "", map[string]any{
						"users": usersWith(version, alice, bob), "state_default": 50, "events_default": 0, "ban": 50, "kick": 50, "redact": 50, "invite": 0,
					})
					return err
				}, true},
				{"bob renames the room now", func() error {
					_, err := f.setState(bob, public, "m.room.name", "", map[string]string{"name": "ours"})
					return err
				}, true},
				{"creator unbans mallory", func() error {
					return f.rs.Unban(ctx, MembershipRequest{Sender: alice, RoomID: public, Target: mallory})
				}, true},
				{"mallory joins after the unban", func() error { return joinErr(f, mallory, public) }, true},
				{"mallory sets a state event she may not", func() error {
					_, err := f.setState(mallory, public, "m.room.topic", "", map[string]string{"topic": "spam"})
					return err
				}, false},
				{"left user sends a message", func() error {
					if err := f.rs.Leave(ctx, MembershipRequest{Sender: mallory, RoomID: public}); err != nil {
						return err
					}
					return sendText(f, mallory, public)
				}, false},
			}
			for _, s := range steps {
				err := s.do()
				if s.allowed && err != nil {
					t.Fatalf("%s: refused: %v", s.name, err)
				}
				if !s.allowed {
					e, ok := mxerr.As(err)
					if !ok || e.Code != mxerr.Forbidden {
						t.Fatalf("%s: got %v, want M_FORBIDDEN", s.name, err)
					}
				}
			}
		})
	}
}

// usersWith is the users map of power levels: the creator cannot be listed
// in v12 rooms (creators have unlimited power there).
func usersWith(version, creator, other string) map[string]int {
	if privilegedCreators(version) {
		return map[string]int{other: 100}
	}
	return map[string]int{creator: 100, other: 100}
}

func sendText(f *fixture, user, roomID string) error {
	_, err := f.rs.Send(context.Background(), SendRequest{UserID: user, DeviceID: "D", RoomID: roomID, Type: "m.room.message",
		Content: mustJSON(map[string]string{"msgtype": "m.text", "body": "x"})})
	return err
}

func joinErr(f *fixture, user, roomID string) error {
	_, err := f.rs.Join(context.Background(), MembershipRequest{Sender: user, RoomID: roomID})
	return err
}

// TestKnockAndRestricted covers the join rules knock (v7+) and restricted (v8+).
func TestKnockAndRestricted(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	alice, bob := f.user("alice"), f.user("bob")

	old := f.NewRoom(alice, PresetPrivate, "6")
	if _, err := f.setState(alice, old, "m.room.join_rules", "", map[string]string{"join_rule": "knock"}); err == nil {
		if _, err := f.rs.Knock(ctx, MembershipRequest{Sender: bob, RoomID: old}); err == nil {
			t.Fatal("knocking allowed in a v6 room")
		}
	}

	room := f.NewRoom(alice, PresetPrivate, "10")
	if _, err := f.rs.Knock(ctx, MembershipRequest{Sender: bob, RoomID: room}); err == nil {
		t.Fatal("knocking allowed in an invite-only room")
	}
	if _, err := f.setState(alice, room, "m.room.join_rules", "", map[string]string{"join_rule": "knock"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.rs.Knock(ctx, MembershipRequest{Sender: bob, RoomID: room, Reason: "let me in"}); err != nil {
		t.Fatalf("knock: %v", err)
	}
	if err := joinErr(f, bob, room); err == nil {
		t.Fatal("a knock let bob join without an invite")
	}
	if err := f.rs.Invite(ctx, MembershipRequest{Sender: alice, RoomID: room, Target: bob}); err != nil {
		t.Fatalf("accepting the knock: %v", err)
	}
	if err := joinErr(f, bob, room); err != nil {
		t.Fatalf("join after invite: %v", err)
	}

	// Restricted: members of the space room may join; others may not.
	space := f.NewRoom(alice, PresetPrivate, "10")
	restricted := f.NewRoom(alice, PresetPrivate, "10")
	if _, err := f.setState(alice, restricted, "m.room.join_rules", "", map[string]any{
		"join_rule": "restricted", "allow": []map[string]string{{"type": "m.room_membership", "room_id": space}},
	}); err != nil {
		t.Fatal(err)
	}
	carol := f.user("carol")
	if err := joinErr(f, carol, restricted); err == nil {
		t.Fatal("a non-member of the allowed room joined a restricted room")
	}
	if err := f.rs.Invite(ctx, MembershipRequest{Sender: alice, RoomID: space, Target: carol}); err != nil {
		t.Fatal(err)
	}
	f.join(carol, space)
	if err := joinErr(f, carol, restricted); err != nil {
		t.Fatalf("a member of the allowed room could not join: %v", err)
	}
}
