package clientapi_test

import (
	"net/url"
	"testing"
	"time"

	"chappe/app/apptest"
)

// syncOnce calls /sync with the query params and returns the decoded body.
func syncOnce(t *testing.T, srv *apptest.Server, u user, params url.Values) response {
	t.Helper()
	r := call(t, "GET", srv.URL+c+"/sync?"+params.Encode(), u.Token, "")
	if r.Status != 200 {
		t.Fatalf("sync %v: %d %s", params, r.Status, r.Raw)
	}
	return r
}

func joinedSection(r response) map[string]any {
	rooms, _ := r.Body["rooms"].(map[string]any)
	j, _ := rooms["join"].(map[string]any)
	return j
}

func roomSection(r response, kind, roomID string) map[string]any {
	rooms, _ := r.Body["rooms"].(map[string]any)
	k, _ := rooms[kind].(map[string]any)
	room, _ := k[roomID].(map[string]any)
	return room
}

func timelineBodies(room map[string]any) []string {
	tl, _ := room["timeline"].(map[string]any)
	return bodies(events(tl["events"]))
}

func TestSyncInitialAndIncremental(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "alice-password")
	bob := register(t, srv, "bob", "bob-password")
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat", "name": "Salon"})
	joinRoom(t, srv, bob, room)
	for i := 0; i < 3; i++ {
		sendText(t, srv, alice, room, "hello")
	}
	first := syncOnce(t, srv, bob, url.Values{})
	jr := roomSection(first, "join", room)
	if jr == nil {
		t.Fatalf("initial sync without the room: %s", first.Raw)
	}
	if got := timelineBodies(jr); len(got) != 3 {
		t.Fatalf("timeline bodies %v", got)
	}
	since := first.Body["next_batch"].(string)

	// Long-poll: a message sent while bob waits arrives within the timeout.
	done := make(chan response, 1)
	start := time.Now()
	go func() { done <- syncOnce(t, srv, bob, url.Values{"since": {since}, "timeout": {"10000"}}) }()
	time.Sleep(200 * time.Millisecond)
	sendText(t, srv, alice, room, "live")
	select {
	case r := <-done:
		if got := timelineBodies(roomSection(r, "join", room)); len(got) != 1 || got[0] != "live" {
			t.Fatalf("incremental timeline %v: %s", got, r.Raw)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("the long-poll did not return promptly")
		}
		since = r.Body["next_batch"].(string)
	case <-time.After(10 * time.Second):
		t.Fatal("long-poll never returned")
	}
	// Nothing new: the long-poll waits the timeout and returns empty.
	start = time.Now()
	r := syncOnce(t, srv, bob, url.Values{"since": {since}, "timeout": {"300"}})
	if time.Since(start) < 250*time.Millisecond {
		t.Fatalf("an empty long-poll returned after %v", time.Since(start))
	}
	if len(joinedSection(r)) != 0 {
		t.Fatalf("quiet rooms listed: %s", r.Raw)
	}
}

func stateTypes(room map[string]any) map[string]bool {
	st, _ := room["state"].(map[string]any)
	out := map[string]bool{}
	for _, ev := range events(st["events"]) {
		key, _ := ev["state_key"].(string)
		out[ev["type"].(string)+"|"+key] = true
	}
	return out
}

func timelineIDs(room map[string]any) []string {
	tl, _ := room["timeline"].(map[string]any)
	return eventIDs(events(tl["events"]))
}

