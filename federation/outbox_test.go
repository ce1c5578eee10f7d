package federation

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/tidwall/gjson"

	"chappe/roomserver"
	"chappe/sqlstore"
)

func TestOutboxPicksDestinations(t *testing.T) {
	const (
		a        = "a.gouv.fr"
		b        = "b.gouv.fr:8448"
		v6       = "[2001:db8::1]:8448"
		kicked   = "kicked.gouv.fr"
		unlisted = "unlisted.gouv.fr"
		c        = "c.gouv.fr"
		d        = "d.gouv.fr"
	)
	f := newFixture(t, SenderConfig{}, newGate(a, b, v6, kicked, c, d))
	ctx := context.Background()
	kim := "@kim:" + kicked
	roomID, alice := f.room("@bob:"+a, "@carol:"+b, "@dave:"+v6, "@eve:"+unlisted, kim, "@bob2:"+a)
	expect := func(want map[string][]string) {
		t.Helper()
		for _, dest := range []string{a, b, v6, kicked, unlisted, c, d, ours} {
			if got := f.queued(dest); !slices.Equal(got, want[dest]) {
				t.Errorf("queued for %s: %q, want %q", dest, got, want[dest])
			}
		}
	}
	// The room's creation happened before anyone remote joined, and the
	// remote users' joins are their servers' to send.
	expect(nil)

	f.mustSay(alice, roomID, "hello")
	hello := []string{"hello"}
	expect(map[string][]string{a: hello, b: hello, v6: hello, kicked: hello})

	// The kicked user's server learns of the kick, then hears no more.
	if err := f.rs.Kick(ctx, roomserver.MembershipRequest{Sender: alice, RoomID: roomID, Target: kim}); err != nil {
		t.Fatal(err)
	}
	f.mustSay(alice, roomID, "after the kick")
	inRoom := []string{"hello", "m.room.member " + kim, "after the kick"}
	expect(map[string][]string{a: inRoom, b: inRoom, v6: inRoom, kicked: {"hello", "m.room.member " + kim}})

	// A remote user's event is their server's to send.
	f.mustSay("@bob:"+a, roomID, "from bob")
	expect(map[string][]string{a: inRoom, b: inRoom, v6: inRoom, kicked: {"hello", "m.room.member " + kim}})

	// A join that a remote server submitted through send_join is relayed
	// to the other servers, not back to the one that made it.
	fay := "@fay:" + c
	if _, err := f.rs.Join(WithRelay(ctx), roomserver.MembershipRequest{Sender: fay, RoomID: roomID}); err != nil {
		t.Fatal(err)
	}
	relayed := append(slices.Clone(inRoom), "m.room.member "+fay)
	expect(map[string][]string{a: relayed, b: relayed, v6: relayed, kicked: {"hello", "m.room.member " + kim}})

	// An invite reaches the invitee's server through PUT /invite; a ban
	// (or any other membership) goes to the target's server as well.
	hi, err := f.store.EventByID(ctx, f.mustSay(alice, roomID, "hi"))
	if err != nil {
		t.Fatal(err)
	}
	gil := "@gil:" + d
	for membership, wantD := range map[string]int{"invite": 0, "ban": 1, "leave": 1} {
		ev := sqlstore.Event{NID: hi.NID, RoomID: roomID, Type: "m.room.member", StateKey: &gil, Sender: alice,
			JSON: `{"type":"m.room.member","content":{"membership":"` + membership + `"}}`}
		undo := errors.New("undo")
		err := f.store.InTx(ctx, func(q *sqlstore.Queries) error {
			if err := f.outbox.EventStored(ctx, q, ev, 0); err != nil {
				return err
			}
			items, err := q.OutboxBatch(ctx, d, 50, 100)
			if err != nil {
				return err
			}
			if len(items) != wantD {
				t.Errorf("%s of %s: %d items queued for %s, want %d", membership, gil, len(items), d, wantD)
			}
			return undo
		})
		if !errors.Is(err, undo) {
			t.Fatal(err)
		}
	}
}

func TestServerOfUser(t *testing.T) {
	for _, tc := range []struct{ user, server string }{
		{"@a:example.org", "example.org"},
		{"@a:example.org:8448", "example.org:8448"},
		{"@a:[2001:db8::1]", "[2001:db8::1]"},
		{"@a:[2001:db8::1]:8448", "[2001:db8::1]:8448"},
		{"@a:1.2.3.4:80", "1.2.3.4:80"},
		{"@nocolon", ""},
		{"!room:example.org", ""},
		{"", ""},
	} {
		if got := serverOfUser(tc.user); got != tc.server {
			t.Errorf("serverOfUser(%q) = %q, want %q", tc.user, got, tc.server)
		}
	}
}

// A typing EDU replaces the one about the same user and room still queued.
func TestOutboxKeepsLatestTyping(t *testing.T) {
	f := newFixture(t, SenderConfig{}, newGate(remote))
	ctx := context.Background()
	typing := func(room, user string, on bool) {
		t.Helper()
		content, _ := json.Marshal(map[string]any{"room_id": room, "user_id": user, "typing": on})
		if err := f.outbox.QueueEDU(ctx, &f.store.Queries, []string{remote}, EDU{Type: "m.typing", Content: content}); err != nil {
			t.Fatal(err)
		}
	}
	alice, bob := "@alice:"+ours, "@bob:"+ours
	typing("!r1:"+ours, alice, true)
	typing("!r1:"+ours, bob, true)
	typing("!r2:"+ours, alice, true)
	typing("!r1:"+ours, alice, false)
	items, err := f.store.OutboxBatch(ctx, remote, 50, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range items {
		got = append(got, gjson.GetBytes(it.EDUContent, "room_id").String()+" "+gjson.GetBytes(it.EDUContent, "user_id").String()+" "+gjson.GetBytes(it.EDUContent, "typing").Raw)
	}
	want := []string{"!r1:" + ours + " " + bob + " true", "!r2:" + ours + " " + alice + " true", "!r1:" + ours + " " + alice + " false"}
	if !slices.Equal(got, want) {
		t.Errorf("queued %q, want %q", got, want)
	}
}
