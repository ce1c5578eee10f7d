package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"chappe/app/apptest"
)

// registerUser registers username with the dummy flow and returns a client
// logged in as them.
func registerUser(t *testing.T, base, username string) *mautrix.Client {
	t.Helper()
	reg, err := newClient(t, base, "", "").RegisterDummy(t.Context(), &mautrix.ReqRegister[any]{
		Username: username, Password: "correct horse battery " + username,
	})
	if err != nil {
		t.Fatalf("RegisterDummy %s: %v", username, err)
	}
	if reg.AccessToken == "" || reg.UserID == "" {
		t.Fatalf("RegisterDummy %s: no access token or user ID in %+v", username, reg)
	}
	return newClient(t, base, reg.UserID, reg.AccessToken)
}

// bodyOf is the content's body, "" if it has none.
func bodyOf(ev *event.Event) string {
	s, _ := ev.Content.Raw["body"].(string)
	return s
}

// sendText sends an m.text message and returns its event ID.
func sendText(t *testing.T, cli *mautrix.Client, roomID id.RoomID, body string) id.EventID {
	t.Helper()
	resp, err := cli.SendText(t.Context(), roomID, body)
	if err != nil {
		t.Fatalf("%s sends %q: %v", cli.UserID, body, err)
	}
	if resp.EventID == "" {
		t.Fatalf("%s sends %q: no event ID", cli.UserID, body)
	}
	return resp.EventID
}

// joinedRooms is the client's /joined_rooms.
func joinedRooms(t *testing.T, cli *mautrix.Client) []id.RoomID {
	t.Helper()
	resp, err := cli.JoinedRooms(t.Context())
	if err != nil {
		t.Fatalf("%s: GET /joined_rooms: %v", cli.UserID, err)
	}
	return resp.JoinedRooms
}

// relationIDs lists the event IDs /relations returns for parent (one page
// of up to 100 is plenty here; a next_batch would be a failure).
func relationIDs(t *testing.T, cli *mautrix.Client, roomID id.RoomID, parent id.EventID, req mautrix.ReqGetRelations) map[id.EventID]*event.Event {
	t.Helper()
	req.Limit = 100
	resp, err := cli.GetRelations(t.Context(), roomID, parent, &req)
	if err != nil {
		t.Fatalf("GET /relations/%s/%s/%s: %v", parent, req.RelationType, req.EventType.Type, err)
	}
	if resp.NextBatch != "" {
		t.Errorf("GET /relations/%s/%s: next_batch %q with only %d related events", parent, req.RelationType, resp.NextBatch, len(resp.Chunk))
	}
	out := map[id.EventID]*event.Event{}
	for _, ev := range resp.Chunk {
		if _, dup := out[ev.ID]; dup {
			t.Errorf("GET /relations/%s/%s lists %s twice", parent, req.RelationType, ev.ID)
		}
		out[ev.ID] = ev
	}
	return out
}

// wantRedacted checks the client's view of a redacted event: empty content,
// unsigned.redacted_because naming the redaction.
func wantRedacted(t *testing.T, what string, ev *event.Event, redactionID id.EventID) {
	t.Helper()
	if len(ev.Content.Raw) != 0 {
		t.Errorf("%s: redacted m.room.message still has content %s", what, ev.Content.VeryRaw)
	}
	if ev.Unsigned.RedactedBecause == nil {
		t.Errorf("%s: no unsigned.redacted_because", what)
	} else if rb := ev.Unsigned.RedactedBecause; rb.ID != redactionID || rb.Type != event.EventRedaction {
		t.Errorf("%s: unsigned.redacted_because is %s of type %s, want the redaction %s", what, rb.ID, rb.Type.Type, redactionID)
	}
}