// TestSyncStateRules checks the spec's rules for the state section.
func TestSyncStateRules(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "alice-password")
	room := createRoom(t, srv, alice, map[string]any{"preset": "private_chat", "name": "Avant"})
	for i := 0; i < 12; i++ {
		sendText(t, srv, alice, room, "m")
	}
	limit1 := `{"room":{"timeline":{"limit":5}}}`

	// Initial: the state is the full state at the start of the timeline,
	// and nothing in the timeline is repeated in it.
	first := syncOnce(t, srv, alice, url.Values{"filter": {limit1}})
	jr := roomSection(first, "join", room)
	tl := jr["timeline"].(map[string]any)
	if tl["limited"] != true || tl["prev_batch"] == "" || len(timelineIDs(jr)) != 5 {
		t.Fatalf("initial timeline: %v", tl)
	}
	st := stateTypes(jr)
	for _, k := range []string{"m.room.create|", "m.room.name|", "m.room.power_levels|", "m.room.member|" + alice.ID} {
		if !st[k] {
			t.Fatalf("initial state lacks %s: %v", k, st)
		}
	}
	since := first.Body["next_batch"].(string)

	// Incremental without a gap: the state section is empty.
	sendText(t, srv, alice, room, "one more")
	r := syncOnce(t, srv, alice, url.Values{"since": {since}, "filter": {limit1}})
	jr = roomSection(r, "join", room)
	if len(stateTypes(jr)) != 0 || jr["timeline"].(map[string]any)["limited"] != false {
		t.Fatalf("gapless incremental sync: %v", jr)
	}
	since = r.Body["next_batch"].(string)

	// Incremental with a gap containing a rename: the delta carries the new
	// name, the timeline is limited, and /messages fills the gap exactly.
	putState(t, srv, alice, room, "m.room.name", "", map[string]string{"name": "Après"})
	var sent []string
	for i := 0; i < 8; i++ {
		sent = append(sent, sendText(t, srv, alice, room, "burst"))
	}
	r = syncOnce(t, srv, alice, url.Values{"since": {since}, "filter": {limit1}})
	jr = roomSection(r, "join", room)
	tl = jr["timeline"].(map[string]any)
	if tl["limited"] != true {
		t.Fatalf("gappy sync not limited: %v", tl)
	}
	st = stateTypes(jr)
	if !st["m.room.name|"] || st["m.room.create|"] {
		t.Fatalf("gappy state delta should be just what changed in the gap: %v", st)
	}
	gap := call(t, "GET", rurl(srv, room, "/messages?dir=b&from="+url.QueryEscape(tl["prev_batch"].(string))+"&to="+url.QueryEscape(since)+"&limit=50"), alice.Token, "")
	got := append(reversed(eventIDs(events(gap.Body["chunk"]))), timelineIDs(jr)...)
	if len(got) != 9 || got[0] == "" {
		t.Fatalf("gap + timeline = %d events, want the rename and 8 messages", len(got))
	}
	for i, id := range sent {
		if got[i+1] != id {
			t.Fatalf("gap filling out of order at %d", i)
		}
	}
	// full_state: the whole state even on an incremental sync.
	r = syncOnce(t, srv, alice, url.Values{"since": {r.Body["next_batch"].(string)}, "full_state": {"true"}})
	if st := stateTypes(roomSection(r, "join", room)); !st["m.room.create|"] || !st["m.room.join_rules|"] {
		t.Fatalf("full_state: %v", st)
	}
}

