package clientapi_test

// HTTP tests of the per-user and ephemeral endpoints around /sync:
// account data, receipts, read markers, typing, presence, user directory,
// TURN and third-party protocols.

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"chappe/app/apptest"
	"chappe/config"
)

func accountDataURL(srv *apptest.Server, userID, roomID, typ string) string {
	u := srv.URL + c + "/user/" + url.PathEscape(userID)
	if roomID != "" {
		u += "/rooms/" + url.PathEscape(roomID)
	}
	return u + "/account_data/" + url.PathEscape(typ)
}

func TestAccountDataHTTP(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob")
	alice, bob := us[0], us[1]
	room := createRoom(t, srv, alice, nil)

	for _, roomID := range []string{"", room} {
		u := accountDataURL(srv, alice.ID, roomID, "org.example.settings")
		mustStatus(t, call(t, "PUT", u, alice.Token, `{"theme": "dark"}`), 200, "PUT account data "+roomID)
		r := call(t, "GET", u, alice.Token, "")
		mustStatus(t, r, 200, "GET account data")
		if r.Body["theme"] != "dark" || len(r.Body) != 1 {
			t.Errorf("GET %s: %s", u, r.Raw)
		}
		wantError(t, call(t, "GET", u, bob.Token, ""), 403, "M_FORBIDDEN", "reading another user's account data")
		wantError(t, call(t, "PUT", accountDataURL(srv, alice.ID, roomID, "x.y"), bob.Token, `{}`), 403, "M_FORBIDDEN", "setting another user's account data")
		wantError(t, call(t, "PUT", accountDataURL(srv, alice.ID, roomID, "x.y"), alice.Token, `not json`), 400, "M_NOT_JSON", "not JSON")
		wantError(t, call(t, "PUT", accountDataURL(srv, alice.ID, roomID, "x.y"), alice.Token, `["a"]`), 400, "M_BAD_JSON", "an array")
		wantError(t, call(t, "PUT", accountDataURL(srv, alice.ID, roomID, "x.y"), alice.Token, ``), 400, "M_NOT_JSON", "no body")
		for _, managed := range []string{"m.fully_read", "m.push_rules"} {
			wantError(t, call(t, "PUT", accountDataURL(srv, alice.ID, roomID, managed), alice.Token, `{"event_id":"$x"}`), 405, "M_BAD_JSON", "setting "+managed)
		}
		wantError(t, call(t, "GET", accountDataURL(srv, alice.ID, roomID, "never.set"), alice.Token, ""), 404, "M_NOT_FOUND", "unset type")
	}
	// Global and room data are separate.
	if r := call(t, "GET", accountDataURL(srv, alice.ID, "", "org.example.settings"), alice.Token, ""); r.Body["theme"] != "dark" {
		t.Errorf("global: %s", r.Raw)
	}
	wantError(t, call(t, "PUT", accountDataURL(srv, alice.ID, "not-a-room", "x.y"), alice.Token, `{}`), 400, "M_INVALID_PARAM", "bad room ID")

	// m.direct and m.ignored_user_list are checked.
	wantError(t, call(t, "PUT", accountDataURL(srv, alice.ID, "", "m.direct"), alice.Token, `{"@bob:localhost": "!r:localhost"}`), 400, "M_BAD_JSON", "m.direct with a string")
	mustStatus(t, call(t, "PUT", accountDataURL(srv, alice.ID, "", "m.direct"), alice.Token, mustJSON(map[string][]string{bob.ID: {room}})), 200, "m.direct")
	wantError(t, call(t, "PUT", accountDataURL(srv, alice.ID, "", "m.ignored_user_list"), alice.Token, `{"ignored_users": ["@bob:localhost"]}`), 400, "M_BAD_JSON", "ignored_users as a list")
	mustStatus(t, call(t, "PUT", accountDataURL(srv, alice.ID, "", "m.ignored_user_list"), alice.Token, mustJSON(map[string]any{"ignored_users": map[string]any{bob.ID: map[string]any{}}})), 200, "m.ignored_user_list")
	ignored, err := srv.AccountData.IgnoredUsers(t.Context(), alice.ID)
	if err != nil || !ignored[bob.ID] || len(ignored) != 1 {
		t.Errorf("IgnoredUsers = %v %v", ignored, err)
	}
}

