package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"chappe/app/apptest"
	"chappe/config"
)

// fastRetry makes a server retry failed deliveries quickly, so tests of
// outages do not wait minutes.
func fastRetry(c *config.Config) {
	c.Federation.BackoffInitial = config.Duration(100 * time.Millisecond)
	c.Federation.BackoffMax = config.Duration(time.Second)
}

// fedPair starts two listed servers, hs1 and hs2, and publishes the list.
func fedPair(t *testing.T) (*apptest.Federation, *apptest.FedServer, *apptest.FedServer) {
	t.Helper()
	fed := apptest.NewFederation(t)
	hs1 := fed.Start(t, "hs1.chappe.test", fastRetry)
	hs2 := fed.Start(t, "hs2.chappe.test", fastRetry)
	fed.Publish(t)
	return fed, hs1, hs2
}

// sharedRoom has alice on hs1 create a public room that bob on hs2 joins.
func sharedRoom(t *testing.T, hs1, hs2 *apptest.FedServer, alias string) (alice, bob *mautrix.Client, roomID id.RoomID) {
	t.Helper()
	alice = registerUser(t, hs1.URL, "alice")
	bob = registerUser(t, hs2.URL, "bob")
	return alice, bob, joinPublicRoom(t, alice, bob, hs1.Name, alias)
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
		return slices.Contains(b, "bonjour de hs1") && slices.Contains(b, "bonjour de hs2")
	})
	waitFor(t, "both messages on hs1", 10*time.Second, func() bool {
		b := roomMessages(t, alice, room.RoomID)
		return slices.Contains(b, "bonjour de hs1") && slices.Contains(b, "bonjour de hs2")
	})
}

// wantForbidden fails unless err is 403 M_FORBIDDEN saying the server is
// outside the federation.
func wantForbidden(t *testing.T, what string, err error) {
	t.Helper()
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.RespError == nil || httpErr.Response.StatusCode != http.StatusForbidden ||
		httpErr.RespError.ErrCode != "M_FORBIDDEN" || !strings.Contains(httpErr.RespError.Err, "outside the federation") {
		t.Fatalf("%s: want 403 M_FORBIDDEN outside the federation, got %v", what, err)
	}
}

// An unlisted server with a valid certificate that knows everyone's
// address gets nothing: the listed servers refuse its requests before any
// key fetch, never connect to it, and refuse what names it.
func TestFederationUnlistedServerIsRefused(t *testing.T) {
	fed := apptest.NewFederation(t)
	hs1 := fed.Start(t, "hs1.chappe.test", fastRetry)
	hs2 := fed.Start(t, "hs2.chappe.test", fastRetry)
	rogue := fed.StartUnlisted(t, "hs3.chappe.test")
	fed.Publish(t)
	alice, bob, roomID := sharedRoom(t, hs1, hs2, "border")
	carol := registerUser(t, rogue.URL, "carol")
	if _, err := carol.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "rogue"}); err != nil {
		t.Fatal(err)
	}

	// Client API requests naming hs3 fail on hs1.
	_, err := alice.JoinRoom(t.Context(), "#rogue:hs3.chappe.test", nil)
	wantForbidden(t, "join by an alias of hs3", err)
	_, err = alice.InviteUser(t.Context(), roomID, &mautrix.ReqInviteUser{UserID: "@carol:hs3.chappe.test"})
	wantForbidden(t, "invite of a user of hs3", err)
	_, err = alice.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Invite: []id.UserID{"@carol:hs3.chappe.test"}})
	wantForbidden(t, "createRoom inviting a user of hs3", err)
	knockable, err := carol.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{
		Preset: "private_chat", RoomVersion: "10", RoomAliasName: "porte",
		InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = alice.KnockRoom(t.Context(), string(knockable.RoomID), &mautrix.ReqKnockRoom{Via: []string{rogue.Name}})
	wantForbidden(t, "knock on a room of hs3 via hs3", err)
	_, err = alice.KnockRoom(t.Context(), "#porte:hs3.chappe.test", nil)
	wantForbidden(t, "knock by an alias of hs3", err)

	// hs3 asks hs1 to let carol in: hs1 refuses the signed request.
	_, err = carol.JoinRoom(t.Context(), "#border:hs1.chappe.test", nil)
	if err == nil {
		t.Fatal("carol on the unlisted server joined a room of hs1")
	}
	members, err := alice.JoinedMembers(t.Context(), roomID)
	if err != nil || len(members.Joined) != 2 {
		t.Fatalf("members on hs1 after hs3's attempt: %v %v", members, err)
	}
	// Listed servers keep talking, and never opened a connection to hs3
	// (no key fetch, no discovery, nothing).
	sendText(t, bob, roomID, "still here")
	waitFor(t, "bob's message on hs1", 10*time.Second, func() bool { return slices.Contains(roomMessages(t, alice, roomID), "still here") })
	if n := rogue.FedAccepts(); n != 0 {
		t.Fatalf("the listed servers connected %d times to the unlisted server", n)
	}
}

