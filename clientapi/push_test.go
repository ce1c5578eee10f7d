package clientapi_test

// HTTP tests of push rules, notifications, pushers, and of the unread counts
// /sync shows (spec: client-server-api/modules/push.md).

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"chappe/app/apptest"
)

// prurl is the URL of /pushrules/global/{kind}/{ruleId}{rest}.
func prurl(srv *apptest.Server, kind, ruleID, rest string) string {
	return srv.URL + c + "/pushrules/global/" + kind + "/" + url.PathEscape(ruleID) + rest
}

// ruleIDs lists the rule IDs of one kind of GET /pushrules/global/.
func ruleIDs(t *testing.T, srv *apptest.Server, u user, kind string) []string {
	t.Helper()
	r := call(t, "GET", srv.URL+c+"/pushrules/global/", u.Token, "")
	mustStatus(t, r, 200, "GET /pushrules/global/")
	list, ok := r.Body[kind].([]any)
	if !ok {
		t.Fatalf("no %s list in %s", kind, r.Raw)
	}
	var ids []string
	for _, rule := range list {
		ids = append(ids, rule.(map[string]any)["rule_id"].(string))
	}
	return ids
}

func TestPushRulesHTTP(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "correct horse battery")

	// The server-default rules, with the user's ID in place.
	for _, path := range []string{"/pushrules/", "/pushrules"} {
		r := call(t, "GET", srv.URL+c+path, alice.Token, "")
		mustStatus(t, r, 200, "GET "+path)
		global, ok := r.Body["global"].(map[string]any)
		if !ok {
			t.Fatalf("GET %s: %s", path, r.Raw)
		}
		for _, kind := range []string{"override", "content", "room", "sender", "underride"} {
			if _, ok := global[kind].([]any); !ok {
				t.Errorf("GET %s: no %s list", path, kind)
			}
		}
	}
	if ids := ruleIDs(t, srv, alice, "override"); len(ids) != 10 || ids[0] != ".m.rule.master" || ids[9] != ".m.rule.suppress_edits" {
		t.Errorf("override rules %v", ids)
	}
	if ids := ruleIDs(t, srv, alice, "underride"); strings.Join(ids, " ") != ".m.rule.call .m.rule.encrypted_room_one_to_one .m.rule.room_one_to_one .m.rule.message .m.rule.encrypted" {
		t.Errorf("underride rules %v", ids)
	}
	r := call(t, "GET", prurl(srv, "override", ".m.rule.invite_for_me", ""), alice.Token, "")
	mustStatus(t, r, 200, "GET invite_for_me")
	if !strings.Contains(r.Raw, `"pattern":"`+alice.ID+`"`) || r.Body["default"] != true || r.Body["enabled"] != true {
		t.Errorf("invite_for_me: %s", r.Raw)
	}
	r = call(t, "GET", prurl(srv, "override", ".m.rule.master", ""), alice.Token, "")
	if r.Status != 200 || r.Body["enabled"] != false || r.Body["rule_id"] != ".m.rule.master" {
		t.Errorf("master: %d %s", r.Status, r.Raw)
	}

	// Errors.
	wantError(t, call(t, "GET", prurl(srv, "content", "nope", ""), alice.Token, ""), 404, "M_NOT_FOUND", "unknown rule")
	wantError(t, call(t, "GET", prurl(srv, "override", ".m.rule.message", ""), alice.Token, ""), 404, "M_NOT_FOUND", "default rule of another kind")
	wantError(t, call(t, "GET", prurl(srv, "bogus", "x", ""), alice.Token, ""), 400, "M_INVALID_PARAM", "unknown kind")
	wantError(t, call(t, "PUT", prurl(srv, "content", "cake", ""), alice.Token, `{"pattern": "cake"}`), 400, "M_MISSING_PARAM", "no actions")
	wantError(t, call(t, "PUT", prurl(srv, "content", "cake", ""), alice.Token, `{"actions": ["notify"]}`), 400, "M_MISSING_PARAM", "content rule without pattern")
	wantError(t, call(t, "PUT", prurl(srv, "content", "cake", ""), alice.Token, `{"pattern": "cake", "actions": ["shout"]}`), 400, "M_INVALID_PARAM", "unknown action")
	wantError(t, call(t, "PUT", prurl(srv, "content", "cake", ""), alice.Token, `{"pattern": "cake", "actions": "notify"}`), 400, "M_BAD_JSON", "actions not an array")
	wantError(t, call(t, "PUT", prurl(srv, "override", "x", ""), alice.Token, `{"actions": [], "conditions": [{"kind": "event_match", "key": "type"}]}`), 400, "M_INVALID_PARAM", "event_match without pattern")
	wantError(t, call(t, "PUT", prurl(srv, "content", "cake", ""), alice.Token, `not json`), 400, "M_NOT_JSON", "not JSON")
	for _, bad := range []struct{ kind, id string }{{"content", ".m.rule.mine"}, {"content", "a/b"}, {"content", `a\b`}, {"room", "not-a-room"}, {"sender", "nobody"}, {"override", ".m.rule.master"}} {
		wantError(t, call(t, "PUT", prurl(srv, bad.kind, bad.id, ""), alice.Token, `{"pattern": "x", "actions": []}`), 400, "M_INVALID_PARAM", "rule ID "+bad.id)
	}
	if r := call(t, "GET", srv.URL+c+"/pushrules/", "", ""); r.Status != 401 {
		t.Errorf("without a token: %d", r.Status)
	}

	// Create, read, order with before and after.
	put := func(id, query, body string) response {
		return call(t, "PUT", prurl(srv, "content", id, query), alice.Token, body)
	}
	for _, id := range []string{"a", "b"} {
		mustStatus(t, put(id, "", `{"pattern": "`+id+`", "actions": ["notify", "dont_notify"]}`), 200, "PUT "+id)
	}
	r = call(t, "GET", prurl(srv, "content", "a", ""), alice.Token, "")
	if r.Status != 200 || r.Body["pattern"] != "a" || r.Body["default"] != false || r.Body["enabled"] != true || r.Body["conditions"] != nil ||
		!strings.Contains(r.Raw, `"actions":["notify"]`) {
		t.Errorf("GET a (dont_notify is stripped): %s", r.Raw)
	}
	mustStatus(t, put("c", "?before=a", `{"pattern": "c", "actions": []}`), 200, "PUT c before a")
	mustStatus(t, put("d", "?after=b", `{"pattern": "d", "actions": []}`), 200, "PUT d after b")
	mustStatus(t, put("e", "?before=d&after=a", `{"pattern": "e", "actions": []}`), 200, "PUT e before d (before wins)")
	if got := strings.Join(ruleIDs(t, srv, alice, "content"), " "); got != "b e d c a" {
		t.Errorf("content rules in order %q, want \"b e d c a\"", got)
	}
	wantError(t, put("f", "?before=nope", `{"pattern": "f", "actions": []}`), 400, "M_UNKNOWN", "before an unknown rule")
	wantError(t, put("f", "?after=.m.rule.master", `{"pattern": "f", "actions": []}`), 400, "M_UNKNOWN", "after a server-default rule")
	if got := strings.Join(ruleIDs(t, srv, alice, "content"), " "); got != "b e d c a" {
		t.Errorf("a refused PUT changed the rules: %q", got)
	}

	// enabled.
	r = call(t, "GET", prurl(srv, "content", "c", "/enabled"), alice.Token, "")
	if r.Status != 200 || r.Body["enabled"] != true {
		t.Errorf("GET enabled: %s", r.Raw)
	}
	mustStatus(t, call(t, "PUT", prurl(srv, "content", "c", "/enabled"), alice.Token, `{"enabled": false}`), 200, "disable c")
	wantError(t, call(t, "PUT", prurl(srv, "content", "c", "/enabled"), alice.Token, `{}`), 400, "M_MISSING_PARAM", "enabled missing")
	wantError(t, call(t, "PUT", prurl(srv, "content", "zz", "/enabled"), alice.Token, `{"enabled": true}`), 404, "M_NOT_FOUND", "enable an unknown rule")
	wantError(t, call(t, "GET", prurl(srv, "content", "zz", "/enabled"), alice.Token, ""), 404, "M_NOT_FOUND", "enabled of an unknown rule")
	// An update keeps the place and the enabled flag.
	mustStatus(t, put("c", "", `{"pattern": "cc", "actions": ["notify"]}`), 200, "update c")
	r = call(t, "GET", prurl(srv, "content", "c", ""), alice.Token, "")
	if r.Body["enabled"] != false || r.Body["pattern"] != "cc" {
		t.Errorf("updated c: %s", r.Raw)
	}
	if got := strings.Join(ruleIDs(t, srv, alice, "content"), " "); got != "b e d c a" {
		t.Errorf("update moved c: %q", got)
	}
	// Server-default rules can be disabled, and their actions changed.
	mustStatus(t, call(t, "PUT", prurl(srv, "underride", ".m.rule.message", "/enabled"), alice.Token, `{"enabled": false}`), 200, "disable .m.rule.message")
	if r := call(t, "GET", prurl(srv, "underride", ".m.rule.message", "/enabled"), alice.Token, ""); r.Body["enabled"] != false {
		t.Errorf(".m.rule.message enabled: %s", r.Raw)
	}

	// actions.
	r = call(t, "GET", prurl(srv, "underride", ".m.rule.call", "/actions"), alice.Token, "")
	if r.Status != 200 || !strings.Contains(r.Raw, `"value":"ring"`) {
		t.Errorf("GET actions: %s", r.Raw)
	}
	mustStatus(t, call(t, "PUT", prurl(srv, "underride", ".m.rule.call", "/actions"), alice.Token, `{"actions": ["notify", {"set_tweak": "sound", "value": "bell"}]}`), 200, "PUT actions")
	if r := call(t, "GET", prurl(srv, "underride", ".m.rule.call", "/actions"), alice.Token, ""); !strings.Contains(r.Raw, `"value":"bell"`) {
		t.Errorf("changed actions: %s", r.Raw)
	}
	mustStatus(t, call(t, "PUT", prurl(srv, "content", "a", "/actions"), alice.Token, `{"actions": []}`), 200, "PUT actions of a user rule")
	if r := call(t, "GET", prurl(srv, "content", "a", "/actions"), alice.Token, ""); r.Raw != `{"actions":[]}` {
		t.Errorf("empty actions: %s", r.Raw)
	}
	wantError(t, call(t, "PUT", prurl(srv, "content", "a", "/actions"), alice.Token, `{}`), 400, "M_MISSING_PARAM", "actions missing")
	wantError(t, call(t, "PUT", prurl(srv, "content", "a", "/actions"), alice.Token, `{"actions": [42]}`), 400, "M_INVALID_PARAM", "bad action")
	wantError(t, call(t, "GET", prurl(srv, "content", "zz", "/actions"), alice.Token, ""), 404, "M_NOT_FOUND", "actions of an unknown rule")

	// Delete.
	mustStatus(t, call(t, "DELETE", prurl(srv, "content", "e", ""), alice.Token, ""), 200, "DELETE e")
	wantError(t, call(t, "DELETE", prurl(srv, "content", "e", ""), alice.Token, ""), 404, "M_NOT_FOUND", "DELETE e again")
	wantError(t, call(t, "DELETE", prurl(srv, "override", ".m.rule.master", ""), alice.Token, ""), 400, "M_INVALID_PARAM", "DELETE a server-default rule")
	if got := strings.Join(ruleIDs(t, srv, alice, "content"), " "); got != "b d c a" {
		t.Errorf("after delete: %q", got)
	}
	if ids := ruleIDs(t, srv, alice, "override"); len(ids) != 10 {
		t.Errorf("server-default rules after a refused delete: %v", ids)
	}

	// Room and sender rules are named by their room and user.
	mustStatus(t, call(t, "PUT", prurl(srv, "room", "!abc:localhost", ""), alice.Token, `{"actions": []}`), 200, "PUT room rule")
	mustStatus(t, call(t, "PUT", prurl(srv, "sender", "@spam:localhost", ""), alice.Token, `{"actions": []}`), 200, "PUT sender rule")
	if ids := ruleIDs(t, srv, alice, "room"); len(ids) != 1 || ids[0] != "!abc:localhost" {
		t.Errorf("room rules %v", ids)
	}
	// Rules are per user.
	bob := register(t, srv, "bob", "correct horse battery")
	if ids := ruleIDs(t, srv, bob, "content"); len(ids) != 0 {
		t.Errorf("bob sees rules %v", ids)
	}
}

