package push

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"chappe/roomserver"
	"chappe/sqlstore"
	"chappe/streams"
)

func TestPushCountsMessagesMentionsOwn(t *testing.T) {
	e := newEnv(t)
	alice, bob, carol := e.user("alice"), e.user("bob"), e.user("carol")
	room := e.room(alice, bob, carol)
	e.wantCounts(alice, room, 0, 0, "membership events do not notify")

	e.say(bob, room, "hello")
	e.wantCounts(alice, room, 1, 0, "a message")
	e.wantCounts(carol, room, 1, 0, "a message")
	e.wantCounts(bob, room, 0, 0, "own message")

	e.send(bob, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "Alice?", "m.mentions": map[string]any{"user_ids": []string{alice}}})
	e.wantCounts(alice, room, 2, 1, "a mention")
	e.wantCounts(carol, room, 2, 0, "someone else's mention")

	e.send(bob, room, "m.room.message", map[string]any{"msgtype": "m.notice", "body": "bot"})
	e.wantCounts(alice, room, 2, 1, "a notice")

	// Sending marks read: alice's own message clears her counts.
	e.say(alice, room, "yes?")
	e.wantCounts(alice, room, 0, 0, "after alice's own message")
	e.wantCounts(carol, room, 3, 0, "alice's message")

	// Several rooms in one call; unknown rooms have zero counts.
	other := e.room(carol, alice)
	e.say(carol, other, "psst")
	all, err := e.push.UnreadCounts(e.ctx, alice, []string{room, other, "!nowhere:x", other})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || all[other].Notifications != 1 || all[room].Notifications != 0 || all["!nowhere:x"].Notifications != 0 {
		t.Errorf("counts of several rooms: %+v", all)
	}
}

func TestPushReceiptsReset(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice"), e.user("bob")
	room := e.room(alice, bob, e.user("carol"))
	m1 := e.say(bob, room, "one")
	m2 := e.send(bob, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "two", "m.mentions": map[string]any{"user_ids": []string{alice}}})
	m3 := e.say(bob, room, "three")
	e.wantCounts(alice, room, 3, 1, "three messages")

	e.receipt(alice, room, "m.read.private", m2, nil)
	e.wantCounts(alice, room, 1, 0, "private receipt on the second")
	e.receipt(alice, room, "m.read", m1, nil)
	e.wantCounts(alice, room, 1, 0, "a public receipt behind the private one changes nothing")
	e.receipt(alice, room, "m.read", m3, nil)
	e.wantCounts(alice, room, 0, 0, "public receipt on the last")
	e.say(bob, room, "four")
	e.wantCounts(alice, room, 1, 0, "a message after the receipt")
	e.wantCounts(bob, room, 0, 0, "bob sent everything")
}

