package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"chappe/federation"
)

// TestFederationHistoryPaginatesAcrossBackfill: bob on hs2 joins a room with
// a long history on hs1, of which hs2 receives only the state; paging back
// in his client fetches the rest from hs1 (GET /backfill), checked event by
// event, until the room's creation: the same events, in the same order, as
// alice sees on hs1, with the redaction applied.
func TestFederationHistoryPaginatesAcrossBackfill(t *testing.T) {
	_, hs1, hs2 := fedPair(t)
	alice := registerUser(t, hs1.URL, "alice")
	bob := registerUser(t, hs2.URL, "bob")
	room, err := alice.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "archives", Name: "Archives"})
	if err != nil {
		t.Fatal(err)
	}
	const n = 130
	var redacted id.EventID
	for i := range n {
		evID := sendText(t, alice, room.RoomID, fmt.Sprintf("message %d", i))
		if i == 7 {
			redacted = evID
		}
		if i == n/2 {
			if _, err := alice.SendStateEvent(t.Context(), room.RoomID, event.StateTopic, "", &event.TopicEventContent{Topic: "mi-parcours"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := alice.RedactEvent(t.Context(), room.RoomID, redacted); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(t.Context(), "#archives:hs1.chappe.test", nil); err != nil {
		t.Fatalf("bob joins: %v", err)
	}

	onHS1 := pageAll(t, alice, room.RoomID, 100)
	onHS2 := pageAll(t, bob, room.RoomID, 30)
	if len(onHS1) < n+8 {
		t.Fatalf("hs1 shows %d events, want at least %d", len(onHS1), n+8)
	}
	if first := onHS2[0]; first.Type != event.StateCreate {
		t.Fatalf("bob's history on hs2 starts with %s %s, want the room's creation", first.Type, first.ID)
	}
	if got, want := eventIDs(onHS2), eventIDs(onHS1); !slices.Equal(got, want) {
		t.Fatalf("bob's history on hs2 (%d events) differs from alice's on hs1 (%d events)\nhs2: %v\nhs1: %v", len(got), len(want), got, want)
	}
	var bodies []string
	for _, ev := range onHS2 {
		if ev.Type == event.EventMessage && ev.ID != redacted {
			bodies = append(bodies, bodyOf(ev))
		}
		if ev.ID == redacted && len(ev.Content.Raw) != 0 {
			t.Fatalf("the redacted message is served unredacted on hs2: %v", ev.Content.Raw)
		}
	}
	for i, body := range bodies {
		want := i
		if i >= 7 {
			want = i + 1 // message 7 is redacted
		}
		if body != fmt.Sprintf("message %d", want) {
			t.Fatalf("message %d on hs2 is %q", i, body)
		}
	}
	if len(bodies) != n-1 {
		t.Fatalf("hs2 shows %d messages, want %d", len(bodies), n-1)
	}
}

// pageAll pages the room backwards from the end with the given page size
// and returns every event, oldest first.
func pageAll(t *testing.T, cli *mautrix.Client, roomID id.RoomID, limit int) []*event.Event {
	t.Helper()
	var out []*event.Event
	from := ""
	for range 1000 {
		resp, err := cli.Messages(t.Context(), roomID, from, "", mautrix.DirectionBackward, nil, limit)
		if err != nil {
			t.Fatalf("%s /messages: %v", cli.UserID, err)
		}
		for _, ev := range resp.Chunk {
			out = append(out, ev)
		}
		if resp.End == "" {
			break
		}
		from = resp.End
	}
	slices.Reverse(out)
	return out
}

// TestFederationBackfillHidesWhatTheServerMayNotSee: in a room whose
// history is visible to joined members only, hs1 answers hs2's backfill
// with the events from before any hs2 user joined redacted (content gone,
// graph intact), and the later ones whole.
func TestFederationBackfillHidesWhatTheServerMayNotSee(t *testing.T) {
	_, hs1, hs2 := fedPair(t)
	alice := registerUser(t, hs1.URL, "alice")
	bob := registerUser(t, hs2.URL, "bob")
	room, err := alice.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{
		Preset: "public_chat", RoomAliasName: "confidentiel",
		InitialState: []*event.Event{{Type: event.StateHistoryVisibility, Content: event.Content{Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityJoined}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	sendText(t, alice, room.RoomID, "avant bob")
	if _, err := bob.JoinRoom(t.Context(), "#confidentiel:hs1.chappe.test", nil); err != nil {
		t.Fatalf("bob joins: %v", err)
	}
	last := sendText(t, alice, room.RoomID, "après bob")

	raws, err := federation.NewRemote(hs2.Federation).Backfill(t.Context(), hs1.Name, room.RoomID.String(), []string{last.String()}, 100)
	if err != nil {
		t.Fatalf("hs2 backfills from hs1: %v", err)
	}
	bodies := map[string]bool{}
	messages := 0
	for _, raw := range raws {
		var ev struct {
			Type    string         `json:"type"`
			Content map[string]any `json:"content"`
		}
		if err := json.Unmarshal(raw, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Type == "m.room.message" {
			messages++
			if b, ok := ev.Content["body"].(string); ok {
				bodies[b] = true
			}
		}
	}
	if messages != 2 || !bodies["après bob"] || bodies["avant bob"] {
		t.Fatalf("backfill to hs2 has %d messages with bodies %v, want both messages, only the one after bob's join readable", messages, bodies)
	}
}

// TestFederationJumpToDateAcrossServers: bob on hs2, who holds nothing of
// the room before his join, asks for the event at a time before it (a
// client's "jump to date"): hs2 asks hs1 (GET /timestamp_to_event),
// backfills up to the answer, and gives the same event as hs1 gives alice,
// which bob can then read around.
func TestFederationJumpToDateAcrossServers(t *testing.T) {
	_, hs1, hs2 := fedPair(t)
	alice := registerUser(t, hs1.URL, "alice")
	bob := registerUser(t, hs2.URL, "bob")
	room, err := alice.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "calendrier"})
	if err != nil {
		t.Fatal(err)
	}
	var target id.EventID
	for i := range 80 {
		evID := sendText(t, alice, room.RoomID, fmt.Sprintf("message %d", i))
		if i == 10 {
			target = evID
		}
	}
	ev, err := alice.GetEvent(t.Context(), room.RoomID, target)
	if err != nil {
		t.Fatal(err)
	}
	when := time.UnixMilli(ev.Timestamp)
	if _, err := bob.JoinRoom(t.Context(), "#calendrier:hs1.chappe.test", nil); err != nil {
		t.Fatalf("bob joins: %v", err)
	}
	for _, dir := range []mautrix.Direction{mautrix.DirectionForward, mautrix.DirectionBackward} {
		onHS1, err := alice.TimestampToEvent(t.Context(), room.RoomID, when, dir)
		if err != nil {
			t.Fatalf("hs1 timestamp_to_event dir=%c: %v", dir, err)
		}
		onHS2, err := bob.TimestampToEvent(t.Context(), room.RoomID, when, dir)
		if err != nil {
			t.Fatalf("hs2 timestamp_to_event dir=%c: %v", dir, err)
		}
		if onHS2.EventID != onHS1.EventID || onHS2.Timestamp != onHS1.Timestamp {
			t.Fatalf("dir=%c: hs2 answers %s at %v, hs1 %s at %v", dir, onHS2.EventID, onHS2.Timestamp, onHS1.EventID, onHS1.Timestamp)
		}
	}
	around, err := bob.Context(t.Context(), room.RoomID, target, nil, 4)
	if err != nil {
		t.Fatalf("bob reads around the event on hs2: %v", err)
	}
	if bodyOf(around.Event) != "message 10" || len(around.EventsBefore) == 0 || len(around.EventsAfter) == 0 {
		t.Fatalf("context on hs2: %q with %d before, %d after", bodyOf(around.Event), len(around.EventsBefore), len(around.EventsAfter))
	}
}