// TestPushRulesInSync: a change reaches the user's /sync as m.push_rules
// account data, and the long-poll wakes for it.
func TestPushRulesInSync(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "correct horse battery")
	first := syncOnce(t, srv, alice, nil)
	since, _ := first.Body["next_batch"].(string)
	done := make(chan response, 1)
	go func() {
		done <- call(t, "GET", srv.URL+c+"/sync?"+url.Values{"since": {since}, "timeout": {"10000"}}.Encode(), alice.Token, "")
	}()
	mustStatus(t, call(t, "PUT", prurl(srv, "content", "cake", ""), alice.Token, `{"pattern": "cake", "actions": ["notify"]}`), 200, "PUT rule")
	r := <-done
	mustStatus(t, r, 200, "long-poll")
	ad, _ := r.Body["account_data"].(map[string]any)
	found := false
	for _, ev := range events(ad["events"]) {
		if ev["type"] == "m.push_rules" && strings.Contains(mustJSON(ev["content"]), `"rule_id":"cake"`) {
			found = true
		}
	}
	if !found {
		t.Errorf("m.push_rules not in the incremental sync: %s", r.Raw)
	}
	// Clients cannot write it as account data.
	wantError(t, call(t, "PUT", srv.URL+c+"/user/"+url.PathEscape(alice.ID)+"/account_data/m.push_rules", alice.Token, `{}`), http.StatusMethodNotAllowed, "M_BAD_JSON", "PUT m.push_rules")
}

