package push

import (
	"encoding/json"
	"reflect"
	"testing"
)

// fakeRoom is a Room for pure evaluation tests.
type fakeRoom struct {
	members int
	names   map[string]string
	levels  map[string]int64 // sender levels; absent: 0
	notif   int64            // notifications.room; 0: default 50
}

func (f fakeRoom) MemberCount() int                 { return f.members }
func (f fakeRoom) DisplayName(userID string) string { return f.names[userID] }
func (f fakeRoom) SenderMayNotify(sender, key string) bool {
	need := f.notif
	if need == 0 {
		need = defaultNotificationLevel
	}
	return f.levels[sender] >= need
}

const alice = "@alice:test.gouv.fr"

func event(t *testing.T, v map[string]any) *Event {
	t.Helper()
	if _, ok := v["sender"]; !ok {
		v["sender"] = "@bob:test.gouv.fr"
	}
	if _, ok := v["room_id"]; !ok {
		v["room_id"] = "!room:test.gouv.fr"
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := ParseEvent(b, "$ev")
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func msg(body string) map[string]any {
	return map[string]any{"type": "m.room.message", "content": map[string]any{"msgtype": "m.text", "body": body}}
}

func TestPushSplitPath(t *testing.T) {
	cases := map[string][]string{
		"content.body":                 {"content", "body"},
		`content.m\.relates_to`:        {"content", "m.relates_to"},
		`content.m\\foo`:               {"content", `m\foo`},
		`content.m\x`:                  {"content", `m\x`},
		`content.m\.mentions.user_ids`: {"content", "m.mentions", "user_ids"},
		"type":                         {"type"},
	}
	for in, want := range cases {
		if got := splitPath(in); !reflect.DeepEqual(got, want) {
			t.Errorf("splitPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPushGlob(t *testing.T) {
	cases := []struct {
		pattern, value string
		words, want    bool
	}{
		// Spec examples (push.md, event_match).
		{"lunc?*", "Lunch plans", false, true},
		{"lunc?*", "LUNCH", false, true},
		{"lunc?*", " lunch", false, false},
		{"lunc?*", "lunc", false, false},
		{"ex*ple", "An example event.", true, true},
		{"ex*ple", "exple", true, true},
		{"ex*ple", "An exciting triple-whammy", true, true},
		// Whole value vs word boundaries.
		{"m.notice", "m.notice", false, true},
		{"m.notice", "M.NOTICE", false, true},
		{"m.notice", "m.notices", false, false},
		{"m.*", "m.room.message", false, true},
		{"m.?oom", "m.room", false, true},
		{"cake", "I like cake!", true, true},
		{"cake", "I like cakes", true, false},
		{"cake", "pancake", true, false},
		{"cake", "cake_", true, false},
		{"cake", "CAKE", true, true},
		{"cake*lie", "the cake is a lie", true, true},
		{"cake*lie", "the cake is a lier", true, false},
		{"a.b", "axb", false, false}, // regexp metacharacters are literal
		{"", "", false, true},
		{"", "x", false, false},
	}
	for _, c := range cases {
		if got := compileGlob(c.pattern, c.words)(c.value); got != c.want {
			t.Errorf("glob %q (words %v) on %q = %v, want %v", c.pattern, c.words, c.value, got, c.want)
		}
	}
}

// condCase evaluates one condition for alice on an event.
type condCase struct {
	name string
	cond Condition
	ev   map[string]any
	room fakeRoom
	want bool
}

func pattern(p string) *string { return &p }

func TestPushConditions(t *testing.T) {
	two := fakeRoom{members: 2}
	cases := []condCase{
		{"event_match type", Condition{Kind: "event_match", Key: "type", Pattern: pattern("m.room.message")}, msg("hi"), two, true},
		{"event_match other type", Condition{Kind: "event_match", Key: "type", Pattern: pattern("m.room.topic")}, msg("hi"), two, false},
		{"event_match absent key", Condition{Kind: "event_match", Key: "content.topic", Pattern: pattern("*")}, msg("hi"), two, false},
		{"event_match non-string", Condition{Kind: "event_match", Key: "content.n", Pattern: pattern("*")},
			map[string]any{"type": "x", "content": map[string]any{"n": 1}}, two, false},
		{"event_match null", Condition{Kind: "event_match", Key: "content.topic", Pattern: pattern("*")},
			map[string]any{"type": "m.room.topic", "content": map[string]any{"topic": nil}}, two, false},
		{"event_match spec example", Condition{Kind: "event_match", Key: "content.topic", Pattern: pattern("lunc?*")},
			map[string]any{"type": "m.room.topic", "state_key": "", "content": map[string]any{"topic": "Lunch plans"}}, two, true},
		{"event_match body word", Condition{Kind: "event_match", Key: "content.body", Pattern: pattern("alice")}, msg("hello Alice!"), two, true},
		{"event_match body not word", Condition{Kind: "event_match", Key: "content.body", Pattern: pattern("alice")}, msg("malice"), two, false},
		{"event_match other key is whole-value", Condition{Kind: "event_match", Key: "content.msgtype", Pattern: pattern("m")}, msg("x"), two, false},
		{"event_match escaped key", Condition{Kind: "event_match", Key: `content.m\.relates_to.rel_type`, Pattern: pattern("m.thread")},
			map[string]any{"type": "m.room.message", "content": map[string]any{"m.relates_to": map[string]any{"rel_type": "m.thread"}}}, two, true},
		{"event_match without pattern", Condition{Kind: "event_match", Key: "type"}, msg("x"), two, false},

		{"property_is true", Condition{Kind: "event_property_is", Key: `content.m\.federate`, Value: json.RawMessage(`true`)},
			map[string]any{"type": "m.room.create", "content": map[string]any{"m.federate": true}}, two, true},
		{"property_is string is not bool", Condition{Kind: "event_property_is", Key: `content.m\.federate`, Value: json.RawMessage(`true`)},
			map[string]any{"type": "m.room.create", "content": map[string]any{"m.federate": "true"}}, two, false},
		{"property_is 1 is not true", Condition{Kind: "event_property_is", Key: `content.m\.federate`, Value: json.RawMessage(`true`)},
			map[string]any{"type": "m.room.create", "content": map[string]any{"m.federate": 1}}, two, false},
		{"property_is integer", Condition{Kind: "event_property_is", Key: "content.n", Value: json.RawMessage(`42`)},
			map[string]any{"type": "x", "content": map[string]any{"n": 42}}, two, true},
		{"property_is other integer", Condition{Kind: "event_property_is", Key: "content.n", Value: json.RawMessage(`42`)},
			map[string]any{"type": "x", "content": map[string]any{"n": 43}}, two, false},
		{"property_is null", Condition{Kind: "event_property_is", Key: "content.n", Value: json.RawMessage(`null`)},
			map[string]any{"type": "x", "content": map[string]any{"n": nil}}, two, true},
		{"property_is null absent", Condition{Kind: "event_property_is", Key: "content.n", Value: json.RawMessage(`null`)},
			map[string]any{"type": "x", "content": map[string]any{}}, two, false},
		{"property_is string exact case", Condition{Kind: "event_property_is", Key: "content.s", Value: json.RawMessage(`"Abc"`)},
			map[string]any{"type": "x", "content": map[string]any{"s": "abc"}}, two, false},
		{"property_is compound value never", Condition{Kind: "event_property_is", Key: "content.s", Value: json.RawMessage(`["a"]`)},
			map[string]any{"type": "x", "content": map[string]any{"s": []any{"a"}}}, two, false},
		{"property_is object in event", Condition{Kind: "event_property_is", Key: "content.s", Value: json.RawMessage(`"a"`)},
			map[string]any{"type": "x", "content": map[string]any{"s": map[string]any{"a": 1}}}, two, false},

		{"property_contains spec example", Condition{Kind: "event_property_contains", Key: "content.alt_aliases", Value: json.RawMessage(`"#myroom:example.com"`)},
			map[string]any{"type": "m.room.canonical_alias", "content": map[string]any{"alt_aliases": []any{"#somewhere:example.org", "#myroom:example.com"}}}, two, true},
		{"property_contains partial", Condition{Kind: "event_property_contains", Key: "content.alt_aliases", Value: json.RawMessage(`":example.com"`)},
			map[string]any{"type": "m.room.canonical_alias", "content": map[string]any{"alt_aliases": []any{"#myroom:example.com"}}}, two, false},
		{"property_contains not array", Condition{Kind: "event_property_contains", Key: "content.s", Value: json.RawMessage(`"a"`)},
			map[string]any{"type": "x", "content": map[string]any{"s": "a"}}, two, false},
		{"property_contains integer", Condition{Kind: "event_property_contains", Key: "content.s", Value: json.RawMessage(`3`)},
			map[string]any{"type": "x", "content": map[string]any{"s": []any{1, "3", 3}}}, two, true},

		{"display name", Condition{Kind: "contains_display_name"}, msg("ping Alice Liddell, please"),
			fakeRoom{members: 3, names: map[string]string{alice: "Alice Liddell"}}, true},
		{"display name case", Condition{Kind: "contains_display_name"}, msg("ALICE LIDDELL!"),
			fakeRoom{members: 3, names: map[string]string{alice: "Alice Liddell"}}, true},
		{"display name inside word", Condition{Kind: "contains_display_name"}, msg("Alicex"),
			fakeRoom{members: 3, names: map[string]string{alice: "Alice"}}, false},
		{"display name absent", Condition{Kind: "contains_display_name"}, msg("alice"), fakeRoom{members: 3}, false},
		{"display name regexp chars", Condition{Kind: "contains_display_name"}, msg("hi a.c"),
			fakeRoom{members: 3, names: map[string]string{alice: "a.c"}}, true},
		{"display name regexp chars literal", Condition{Kind: "contains_display_name"}, msg("hi abc"),
			fakeRoom{members: 3, names: map[string]string{alice: "a.c"}}, false},

		{"member count ==", Condition{Kind: "room_member_count", Is: "2"}, msg("x"), two, true},
		{"member count == explicit", Condition{Kind: "room_member_count", Is: "==2"}, msg("x"), fakeRoom{members: 3}, false},
		{"member count <", Condition{Kind: "room_member_count", Is: "<3"}, msg("x"), two, true},
		{"member count < no", Condition{Kind: "room_member_count", Is: "<2"}, msg("x"), two, false},
		{"member count >", Condition{Kind: "room_member_count", Is: ">1"}, msg("x"), two, true},
		{"member count >=", Condition{Kind: "room_member_count", Is: ">=2"}, msg("x"), two, true},
		{"member count <=", Condition{Kind: "room_member_count", Is: "<=1"}, msg("x"), two, false},
		{"member count invalid", Condition{Kind: "room_member_count", Is: "two"}, msg("x"), two, false},
		{"member count empty", Condition{Kind: "room_member_count"}, msg("x"), two, false},

		{"sender permission ok", Condition{Kind: "sender_notification_permission", Key: "room"}, msg("x"),
			fakeRoom{members: 5, levels: map[string]int64{"@bob:test.gouv.fr": 50}}, true},
		{"sender permission low", Condition{Kind: "sender_notification_permission", Key: "room"}, msg("x"),
			fakeRoom{members: 5, levels: map[string]int64{"@bob:test.gouv.fr": 49}}, false},
		{"sender permission custom level", Condition{Kind: "sender_notification_permission", Key: "room"}, msg("x"),
			fakeRoom{members: 5, notif: 10, levels: map[string]int64{"@bob:test.gouv.fr": 10}}, true},

		{"unknown kind never matches", Condition{Kind: "org.example.future"}, msg("x"), two, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := compileCondition(c.cond)(&evaluation{ev: event(t, c.ev), room: c.room, userID: alice})
			if got != c.want {
				t.Errorf("%+v on %v: got %v, want %v", c.cond, c.ev, got, c.want)
			}
		})
	}
}

func TestPushRoomInfoLevels(t *testing.T) {
	ri := &roomInfo{joined: map[string]string{}, creator: "@c:x"}
	if !ri.SenderMayNotify("@c:x", "room") || ri.SenderMayNotify("@d:x", "room") {
		t.Error("without power levels the creator has 100 and others 0")
	}
	ri.powerLevels = parsePowerLevels([]byte(`{"users": {"@d:x": "60", "@e:x": 10}, "users_default": 5, "notifications": {"room": 20}}`))
	for user, want := range map[string]bool{"@d:x": true, "@e:x": false, "@f:x": false, "@c:x": false} {
		if got := ri.SenderMayNotify(user, "room"); got != want {
			t.Errorf("%s may notify: %v, want %v", user, got, want)
		}
	}
	ri.setCreate("@c:x", []byte(`{"room_version": "12", "additional_creators": ["@g:x"]}`))
	if !ri.SenderMayNotify("@c:x", "room") || !ri.SenderMayNotify("@g:x", "room") {
		t.Error("v12 creators outrank every level")
	}
	ri.setCreate("@c:x", []byte(`{"room_version": "11"}`))
	if ri.SenderMayNotify("@c:x", "room") {
		t.Error("before v12 the creator has the level the power levels give")
	}
}

// defaultCase checks which server-default rule wins for alice.
type defaultCase struct {
	name      string
	ev        map[string]any
	members   int
	levels    map[string]int64
	rule      string // "" when no rule matches
	notify    bool
	highlight bool
	sound     string
}

func TestPushDefaultRules(t *testing.T) {
	bobMsg := func(c map[string]any) map[string]any {
		return map[string]any{"type": "m.room.message", "content": c}
	}
	cases := []defaultCase{
		{"message in a group", msg("hello"), 5, nil, ".m.rule.message", true, false, ""},
		{"message in a DM", msg("hello"), 2, nil, ".m.rule.room_one_to_one", true, false, "default"},
		{"encrypted in a group", map[string]any{"type": "m.room.encrypted", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}, 5, nil, ".m.rule.encrypted", true, false, ""},
		{"encrypted in a DM", map[string]any{"type": "m.room.encrypted", "content": map[string]any{}}, 2, nil, ".m.rule.encrypted_room_one_to_one", true, false, "default"},
		{"call invite", map[string]any{"type": "m.call.invite", "content": map[string]any{}}, 5, nil, ".m.rule.call", true, false, "ring"},
		{"notice", bobMsg(map[string]any{"msgtype": "m.notice", "body": "bot"}), 2, nil, ".m.rule.suppress_notices", false, false, ""},
		{"invite for me", map[string]any{"type": "m.room.member", "state_key": alice, "content": map[string]any{"membership": "invite"}}, 5, nil,
			".m.rule.invite_for_me", true, false, "default"},
		{"invite for someone else", map[string]any{"type": "m.room.member", "state_key": "@carol:x", "content": map[string]any{"membership": "invite"}}, 5, nil,
			".m.rule.member_event", false, false, ""},
		{"join", map[string]any{"type": "m.room.member", "state_key": "@carol:x", "content": map[string]any{"membership": "join"}}, 5, nil,
			".m.rule.member_event", false, false, ""},
		{"user mention", bobMsg(map[string]any{"msgtype": "m.text", "body": "hey", "m.mentions": map[string]any{"user_ids": []any{alice}}}), 5, nil,
			".m.rule.is_user_mention", true, true, "default"},
		{"mention of another user", bobMsg(map[string]any{"msgtype": "m.text", "body": "hey", "m.mentions": map[string]any{"user_ids": []any{"@carol:x"}}}), 5, nil,
			".m.rule.message", true, false, ""},
		{"body mention without m.mentions is a plain message (v1.17)", msg("hey @alice:test.gouv.fr alice"), 5, nil, ".m.rule.message", true, false, ""},
		{"room mention by a moderator", bobMsg(map[string]any{"msgtype": "m.text", "body": "@room", "m.mentions": map[string]any{"room": true}}), 5,
			map[string]int64{"@bob:test.gouv.fr": 50}, ".m.rule.is_room_mention", true, true, ""},
		{"room mention without power", bobMsg(map[string]any{"msgtype": "m.text", "body": "@room", "m.mentions": map[string]any{"room": true}}), 5,
			nil, ".m.rule.message", true, false, ""},
		{"room mention false", bobMsg(map[string]any{"msgtype": "m.text", "body": "x", "m.mentions": map[string]any{"room": false}}), 5,
			map[string]int64{"@bob:test.gouv.fr": 100}, ".m.rule.message", true, false, ""},
		{"tombstone", map[string]any{"type": "m.room.tombstone", "state_key": "", "content": map[string]any{"replacement_room": "!new:x"}}, 5, nil,
			".m.rule.tombstone", true, true, ""},
		{"tombstone with a state key", map[string]any{"type": "m.room.tombstone", "state_key": "x", "content": map[string]any{}}, 5, nil, "", false, false, ""},
		{"reaction", map[string]any{"type": "m.reaction", "content": map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": "$x", "key": "👍"}}}, 2, nil,
			".m.rule.reaction", false, false, ""},
		{"server ACL", map[string]any{"type": "m.room.server_acl", "state_key": "", "content": map[string]any{"allow": []any{"*"}}}, 5, nil,
			".m.rule.room.server_acl", false, false, ""},
		{"edit", bobMsg(map[string]any{"msgtype": "m.text", "body": "* fixed", "m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": "$x"}}), 2, nil,
			".m.rule.suppress_edits", false, false, ""},
		{"edit newly mentioning me notifies (is_user_mention comes first)", bobMsg(map[string]any{"msgtype": "m.text", "body": "*", "m.mentions": map[string]any{"user_ids": []any{alice}},
			"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": "$x"}}), 2, nil, ".m.rule.is_user_mention", true, true, "default"},
		{"topic change", map[string]any{"type": "m.room.topic", "state_key": "", "content": map[string]any{"topic": "x"}}, 5, nil, "", false, false, ""},
	}
	defaults := compileRuleset((&userRules{}).ruleset(userPlaceholder))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rule, actions, ok := defaults.Evaluate(event(t, c.ev), fakeRoom{members: c.members, levels: c.levels}, alice)
			if rule != c.rule || ok != (c.rule != "") {
				t.Fatalf("matched %q (%v), want %q", rule, ok, c.rule)
			}
			if actions.Notify != c.notify || actions.Highlight != c.highlight || actions.Sound != c.sound {
				t.Errorf("actions %+v, want notify %v highlight %v sound %q", actions, c.notify, c.highlight, c.sound)
			}
		})
	}
}