// TestAccountDataInSync: the data reaches /sync, global and per room.
func TestAccountDataInSync(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "password-alice")
	room := createRoom(t, srv, alice, nil)
	first := syncOnce(t, srv, alice, url.Values{})
	since, _ := first.Body["next_batch"].(string)
	mustStatus(t, call(t, "PUT", accountDataURL(srv, alice.ID, "", "org.example.a"), alice.Token, `{"n":1}`), 200, "global")
	mustStatus(t, call(t, "PUT", accountDataURL(srv, alice.ID, room, "m.tag"), alice.Token, `{"tags":{"u.work":{}}}`), 200, "room")
	r := syncOnce(t, srv, alice, url.Values{"since": {since}, "timeout": {"0"}})
	ad, _ := r.Body["account_data"].(map[string]any)
	if evs := events(ad["events"]); len(evs) != 1 || evs[0]["type"] != "org.example.a" {
		t.Errorf("global account data in sync: %s", r.Raw)
	}
	jr, _ := joinedSection(r)[room].(map[string]any)
	rad, _ := jr["account_data"].(map[string]any)
	if evs := events(rad["events"]); len(evs) != 1 || evs[0]["type"] != "m.tag" {
		t.Errorf("room account data in sync: %s", r.Raw)
	}
}

func TestReceiptsHTTP(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "eve")
	alice, bob, eve := us[0], us[1], us[2]
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, srv, bob, room)
	m1 := sendText(t, srv, alice, room, "one")
	m2 := sendText(t, srv, alice, room, "two")
	receipt := func(u user, typ, ev, body string) response {
		return call(t, "POST", rurl(srv, room, "/receipt/"+url.PathEscape(typ)+"/"+url.PathEscape(ev)), u.Token, body)
	}
	since := syncOnce(t, srv, alice, url.Values{}).Body["next_batch"].(string)

	mustStatus(t, receipt(bob, "m.read", m1, `{}`), 200, "m.read")
	mustStatus(t, receipt(bob, "m.read", m2, ``), 200, "m.read without a body")
	mustStatus(t, receipt(bob, "m.read.private", m2, `{"thread_id": "main"}`), 200, "threaded private receipt")
	wantError(t, receipt(bob, "m.like", m1, `{}`), 400, "M_INVALID_PARAM", "unknown receipt type")
	wantError(t, receipt(bob, "m.read", m1, `{"thread_id": 42}`), 400, "M_INVALID_PARAM", "thread_id a number")
	wantError(t, receipt(bob, "m.read", m1, `{"thread_id": ""}`), 400, "M_INVALID_PARAM", "thread_id empty")
	wantError(t, receipt(bob, "m.read", m1, `{"thread_id": "side"}`), 400, "M_INVALID_PARAM", "thread_id not main nor an event")
	wantError(t, receipt(bob, "m.fully_read", m1, `{"thread_id": "main"}`), 400, "M_INVALID_PARAM", "thread_id on m.fully_read")
	wantError(t, receipt(bob, "m.read", m1, `{"thread_id": "`+m2+`"}`), 400, "M_INVALID_PARAM", "event outside the thread")
	wantError(t, receipt(bob, "m.read", m1, `nope`), 400, "M_NOT_JSON", "body not JSON")
	wantError(t, receipt(eve, "m.read", m1, `{}`), 403, "M_FORBIDDEN", "not a member")
	wantError(t, receipt(bob, "m.read", "$missing:localhost", `{}`), 404, "M_NOT_FOUND", "unknown event")
	wantError(t, call(t, "POST", rurl(srv, "nope", "/receipt/m.read/"+url.PathEscape(m1)), bob.Token, `{}`), 400, "M_INVALID_PARAM", "bad room ID")

	// Alice's sync shows bob's public receipt only.
	r := syncOnce(t, srv, alice, url.Values{"since": {since}, "timeout": {"0"}})
	jr, _ := joinedSection(r)[room].(map[string]any)
	eph, _ := jr["ephemeral"].(map[string]any)
	var content map[string]any
	for _, ev := range events(eph["events"]) {
		if ev["type"] == "m.receipt" {
			content, _ = ev["content"].(map[string]any)
		}
	}
	onM2, _ := content[m2].(map[string]any)
	if _, ok := onM2["m.read"].(map[string]any)[bob.ID]; !ok {
		t.Errorf("bob's m.read not in alice's sync: %s", r.Raw)
	}
	if _, ok := onM2["m.read.private"]; ok || strings.Contains(r.Raw, "m.read.private") {
		t.Errorf("bob's private receipt shown to alice: %s", r.Raw)
	}
	if _, ok := content[m1]; ok {
		t.Errorf("replaced receipt still shown: %s", r.Raw)
	}

	// m.fully_read through the receipt endpoint is the read marker.
	mustStatus(t, receipt(bob, "m.fully_read", m1, `{}`), 200, "m.fully_read receipt")
	got := call(t, "GET", accountDataURL(srv, bob.ID, room, "m.fully_read"), bob.Token, "")
	if got.Body["event_id"] != m1 {
		t.Errorf("read marker: %s", got.Raw)
	}
}