// unread returns the unread_notifications of a joined room in a sync.
func unread(r response, roomID string) (notifications, highlights float64, ok bool) {
	room := roomSection(r, "join", roomID)
	u, ok := room["unread_notifications"].(map[string]any)
	if !ok {
		return 0, 0, false
	}
	n, _ := u["notification_count"].(float64)
	h, _ := u["highlight_count"].(float64)
	return n, h, true
}

// TestPushCountsInSync: a /sync right after a send's 200 shows the new
// counts; mentions highlight; a receipt resets; own messages do not count.
func TestPushCountsInSync(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "correct horse battery")
	bob := register(t, srv, "bob", "correct horse battery")
	carol := register(t, srv, "carol", "correct horse battery")
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, srv, bob, room)
	joinRoom(t, srv, carol, room)

	want := func(u user, n, h float64, what string) {
		t.Helper()
		gotN, gotH, ok := unread(syncOnce(t, srv, u, nil), room)
		if !ok || gotN != n || gotH != h {
			t.Errorf("%s: %s sees %v notifications, %v highlights (present %v); want %v, %v", what, u.ID, gotN, gotH, ok, n, h)
		}
	}
	sendText(t, srv, bob, room, "hello")
	want(alice, 1, 0, "a message")
	want(bob, 0, 0, "own message")
	sendEvent(t, srv, bob, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "alice?", "m.mentions": map[string]any{"user_ids": []string{alice.ID}}})
	want(alice, 2, 1, "a mention")
	want(carol, 2, 0, "a mention of someone else")
	last := sendText(t, srv, bob, room, "three")
	mustStatus(t, call(t, "POST", rurl(srv, room, "/receipt/m.read/"+url.PathEscape(last)), alice.Token, `{}`), 200, "receipt")
	want(alice, 0, 0, "after a receipt")
	want(carol, 3, 0, "carol sent no receipt")
	mustStatus(t, call(t, "POST", rurl(srv, room, "/receipt/m.read.private/"+url.PathEscape(last)), carol.Token, `{}`), 200, "private receipt")
	want(carol, 0, 0, "after a private receipt")

	// Threads, with a filter asking for thread counts.
	root := sendText(t, srv, bob, room, "root")
	sendEvent(t, srv, bob, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "in thread",
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
	filter := `{"room": {"timeline": {"unread_thread_notifications": true}}}`
	r := syncOnce(t, srv, alice, url.Values{"filter": {filter}})
	threads, _ := roomSection(r, "join", room)["unread_thread_notifications"].(map[string]any)
	if th, _ := threads[root].(map[string]any); th == nil || th["notification_count"] != float64(1) {
		t.Errorf("unread_thread_notifications: %v", roomSection(r, "join", room)["unread_thread_notifications"])
	}
}