// TestSyncMemberships: invite, join, kick and ban as the sync shows them.
func TestSyncMemberships(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "alice-password")
	bob := register(t, srv, "bob", "bob-password")
	room := createRoom(t, srv, alice, map[string]any{"preset": "private_chat", "name": "Conseil"})
	since := syncOnce(t, srv, bob, url.Values{}).Body["next_batch"].(string)

	inviteUser(t, srv, alice, room, bob.ID)
	r := syncOnce(t, srv, bob, url.Values{"since": {since}, "timeout": {"5000"}})
	inv := roomSection(r, "invite", room)
	if inv == nil {
		t.Fatalf("invite missing: %s", r.Raw)
	}
	stripped := events(inv["invite_state"].(map[string]any)["events"])
	seen := map[string]bool{}
	for _, ev := range stripped {
		seen[ev["type"].(string)] = true
		if _, hasID := ev["event_id"]; hasID {
			t.Fatalf("stripped state must be stripped: %v", ev)
		}
	}
	if !seen["m.room.name"] || !seen["m.room.member"] || !seen["m.room.create"] {
		t.Fatalf("invite_state: %v", seen)
	}
	since = r.Body["next_batch"].(string)

	// Joining moves the room to join, with its full state.
	joinRoom(t, srv, bob, room)
	r = syncOnce(t, srv, bob, url.Values{"since": {since}})
	jr := roomSection(r, "join", room)
	if jr == nil || roomSection(r, "invite", room) != nil {
		t.Fatalf("after join: %s", r.Raw)
	}
	if st := stateTypes(jr); !st["m.room.create|"] && len(timelineIDs(jr)) < 5 {
		t.Fatalf("a newly joined room needs its state: %v", st)
	}
	since = r.Body["next_batch"].(string)

	// A kick shows in leave with the kick event.
	if k := call(t, "POST", rurl(srv, room, "/kick"), alice.Token, `{"user_id":"`+bob.ID+`","reason":"dehors"}`); k.Status != 200 {
		t.Fatalf("kick: %s", k.Raw)
	}
	r = syncOnce(t, srv, bob, url.Values{"since": {since}})
	lv := roomSection(r, "leave", room)
	if lv == nil {
		t.Fatalf("kicked room not in leave: %s", r.Raw)
	}
	tl := events(lv["timeline"].(map[string]any)["events"])
	last := tl[len(tl)-1]
	if last["type"] != "m.room.member" || last["content"].(map[string]any)["membership"] != "leave" || last["sender"] != alice.ID {
		t.Fatalf("leave timeline should end with the kick: %v", last)
	}
	since = r.Body["next_batch"].(string)
	// Later messages in that room never reach bob.
	sendText(t, srv, alice, room, "after the kick")
	r = syncOnce(t, srv, bob, url.Values{"since": {since}, "timeout": {"300"}})
	if roomSection(r, "leave", room) != nil || roomSection(r, "join", room) != nil {
		t.Fatalf("kicked user still receives the room: %s", r.Raw)
	}
	// include_leave shows it on an initial sync.
	r = syncOnce(t, srv, bob, url.Values{"filter": {`{"room":{"include_leave":true}}`}})
	if roomSection(r, "leave", room) == nil {
		t.Fatalf("include_leave: %s", r.Raw)
	}
	r = syncOnce(t, srv, bob, url.Values{})
	if roomSection(r, "leave", room) != nil {
		t.Fatal("left rooms must not appear in an initial sync without include_leave")
	}
}

// TestSyncFilters: stored and inline filters, each option.
func TestSyncFilters(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "alice-password")
	bob := register(t, srv, "bob", "bob-password")
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	other := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, srv, bob, room)
	sendText(t, srv, bob, room, "from bob")
	sendEvent(t, srv, alice, room, "org.example.custom", map[string]string{"x": "y"})
	sendText(t, srv, alice, room, "from alice")

	// Stored filter round trip.
	f := `{"room":{"timeline":{"limit":2,"types":["m.room.message"]},"rooms":["` + room + `"]},"event_fields":["type","content.body","sender"]}`
	r := call(t, "POST", srv.URL+c+"/user/"+url.PathEscape(alice.ID)+"/filter", alice.Token, f)
	id, _ := r.Body["filter_id"].(string)
	if r.Status != 200 || id == "" {
		t.Fatalf("POST filter: %s", r.Raw)
	}
	if g := call(t, "GET", srv.URL+c+"/user/"+url.PathEscape(alice.ID)+"/filter/"+id, alice.Token, ""); g.Status != 200 || g.Body["event_fields"] == nil {
		t.Fatalf("GET filter: %s", g.Raw)
	}
	s := syncOnce(t, srv, alice, url.Values{"filter": {id}})
	if roomSection(s, "join", other) != nil {
		t.Fatal("rooms filter ignored")
	}
	jr := roomSection(s, "join", room)
	evs := events(jr["timeline"].(map[string]any)["events"])
	if len(evs) != 2 || evs[0]["content"].(map[string]any)["body"] != "from bob" || evs[1]["content"].(map[string]any)["body"] != "from alice" {
		t.Fatalf("types/limit filter: %v", evs)
	}
	if _, has := evs[0]["event_id"]; has {
		t.Fatalf("event_fields not applied: %v", evs[0])
	}
	// Inline: not_senders and lazy-loaded members.
	s = syncOnce(t, srv, alice, url.Values{"filter": {`{"room":{"timeline":{"not_senders":["` + bob.ID + `"],"limit":3},"state":{"lazy_load_members":true}}}`}})
	jr = roomSection(s, "join", room)
	for _, ev := range events(jr["timeline"].(map[string]any)["events"]) {
		if ev["sender"] == bob.ID {
			t.Fatal("not_senders ignored")
		}
	}
	if st := stateTypes(jr); st["m.room.member|"+bob.ID] {
		t.Fatalf("lazy loading sent a member who sent nothing in the timeline: %v", st)
	}
	// Errors.
	for name, q := range map[string]string{
		"unknown filter id": "9999",
		"inline not JSON":   "{nope",
		"bad event_format":  `{"event_format":"xml"}`,
		"bad since token":   "",
		"negative limit":    `{"room":{"timeline":{"limit":-1}}}`,
	} {
		params := url.Values{"filter": {q}}
		if name == "bad since token" {
			params = url.Values{"since": {"garbage"}}
		}
		if r := call(t, "GET", srv.URL+c+"/sync?"+params.Encode(), alice.Token, ""); r.Status != 400 {
			t.Errorf("%s: %d %s", name, r.Status, r.Raw)
		}
	}
	if r := call(t, "POST", srv.URL+c+"/user/"+url.PathEscape(bob.ID)+"/filter", alice.Token, "{}"); r.Status != 403 {
		t.Errorf("filter for another user: %d", r.Status)
	}
	if r := call(t, "POST", srv.URL+c+"/user/"+url.PathEscape(alice.ID)+"/filter", alice.Token, `{"room":"no"}`); r.Status != 400 || r.errcode() != "M_BAD_JSON" {
		t.Errorf("malformed filter: %d %s", r.Status, r.Raw)
	}
}