// TestPushDefaultRulesetShape checks the server-default rules are exactly
// the spec's, in its order, with the user's ID in place.
func TestPushDefaultRulesetShape(t *testing.T) {
	rs := (&userRules{}).ruleset(alice)
	ids := func(rules []Rule) []string {
		var out []string
		for _, r := range rules {
			out = append(out, r.RuleID)
			if !r.Default {
				t.Errorf("%s is not marked default", r.RuleID)
			}
		}
		return out
	}
	wantOverride := []string{".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
		".m.rule.is_user_mention", ".m.rule.is_room_mention", ".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl", ".m.rule.suppress_edits"}
	wantUnderride := []string{".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one", ".m.rule.message", ".m.rule.encrypted"}
	if got := ids(rs.Override); !reflect.DeepEqual(got, wantOverride) {
		t.Errorf("override %v, want %v", got, wantOverride)
	}
	if got := ids(rs.Underride); !reflect.DeepEqual(got, wantUnderride) {
		t.Errorf("underride %v, want %v", got, wantUnderride)
	}
	if len(rs.Content) != 0 || len(rs.Room) != 0 || len(rs.Sender) != 0 {
		t.Errorf("content, room and sender have no server-default rules (v1.17): %+v", rs)
	}
	data, _ := json.Marshal(rs)
	var back map[string][]map[string]any
	_ = json.Unmarshal(data, &back)
	master := back["override"][0]
	if master["enabled"] != false || master["conditions"] == nil || len(master["actions"].([]any)) != 0 {
		t.Errorf("master rule shown as %v", master)
	}
	invite := back["override"][2]
	conds := invite["conditions"].([]any)
	if conds[2].(map[string]any)["pattern"] != alice {
		t.Errorf("invite_for_me shows %v, want the user's ID", conds[2])
	}
	mention := back["override"][4]["conditions"].([]any)[0].(map[string]any)
	if mention["value"] != alice || mention["key"] != `content.m\.mentions.user_ids` {
		t.Errorf("is_user_mention shows %v", mention)
	}
	tomb := back["override"][6]["conditions"].([]any)[1].(map[string]any)
	if p, ok := tomb["pattern"]; !ok || p != "" {
		t.Errorf("tombstone's state_key pattern \"\" must be shown: %v", tomb)
	}
	if _, ok := back["content"]; !ok {
		t.Error("empty kinds are shown as empty lists")
	}
}