// Taking hs2 off the list stops all traffic with it at once; listing it
// again resumes federation, with what was queued meanwhile.
func TestFederationRemovalAtRuntime(t *testing.T) {
	fed, hs1, hs2 := fedPair(t)
	alice, bob, roomID := sharedRoom(t, hs1, hs2, "removal")
	sendText(t, alice, roomID, "before removal")
	waitFor(t, "first message on hs2", 10*time.Second, func() bool { return slices.Contains(roomMessages(t, bob, roomID), "before removal") })

	fed.Remove(t, hs2.Name)
	fed.Publish(t)
	accepts := hs2.FedAccepts()
	sendText(t, alice, roomID, "while removed (hs1)")
	sendText(t, bob, roomID, "while removed (hs2)")
	time.Sleep(2 * time.Second) // time for a delivery that should not happen
	if slices.Contains(roomMessages(t, bob, roomID), "while removed (hs1)") {
		t.Fatal("hs1 delivered to hs2 after hs2 was removed from the list")
	}
	if slices.Contains(roomMessages(t, alice, roomID), "while removed (hs2)") {
		t.Fatal("hs1 accepted an event from hs2 after hs2 was removed from the list")
	}
	if n := hs2.FedAccepts(); n != accepts {
		t.Fatalf("hs1 connected to hs2 %d times after removing it", n-accepts)
	}

	fed.Add(t, hs2.Name)
	fed.Publish(t)
	sendText(t, alice, roomID, "after re-adding")
	waitFor(t, "hs1's messages on hs2 after re-adding", 20*time.Second, func() bool {
		b := roomMessages(t, bob, roomID)
		return slices.Contains(b, "while removed (hs1)") && slices.Contains(b, "after re-adding")
	})
	waitFor(t, "hs2's message on hs1 after re-adding", 20*time.Second, func() bool {
		return slices.Contains(roomMessages(t, alice, roomID), "while removed (hs2)")
	})
}

// hs2 is down while hs1 keeps sending: once it is back, every message
// arrives, in order.
func TestFederationRestartDeliversInOrder(t *testing.T) {
	_, hs1, hs2 := fedPair(t)
	alice, bob, roomID := sharedRoom(t, hs1, hs2, "restart")
	hs2.Stop(t)
	var want []string
	for i := 0; i < 30; i++ {
		body := fmt.Sprintf("pendant la panne %02d", i)
		sendText(t, alice, roomID, body)
		want = append(want, body)
	}
	hs2.Restart(t)
	bob = newClient(t, hs2.URL, bob.UserID, bob.AccessToken)
	waitFor(t, "all 30 messages on hs2", 30*time.Second, func() bool { return len(roomMessages(t, bob, roomID)) >= len(want) })
	if got := roomMessages(t, bob, roomID); !slices.Equal(got, want) {
		t.Fatalf("hs2 has %q, want %q", got, want)
	}
}

// Both servers change the room at the same time: the room forks, and both
// end with the same state (state resolution) and every message.
func TestFederationConcurrentChangesConverge(t *testing.T) {
	_, hs1, hs2 := fedPair(t)
	alice, bob, roomID := sharedRoom(t, hs1, hs2, "converge")
	// bob may set the topic too.
	var pl event.PowerLevelsEventContent
	if err := alice.StateEvent(t.Context(), roomID, event.StatePowerLevels, "", &pl); err != nil {
		t.Fatal(err)
	}
	pl.SetUserLevel(bob.UserID, 50)
	if _, err := alice.SendStateEvent(t.Context(), roomID, event.StatePowerLevels, "", &pl); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's power on hs2", 10*time.Second, func() bool {
		var got event.PowerLevelsEventContent
		return bob.StateEvent(t.Context(), roomID, event.StatePowerLevels, "", &got) == nil && got.GetUserLevel(bob.UserID) == 50
	})
	var wg sync.WaitGroup
	var want []string
	for i := 0; i < 10; i++ {
		want = append(want, fmt.Sprintf("alice %d", i), fmt.Sprintf("bob %d", i))
	}
	for _, c := range []*mautrix.Client{alice, bob} {
		wg.Add(1)
		go func(c *mautrix.Client) {
			defer wg.Done()
			name := strings.TrimPrefix(strings.Split(string(c.UserID), ":")[0], "@")
			for i := 0; i < 10; i++ {
				if _, err := c.SendStateEvent(t.Context(), roomID, event.StateTopic, "", map[string]any{"topic": fmt.Sprintf("%s %d", name, i)}); err != nil {
					t.Errorf("%s sets the topic: %v", name, err)
				}
				if _, err := c.SendText(t.Context(), roomID, fmt.Sprintf("%s %d", name, i)); err != nil {
					t.Errorf("%s sends: %v", name, err)
				}
			}
		}(c)
	}
	wg.Wait()
	for _, c := range []*mautrix.Client{alice, bob} {
		waitFor(t, fmt.Sprintf("every message on %s's server", c.UserID), 30*time.Second, func() bool {
			got := roomMessages(t, c, roomID)
			for _, w := range want {
				if !slices.Contains(got, w) {
					return false
				}
			}
			return true
		})
	}
	waitFor(t, "the same state on both servers", 30*time.Second, func() bool {
		return stateIDs(t, alice, roomID) == stateIDs(t, bob, roomID)
	})
}

// stateIDs is the room's current state as "type|state_key=event_id" lines, sorted.
func stateIDs(t *testing.T, cli *mautrix.Client, roomID id.RoomID) string {
	t.Helper()
	state, err := cli.State(t.Context(), roomID)
	if err != nil {
		t.Fatalf("%s /state: %v", cli.UserID, err)
	}
	var lines []string
	for typ, byKey := range state {
		for key, ev := range byKey {
			lines = append(lines, typ.Type+"|"+key+"="+string(ev.ID))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