func TestReadMarkersHTTP(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "eve")
	alice, bob, eve := us[0], us[1], us[2]
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, srv, bob, room)
	m1 := sendText(t, srv, alice, room, "one")
	m2 := sendText(t, srv, alice, room, "two")
	markers := rurl(srv, room, "/read_markers")

	mustStatus(t, call(t, "POST", markers, bob.Token, mustJSON(map[string]string{"m.fully_read": m1, "m.read": m2, "m.read.private": m2})), 200, "read markers")
	if r := call(t, "GET", accountDataURL(srv, bob.ID, room, "m.fully_read"), bob.Token, ""); r.Body["event_id"] != m1 {
		t.Errorf("m.fully_read: %s", r.Raw)
	}
	if p, err := srv.Ephemeral.ReadUpTo(t.Context(), bob.ID, room, ""); err != nil || p == 0 {
		t.Errorf("read_markers receipts not recorded: %d %v", p, err)
	}
	mustStatus(t, call(t, "POST", markers, bob.Token, `{}`), 200, "nothing to move")
	wantError(t, call(t, "POST", markers, bob.Token, `{"m.read": 5}`), 400, "M_BAD_JSON", "m.read a number")
	wantError(t, call(t, "POST", markers, eve.Token, mustJSON(map[string]string{"m.fully_read": m1})), 403, "M_FORBIDDEN", "not a member")
	wantError(t, call(t, "POST", markers, bob.Token, `{"m.fully_read": "$nope:localhost"}`), 404, "M_NOT_FOUND", "unknown event")
}