// paginate walks the whole room timeline with /messages in direction dir,
// pages of limit events, from no token until the server omits end. It checks
// that each page starts where the previous one ended and returns the events
// in the order the server gave them, and the number of pages.
func paginate(t *testing.T, cli *mautrix.Client, roomID id.RoomID, dir mautrix.Direction, limit int) ([]*event.Event, int) {
	t.Helper()
	var all []*event.Event
	from := ""
	for page := 0; ; page++ {
		if page > 2000/limit+20 {
			t.Fatalf("dir=%c: still paginating after %d pages (%d events); end token never omitted", dir, page, len(all))
		}
		resp, err := cli.Messages(t.Context(), roomID, from, "", dir, nil, limit)
		if err != nil {
			t.Fatalf("dir=%c page %d from %q: %v", dir, page, from, err)
		}
		if page > 0 && resp.Start != from {
			t.Fatalf("dir=%c page %d: start %q, want the previous page's end %q", dir, page, resp.Start, from)
		}
		if page == 0 && resp.Start == "" {
			t.Fatalf("dir=%c page 0: no start token", dir)
		}
		if len(resp.Chunk) > limit {
			t.Fatalf("dir=%c page %d: %d events, more than limit %d", dir, page, len(resp.Chunk), limit)
		}
		for _, ev := range resp.Chunk {
			if ev.RoomID != roomID {
				t.Fatalf("dir=%c page %d: event %s of room %s", dir, page, ev.ID, ev.RoomID)
			}
		}
		all = append(all, resp.Chunk...)
		if resp.End == "" {
			return all, page + 1
		}
		if resp.End == from {
			t.Fatalf("dir=%c page %d: end %q is the page's own from token; pagination makes no progress", dir, page, resp.End)
		}
		from = resp.End
	}
}

// onlyIDs keeps, in order, the IDs of the events whose ID is in want.
func onlyIDs(evs []*event.Event, want map[id.EventID]bool) []id.EventID {
	var out []id.EventID
	for _, ev := range evs {
		if want[ev.ID] {
			out = append(out, ev.ID)
		}
	}
	return out
}

// firstDifference describes where got and want first differ.
func firstDifference[T comparable](got, want []T) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("first difference at index %d: got %v, want %v", i, got[i], want[i])
		}
	}
	return fmt.Sprintf("lengths differ: got %d, want %d", len(got), len(want))
}

