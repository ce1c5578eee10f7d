package roomserver

import (
	"context"
	"fmt"
	"testing"

	"github.com/tidwall/gjson"
)

func bodies(evs []ClientEvent) []string {
	var out []string
	for _, ev := range evs {
		if ev.Type == "m.room.message" {
			out = append(out, gjson.GetBytes(ev.Content, "body").String())
		}
	}
	return out
}

// TestTokensAreGaps: a token is the gap between two events, so a backward
// page's end token, read forwards, gives back the same events, and a token
// taken "now" sees later events forwards.
func TestTokensAreGaps(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	u := f.user("pager")
	room := f.NewRoom(u, PresetPrivate, "10")
	for i := 0; i < 6; i++ {
		f.say(u, room, fmt.Sprintf("m%d", i))
	}
	v := Viewer{UserID: u}
	back, err := f.rs.Messages(ctx, v, room, MessagesRequest{Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(bodies(back.Chunk)); got != "[m5 m4 m3]" {
		t.Fatalf("backward page %s", got)
	}
	fwd, err := f.rs.Messages(ctx, v, room, MessagesRequest{From: back.End, Forwards: true, Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(bodies(fwd.Chunk)); got != "[m3 m4 m5]" {
		t.Fatalf("forwards from the backward page's end: %s", got)
	}
	// "to" bounds a page at a gap.
	bounded, err := f.rs.Messages(ctx, v, room, MessagesRequest{To: back.End, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(bodies(bounded.Chunk)); got != "[m5 m4 m3]" {
		t.Fatalf("backwards down to the gap: %s", got)
	}
	// The start of a backward page from "now" is a real position: later
	// events show when paging forwards from it.
	f.say(u, room, "later")
	after, err := f.rs.Messages(ctx, v, room, MessagesRequest{From: back.Start, Forwards: true, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(bodies(after.Chunk)); got != "[later]" {
		t.Fatalf("forwards from the first page's start: %s", got)
	}
	if _, err := ParseToken("bogus"); err == nil {
		t.Fatal("a bogus token parsed")
	}
}

// TestForgetHidesHistory: after forget, a user who left reads nothing.
func TestForgetHidesHistory(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	alice, bob := f.user("alice"), f.user("bob")
	room := f.NewRoom(alice, PresetPublic, "10")
	f.join(bob, room)
	f.say(alice, room, "before bob left")
	if err := f.rs.Forget(ctx, bob, room); err == nil {
		t.Fatal("forgetting a joined room must fail")
	}
	if err := f.rs.Leave(ctx, MembershipRequest{Sender: bob, RoomID: room}); err != nil {
		t.Fatal(err)
	}
	resp, err := f.rs.Messages(ctx, Viewer{UserID: bob}, room, MessagesRequest{Limit: 50})
	if err != nil || len(bodies(resp.Chunk)) != 1 {
		t.Fatalf("before forgetting, bob reads what he saw: %v %v", bodies(resp.Chunk), err)
	}
	if err := f.rs.Forget(ctx, bob, room); err != nil {
		t.Fatal(err)
	}
	if _, err := f.rs.Messages(ctx, Viewer{UserID: bob}, room, MessagesRequest{Limit: 50}); err == nil {
		t.Fatal("a forgotten room's history is still readable")
	}
	if _, err := f.rs.State(ctx, Viewer{UserID: bob}, room); err == nil {
		t.Fatal("a forgotten room's state is still readable")
	}
	// Joining again brings it back.
	f.join(bob, room)
	if _, err := f.rs.Messages(ctx, Viewer{UserID: bob}, room, MessagesRequest{Limit: 50}); err != nil {
		t.Fatalf("rejoined: %v", err)
	}
}

// TestUpgradeRoom: tombstone, predecessor, copied state, moved alias.
func TestUpgradeRoom(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	alice, bob := f.user("alice"), f.user("bob")
	name := "Cellule de crise"
	old, err := f.rs.CreateRoom(ctx, alice, CreateRoomRequest{Preset: PresetPublic, RoomVersion: "6", Name: &name, RoomAliasName: fmt.Sprintf("crise%d", userSeq.Add(1))})
	if err != nil {
		t.Fatal(err)
	}
	f.join(bob, old)
	if _, err := f.rs.UpgradeRoom(ctx, bob, old, "10"); err == nil {
		t.Fatal("a member without power upgraded the room")
	}
	if _, err := f.rs.UpgradeRoom(ctx, alice, old, "99"); err == nil {
		t.Fatal("upgrade to an unknown version accepted")
	}
	newRoom, err := f.rs.UpgradeRoom(ctx, alice, old, "11")
	if err != nil {
		t.Fatal(err)
	}
	a := Viewer{UserID: alice}
	tomb, err := f.rs.StateEvent(ctx, a, old, "m.room.tombstone", "")
	if err != nil || gjson.GetBytes(tomb.Content, "replacement_room").String() != newRoom {
		t.Fatalf("tombstone: %s %v", tomb.Content, err)
	}
	create, err := f.rs.StateEvent(ctx, a, newRoom, "m.room.create", "")
	if err != nil || gjson.GetBytes(create.Content, "predecessor.room_id").String() != old || gjson.GetBytes(create.Content, "room_version").String() != "11" {
		t.Fatalf("create of the new room: %s %v", create.Content, err)
	}
	n, err := f.rs.StateEvent(ctx, a, newRoom, "m.room.name", "")
	if err != nil || gjson.GetBytes(n.Content, "name").String() != name {
		t.Fatalf("name not copied: %v", err)
	}
	canon, err := f.rs.StateEvent(ctx, a, newRoom, "m.room.canonical_alias", "")
	if err != nil {
		t.Fatal(err)
	}
	target, err := f.rs.GetAlias(ctx, gjson.GetBytes(canon.Content, "alias").String())
	if err != nil || target.RoomID != newRoom {
		t.Fatalf("alias not moved: %+v %v", target, err)
	}
	// Ordinary members can no longer speak in the old room.
	if err := sendText(f, bob, old); err == nil {
		t.Fatal("the old room still accepts messages from ordinary members")
	}
}