func TestPushNotificationsHTTP(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "correct horse battery")
	bob := register(t, srv, "bob", "correct horse battery")
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, srv, bob, room)
	joinRoom(t, srv, register(t, srv, "carol", "correct horse battery"), room)
	sendText(t, srv, bob, room, "one")
	mention := sendEvent(t, srv, bob, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "two", "m.mentions": map[string]any{"user_ids": []string{alice.ID}}})
	three := sendText(t, srv, bob, room, "three")

	r := call(t, "GET", srv.URL+c+"/notifications?limit=2", alice.Token, "")
	mustStatus(t, r, 200, "GET /notifications")
	list, _ := r.Body["notifications"].([]any)
	next, _ := r.Body["next_token"].(string)
	if len(list) != 2 || next == "" {
		t.Fatalf("first page: %s", r.Raw)
	}
	first := list[0].(map[string]any)
	ev := first["event"].(map[string]any)
	if ev["event_id"] != three || first["room_id"] != room || first["read"] != false || first["actions"] == nil || first["ts"] == nil {
		t.Errorf("newest notification: %v", first)
	}
	r = call(t, "GET", srv.URL+c+"/notifications?limit=2&from="+url.QueryEscape(next), alice.Token, "")
	if list, _ := r.Body["notifications"].([]any); len(list) != 1 || r.Body["next_token"] != nil {
		t.Errorf("second page: %s", r.Raw)
	}
	r = call(t, "GET", srv.URL+c+"/notifications?only=highlight", alice.Token, "")
	if list, _ := r.Body["notifications"].([]any); len(list) != 1 || list[0].(map[string]any)["event"].(map[string]any)["event_id"] != mention {
		t.Errorf("highlights: %s", r.Raw)
	}
	mustStatus(t, call(t, "POST", rurl(srv, room, "/receipt/m.read/"+url.PathEscape(three)), alice.Token, `{}`), 200, "receipt")
	r = call(t, "GET", srv.URL+c+"/notifications", alice.Token, "")
	for _, n := range r.Body["notifications"].([]any) {
		if n.(map[string]any)["read"] != true {
			t.Errorf("after a receipt: %v", n)
		}
	}
	wantError(t, call(t, "GET", srv.URL+c+"/notifications?limit=x", alice.Token, ""), 400, "M_INVALID_PARAM", "bad limit")
	wantError(t, call(t, "GET", srv.URL+c+"/notifications?from=x", alice.Token, ""), 400, "M_INVALID_PARAM", "bad from")
	if r := call(t, "GET", srv.URL+c+"/notifications", bob.Token, ""); r.Raw != `{"notifications":[]}` {
		t.Errorf("bob's notifications: %s", r.Raw)
	}
}