func TestTypingHTTP(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "eve")
	alice, bob, eve := us[0], us[1], us[2]
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, srv, bob, room)
	typing := func(u user, target, body string) response {
		return call(t, "PUT", rurl(srv, room, "/typing/"+url.PathEscape(target)), u.Token, body)
	}
	since := syncOnce(t, srv, bob, url.Values{}).Body["next_batch"].(string)

	// Bob long-polls; Alice starts typing; Bob's sync returns with it.
	done := make(chan response, 1)
	go func() {
		done <- call(t, "GET", srv.URL+c+"/sync?"+url.Values{"since": {since}, "timeout": {"10000"}}.Encode(), bob.Token, "")
	}()
	time.Sleep(100 * time.Millisecond)
	mustStatus(t, typing(alice, alice.ID, `{"typing": true, "timeout": 30000}`), 200, "start typing")
	var r response
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("bob's long-poll was not woken by alice typing")
	}
	jr, _ := joinedSection(r)[room].(map[string]any)
	eph, _ := jr["ephemeral"].(map[string]any)
	found := false
	for _, ev := range events(eph["events"]) {
		if ev["type"] == "m.typing" {
			ids, _ := ev["content"].(map[string]any)["user_ids"].([]any)
			found = len(ids) == 1 && ids[0] == alice.ID
		}
	}
	if !found {
		t.Errorf("m.typing with alice not in bob's sync: %s", r.Raw)
	}

	mustStatus(t, typing(alice, alice.ID, `{"typing": false}`), 200, "stop typing")
	if got := srv.Ephemeral.Typing.Typing(room); len(got) != 0 {
		t.Errorf("still typing: %v", got)
	}
	mustStatus(t, typing(alice, alice.ID, `{"typing": true, "timeout": 99999999999}`), 200, "huge timeout (capped)")
	wantError(t, typing(alice, bob.ID, `{"typing": true, "timeout": 1000}`), 403, "M_FORBIDDEN", "for another user")
	wantError(t, typing(eve, eve.ID, `{"typing": true, "timeout": 1000}`), 403, "M_FORBIDDEN", "not a member")
	wantError(t, typing(alice, alice.ID, `{"timeout": 1000}`), 400, "M_BAD_JSON", "typing missing")
	wantError(t, typing(alice, alice.ID, `{"typing": "yes"}`), 400, "M_BAD_JSON", "typing a string")
	wantError(t, typing(alice, alice.ID, `{"typing": true, "timeout": -5}`), 400, "M_INVALID_PARAM", "negative timeout")
	wantError(t, typing(alice, alice.ID, `{"typing": true, "timeout": 1.5}`), 400, "M_BAD_JSON", "fractional timeout")
	wantError(t, typing(alice, alice.ID, `{"typing": true, "timeout": "30000"}`), 400, "M_BAD_JSON", "timeout a string")
	wantError(t, typing(alice, alice.ID, `{"typing": true`), 400, "M_NOT_JSON", "truncated body")
	wantError(t, call(t, "PUT", rurl(srv, "bad", "/typing/"+url.PathEscape(alice.ID)), alice.Token, `{"typing": true}`), 400, "M_INVALID_PARAM", "bad room ID")
}

func TestPresenceHTTP(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "eve")
	alice, bob, eve := us[0], us[1], us[2]
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, srv, bob, room)
	status := func(target string) string { return srv.URL + c + "/presence/" + url.PathEscape(target) + "/status" }

	mustStatus(t, call(t, "PUT", status(alice.ID), alice.Token, `{"presence": "online", "status_msg": "at my desk"}`), 200, "set presence")
	for _, viewer := range []user{alice, bob} {
		r := call(t, "GET", status(alice.ID), viewer.Token, "")
		mustStatus(t, r, 200, viewer.ID+" reads alice's presence")
		if r.Body["presence"] != "online" || r.Body["status_msg"] != "at my desk" || r.Body["currently_active"] != true {
			t.Errorf("presence as %s sees it: %s", viewer.ID, r.Raw)
		}
		if _, ok := r.Body["last_active_ago"].(float64); !ok {
			t.Errorf("no last_active_ago: %s", r.Raw)
		}
	}
	wantError(t, call(t, "GET", status(alice.ID), eve.Token, ""), 403, "M_FORBIDDEN", "a stranger reads alice's presence")
	wantError(t, call(t, "GET", status("alice"), alice.Token, ""), 400, "M_INVALID_PARAM", "not a user ID")
	wantError(t, call(t, "PUT", status(bob.ID), alice.Token, `{"presence": "online"}`), 403, "M_FORBIDDEN", "setting another user's presence")
	wantError(t, call(t, "PUT", status(alice.ID), alice.Token, `{"presence": "busy"}`), 400, "M_INVALID_PARAM", "unknown presence")
	wantError(t, call(t, "PUT", status(alice.ID), alice.Token, `{"status_msg": "hi"}`), 400, "M_BAD_JSON", "presence missing")
	wantError(t, call(t, "PUT", status(alice.ID), alice.Token, `{"presence": "online", "status_msg": 3}`), 400, "M_BAD_JSON", "status_msg a number")
	if r := call(t, "GET", status(bob.ID), alice.Token, ""); r.Status != 200 || r.Body["presence"] != "offline" {
		t.Errorf("never set: %d %s", r.Status, r.Raw)
	}

	// Bob's sync carries alice's presence.
	r := syncOnce(t, srv, bob, url.Values{})
	pres, _ := r.Body["presence"].(map[string]any)
	found := false
	for _, ev := range events(pres["events"]) {
		if ev["sender"] == alice.ID && ev["type"] == "m.presence" {
			found = ev["content"].(map[string]any)["presence"] == "online"
		}
	}
	if !found {
		t.Errorf("alice's presence not in bob's initial sync: %s", r.Raw)
	}
}