func TestPushThreadCounts(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice"), e.user("bob")
	room := e.room(alice, bob, e.user("carol"))
	root := e.say(bob, room, "root")
	r1 := e.inThread(bob, room, root, "reply 1")
	r2 := e.send(bob, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "reply 2",
		"m.mentions":   map[string]any{"user_ids": []string{alice}},
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
	main := e.say(bob, room, "main")

	c := e.counts(alice, room)
	if c.Notifications != 4 || c.Highlights != 1 || c.Main != (Counts{2, 0}) || len(c.Threads) != 1 || c.Threads[root] != (Counts{2, 1}) {
		t.Fatalf("counts: %+v", c)
	}
	// A threaded receipt clears its thread only.
	e.receipt(alice, room, "m.read", r1, strp(root))
	c = e.counts(alice, room)
	if c.Notifications != 3 || c.Main != (Counts{2, 0}) || c.Threads[root] != (Counts{1, 1}) {
		t.Errorf("after a receipt in the thread: %+v", c)
	}
	e.receipt(alice, room, "m.read", main, strp("main"))
	c = e.counts(alice, room)
	if c.Notifications != 1 || c.Main != (Counts{}) || c.Threads[root] != (Counts{1, 1}) {
		t.Errorf("after a receipt on the main timeline: %+v", c)
	}
	// An unthreaded receipt clears every thread up to its event.
	e.receipt(alice, room, "m.read", r2, nil)
	e.wantCounts(alice, room, 0, 0, "unthreaded receipt after the last thread reply")

	// Sending in a thread marks that thread read, not the main timeline.
	e.inThread(bob, room, root, "reply 3")
	e.say(bob, room, "main 2")
	e.inThread(alice, room, root, "my reply")
	c = e.counts(alice, room)
	if c.Notifications != 1 || c.Main != (Counts{1, 0}) || len(c.Threads) != 0 {
		t.Errorf("after alice's reply in the thread: %+v", c)
	}

	// Events relating to a thread event belong to the thread; relating to
	// the root, to the main timeline (alice has a rule notifying reactions).
	if err := e.push.PutRule(e.ctx, alice, PutRuleRequest{Kind: KindOverride, RuleID: "reactions", HasActions: true,
		Actions: acts(`"notify"`), Conditions: []Condition{match("type", "m.reaction")}}); err != nil {
		t.Fatal(err)
	}
	e.send(bob, room, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": r1, "key": "👍"}})
	e.send(bob, room, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": root, "key": "👍"}})
	c = e.counts(alice, room)
	if c.Main != (Counts{2, 0}) || c.Threads[root] != (Counts{1, 0}) {
		t.Errorf("reactions: %+v", c)
	}
}

func TestPushDirectMessagesAndInvites(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice"), e.user("bob")
	room, err := e.rs.CreateRoom(e.ctx, alice, roomserver.CreateRoomRequest{Preset: roomserver.PresetTrustedPrivate, Invite: []string{bob}, IsDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	notes := e.notifications(bob, "")
	if len(notes) != 1 || notes[0].RoomID != room || !strings.Contains(string(notes[0].Event), `"membership":"invite"`) ||
		!strings.Contains(string(actionsJSON(notes[0])), `"value":"default"`) {
		t.Fatalf("bob's invite notification: %+v", notes)
	}
	e.join(bob, room)
	e.say(alice, room, "hi")
	notes = e.notifications(bob, "")
	if len(notes) != 2 || string(actionsJSON(notes[0])) != `["notify",{"set_tweak":"sound","value":"default"}]` {
		t.Errorf("a DM message notifies with sound (.m.rule.room_one_to_one): %s", actionsJSON(notes[0]))
	}
	// A third member makes it a group: no sound.
	carol := e.user("carol")
	e.rs.Invite(e.ctx, roomserver.MembershipRequest{Sender: alice, RoomID: room, Target: carol})
	e.join(carol, room)
	e.say(alice, room, "hi all")
	if got := string(actionsJSON(e.notifications(bob, "")[0])); got != `["notify"]` {
		t.Errorf("group message actions %s", got)
	}
	// Back to two members: the cached room info follows the leave.
	e.leave(carol, room)
	e.say(alice, room, "just us")
	if got := string(actionsJSON(e.notifications(bob, "")[0])); got != `["notify",{"set_tweak":"sound","value":"default"}]` {
		t.Errorf("after carol left: actions %s", got)
	}
}

func actionsJSON(n Notification) []byte {
	b, _ := json.Marshal(n.Actions)
	return b
}

func TestPushRoomMentionNeedsPower(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice"), e.user("bob")
	room := e.room(alice, bob, e.user("carol"))
	atRoom := map[string]any{"msgtype": "m.text", "body": "@room hello", "m.mentions": map[string]any{"room": true}}
	e.send(bob, room, "m.room.message", atRoom)
	e.wantCounts(alice, room, 1, 0, "@room from a user at level 0")
	e.send(alice, room, "m.room.message", atRoom)
	e.wantCounts(bob, room, 1, 1, "@room from the creator (level 100), after bob's own")
	e.state(alice, room, "m.room.power_levels", "", map[string]any{"users": map[string]any{alice: 100, bob: 50}})
	e.say(alice, room, "read") // clears alice's counts
	e.send(bob, room, "m.room.message", atRoom)
	e.wantCounts(alice, room, 1, 1, "@room from a moderator")
	e.state(alice, room, "m.room.power_levels", "", map[string]any{"users": map[string]any{alice: 100, bob: 50}, "notifications": map[string]any{"room": 60}})
	e.say(alice, room, "read")
	e.send(bob, room, "m.room.message", atRoom)
	e.wantCounts(alice, room, 1, 0, "notifications.room raised above bob's level")
}

func TestPushRulesApply(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice"), e.user("bob")
	e.profiles.names[alice] = "Alice Liddell"
	room := e.room(alice, bob, e.user("carol"))

	put := func(req PutRuleRequest) {
		t.Helper()
		req.HasActions = true
		if err := e.push.PutRule(e.ctx, alice, req); err != nil {
			t.Fatalf("PutRule %+v: %v", req, err)
		}
	}
	put(PutRuleRequest{Kind: KindRoom, RuleID: room, Actions: acts()})
	e.say(bob, room, "muted")
	e.wantCounts(alice, room, 0, 0, "room rule muting the room")

	put(PutRuleRequest{Kind: KindContent, RuleID: "cake", Pattern: strp("cake"), Actions: acts(`"notify"`, `{"set_tweak":"highlight"}`)})
	e.say(bob, room, "Cake time")
	e.wantCounts(alice, room, 1, 1, "keyword beats the room rule")

	if err := e.push.DeleteRule(e.ctx, alice, KindRoom, room); err != nil {
		t.Fatal(err)
	}
	e.say(bob, room, "unmuted")
	e.wantCounts(alice, room, 2, 1, "room rule deleted")

	put(PutRuleRequest{Kind: KindOverride, RuleID: "my-name", Conditions: []Condition{{Kind: "contains_display_name"}},
		Actions: acts(`"notify"`, `{"set_tweak":"highlight"}`)})
	e.say(bob, room, "ask alice liddell")
	e.wantCounts(alice, room, 3, 2, "display name in the body")

	put(PutRuleRequest{Kind: KindSender, RuleID: bob, Actions: acts()})
	e.say(bob, room, "plain from bob")
	e.wantCounts(alice, room, 3, 2, "sender rule muting bob")
	e.say(bob, room, "ask alice liddell again")
	e.wantCounts(alice, room, 4, 3, "override beats sender")
	if err := e.push.SetEnabled(e.ctx, alice, KindOverride, "my-name", false); err != nil {
		t.Fatal(err)
	}
	e.say(bob, room, "alice liddell?")
	e.wantCounts(alice, room, 4, 3, "disabled override")
	if err := e.push.SetEnabled(e.ctx, alice, KindSender, bob, false); err != nil {
		t.Fatal(err)
	}
	if err := e.push.SetActions(e.ctx, alice, KindUnderride, ".m.rule.message", acts(`"notify"`, `{"set_tweak":"highlight"}`)); err != nil {
		t.Fatal(err)
	}
	e.say(bob, room, "plain")
	e.wantCounts(alice, room, 5, 4, "changed actions of .m.rule.message")
	if err := e.push.SetEnabled(e.ctx, alice, KindUnderride, ".m.rule.message", false); err != nil {
		t.Fatal(err)
	}
	e.say(bob, room, "plain again")
	e.wantCounts(alice, room, 5, 4, ".m.rule.message disabled")

	// Each change reached alice's account data at a stream position.
	data, err := e.store.AccountDataSince(e.ctx, alice, 0, e.hub.Current().Stream)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 1 || data[0].Type != AccountDataType {
		t.Fatalf("account data: %+v", data)
	}
	var content struct{ Global Ruleset }
	if err := json.Unmarshal([]byte(data[0].Content), &content); err != nil {
		t.Fatal(err)
	}
	if r, ok := content.Global.Find(KindUnderride, ".m.rule.message"); !ok || r.Enabled {
		t.Errorf("m.push_rules shows .m.rule.message %+v", r)
	}
	if _, ok := content.Global.Find(KindContent, "cake"); !ok {
		t.Error("m.push_rules lacks the cake rule")
	}
}

func TestPushIgnoredSender(t *testing.T) {
	e := newEnv(t)
	alice, bob, carol, dave := e.user("alice"), e.user("bob"), e.user("carol"), e.user("dave")
	room := e.room(alice, bob, carol, dave)
	pos := e.hub.Alloc()
	err := e.store.PutAccountData(e.ctx, alice, "", "m.ignored_user_list", `{"ignored_users":{"`+bob+`":{}}}`, pos)
	e.hub.Commit(pos, streams.Change{Users: []string{alice}})
	if err != nil {
		t.Fatal(err)
	}
	e.say(bob, room, "ignored")
	e.say(carol, room, "not ignored")
	e.wantCounts(alice, room, 1, 0, "bob is ignored")
	e.wantCounts(dave, room, 2, 0, "dave ignores nobody")
}

// failing is a listener that refuses every event of one room.
type failing struct{ room string }

func (f failing) EventStored(_ context.Context, _ *sqlstore.Queries, ev sqlstore.Event, _ int64) error {
	if ev.RoomID == f.room && ev.Type == "m.room.message" {
		return errors.New("refused")
	}
	return nil
}

// TestPushCountsCommitWithTheEvent checks that notifications are written in
// the event's transaction (an event that rolls back leaves none) and
// survive a restart, after which evaluation goes on from the database.
func TestPushCountsCommitWithTheEvent(t *testing.T) {
	f := &failing{}
	e := newEnv(t, f)
	alice, bob := e.user("alice"), e.user("bob")
	room := e.room(alice, bob)
	e.say(bob, room, "one")
	f.room = room
	if _, err := e.trySend(bob, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "lost"}); err == nil {
		t.Fatal("the failing listener did not roll the send back")
	}
	e.wantCounts(alice, room, 1, 0, "a rolled-back event has no notification")
	f.room = ""

	e.start() // restart: empty caches
	e.wantCounts(alice, room, 1, 0, "after a restart")
	e.say(bob, room, "two")
	e.wantCounts(alice, room, 2, 0, "evaluation after a restart")
	if got := string(actionsJSON(e.notifications(alice, "")[0])); got != `["notify",{"set_tweak":"sound","value":"default"}]` {
		t.Errorf("room info read from the database after a restart: actions %s", got)
	}
}

func TestPushNotificationsPaging(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice"), e.user("bob")
	room := e.room(alice, bob, e.user("carol"))
	var ids []string
	for i := 0; i < 5; i++ {
		c := map[string]any{"msgtype": "m.text", "body": "m"}
		if i%2 == 0 {
			c["m.mentions"] = map[string]any{"user_ids": []string{alice}}
		}
		ids = append(ids, e.send(bob, room, "m.room.message", c))
	}
	e.receipt(alice, room, "m.read", ids[1], nil)
	var got []Notification
	from := ""
	for pages := 0; ; pages++ {
		page, err := e.push.Notifications(e.ctx, alice, from, 2, "")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page.Notifications...)
		if page.NextToken == "" {
			break
		}
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		from = page.NextToken
	}
	if len(got) != 5 {
		t.Fatalf("%d notifications, want 5", len(got))
	}
	for i, n := range got {
		var ev struct {
			EventID string `json:"event_id"`
			Sender  string `json:"sender"`
		}
		_ = json.Unmarshal(n.Event, &ev)
		want := ids[4-i]
		if ev.EventID != want || ev.Sender != bob || n.RoomID != room || n.TS == 0 {
			t.Errorf("notification %d: %+v %s, want %s", i, n, n.Event, want)
		}
		if n.Read != (4-i <= 1) {
			t.Errorf("notification %d read=%v", i, n.Read)
		}
	}
	high := e.notifications(alice, "highlight")
	if len(high) != 3 {
		t.Errorf("%d highlights, want 3", len(high))
	}
	if _, err := e.push.Notifications(e.ctx, alice, "nope", 0, ""); err == nil {
		t.Error("a bad from token is refused")
	}
}