func TestPushersHTTP(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "correct horse battery")
	pusher := map[string]any{"kind": "http", "app_id": "fr.gouv.tchap", "pushkey": "abc", "app_display_name": "Tchap",
		"device_display_name": "Phone", "lang": "fr", "profile_tag": "t",
		"data": map[string]any{"url": "https://push.gouv.fr/_matrix/push/v1/notify", "format": "event_id_only", "extra": 1}}
	mustStatus(t, call(t, "POST", srv.URL+c+"/pushers/set", alice.Token, mustJSON(pusher)), 200, "set pusher")
	r := call(t, "GET", srv.URL+c+"/pushers", alice.Token, "")
	mustStatus(t, r, 200, "GET /pushers")
	list, _ := r.Body["pushers"].([]any)
	if len(list) != 1 {
		t.Fatalf("pushers: %s", r.Raw)
	}
	got := list[0].(map[string]any)
	for k, v := range map[string]any{"kind": "http", "app_id": "fr.gouv.tchap", "pushkey": "abc", "app_display_name": "Tchap",
		"device_display_name": "Phone", "lang": "fr", "profile_tag": "t"} {
		if got[k] != v {
			t.Errorf("pusher %s = %v, want %v", k, got[k], v)
		}
	}
	if d := got["data"].(map[string]any); d["url"] != "https://push.gouv.fr/_matrix/push/v1/notify" || d["extra"] != float64(1) {
		t.Errorf("pusher data %v", d)
	}

	r = call(t, "POST", srv.URL+c+"/pushers/set", alice.Token, `{"kind": "http", "app_id": "x", "pushkey": "k"}`)
	wantError(t, r, 400, "M_MISSING_PARAM", "missing fields")
	if !strings.Contains(r.Raw, "app_display_name") || !strings.Contains(r.Raw, "lang") || !strings.Contains(r.Raw, "data") {
		t.Errorf("the error names the missing fields: %s", r.Raw)
	}
	bad := map[string]any{"kind": "http", "app_id": "x", "pushkey": "k", "app_display_name": "A", "device_display_name": "D", "lang": "fr",
		"data": map[string]any{"url": "https://push.gouv.fr/notify"}}
	wantError(t, call(t, "POST", srv.URL+c+"/pushers/set", alice.Token, mustJSON(bad)), 400, "M_INVALID_PARAM", "wrong gateway path")
	wantError(t, call(t, "POST", srv.URL+c+"/pushers/set", alice.Token, `{"app_id": "x", "pushkey": "k"}`), 400, "M_MISSING_PARAM", "no kind")
	wantError(t, call(t, "POST", srv.URL+c+"/pushers/set", alice.Token, `[]`), 400, "M_BAD_JSON", "not an object")

	// kind null deletes.
	mustStatus(t, call(t, "POST", srv.URL+c+"/pushers/set", alice.Token, `{"kind": null, "app_id": "fr.gouv.tchap", "pushkey": "abc"}`), 200, "delete pusher")
	if r := call(t, "GET", srv.URL+c+"/pushers", alice.Token, ""); r.Raw != `{"pushers":[]}` {
		t.Errorf("after delete: %s", r.Raw)
	}
}