// TestPushUserRules checks the order of kinds and of user versus
// server-default rules, and the user's changes to server-default rules.
func TestPushUserRules(t *testing.T) {
	enabled := true
	u := &userRules{
		Override: []Rule{{RuleID: "mute-bots", Enabled: true, Conditions: []Condition{{Kind: "event_match", Key: "sender", Pattern: pattern("@bot*")}}, Actions: acts()}},
		Content:  []Rule{{RuleID: "cake", Enabled: true, Pattern: pattern("cake"), Actions: acts(`"notify"`, `{"set_tweak":"highlight"}`)}},
		Room:     []Rule{{RuleID: "!muted:x", Enabled: true, Actions: acts()}},
		Sender:   []Rule{{RuleID: "@boss:x", Enabled: true, Actions: acts(`"notify"`, `{"set_tweak":"sound","value":"boss"}`)}},
		Underride: []Rule{{RuleID: "disabled", Enabled: false, Conditions: []Condition{}, Actions: acts(`"notify"`, `{"set_tweak":"highlight"}`)},
			{RuleID: "everything", Enabled: true, Conditions: []Condition{}, Actions: acts(`"notify"`)}},
		Defaults: map[string]defaultChange{"underride/.m.rule.message": {Actions: json.RawMessage(`["notify",{"set_tweak":"sound","value":"msg"}]`)}},
	}
	rules := compileRuleset(u.ruleset(userPlaceholder))
	room := fakeRoom{members: 5}
	cases := []struct {
		name  string
		ev    map[string]any
		rule  string
		sound string
	}{
		{"override before content", map[string]any{"type": "m.room.message", "sender": "@bot1:x", "content": map[string]any{"body": "cake"}}, "mute-bots", ""},
		{"content keyword", msg("I want cake"), "cake", ""},
		{"content before room", map[string]any{"type": "m.room.message", "room_id": "!muted:x", "content": map[string]any{"body": "cake!"}}, "cake", ""},
		{"room rule", map[string]any{"type": "m.room.message", "room_id": "!muted:x", "content": map[string]any{"body": "hi"}}, "!muted:x", ""},
		{"sender rule", map[string]any{"type": "m.room.message", "sender": "@boss:x", "content": map[string]any{"body": "hi"}}, "@boss:x", "boss"},
		{"user underride before default underride, disabled skipped", msg("hi"), "everything", ""},
		{"server default override still applies", map[string]any{"type": "m.room.member", "state_key": "@x:x", "content": map[string]any{"membership": "join"}}, ".m.rule.member_event", ""},
	}
	for _, c := range cases {
		rule, actions, _ := rules.Evaluate(event(t, c.ev), room, alice)
		if rule != c.rule || actions.Sound != c.sound {
			t.Errorf("%s: matched %q (sound %q), want %q (sound %q)", c.name, rule, actions.Sound, c.rule, c.sound)
		}
	}
	// Changed actions of a server-default rule.
	u.Underride = nil
	rule, actions, _ := compileRuleset(u.ruleset(userPlaceholder)).Evaluate(event(t, msg("hi")), room, alice)
	if rule != ".m.rule.message" || actions.Sound != "msg" {
		t.Errorf("changed .m.rule.message: %q %+v", rule, actions)
	}
	// The master rule, enabled, silences everything, user rules included.
	u.Defaults["override/.m.rule.master"] = defaultChange{Enabled: &enabled}
	rule, actions, _ = compileRuleset(u.ruleset(userPlaceholder)).Evaluate(event(t, msg("cake")), room, alice)
	if rule != ".m.rule.master" || actions.Notify {
		t.Errorf("enabled master: %q %+v", rule, actions)
	}
}