func TestPresenceDisabledHTTP(t *testing.T) {
	srv := apptest.Start(t, func(cfg *config.Config) { cfg.Presence.Enabled = false })
	alice := register(t, srv, "alice", "password-alice")
	u := srv.URL + c + "/presence/" + url.PathEscape(alice.ID) + "/status"
	mustStatus(t, call(t, "PUT", u, alice.Token, `{"presence": "online", "status_msg": "here"}`), 200, "PUT while disabled")
	r := call(t, "GET", u, alice.Token, "")
	if r.Status != 200 || r.Body["presence"] != "offline" || r.Body["status_msg"] != nil {
		t.Errorf("GET while disabled: %d %s", r.Status, r.Raw)
	}
	wantError(t, call(t, "PUT", u, alice.Token, `{"presence": "busy"}`), 400, "M_INVALID_PARAM", "still validated")
}

func TestUserDirectoryHTTP(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "carol", "dave", "erin")
	alice, bob, carol, dave, erin := us[0], us[1], us[2], us[3], us[4]
	setName := func(u user, name string) {
		mustStatus(t, call(t, "PUT", srv.URL+c+"/profile/"+url.PathEscape(u.ID)+"/displayname", u.Token, mustJSON(map[string]string{"displayname": name})), 200, "displayname")
	}
	setName(bob, "Bob Marchand")
	setName(carol, "Carole Bouquet")
	setName(dave, "Dave Secret")
	// Alice and Bob share a private room; Carol is in a public room; Dave
	// is only in a private room with Erin.
	shared := createRoom(t, srv, alice, map[string]any{"preset": "private_chat"})
	inviteUser(t, srv, alice, shared, bob.ID)
	joinRoom(t, srv, bob, shared)
	createRoom(t, srv, carol, map[string]any{"preset": "public_chat"})
	hidden := createRoom(t, srv, dave, map[string]any{"preset": "private_chat"})
	inviteUser(t, srv, dave, hidden, erin.ID)
	joinRoom(t, srv, erin, hidden)

	search := func(u user, body string) response {
		return call(t, "POST", srv.URL+c+"/user_directory/search", u.Token, body)
	}
	ids := func(r response) []string {
		var out []string
		for _, res := range events(r.Body["results"]) {
			out = append(out, res["user_id"].(string))
		}
		return out
	}
	r := search(alice, `{"search_term": "MARCH"}`)
	mustStatus(t, r, 200, "search by display name")
	if got := ids(r); len(got) != 1 || got[0] != bob.ID || r.Body["limited"] != false {
		t.Errorf("display name search: %s", r.Raw)
	}
	if res := events(r.Body["results"]); len(res) == 1 && res[0]["display_name"] != "Bob Marchand" {
		t.Errorf("display_name: %s", r.Raw)
	}
	if got := ids(search(alice, `{"search_term": "carol"}`)); len(got) != 1 || got[0] != carol.ID {
		t.Errorf("public room member by user ID: %v", got)
	}
	if got := ids(search(alice, `{"search_term": "dave"}`)); len(got) != 0 {
		t.Errorf("a user sharing no room and in no public room was found: %v", got)
	}
	if got := ids(search(alice, `{"search_term": "secret"}`)); len(got) != 0 {
		t.Errorf("found by a hidden display name: %v", got)
	}
	if got := ids(search(erin, `{"search_term": "dave"}`)); len(got) != 1 {
		t.Errorf("erin shares a room with dave: %v", got)
	}
	if got := ids(search(alice, `{"search_term": "alice"}`)); len(got) != 0 {
		t.Errorf("the searcher is listed: %v", got)
	}
	r = search(alice, `{"search_term": "localhost", "limit": 1}`)
	if got := ids(r); len(got) != 1 || r.Body["limited"] != true {
		t.Errorf("limit 1: %s", r.Raw)
	}
	r = search(alice, `{"search_term": "bouquet carole"}`)
	if got := ids(r); len(got) != 1 || got[0] != carol.ID {
		t.Errorf("two words: %s", r.Raw)
	}
	if got := ids(search(alice, `{"search_term": "%"}`)); len(got) != 0 {
		t.Errorf("%% is a wildcard: %v", got)
	}
	wantError(t, search(alice, `{}`), 400, "M_BAD_JSON", "search_term missing")
	wantError(t, search(alice, `{"search_term": 5}`), 400, "M_BAD_JSON", "search_term a number")
	wantError(t, search(alice, `{"search_term": "a", "limit": 0}`), 400, "M_INVALID_PARAM", "limit 0")
	wantError(t, search(alice, `{"search_term": "a", "limit": -3}`), 400, "M_INVALID_PARAM", "negative limit")
}