// TestSyncUnreadCountsAlongALongPollChain: counts carried from one
// incremental sync to the next stay exact through new messages, mentions,
// receipts and the user's own messages.
func TestSyncUnreadCountsAlongALongPollChain(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "alice-password")
	bob := register(t, srv, "bob", "bob-password")
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, srv, bob, room)
	since := syncOnce(t, srv, bob, url.Values{}).Body["next_batch"].(string)
	counts := func(step string, wantN, wantH float64) {
		t.Helper()
		r := syncOnce(t, srv, bob, url.Values{"since": {since}, "timeout": {"2000"}})
		since = r.Body["next_batch"].(string)
		jr := roomSection(r, "join", room)
		un, _ := jr["unread_notifications"].(map[string]any)
		if un["notification_count"] != wantN || un["highlight_count"] != wantH {
			t.Fatalf("%s: unread %v, want %v/%v (%s)", step, un, wantN, wantH, r.Raw)
		}
	}
	sendText(t, srv, alice, room, "one")
	sendText(t, srv, alice, room, "two")
	counts("two messages", 2, 0)
	sendEvent(t, srv, alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "bob?", "m.mentions": map[string]any{"user_ids": []string{bob.ID}}})
	counts("a mention", 3, 1)
	last := sendText(t, srv, alice, room, "three")
	counts("another message", 4, 1)
	if r := call(t, "POST", rurl(srv, room, "/receipt/m.read/"+url.PathEscape(last)), bob.Token, "{}"); r.Status != 200 {
		t.Fatalf("receipt: %s", r.Raw)
	}
	counts("after the receipt", 0, 0)
	sendText(t, srv, alice, room, "four")
	counts("a message after the receipt", 1, 0)
	sendText(t, srv, bob, room, "bob answers")
	counts("bob's own message reads the room", 0, 0)
}

// TestSyncTokenBeyondTheStream: positions abandoned before a restart can
// leave a client with a token beyond the stored stream; it still syncs, and
// later events reach it.
func TestSyncTokenBeyondTheStream(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "alice-password")
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	r := call(t, "GET", srv.URL+c+"/sync?since=s999999_0&timeout=0", alice.Token, "")
	if r.Status != 200 {
		t.Fatalf("a token beyond the stream: %d %s", r.Status, r.Raw)
	}
	sendText(t, srv, alice, room, "after")
	r = syncOnce(t, srv, alice, url.Values{"since": {r.Body["next_batch"].(string)}, "timeout": {"2000"}})
	if got := timelineBodies(roomSection(r, "join", room)); len(got) != 1 || got[0] != "after" {
		t.Fatalf("events after the clamped token: %v", got)
	}
}