func TestPushParseActions(t *testing.T) {
	ok := []struct{ in, want string }{
		{`["notify"]`, `["notify"]`},
		{`["dont_notify"]`, `[]`},
		{`["notify", "coalesce", {"set_tweak": "sound", "value": "x"}]`, `["notify",{"set_tweak":"sound","value":"x"}]`},
		{`[{"set_tweak": "highlight", "value": false}]`, `[{"set_tweak":"highlight","value":false}]`},
		{`[{"set_tweak": "org.example.custom"}]`, `[{"set_tweak":"org.example.custom"}]`},
	}
	for _, c := range ok {
		var raw []json.RawMessage
		_ = json.Unmarshal([]byte(c.in), &raw)
		got, err := ParseActions(raw)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		b, _ := json.Marshal(got)
		if string(b) != c.want {
			t.Errorf("%s: got %s, want %s", c.in, b, c.want)
		}
	}
	for _, bad := range []string{`["shout"]`, `[1]`, `[{"value": 1}]`, `[{"set_tweak": 3}]`, `[null]`} {
		var raw []json.RawMessage
		_ = json.Unmarshal([]byte(bad), &raw)
		if _, err := ParseActions(raw); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	a := interpret(acts(`"notify"`, `{"set_tweak":"highlight","value":false}`, `{"set_tweak":"sound","value":"default"}`))
	if !a.Notify || a.Highlight || a.Sound != "default" {
		t.Errorf("interpret: %+v", a)
	}
}

// TestPushSharedOutcomes checks that an outcome is shared between users
// with the same rules only when it did not depend on who they are.
func TestPushSharedOutcomes(t *testing.T) {
	defaults := compileRuleset((&userRules{}).ruleset(userPlaceholder))
	keyword := compileRuleset((&userRules{Content: []Rule{{RuleID: "k", Enabled: true, Pattern: pattern("cake"), Actions: acts(`"notify"`, `{"set_tweak":"highlight"}`)}}}).ruleset(userPlaceholder))
	users := []string{"@a:x", "@b:x", "@c:x", "@d:x"}
	rules := map[string]*Rules{"@a:x": defaults, "@b:x": defaults, "@c:x": keyword, "@d:x": defaults}
	room := fakeRoom{members: 5, names: map[string]string{"@d:x": "Dee"}}
	cases := []struct {
		name string
		ev   map[string]any
		high []bool // per user
	}{
		{"plain", msg("cake"), []bool{false, false, true, false}},
		{"mention of b", map[string]any{"type": "m.room.message", "content": map[string]any{"body": "x", "m.mentions": map[string]any{"user_ids": []any{"@b:x"}}}},
			[]bool{false, true, false, false}},
		{"invite of d", map[string]any{"type": "m.room.member", "state_key": "@d:x", "content": map[string]any{"membership": "invite"}},
			nil},
	}
	for _, c := range cases {
		res := outcomes(rules, users, &evaluation{ev: event(t, c.ev), room: room})
		for i, o := range res {
			if c.high != nil && (!o.notify || o.highlight != c.high[i]) {
				t.Errorf("%s: %s got %+v", c.name, users[i], o)
			}
			if c.high == nil && o.notify != (users[i] == "@d:x") {
				t.Errorf("%s: %s got %+v", c.name, users[i], o)
			}
		}
	}
	// A display name condition is personal.
	dn := compileRuleset((&userRules{Override: []Rule{{RuleID: "dn", Enabled: true, Conditions: []Condition{{Kind: "contains_display_name"}},
		Actions: acts(`"notify"`, `{"set_tweak":"highlight"}`)}}}).ruleset(userPlaceholder))
	res := outcomes(map[string]*Rules{"@a:x": dn, "@d:x": dn}, []string{"@a:x", "@d:x"}, &evaluation{ev: event(t, msg("hi Dee")), room: room})
	if res[0].highlight || !res[1].highlight {
		t.Errorf("display names: %+v", res)
	}
}