// TestRoomsEndToEnd is issue 3's end-to-end scenario with mautrix-go: two
// users create, invite, join, chat, edit and react (relations), redact,
// page through 1,000 messages in both directions, leave and forget.
func TestRoomsEndToEnd(t *testing.T) {
	srv := apptest.Start(t)
	ctx := t.Context()
	alice := registerUser(t, srv.URL, "alice")
	bob := registerUser(t, srv.URL, "bob")

	// Create, invite, join.
	const roomName = "Semaphore line"
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: roomName, Preset: "private_chat"})
	if err != nil {
		t.Fatalf("alice creates a room: %v", err)
	}
	roomID := created.RoomID
	if roomID == "" || roomID[0] != '!' {
		t.Fatalf("createRoom returned room ID %q", roomID)
	}
	var nameContent event.RoomNameEventContent
	if err := alice.StateEvent(ctx, roomID, event.StateRoomName, "", &nameContent); err != nil {
		t.Fatalf("alice reads m.room.name: %v", err)
	}
	if nameContent.Name != roomName {
		t.Errorf("m.room.name is %q, want %q", nameContent.Name, roomName)
	}
	var joinRules event.JoinRulesEventContent
	if err := alice.StateEvent(ctx, roomID, event.StateJoinRules, "", &joinRules); err != nil {
		t.Fatalf("alice reads m.room.join_rules: %v", err)
	}
	if joinRules.JoinRule != event.JoinRuleInvite {
		t.Errorf("private_chat room has join rule %q, want invite", joinRules.JoinRule)
	}
	// Not invited yet: bob may not join a private_chat room.
	_, err = bob.JoinRoomByID(ctx, roomID)
	wantMatrixError(t, "bob joins before being invited", err, http.StatusForbidden, "M_FORBIDDEN")

	if _, err := alice.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("alice invites bob: %v", err)
	}
	joined, err := bob.JoinRoomByID(ctx, roomID)
	if err != nil {
		t.Fatalf("bob joins: %v", err)
	}
	if joined.RoomID != roomID {
		t.Fatalf("bob's join returned room %s, want %s", joined.RoomID, roomID)
	}
	for _, cli := range []*mautrix.Client{alice, bob} {
		if rooms := joinedRooms(t, cli); !slices.Contains(rooms, roomID) {
			t.Fatalf("%s's joined_rooms %v lacks %s", cli.UserID, rooms, roomID)
		}
	}

	// Chat.
	hello := sendText(t, alice, roomID, "hello bob")
	original := sendText(t, bob, roomID, "hi alcie")
	resp, err := alice.SendMessageEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "how are you?"})
	if err != nil {
		t.Fatalf("alice SendMessageEvent: %v", err)
	}
	howAreYou := resp.EventID
	recent, err := bob.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 3)
	if err != nil {
		t.Fatalf("bob reads the last messages: %v", err)
	}
	var gotChat []string
	for _, ev := range recent.Chunk {
		gotChat = append(gotChat, fmt.Sprintf("%s %s %s %q", ev.ID, ev.Sender, ev.Type.Type, bodyOf(ev)))
	}
	wantChat := []string{
		fmt.Sprintf("%s %s m.room.message %q", howAreYou, alice.UserID, "how are you?"),
		fmt.Sprintf("%s %s m.room.message %q", original, bob.UserID, "hi alcie"),
		fmt.Sprintf("%s %s m.room.message %q", hello, alice.UserID, "hello bob"),
	}
	if !slices.Equal(gotChat, wantChat) {
		t.Errorf("bob's last 3 events:\n%q\nwant\n%q", gotChat, wantChat)
	}

	// Edit (bob) and reaction (alice) on bob's message; /relations lists both.
	editResp, err := bob.SendMessageEvent(ctx, roomID, event.EventMessage, map[string]any{
		"msgtype":       "m.text",
		"body":          "* hi alice",
		"m.new_content": map[string]any{"msgtype": "m.text", "body": "hi alice"},
		"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": original},
	})
	if err != nil {
		t.Fatalf("bob edits his message: %v", err)
	}
	edit := editResp.EventID
	reactResp, err := alice.SendReaction(ctx, roomID, original, "👍")
	if err != nil {
		t.Fatalf("alice reacts: %v", err)
	}
	reaction := reactResp.EventID
	// A plain message is not a relation of anything.
	sendText(t, alice, roomID, "(unrelated)")

	for _, viewer := range []*mautrix.Client{alice, bob} {
		all := relationIDs(t, viewer, roomID, original, mautrix.ReqGetRelations{})
		if len(all) != 2 || all[edit] == nil || all[reaction] == nil {
			t.Errorf("%s: /relations/%s lists %v, want exactly the edit %s and the reaction %s", viewer.UserID, original, slices.Collect(maps.Keys(all)), edit, reaction)
		}
		if ev := all[edit]; ev != nil {
			newContent, _ := ev.Content.Raw["m.new_content"].(map[string]any)
			if ev.Sender != bob.UserID || newContent["body"] != "hi alice" {
				t.Errorf("%s: the edit in /relations is from %s with content %s", viewer.UserID, ev.Sender, ev.Content.VeryRaw)
			}
		}
		if ev := all[reaction]; ev != nil {
			var rc event.ReactionEventContent
			if err := json.Unmarshal(ev.Content.VeryRaw, &rc); err != nil {
				t.Errorf("%s: reaction content %s: %v", viewer.UserID, ev.Content.VeryRaw, err)
			}
			rel := rc.RelatesTo
			if ev.Sender != alice.UserID || ev.Type != event.EventReaction || rel.Type != event.RelAnnotation || rel.Key != "👍" || rel.EventID != original {
				t.Errorf("%s: the reaction in /relations is %s from %s with content %s", viewer.UserID, ev.Type.Type, ev.Sender, ev.Content.VeryRaw)
			}
		}
		replaces := relationIDs(t, viewer, roomID, original, mautrix.ReqGetRelations{RelationType: event.RelReplace})
		if len(replaces) != 1 || replaces[edit] == nil {
			t.Errorf("%s: /relations/%s/m.replace lists %v, want only the edit %s", viewer.UserID, original, slices.Collect(maps.Keys(replaces)), edit)
		}
		annotations := relationIDs(t, viewer, roomID, original, mautrix.ReqGetRelations{RelationType: event.RelAnnotation, EventType: event.EventReaction})
		if len(annotations) != 1 || annotations[reaction] == nil {
			t.Errorf("%s: /relations/%s/m.annotation/m.reaction lists %v, want only the reaction %s", viewer.UserID, original, slices.Collect(maps.Keys(annotations)), reaction)
		}
		if none := relationIDs(t, viewer, roomID, hello, mautrix.ReqGetRelations{}); len(none) != 0 {
			t.Errorf("%s: /relations/%s (nothing relates to it) lists %v", viewer.UserID, hello, slices.Collect(maps.Keys(none)))
		}
	}

	// Redaction: alice redacts her own message, bob sees it redacted.
	secret := sendText(t, alice, roomID, "my password is hunter2")
	redResp, err := alice.RedactEvent(ctx, roomID, secret, mautrix.ReqRedact{Reason: "oops"})
	if err != nil {
		t.Fatalf("alice redacts %s: %v", secret, err)
	}
	redaction := redResp.EventID
	if redaction == "" {
		t.Fatalf("redact returned no event ID")
	}
	got, err := bob.GetEvent(ctx, roomID, secret)
	if err != nil {
		t.Fatalf("bob GETs the redacted event: %v", err)
	}
	wantRedacted(t, "bob's GET /event of the redacted message", got, redaction)
	if got.ID != secret || got.Sender != alice.UserID || got.Type != event.EventMessage {
		t.Errorf("bob's GET /event %s: got %s from %s of type %s", secret, got.ID, got.Sender, got.Type.Type)
	}
	// The wire form too: "content": {} and no trace of the body anywhere.
	var raw map[string]json.RawMessage
	if _, err := bob.MakeFullRequest(ctx, mautrix.FullRequest{
		Method: http.MethodGet, URL: bob.BuildClientURL("v3", "rooms", roomID, "event", secret), ResponseJSON: &raw,
	}); err != nil {
		t.Fatalf("bob GETs the redacted event (raw): %v", err)
	}
	if string(raw["content"]) != "{}" {
		t.Errorf("redacted event on the wire has content %s, want {}", raw["content"])
	}
	if b, _ := json.Marshal(raw); strings.Contains(string(b), "hunter2") {
		t.Errorf("redacted event on the wire still contains the redacted body: %s", b)
	}
	recent, err = bob.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 5)
	if err != nil {
		t.Fatalf("bob reads the last messages after the redaction: %v", err)
	}
	var sawRedacted, sawRedaction bool
	for _, ev := range recent.Chunk {
		switch ev.ID {
		case secret:
			sawRedacted = true
			wantRedacted(t, "bob's /messages", ev, redaction)
		case redaction:
			sawRedaction = true
			if ev.Type != event.EventRedaction || ev.Redacts != secret || ev.Sender != alice.UserID {
				t.Errorf("bob's /messages: redaction %s is %s from %s redacting %q", redaction, ev.Type.Type, ev.Sender, ev.Redacts)
			}
		}
	}
	if !sawRedacted || !sawRedaction {
		t.Errorf("bob's last 5 events (redacted message seen: %v, redaction seen: %v): %v", sawRedacted, sawRedaction, eventIDs(recent.Chunk))
	}

	// Transaction IDs: the same txn from the same device is one event.
	const txn = "e2e-idempotent-txn"
	idem := &event.MessageEventContent{MsgType: event.MsgText, Body: "sent once, retried once"}
	first, err := alice.SendMessageEvent(ctx, roomID, event.EventMessage, idem, mautrix.ReqSendEvent{TransactionID: txn})
	if err != nil {
		t.Fatalf("alice sends with txn %s: %v", txn, err)
	}
	retry, err := alice.SendMessageEvent(ctx, roomID, event.EventMessage, idem, mautrix.ReqSendEvent{TransactionID: txn})
	if err != nil {
		t.Fatalf("alice retries txn %s: %v", txn, err)
	}
	if retry.EventID != first.EventID {
		t.Errorf("retrying txn %s gave event %s, the first send gave %s", txn, retry.EventID, first.EventID)
	}
	other, err := alice.SendMessageEvent(ctx, roomID, event.EventMessage, idem, mautrix.ReqSendEvent{TransactionID: txn + "-2"})
	if err != nil {
		t.Fatalf("alice sends with another txn: %v", err)
	}
	if other.EventID == first.EventID {
		t.Errorf("a different txn ID returned the same event %s", other.EventID)
	}
	bobSame, err := bob.SendMessageEvent(ctx, roomID, event.EventMessage, idem, mautrix.ReqSendEvent{TransactionID: txn})
	if err != nil {
		t.Fatalf("bob sends with alice's txn ID: %v", err)
	}
	if bobSame.EventID == first.EventID {
		t.Errorf("bob's send with the txn ID alice used returned alice's event %s; txn IDs are per device", first.EventID)
	}
	if ev, err := alice.GetEvent(ctx, roomID, first.EventID); err != nil {
		t.Errorf("alice GETs %s: %v", first.EventID, err)
	} else if ev.Unsigned.TransactionID != txn {
		t.Errorf("alice's own event %s has unsigned.transaction_id %q, want %q", first.EventID, ev.Unsigned.TransactionID, txn)
	}
	if ev, err := bob.GetEvent(ctx, roomID, first.EventID); err != nil {
		t.Errorf("bob GETs %s: %v", first.EventID, err)
	} else if ev.Unsigned.TransactionID != "" {
		t.Errorf("bob sees alice's transaction_id %q on %s", ev.Unsigned.TransactionID, first.EventID)
	}

	// 1,000 messages, alternating senders, each send waiting for the
	// previous one, so the order they were sent in is exact.
	const n = 1000
	sent := make([]id.EventID, n)
	bodies := make([]string, n)
	bulk := map[id.EventID]bool{}
	began := time.Now()
	for i := range n {
		cli := alice
		if i%2 == 1 {
			cli = bob
		}
		bodies[i] = fmt.Sprintf("bulk %04d from %s", i, cli.UserID)
		sent[i] = sendText(t, cli, roomID, bodies[i])
		if bulk[sent[i]] {
			t.Fatalf("message %d got the event ID %s of an earlier message", i, sent[i])
		}
		bulk[sent[i]] = true
	}
	sendTime := time.Since(began)
	t.Logf("sent %d messages sequentially in %v (%.0f/s, %v per send)", n, sendTime.Round(time.Millisecond), n/sendTime.Seconds(), (sendTime / n).Round(time.Microsecond))

	const pageSize = 37
	for _, viewer := range []*mautrix.Client{bob, alice} {
		began = time.Now()
		backward, backPages := paginate(t, viewer, roomID, mautrix.DirectionBackward, pageSize)
		backTime := time.Since(began)
		began = time.Now()
		forward, fwdPages := paginate(t, viewer, roomID, mautrix.DirectionForward, pageSize)
		fwdTime := time.Since(began)
		t.Logf("%s: dir=b %d events in %d pages (%v), dir=f %d events in %d pages (%v)", viewer.UserID,
			len(backward), backPages, backTime.Round(time.Millisecond), len(forward), fwdPages, fwdTime.Round(time.Millisecond))

		// The 1,000: exactly once each, in send order forwards and the
		// reverse backwards, with the bodies that were sent.
		wantFwd := sent
		wantBack := slices.Clone(sent)
		slices.Reverse(wantBack)
		if gotFwd := onlyIDs(forward, bulk); !slices.Equal(gotFwd, wantFwd) {
			t.Errorf("%s: dir=f returns %d of the %d messages, not in send order: %s", viewer.UserID, len(gotFwd), n, firstDifference(gotFwd, wantFwd))
		}
		if gotBack := onlyIDs(backward, bulk); !slices.Equal(gotBack, wantBack) {
			t.Errorf("%s: dir=b returns %d of the %d messages, not in reverse send order: %s", viewer.UserID, len(gotBack), n, firstDifference(gotBack, wantBack))
		}
		wantBodies := map[string]int{}
		for _, b := range bodies {
			wantBodies[b] = 1
		}
		for dir, evs := range map[string][]*event.Event{"b": backward, "f": forward} {
			count := map[string]int{}
			for _, ev := range evs {
				if bulk[ev.ID] {
					count[bodyOf(ev)]++
					if want := bodies[slices.Index(sent, ev.ID)]; bodyOf(ev) != want {
						t.Errorf("%s: dir=%s: %s has body %q, want %q", viewer.UserID, dir, ev.ID, bodyOf(ev), want)
					}
				}
			}
			for b, c := range count {
				if wantBodies[b] != c {
					t.Errorf("%s: dir=%s: body %q appears %d times", viewer.UserID, dir, b, c)
				}
			}
			if len(count) != n {
				t.Errorf("%s: dir=%s: %d distinct bulk bodies, want %d", viewer.UserID, dir, len(count), n)
			}
		}

		// The whole timeline: no event twice, and the two directions are
		// exact mirrors of each other.
		for dir, evs := range map[string][]*event.Event{"b": backward, "f": forward} {
			seen := map[id.EventID]bool{}
			for _, ev := range evs {
				if seen[ev.ID] {
					t.Errorf("%s: dir=%s returns %s twice", viewer.UserID, dir, ev.ID)
				}
				seen[ev.ID] = true
			}
		}
		fwdIDs, backIDs := eventIDs(forward), eventIDs(backward)
		slices.Reverse(backIDs)
		if !slices.Equal(fwdIDs, backIDs) {
			t.Errorf("%s: dir=f (%d events) is not dir=b (%d events) reversed: %s", viewer.UserID, len(fwdIDs), len(backIDs), firstDifference(fwdIDs, backIDs))
		}
		// The timeline starts with the room's creation and holds the
		// idempotent send once.
		if len(forward) == 0 || forward[0].Type != event.StateCreate {
			t.Errorf("%s: dir=f from the start does not begin with m.room.create", viewer.UserID)
		}
		if c := countID(forward, first.EventID); c != 1 {
			t.Errorf("%s: the txn-retried event %s appears %d times in the timeline", viewer.UserID, first.EventID, c)
		}
		for _, want := range []id.EventID{hello, original, howAreYou, edit, reaction, secret, redaction, other.EventID, bobSame.EventID} {
			if c := countID(forward, want); c != 1 {
				t.Errorf("%s: event %s appears %d times in dir=f", viewer.UserID, want, c)
			}
		}
	}

	// Bob leaves: what alice says afterwards is hidden from him, what he
	// could see before stays readable until he forgets the room.
	beforeLeave := sendText(t, alice, roomID, "see you bob")
	if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
		t.Fatalf("bob leaves: %v", err)
	}
	if rooms := joinedRooms(t, bob); slices.Contains(rooms, roomID) {
		t.Errorf("bob's joined_rooms %v still has %s after leaving", rooms, roomID)
	}
	if rooms := joinedRooms(t, alice); !slices.Contains(rooms, roomID) {
		t.Errorf("alice's joined_rooms %v lost %s when bob left", rooms, roomID)
	}
	afterLeave := sendText(t, alice, roomID, "bob has gone, secret plans: A")
	hidden := map[id.EventID]string{afterLeave: "sent after bob left"}
	// Spec (POST /leave): without m.forget_forced_upon_leave the user "will
	// still be allowed to retrieve history from the room which they were
	// previously allowed to see", and "will no longer be able to see new
	// events in the room".
	left := bobSeesNothingNew(t, bob, roomID, hidden, "after leaving")
	if left != nil && countID(left, beforeLeave) != 1 {
		t.Errorf("bob's /messages after leaving lacks %s, sent while he was joined", beforeLeave)
	}
	if _, err := bob.GetEvent(ctx, roomID, beforeLeave); err != nil {
		t.Errorf("bob GETs %s, sent while he was joined, after leaving: %v", beforeLeave, err)
	}

	if _, err := bob.ForgetRoom(ctx, roomID); err != nil {
		t.Fatalf("bob forgets the room: %v", err)
	}
	if rooms := joinedRooms(t, bob); slices.Contains(rooms, roomID) {
		t.Errorf("bob's joined_rooms %v has %s again after forgetting it", rooms, roomID)
	}
	afterForget := sendText(t, alice, roomID, "bob has forgotten, secret plans: B")
	hidden[afterForget] = "sent after bob forgot the room"
	forgot := bobSeesNothingNew(t, bob, roomID, hidden, "after forgetting")
	// Spec (POST /forget): "After this API is called, however, a user will
	// no longer be able to retrieve history for this room."
	var stillReadable []string
	for _, ev := range forgot {
		if ev.Type == event.EventMessage {
			stillReadable = append(stillReadable, fmt.Sprintf("%s %q", ev.ID, bodyOf(ev)))
		}
	}
	if len(stillReadable) > 0 {
		t.Errorf("after POST /forget, bob's /messages still returns %d messages of the room's history (first: %s); the spec says he can no longer retrieve its history (403 or nothing)",
			len(stillReadable), stillReadable[0])
	}

	// Alice, still joined, sees all of it.
	msgs, err := alice.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 10)
	if err != nil {
		t.Fatalf("alice reads after bob left: %v", err)
	}
	for _, want := range []id.EventID{beforeLeave, afterLeave, afterForget} {
		if countID(msgs.Chunk, want) != 1 {
			t.Errorf("alice's last 10 events %v lack %s", eventIDs(msgs.Chunk), want)
		}
	}
	// Bob, no longer joined, cannot send.
	_, err = bob.SendText(ctx, roomID, "am I still here?")
	wantMatrixError(t, "bob sends after leaving", err, http.StatusForbidden, "M_FORBIDDEN")
}