// TestPushersGoWithTheirDevice: logging a device out removes its pushers, so
// a phone that logged out stops receiving notifications.
func TestPushersGoWithTheirDevice(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "correct horse battery")
	phone := login(t, srv, "alice", "correct horse battery", nil).Body["access_token"].(string)
	pusher := map[string]any{"kind": "http", "app_id": "fr.gouv.tchap", "pushkey": "phone-key", "app_display_name": "Tchap",
		"device_display_name": "Phone", "lang": "fr", "data": map[string]any{"url": "https://push.gouv.fr/_matrix/push/v1/notify"}}
	mustStatus(t, call(t, "POST", srv.URL+c+"/pushers/set", phone, mustJSON(pusher)), 200, "set pusher")
	if r := call(t, "GET", srv.URL+c+"/pushers", alice.Token, ""); len(r.Body["pushers"].([]any)) != 1 {
		t.Fatalf("pusher not listed: %s", r.Raw)
	}
	mustStatus(t, call(t, "POST", srv.URL+c+"/logout", phone, ""), 200, "logout")
	if r := call(t, "GET", srv.URL+c+"/pushers", alice.Token, ""); r.Raw != `{"pushers":[]}` {
		t.Fatalf("the logged-out device's pusher survived: %s", r.Raw)
	}
}