func TestTurnServerHTTP(t *testing.T) {
	plain := apptest.Start(t)
	alice := register(t, plain, "alice", "password-alice")
	r := call(t, "GET", plain.URL+c+"/voip/turnServer", alice.Token, "")
	if r.Status != 200 || len(r.Body) != 0 {
		t.Errorf("no TURN configured: %d %s", r.Status, r.Raw)
	}
	if r := call(t, "GET", plain.URL+c+"/voip/turnServer", "", ""); r.Status != 401 {
		t.Errorf("without a token: %d", r.Status)
	}
	if r := call(t, "GET", plain.URL+c+"/thirdparty/protocols", alice.Token, ""); r.Status != 200 || len(r.Body) != 0 {
		t.Errorf("thirdparty/protocols: %d %s", r.Status, r.Raw)
	}

	uris := []string{"turn:turn.example.gouv.fr:3478?transport=udp", "turns:turn.example.gouv.fr:443?transport=tcp"}
	srv := apptest.Start(t, func(cfg *config.Config) {
		cfg.TURN.URIs = uris
		cfg.TURN.SharedSecret = "s3cret"
		cfg.TURN.TTL = config.Duration(time.Hour)
	})
	bob := register(t, srv, "bob", "password-bob")
	r = call(t, "GET", srv.URL+c+"/voip/turnServer", bob.Token, "")
	mustStatus(t, r, 200, "turnServer")
	username, _ := r.Body["username"].(string)
	expiry, user, ok := strings.Cut(username, ":")
	exp, err := strconv.ParseInt(expiry, 10, 64)
	if !ok || err != nil || user != bob.ID {
		t.Fatalf("username %q is not <expiry>:<user ID>", username)
	}
	if now := time.Now().Unix(); exp < now+3500 || exp > now+3700 {
		t.Errorf("expiry %d is not an hour from now (%d)", exp, now)
	}
	mac := hmac.New(sha1.New, []byte("s3cret"))
	mac.Write([]byte(username))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); r.Body["password"] != want {
		t.Errorf("password %v, want %s", r.Body["password"], want)
	}
	if r.Body["ttl"] != float64(3600) || mustJSON(r.Body["uris"]) != mustJSON(uris) {
		t.Errorf("ttl/uris: %s", r.Raw)
	}
}