// bobSeesNothingNew checks that none of the hidden events reach cli through
// /messages (both directions, every page) or /event; a 403 from /messages
// is fine. It returns what /messages dir=f showed, nil on 403.
func bobSeesNothingNew(t *testing.T, cli *mautrix.Client, roomID id.RoomID, hidden map[id.EventID]string, when string) []*event.Event {
	t.Helper()
	var he mautrix.HTTPError
	for evID, why := range hidden {
		ev, err := cli.GetEvent(t.Context(), roomID, evID)
		if err == nil {
			t.Errorf("%s GETs %s (%s) %s: got it, body %q", cli.UserID, evID, why, when, bodyOf(ev))
		} else if !errors.As(err, &he) || !(he.IsStatus(http.StatusNotFound) || he.IsStatus(http.StatusForbidden)) {
			t.Errorf("%s GETs %s (%s) %s: %v, want 404 or 403", cli.UserID, evID, why, when, err)
		}
	}
	if _, err := cli.Messages(t.Context(), roomID, "", "", mautrix.DirectionBackward, nil, 1); err != nil {
		if errors.As(err, &he) && he.IsStatus(http.StatusForbidden) {
			t.Logf("%s /messages %s: 403 (%v)", cli.UserID, when, err)
		} else {
			t.Errorf("%s /messages %s: %v, want 200 without the new messages or 403", cli.UserID, when, err)
		}
		return nil
	}
	backward, _ := paginate(t, cli, roomID, mautrix.DirectionBackward, 100)
	forward, _ := paginate(t, cli, roomID, mautrix.DirectionForward, 100)
	for dir, evs := range map[string][]*event.Event{"b": backward, "f": forward} {
		for _, ev := range evs {
			if why, ok := hidden[ev.ID]; ok {
				t.Errorf("%s /messages dir=%s %s returns %s (%s): %q", cli.UserID, dir, when, ev.ID, why, bodyOf(ev))
			}
		}
	}
	newest := "none"
	if len(backward) > 0 {
		newest = fmt.Sprintf("%s from %s", backward[0].Type.Type, backward[0].Sender)
	}
	t.Logf("%s /messages %s: 200, %d events in all, newest: %s", cli.UserID, when, len(backward), newest)
	return forward
}

func eventIDs(evs []*event.Event) []id.EventID {
	out := make([]id.EventID, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID
	}
	return out
}

func countID(evs []*event.Event, want id.EventID) int {
	c := 0
	for _, ev := range evs {
		if ev.ID == want {
			c++
		}
	}
	return c
}
