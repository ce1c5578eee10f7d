package clientapi_test

// HTTP tests of the room endpoints (issue 3) through a real server: every
// endpoint, its forbidden and bad-input cases, and after each refusal a check
// that nothing changed. Spec: client-server-api/_index.md ("Rooms", "Room
// membership", "Events", "History visibility", "Room upgrades").

import (
	"fmt"
	"net/url"
	_ "sort"
	"strings"
	_ "sync"
	"testing"
	_ "time"

	"chappe/app/apptest"
)

// newUsers registers the named users (password "password-<name>").
func newUsers(t *testing.T, srv *apptest.Server, names ...string) []user {
	t.Helper()
	out := make([]user, len(names))
	for i, n := range names {
		out[i] = register(t, srv, n, "password-"+n)
	}
	return out
}

func TestRoomCreatePresets(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob")
	alice, bob := us[0], us[1]
	for _, tc := range []struct {
		preset, visibility string
		joinRule, guest    string
		published          string
		bobLevel           float64
	}{
		{"private_chat", "", "invite", "can_join", "private", 0},
		{"trusted_private_chat", "", "invite", "can_join", "private", 100},
		{"public_chat", "public", "public", "forbidden", "public", 0},
		{"public_chat", "private", "public", "forbidden", "private", 0},
		{"", "public", "public", "forbidden", "public", 0}, // no preset + public = public_chat
		{"", "", "invite", "can_join", "private", 0},       // default private_chat
	} {
		t.Run(tc.preset+"/"+tc.visibility, func(t *testing.T) {
			body := map[string]any{"invite": []string{bob.ID}}
			if tc.preset != "" {
				body["preset"] = tc.preset
			}
			if tc.visibility != "" {
				body["visibility"] = tc.visibility
			}
			room := createRoom(t, srv, alice, body)
			if !strings.HasSuffix(room, ":localhost") {
				t.Errorf("room ID %q of a v10 room should end in :localhost", room)
			}
			if got := stateContent(t, srv, alice, room, "m.room.join_rules", "")["join_rule"]; got != tc.joinRule {
				t.Errorf("join_rule %v, want %s", got, tc.joinRule)
			}
			if got := stateContent(t, srv, alice, room, "m.room.history_visibility", "")["history_visibility"]; got != "shared" {
				t.Errorf("history_visibility %v, want shared", got)
			}
			if got := stateContent(t, srv, alice, room, "m.room.guest_access", "")["guest_access"]; got != tc.guest {
				t.Errorf("guest_access %v, want %s", got, tc.guest)
			}
			pl := stateContent(t, srv, alice, room, "m.room.power_levels", "")
			users, _ := pl["users"].(map[string]any)
			if users[alice.ID] != float64(100) {
				t.Errorf("creator's power level %v, want 100: %v", users[alice.ID], pl)
			}
			bobLevel, _ := users[bob.ID].(float64)
			if bobLevel != tc.bobLevel {
				t.Errorf("invitee's power level %v, want %v", bobLevel, tc.bobLevel)
			}
			if m := membershipOf(t, srv, alice, room, bob.ID); m != "invite" {
				t.Errorf("invitee's membership %q, want invite", m)
			}
			if m := membershipOf(t, srv, alice, room, alice.ID); m != "join" {
				t.Errorf("creator's membership %q, want join", m)
			}
			r := call(t, "GET", srv.URL+c+"/directory/list/room/"+url.PathEscape(room), alice.Token, "")
			if r.Status != 200 || r.Body["visibility"] != tc.published {
				t.Errorf("directory visibility: %d %s, want %s", r.Status, r.Raw, tc.published)
			}
			if !containsStr(joinedRooms(t, srv, alice), room) {
				t.Errorf("the new room is not in the creator's joined_rooms")
			}
			if containsStr(joinedRooms(t, srv, bob), room) {
				t.Errorf("the invitee has the room in joined_rooms before joining")
			}
		})
	}
}

func TestRoomCreateOptions(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob")
	alice, bob := us[0], us[1]
	room := createRoom(t, srv, alice, map[string]any{
		"preset":          "private_chat",
		"name":            "Salle des signaux",
		"topic":           "Le télégraphe optique",
		"room_alias_name": "signaux",
		"invite":          []string{bob.ID},
		"is_direct":       true,
		"initial_state": []map[string]any{
			{"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}},
			{"type": "org.example.setting", "state_key": "k", "content": map[string]any{"v": 1}},
			{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": "joined"}},
		},
		"creation_content":             map[string]any{"m.federate": false, "org.example.flag": "x"},
		"power_level_content_override": map[string]any{"events_default": 20, "users": map[string]any{alice.ID: 100, bob.ID: 42}},
	})

	create := stateContent(t, srv, alice, room, "m.room.create", "")
	if create["room_version"] != "10" || create["creator"] != alice.ID || create["m.federate"] != false || create["org.example.flag"] != "x" {
		t.Errorf("create content %v: want room_version 10 (the default), creator, and the creation_content keys", create)
	}
	if got := stateContent(t, srv, alice, room, "m.room.name", "")["name"]; got != "Salle des signaux" {
		t.Errorf("name %v", got)
	}
	if got := stateContent(t, srv, alice, room, "m.room.topic", "")["topic"]; got != "Le télégraphe optique" {
		t.Errorf("topic %v", got)
	}
	if got := stateContent(t, srv, alice, room, "m.room.canonical_alias", "")["alias"]; got != "#signaux:localhost" {
		t.Errorf("canonical alias %v", got)
	}
	r := call(t, "GET", aliasURL(srv, "#signaux:localhost"), alice.Token, "")
	if r.Status != 200 || r.Body["room_id"] != room {
		t.Errorf("room_alias_name does not resolve: %d %s", r.Status, r.Raw)
	}
	if got := stateContent(t, srv, alice, room, "m.room.encryption", "")["algorithm"]; got != "m.megolm.v1.aes-sha2" {
		t.Errorf("initial_state encryption: %v", got)
	}
	if got := stateContent(t, srv, alice, room, "org.example.setting", "k")["v"]; got != float64(1) {
		t.Errorf("initial_state custom state: %v", got)
	}
	if got := stateContent(t, srv, alice, room, "m.room.history_visibility", "")["history_visibility"]; got != "joined" {
		t.Errorf("initial_state must override the preset's history_visibility: %v", got)
	}
	pl := stateContent(t, srv, alice, room, "m.room.power_levels", "")
	users, _ := pl["users"].(map[string]any)
	if pl["events_default"] != float64(20) || users[bob.ID] != float64(42) || users[alice.ID] != float64(100) {
		t.Errorf("power_level_content_override not applied: %v", pl)
	}
	if pl["ban"] != float64(50) || pl["state_default"] != float64(50) {
		t.Errorf("keys not overridden must keep their defaults: %v", pl)
	}
	member := stateContent(t, srv, alice, room, "m.room.member", bob.ID)
	if member["membership"] != "invite" || member["is_direct"] != true {
		t.Errorf("is_direct invite: %v", member)
	}

	// The spec's order of the creation events.
	types := []string{}
	for _, ev := range pageAll(t, srv, alice, room, "f", 50, "") {
		types = append(types, fmt.Sprint(ev["type"]))
	}
	want := []string{"m.room.create", "m.room.member", "m.room.power_levels", "m.room.canonical_alias",
		"m.room.join_rules", "m.room.history_visibility", "m.room.guest_access",
		"m.room.encryption", "org.example.setting", "m.room.history_visibility",
		"m.room.name", "m.room.topic", "m.room.member"}
	if strings.Join(types, " ") != strings.Join(want, " ") {
		t.Errorf("creation events\n got %v\nwant %v", types, want)
	}
}

func TestRoomCreateVersions(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob")
	alice, bob := us[0], us[1]
	for _, v := range []string{"1", "6", "10", "11", "12"} {
		t.Run("v"+v, func(t *testing.T) {
			room := createRoom(t, srv, alice, map[string]any{"room_version": v, "preset": "public_chat", "name": "v" + v})
			if v == "12" {
				if strings.Contains(room, ":") {
					t.Errorf("v12 room IDs have no server part: %s", room)
				}
			} else if !strings.HasSuffix(room, ":localhost") {
				t.Errorf("room ID %s", room)
			}
			create := stateContent(t, srv, alice, room, "m.room.create", "")
			if create["room_version"] != v {
				t.Errorf("room_version %v", create["room_version"])
			}
			_, hasCreator := create["creator"]
			if hasCreator != (v == "1" || v == "6" || v == "10") {
				t.Errorf("creator key in create content of v%s: %v", v, create)
			}
			pl := stateContent(t, srv, alice, room, "m.room.power_levels", "")
			users, _ := pl["users"].(map[string]any)
			if _, listed := users[alice.ID]; listed == (v == "12") {
				t.Errorf("v%s power levels users %v (v12 creators are not listed, earlier creators are)", v, users)
			}
			joinRoom(t, srv, bob, room)
			msg := sendText(t, srv, bob, room, "bonjour v"+v)
			if (v == "1") != strings.Contains(msg, ":") {
				t.Errorf("event ID format %s for v%s", msg, v)
			}
			r := call(t, "GET", rurl(srv, room, "/event/"+url.PathEscape(msg)), alice.Token, "")
			if r.Status != 200 || r.Body["content"].(map[string]any)["body"] != "bonjour v"+v || r.Body["room_id"] != room {
				t.Fatalf("GET event: %d %s", r.Status, r.Raw)
			}
			// The creator has the power to rename; a plain member has not.
			putState(t, srv, alice, room, "m.room.name", "", map[string]any{"name": "renamed"})
			r = call(t, "PUT", rurl(srv, room, "/state/m.room.name/"), bob.Token, `{"name":"bob's"}`)
			wantError(t, r, 403, "M_FORBIDDEN", "member without power renames")
			// Redaction with the version's algorithm and event shape.
			red := call(t, "PUT", rurl(srv, room, "/redact/"+url.PathEscape(msg)+"/"+nextTxn()), alice.Token, `{"reason":"test"}`)
			mustStatus(t, red, 200, "redact")
			redID := red.Body["event_id"].(string)
			r = call(t, "GET", rurl(srv, room, "/event/"+url.PathEscape(redID)), alice.Token, "")
			mustStatus(t, r, 200, "GET redaction")
			content := r.Body["content"].(map[string]any)
			if v == "11" || v == "12" {
				if content["redacts"] != msg {
					t.Errorf("v%s redaction must carry content.redacts: %s", v, r.Raw)
				}
			} else if r.Body["redacts"] != msg {
				t.Errorf("v%s redaction must carry a top-level redacts: %s", v, r.Raw)
			}
			r = call(t, "GET", rurl(srv, room, "/event/"+url.PathEscape(msg)), bob.Token, "")
			if r.Status != 200 || len(r.Body["content"].(map[string]any)) != 0 {
				t.Errorf("redacted event still has content: %d %s", r.Status, r.Raw)
			}
		})
	}
}

func TestRoomCreateErrors(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob")
	alice := us[0]
	first := createRoom(t, srv, alice, map[string]any{"room_alias_name": "taken", "preset": "public_chat"})
	rooms := joinedRooms(t, srv, alice)

	for _, tc := range []struct {
		name   string
		body   string
		status int
		code   string
	}{
		{"taken alias", `{"room_alias_name":"taken"}`, 400, "M_ROOM_IN_USE"},
		{"alias with a colon", `{"room_alias_name":"bad:alias"}`, 400, "M_INVALID_PARAM"},
		{"initial_state: bad join rule", `{"initial_state":[{"type":"m.room.join_rules","state_key":"","content":{"join_rule":"sometimes"}}]}`, 400, "M_INVALID_ROOM_STATE"},
		{"initial_state: history visibility not a string", `{"initial_state":[{"type":"m.room.history_visibility","state_key":"","content":{"history_visibility":42}}]}`, 400, "M_INVALID_ROOM_STATE"},
		{"initial_state: no type", `{"initial_state":[{"state_key":"","content":{}}]}`, 400, "M_INVALID_ROOM_STATE"},
		{"initial_state: content not an object", `{"initial_state":[{"type":"org.example.x","state_key":"","content":"text"}]}`, 400, "M_INVALID_ROOM_STATE"},
		{"initial_state: member event", `{"initial_state":[{"type":"m.room.member","state_key":"@bob:localhost","content":{"membership":"join"}}]}`, 400, "M_INVALID_ROOM_STATE"},
		{"initial_state: create event", `{"initial_state":[{"type":"m.room.create","state_key":"","content":{}}]}`, 400, "M_INVALID_ROOM_STATE"},
		{"unsupported room version", `{"room_version":"999"}`, 400, "M_UNSUPPORTED_ROOM_VERSION"},
		{"unsupported room version name", `{"room_version":"org.example.custom"}`, 400, "M_UNSUPPORTED_ROOM_VERSION"},
		{"power levels with a string", `{"power_level_content_override":{"ban":"fifty"}}`, 400, "M_BAD_JSON"},
		{"power levels with a string user level", `{"power_level_content_override":{"users":{"@alice:localhost":"high"}}}`, 400, "M_BAD_JSON"},
		{"power levels users not an object", `{"power_level_content_override":{"users":[1]}}`, 400, "M_BAD_JSON"},
		{"invitee without @", `{"invite":["bob"]}`, 400, "M_INVALID_PARAM"},
		{"invitee without server", `{"invite":["@bob"]}`, 400, "M_INVALID_PARAM"},
		{"unknown preset", `{"preset":"secret_chat"}`, 400, ""},
		{"unknown visibility", `{"visibility":"hidden"}`, 400, ""},
		{"not JSON", `{"name":`, 400, "M_NOT_JSON"},
		{"name not a string", `{"name":5}`, 400, "M_BAD_JSON"},
	} {
		r := call(t, "POST", srv.URL+c+"/createRoom", alice.Token, tc.body)
		if r.Status != tc.status || (tc.code != "" && r.errcode() != tc.code) {
			t.Errorf("%s: want %d %s, got %d %s", tc.name, tc.status, tc.code, r.Status, r.Raw)
		}
		if got := joinedRooms(t, srv, alice); mustJSON(got) != mustJSON(rooms) {
			t.Errorf("%s: a refused createRoom left a room behind: %v", tc.name, got)
			rooms = got
		}
	}
	r := call(t, "GET", aliasURL(srv, "#taken:localhost"), alice.Token, "")
	if r.Body["room_id"] != first {
		t.Errorf("the taken alias moved: %s", r.Raw)
	}
	r = call(t, "POST", srv.URL+c+"/createRoom", "", `{}`)
	wantError(t, r, 401, "M_MISSING_TOKEN", "createRoom without a token")
}

func TestRoomMembership(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := us[0], us[1], us[2], us[3]
	room := createRoom(t, srv, alice, map[string]any{"preset": "private_chat", "name": "Privée"})
	member := func(target string) map[string]any {
		t.Helper()
		r := call(t, "GET", rurl(srv, room, "/state/m.room.member/"+url.PathEscape(target)+"?format=event"), alice.Token, "")
		mustStatus(t, r, 200, "member event of "+target)
		return r.Body
	}

	t.Run("join without invite is refused", func(t *testing.T) {
		before := stateIDs(t, srv, alice, room)
		r := call(t, "POST", rurl(srv, room, "/join"), bob.Token, `{}`)
		wantError(t, r, 403, "M_FORBIDDEN", "uninvited join to an invite-only room")
		r = call(t, "POST", srv.URL+c+"/join/"+url.PathEscape(room), bob.Token, `{}`)
		wantError(t, r, 403, "M_FORBIDDEN", "uninvited join by /join/{roomIdOrAlias}")
		sameState(t, before, stateIDs(t, srv, alice, room), "a refused join")
	})

	t.Run("invite with a reason, then join by /join/{roomIdOrAlias}", func(t *testing.T) {
		r := call(t, "POST", rurl(srv, room, "/invite"), alice.Token, mustJSON(map[string]string{"user_id": bob.ID, "reason": "viens"}))
		mustStatus(t, r, 200, "invite")
		ev := member(bob.ID)
		content := ev["content"].(map[string]any)
		if content["membership"] != "invite" || content["reason"] != "viens" || ev["sender"] != alice.ID || ev["state_key"] != bob.ID {
			t.Errorf("invite event: %v", ev)
		}
		before := stateIDs(t, srv, alice, room)
		r = call(t, "POST", rurl(srv, room, "/invite"), alice.Token, mustJSON(map[string]string{"user_id": bob.ID}))
		wantError(t, r, 403, "M_FORBIDDEN", "inviting an invited user")
		sameState(t, before, stateIDs(t, srv, alice, room), "a refused second invite")

		r = call(t, "POST", srv.URL+c+"/join/"+url.PathEscape(room), bob.Token, `{"reason":"me voilà"}`)
		if r.Status != 200 || r.Body["room_id"] != room {
			t.Fatalf("join by /join/{roomId}: %d %s", r.Status, r.Raw)
		}
		content = member(bob.ID)["content"].(map[string]any)
		if content["membership"] != "join" || content["reason"] != "me voilà" || content["displayname"] != "bob" {
			t.Errorf("join event content: %v", content)
		}
		if !containsStr(joinedRooms(t, srv, bob), room) {
			t.Errorf("joined room missing from joined_rooms")
		}
		// Joining again changes nothing.
		before = stateIDs(t, srv, alice, room)
		r = call(t, "POST", rurl(srv, room, "/join"), bob.Token, `{}`)
		if r.Status != 200 || r.Body["room_id"] != room {
			t.Errorf("joining a joined room: %d %s", r.Status, r.Raw)
		}
		sameState(t, before, stateIDs(t, srv, alice, room), "a second join")
		before = stateIDs(t, srv, alice, room)
		r = call(t, "POST", rurl(srv, room, "/invite"), alice.Token, mustJSON(map[string]string{"user_id": bob.ID}))
		wantError(t, r, 403, "M_FORBIDDEN", "inviting a joined user")
		sameState(t, before, stateIDs(t, srv, alice, room), "a refused invite of a member")
	})

	t.Run("bad invite requests", func(t *testing.T) {
		before := stateIDs(t, srv, alice, room)
		r := call(t, "POST", rurl(srv, room, "/invite"), alice.Token, `{}`)
		if r.Status != 400 {
			t.Errorf("invite without user_id: %d %s", r.Status, r.Raw)
		}
		r = call(t, "POST", rurl(srv, room, "/invite"), alice.Token, `{"user_id":"carol"}`)
		wantError(t, r, 400, "M_INVALID_PARAM", "invite of a malformed user ID")
		r = call(t, "POST", rurl(srv, room, "/invite"), alice.Token, `{"user_id":5}`)
		wantError(t, r, 400, "M_BAD_JSON", "user_id not a string")
		r = call(t, "POST", rurl(srv, room, "/invite"), carol.Token, mustJSON(map[string]string{"user_id": dave.ID}))
		wantError(t, r, 403, "M_FORBIDDEN", "a non-member invites")
		sameState(t, before, stateIDs(t, srv, alice, room), "refused invites")
	})

	t.Run("kick and ban need power", func(t *testing.T) {
		before := stateIDs(t, srv, alice, room)
		for _, action := range []string{"kick", "ban"} {
			r := call(t, "POST", rurl(srv, room, "/"+action), bob.Token, mustJSON(map[string]string{"user_id": alice.ID}))
			if wantError(t, r, 403, "M_FORBIDDEN", "member without power: "+action) && !strings.Contains(errMessage(r), "50") {
				t.Errorf("%s refusal must name the power level needed (50): %s", action, r.Raw)
			}
		}
		r := call(t, "POST", rurl(srv, room, "/kick"), alice.Token, mustJSON(map[string]string{"user_id": carol.ID}))
		wantError(t, r, 403, "M_FORBIDDEN", "kicking a non-member")
		r = call(t, "POST", rurl(srv, room, "/kick"), alice.Token, `{}`)
		if r.Status != 400 {
			t.Errorf("kick without user_id: %d %s", r.Status, r.Raw)
		}
		sameState(t, before, stateIDs(t, srv, alice, room), "refused kicks and bans")
	})

	t.Run("kick with a reason", func(t *testing.T) {
		r := call(t, "POST", rurl(srv, room, "/kick"), alice.Token, mustJSON(map[string]string{"user_id": bob.ID, "reason": "dehors"}))
		mustStatus(t, r, 200, "kick")
		ev := member(bob.ID)
		content := ev["content"].(map[string]any)
		if content["membership"] != "leave" || content["reason"] != "dehors" || ev["sender"] != alice.ID {
			t.Errorf("kick event: %v", ev)
		}
		if containsStr(joinedRooms(t, srv, bob), room) {
			t.Errorf("kicked user still has the room in joined_rooms")
		}
		r = call(t, "POST", rurl(srv, room, "/join"), bob.Token, `{}`)
		wantError(t, r, 403, "M_FORBIDDEN", "a kicked user rejoins an invite-only room")
	})

	t.Run("ban, unban", func(t *testing.T) {
		r := call(t, "POST", rurl(srv, room, "/ban"), alice.Token, mustJSON(map[string]string{"user_id": bob.ID, "reason": "spam"}))
		mustStatus(t, r, 200, "ban")
		ev := member(bob.ID)
		content := ev["content"].(map[string]any)
		if content["membership"] != "ban" || content["reason"] != "spam" || ev["sender"] != alice.ID {
			t.Errorf("ban event: %v", ev)
		}
		before := stateIDs(t, srv, alice, room)
		r = call(t, "POST", rurl(srv, room, "/invite"), alice.Token, mustJSON(map[string]string{"user_id": bob.ID}))
		wantError(t, r, 403, "M_FORBIDDEN", "inviting a banned user")
		r = call(t, "POST", rurl(srv, room, "/join"), bob.Token, `{}`)
		wantError(t, r, 403, "M_FORBIDDEN", "a banned user joins")
		r = call(t, "POST", rurl(srv, room, "/unban"), alice.Token, mustJSON(map[string]string{"user_id": carol.ID}))
		wantError(t, r, 403, "M_FORBIDDEN", "unbanning a user who is not banned")
		sameState(t, before, stateIDs(t, srv, alice, room), "refusals around a ban")

		r = call(t, "POST", rurl(srv, room, "/unban"), alice.Token, mustJSON(map[string]string{"user_id": bob.ID, "reason": "pardon"}))
		mustStatus(t, r, 200, "unban")
		content = member(bob.ID)["content"].(map[string]any)
		if content["membership"] != "leave" || content["reason"] != "pardon" {
			t.Errorf("unban event: %v", content)
		}
		inviteUser(t, srv, alice, room, bob.ID)
		joinRoom(t, srv, bob, room)
		// Ban of a user who never was in the room.
		r = call(t, "POST", rurl(srv, room, "/ban"), alice.Token, mustJSON(map[string]string{"user_id": dave.ID}))
		mustStatus(t, r, 200, "pre-emptive ban")
		if m := membershipOf(t, srv, alice, room, dave.ID); m != "ban" {
			t.Errorf("pre-emptive ban: membership %q", m)
		}
	})

	t.Run("leave with a reason, forget", func(t *testing.T) {
		r := call(t, "POST", rurl(srv, room, "/forget"), bob.Token, `{}`)
		if r.Status != 400 {
			t.Errorf("forgetting a joined room: want 400, got %d %s", r.Status, r.Raw)
		}
		before := stateIDs(t, srv, alice, room)
		r = call(t, "POST", rurl(srv, room, "/leave"), carol.Token, `{}`)
		wantError(t, r, 403, "M_FORBIDDEN", "a non-member leaves")
		sameState(t, before, stateIDs(t, srv, alice, room), "a refused leave")

		r = call(t, "POST", rurl(srv, room, "/leave"), bob.Token, `{"reason":"au revoir"}`)
		mustStatus(t, r, 200, "leave")
		ev := member(bob.ID)
		content := ev["content"].(map[string]any)
		if content["membership"] != "leave" || content["reason"] != "au revoir" || ev["sender"] != bob.ID {
			t.Errorf("leave event: %v", ev)
		}
		if containsStr(joinedRooms(t, srv, bob), room) {
			t.Errorf("left room still in joined_rooms")
		}
		r = call(t, "POST", rurl(srv, room, "/forget"), bob.Token, `{}`)
		mustStatus(t, r, 200, "forget a left room")
		r = call(t, "POST", rurl(srv, room, "/forget"), carol.Token, `{}`)
		if r.Status == 200 {
			t.Errorf("forgetting a room one was never in succeeded")
		}
		// Leaving also rejects an invite.
		inviteUser(t, srv, alice, room, carol.ID)
		leaveRoom(t, srv, carol, room)
		if m := membershipOf(t, srv, alice, room, carol.ID); m != "leave" {
			t.Errorf("rejected invite: membership %q", m)
		}
	})
}

func TestRoomJoinByAliasAndPublicRooms(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat", "room_alias_name": "place"})

	r := call(t, "POST", srv.URL+c+"/join/"+url.PathEscape("#place:localhost"), bob.Token, `{}`)
	if r.Status != 200 || r.Body["room_id"] != room {
		t.Fatalf("join by alias: %d %s", r.Status, r.Raw)
	}
	if m := membershipOf(t, srv, alice, room, bob.ID); m != "join" {
		t.Errorf("after join by alias: membership %q", m)
	}
	r = call(t, "POST", srv.URL+c+"/join/"+url.PathEscape(room), carol.Token, ``)
	if r.Status != 200 || r.Body["room_id"] != room {
		t.Fatalf("join a public room by ID without a body: %d %s", r.Status, r.Raw)
	}
	before := stateIDs(t, srv, alice, room)
	r = call(t, "POST", srv.URL+c+"/join/"+url.PathEscape("#nowhere:localhost"), bob.Token, `{}`)
	wantError(t, r, 404, "M_NOT_FOUND", "join an unknown alias")
	r = call(t, "POST", srv.URL+c+"/join/"+url.PathEscape("!nowhere:localhost"), bob.Token, `{}`)
	wantError(t, r, 404, "M_NOT_FOUND", "join an unknown room ID")
	r = call(t, "POST", srv.URL+c+"/join/notaroom", bob.Token, `{}`)
	wantError(t, r, 400, "M_INVALID_PARAM", "join something neither an ID nor an alias")
	r = call(t, "POST", srv.URL+c+"/join/"+url.PathEscape(room), bob.Token, `{"reason":5}`)
	wantError(t, r, 400, "M_BAD_JSON", "join with a reason not a string")
	sameState(t, before, stateIDs(t, srv, alice, room), "refused joins")
}

func TestRoomRestrictedJoin(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	space := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, srv, bob, space)
	room := createRoom(t, srv, alice, map[string]any{"preset": "private_chat", "initial_state": []map[string]any{
		{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{
			"join_rule": "restricted", "allow": []map[string]string{{"type": "m.room_membership", "room_id": space}}}},
	}})
	before := stateIDs(t, srv, alice, room)
	r := call(t, "POST", rurl(srv, room, "/join"), carol.Token, `{}`)
	wantError(t, r, 403, "M_FORBIDDEN", "join of a restricted room without membership of an allowed room")
	sameState(t, before, stateIDs(t, srv, alice, room), "a refused restricted join")
	joinRoom(t, srv, bob, room)
	content := stateContent(t, srv, alice, room, "m.room.member", bob.ID)
	if content["membership"] != "join" || content["join_authorised_via_users_server"] != alice.ID {
		t.Errorf("restricted join: %v", content)
	}
}

func TestRoomKnock(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := us[0], us[1], us[2], us[3]
	knockRules := []map[string]any{{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}}
	room := createRoom(t, srv, alice, map[string]any{"preset": "private_chat", "room_alias_name": "frappez", "initial_state": knockRules})

	r := call(t, "POST", srv.URL+c+"/knock/"+url.PathEscape(room), bob.Token, `{"reason":"svp"}`)
	if r.Status != 200 || r.Body["room_id"] != room {
		t.Fatalf("knock by ID: %d %s", r.Status, r.Raw)
	}
	content := stateContent(t, srv, alice, room, "m.room.member", bob.ID)
	if content["membership"] != "knock" || content["reason"] != "svp" {
		t.Errorf("knock event: %v", content)
	}
	r = call(t, "PUT", rurl(srv, room, "/send/m.room.message/"+nextTxn()), bob.Token, `{"msgtype":"m.text","body":"hi"}`)
	wantError(t, r, 403, "M_FORBIDDEN", "a knocking user sends")
	r = call(t, "POST", rurl(srv, room, "/join"), bob.Token, `{}`)
	wantError(t, r, 403, "M_FORBIDDEN", "a knocking user joins without invite")
	inviteUser(t, srv, alice, room, bob.ID)
	joinRoom(t, srv, bob, room)

	r = call(t, "POST", srv.URL+c+"/knock/"+url.PathEscape("#frappez:localhost"), carol.Token, `{}`)
	if r.Status != 200 || r.Body["room_id"] != room {
		t.Fatalf("knock by alias: %d %s", r.Status, r.Raw)
	}
	// Leaving rescinds a knock; a moderator can also refuse it by kicking.
	leaveRoom(t, srv, carol, room)
	if m := membershipOf(t, srv, alice, room, carol.ID); m != "leave" {
		t.Errorf("rescinded knock: %q", m)
	}

	before := stateIDs(t, srv, alice, room)
	r = call(t, "POST", srv.URL+c+"/knock/"+url.PathEscape(room), bob.Token, `{}`)
	wantError(t, r, 403, "M_FORBIDDEN", "knock while joined")
	sameState(t, before, stateIDs(t, srv, alice, room), "a refused knock")

	invite := createRoom(t, srv, alice, map[string]any{"preset": "private_chat"})
	before = stateIDs(t, srv, alice, invite)
	r = call(t, "POST", srv.URL+c+"/knock/"+url.PathEscape(invite), dave.Token, `{}`)
	wantError(t, r, 403, "M_FORBIDDEN", "knock on an invite-only room")
	sameState(t, before, stateIDs(t, srv, alice, invite), "a refused knock")

	old := createRoom(t, srv, alice, map[string]any{"preset": "private_chat", "room_version": "6"})
	before = stateIDs(t, srv, alice, old)
	r = call(t, "POST", srv.URL+c+"/knock/"+url.PathEscape(old), dave.Token, `{}`)
	wantError(t, r, 403, "M_FORBIDDEN", "knock on a v6 room")
	sameState(t, before, stateIDs(t, srv, alice, old), "a refused knock")

	r = call(t, "POST", srv.URL+c+"/knock/"+url.PathEscape("!nowhere:localhost"), dave.Token, `{}`)
	wantError(t, r, 404, "M_NOT_FOUND", "knock on an unknown room")
	r = call(t, "POST", srv.URL+c+"/knock/"+url.PathEscape("#nowhere:localhost"), dave.Token, `{}`)
	wantError(t, r, 404, "M_NOT_FOUND", "knock on an unknown alias")
}

func TestRoomSendIdempotency(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob")
	alice, bob := us[0], us[1]
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	other := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, srv, bob, room)
	sendURL := func(roomID, evType, txn string) string {
		return rurl(srv, roomID, "/send/"+evType+"/"+txn)
	}

	r := call(t, "PUT", sendURL(room, "m.room.message", "abc"), alice.Token, `{"msgtype":"m.text","body":"une fois"}`)
	mustStatus(t, r, 200, "send")
	first := r.Body["event_id"].(string)
	r = call(t, "PUT", sendURL(room, "m.room.message", "abc"), alice.Token, `{"msgtype":"m.text","body":"une fois"}`)
	if r.Status != 200 || r.Body["event_id"] != first {
		t.Errorf("retransmission: %d %s, want event_id %s", r.Status, r.Raw, first)
	}
	r = call(t, "PUT", sendURL(room, "m.room.message", "abc"), alice.Token, `{"msgtype":"m.text","body":"changed body"}`)
	if r.Status != 200 || r.Body["event_id"] != first {
		t.Errorf("retransmission with another body: %d %s, want event_id %s", r.Status, r.Raw, first)
	}
	if got := bodies(pageAll(t, srv, alice, room, "b", 50, "")); mustJSON(got) != `["une fois"]` {
		t.Errorf("a retransmitted send stored %v", got)
	}

	// unsigned.transaction_id goes to the sending device only.
	r = call(t, "GET", rurl(srv, room, "/event/"+url.PathEscape(first)), alice.Token, "")
	if u, _ := r.Body["unsigned"].(map[string]any); u["transaction_id"] != "abc" {
		t.Errorf("sender's device must see unsigned.transaction_id: %s", r.Raw)
	}
	r = call(t, "GET", rurl(srv, room, "/event/"+url.PathEscape(first)), bob.Token, "")
	if u, _ := r.Body["unsigned"].(map[string]any); u["transaction_id"] != nil {
		t.Errorf("another user sees the transaction_id: %s", r.Raw)
	}

	// Another device of the same user: a new request.
	lr := login(t, srv, "alice", "password-alice", nil)
	mustStatus(t, lr, 200, "second login")
	device2 := lr.Body["access_token"].(string)
	r = call(t, "PUT", sendURL(room, "m.room.message", "abc"), device2, `{"msgtype":"m.text","body":"deux"}`)
	if r.Status != 200 || r.Body["event_id"] == first || r.Body["event_id"] == nil {
		t.Errorf("same txn from another device must be a new event: %d %s", r.Status, r.Raw)
	}
	second, _ := r.Body["event_id"].(string)
	r = call(t, "GET", rurl(srv, room, "/event/"+url.PathEscape(second)), alice.Token, "")
	if u, _ := r.Body["unsigned"].(map[string]any); u["transaction_id"] != nil {
		t.Errorf("device 1 sees the transaction_id of device 2's event: %s", r.Raw)
	}
	if got := bodies(pageAll(t, srv, alice, room, "b", 50, "")); mustJSON(got) != `["deux","une fois"]` {
		t.Errorf("messages after a send from a second device: %v", got)
	}

	// Spec "Transaction identifiers": a retransmission has the same txnId AND
	// the same path; the scope is one device and one endpoint.
	t.Run("same txn in another room is a new request", func(t *testing.T) {
		r := call(t, "PUT", sendURL(other, "m.room.message", "abc"), alice.Token, `{"msgtype":"m.text","body":"ailleurs"}`)
		mustStatus(t, r, 200, "send to the other room")
		if r.Body["event_id"] == first {
			t.Errorf("PUT /rooms/%s/send/m.room.message/abc returned the event of room %s", other, room)
		}
		if got := bodies(pageAll(t, srv, alice, other, "b", 50, "")); mustJSON(got) != `["ailleurs"]` {
			t.Errorf("the other room's messages: %v", got)
		}
	})
	t.Run("same txn with another event type is a new request", func(t *testing.T) {
		r := call(t, "PUT", sendURL(room, "org.example.ping", "abc"), alice.Token, `{"n":1}`)
		mustStatus(t, r, 200, "send another type")
		if r.Body["event_id"] == first {
			t.Errorf("PUT /send/org.example.ping/abc returned the m.room.message event")
		}
	})
	t.Run("same txn on the redact endpoint is a new request", func(t *testing.T) {
		r := call(t, "PUT", rurl(srv, room, "/redact/"+url.PathEscape(first)+"/abc"), alice.Token, `{}`)
		mustStatus(t, r, 200, "redact")
		if r.Body["event_id"] == first {
			t.Errorf("PUT /redact/{id}/abc returned the event sent with txn abc instead of redacting it")
		}
		r = call(t, "GET", rurl(srv, room, "/event/"+url.PathEscape(first)), alice.Token, "")
		if content, _ := r.Body["content"].(map[string]any); len(content) != 0 {
			t.Errorf("the event was not redacted: %s", r.Raw)
		}
	})
}

func TestRoomSendAndStateErrors(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := us[0], us[1], us[2], us[3]
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat", "name": "Avant"})
	joinRoom(t, srv, bob, room)
	inviteUser(t, srv, alice, room, dave.ID)
	last := sendText(t, srv, alice, room, "dernier")
	latest := func() string {
		t.Helper()
		r := call(t, "GET", rurl(srv, room, "/messages?dir=b&limit=1"), alice.Token, "")
		mustStatus(t, r, 200, "latest event")
		return eventIDs(events(r.Body["chunk"]))[0]
	}
	if latest() != last {
		t.Fatalf("latest event is not the last message")
	}
	before := stateIDs(t, srv, alice, room)

	for _, tc := range []struct {
		name   string
		who    user
		method string
		path   string
		body   string
		status int
		code   string
		level  string // the power level the message must name
	}{
		{"non-member sends", carol, "PUT", "/send/m.room.message/" + nextTxn(), `{"msgtype":"m.text","body":"x"}`, 403, "M_FORBIDDEN", ""},
		{"invited user sends", dave, "PUT", "/send/m.room.message/" + nextTxn(), `{"msgtype":"m.text","body":"x"}`, 403, "M_FORBIDDEN", ""},
		{"non-member sets state", carol, "PUT", "/state/m.room.name/", `{"name":"x"}`, 403, "M_FORBIDDEN", ""},
		{"member renames without power", bob, "PUT", "/state/m.room.name/", `{"name":"x"}`, 403, "M_FORBIDDEN", "50"},
		{"member sets custom state without power", bob, "PUT", "/state/org.example.thing/k", `{"a":1}`, 403, "M_FORBIDDEN", "50"},
		{"member changes power levels", bob, "PUT", "/state/m.room.power_levels/", `{"users":{"@bob:localhost":100}}`, 403, "M_FORBIDDEN", "100"},
		{"member changes history visibility", bob, "PUT", "/state/m.room.history_visibility/", `{"history_visibility":"joined"}`, 403, "M_FORBIDDEN", "100"},
		{"member changes another's member event", bob, "PUT", "/state/m.room.member/" + url.PathEscape(alice.ID), `{"membership":"leave"}`, 403, "M_FORBIDDEN", ""},
		{"name not a string", alice, "PUT", "/state/m.room.name/", `{"name":5}`, 400, "M_BAD_JSON", ""},
		{"name missing", alice, "PUT", "/state/m.room.name/", `{"title":"x"}`, 400, "M_BAD_JSON", ""},
		{"topic not a string", alice, "PUT", "/state/m.room.topic/", `{"topic":["x"]}`, 400, "M_BAD_JSON", ""},
		{"power level a string", alice, "PUT", "/state/m.room.power_levels/", `{"ban":"fifty","users":{"@alice:localhost":100}}`, 400, "M_BAD_JSON", ""},
		{"power level a numeric string", alice, "PUT", "/state/m.room.power_levels/", `{"ban":"50","users":{"@alice:localhost":100}}`, 400, "M_BAD_JSON", ""},
		{"power level a fraction", alice, "PUT", "/state/m.room.power_levels/", `{"ban":1.5,"users":{"@alice:localhost":100}}`, 400, "M_BAD_JSON", ""},
		{"user power level a string", alice, "PUT", "/state/m.room.power_levels/", `{"users":{"@alice:localhost":"100"}}`, 400, "M_BAD_JSON", ""},
		{"unknown join rule", alice, "PUT", "/state/m.room.join_rules/", `{"join_rule":"sometimes"}`, 400, "M_BAD_JSON", ""},
		{"unknown history visibility", alice, "PUT", "/state/m.room.history_visibility/", `{"history_visibility":"everyone"}`, 400, "M_BAD_JSON", ""},
		{"unknown guest access", alice, "PUT", "/state/m.room.guest_access/", `{"guest_access":"maybe"}`, 400, "M_BAD_JSON", ""},
		{"unknown membership", alice, "PUT", "/state/m.room.member/" + url.PathEscape(alice.ID), `{"membership":"dance"}`, 400, "M_BAD_JSON", ""},
		{"canonical alias not a string", alice, "PUT", "/state/m.room.canonical_alias/", `{"alias":5}`, 400, "M_BAD_JSON", ""},
		{"canonical alias of no room", alice, "PUT", "/state/m.room.canonical_alias/", `{"alias":"#nowhere:localhost"}`, 400, "M_BAD_ALIAS", ""},
		{"state content not an object", alice, "PUT", "/state/org.example.thing/k", `[1,2]`, 400, "", ""},
		{"message content not an object", alice, "PUT", "/send/m.room.message/" + nextTxn(), `"text"`, 400, "", ""},
		{"message not JSON", alice, "PUT", "/send/m.room.message/" + nextTxn(), `{"body":`, 400, "M_NOT_JSON", ""},
		{"redaction through /send", alice, "PUT", "/send/m.room.redaction/" + nextTxn(), `{"redacts":"` + last + `"}`, 400, "", ""},
		{"event too large", alice, "PUT", "/send/m.room.message/" + nextTxn(), `{"msgtype":"m.text","body":"` + strings.Repeat("x", 70000) + `"}`, 413, "M_TOO_LARGE", ""},
		{"malformed room ID", alice, "PUT", "", "", 0, "", ""}, // replaced below
	} {
		if tc.path == "" {
			r := call(t, "PUT", srv.URL+c+"/rooms/notaroom/send/m.room.message/"+nextTxn(), alice.Token, `{"body":"x"}`)
			wantError(t, r, 400, "M_INVALID_PARAM", "send to a malformed room ID")
			continue
		}
		r := call(t, tc.method, rurl(srv, room, tc.path), tc.who.Token, tc.body)
		if r.Status != tc.status || (tc.code != "" && r.errcode() != tc.code) {
			t.Errorf("%s: want %d %s, got %d %s", tc.name, tc.status, tc.code, r.Status, r.Raw)
		} else if tc.level != "" && !strings.Contains(errMessage(r), tc.level) {
			t.Errorf("%s: the message must name the power level needed (%s): %s", tc.name, tc.level, r.Raw)
		}
		sameState(t, before, stateIDs(t, srv, alice, room), tc.name)
		if got := latest(); got != last {
			t.Errorf("%s: a refused request added event %s", tc.name, got)
			last = got
		}
	}
	if got := stateContent(t, srv, alice, room, "m.room.name", "")["name"]; got != "Avant" {
		t.Errorf("name changed to %v", got)
	}
	// Bob may send messages (events_default 0), and the power he lacked is
	// enough once granted.
	sendText(t, srv, bob, room, "bob parle")
	putState(t, srv, alice, room, "m.room.power_levels", "", map[string]any{"users": map[string]any{alice.ID: 100, bob.ID: 50}, "state_default": 50})
	putState(t, srv, bob, room, "m.room.name", "", map[string]any{"name": "Après"})
	if got := stateContent(t, srv, alice, room, "m.room.name", "")["name"]; got != "Après" {
		t.Errorf("name set with power: %v", got)
	}
}

func TestRoomStateEndpoints(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob")
	alice, bob := us[0], us[1]
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat", "topic": "premier"})
	joinRoom(t, srv, bob, room)

	// Empty state key: with and without the trailing slash.
	r := call(t, "PUT", rurl(srv, room, "/state/m.room.topic"), alice.Token, `{"topic":"deuxième"}`)
	mustStatus(t, r, 200, "PUT state without a state key segment")
	topic2 := r.Body["event_id"].(string)
	r = call(t, "GET", rurl(srv, room, "/state/m.room.topic"), bob.Token, "")
	if r.Status != 200 || r.Body["topic"] != "deuxième" {
		t.Errorf("GET state without a state key segment: %d %s", r.Status, r.Raw)
	}
	r = call(t, "PUT", rurl(srv, room, "/state/m.room.topic/"), alice.Token, `{"topic":"troisième"}`)
	mustStatus(t, r, 200, "PUT state with an empty state key")
	topic3 := r.Body["event_id"].(string)
	if topic3 == topic2 {
		t.Errorf("a new state event must have a new ID")
	}
	r = call(t, "GET", rurl(srv, room, "/state/m.room.topic/"), bob.Token, "")
	if r.Status != 200 || r.Body["topic"] != "troisième" {
		t.Errorf("GET state with an empty state key: %d %s", r.Status, r.Raw)
	}
	// The replaced content is in unsigned.prev_content.
	r = call(t, "GET", rurl(srv, room, "/event/"+url.PathEscape(topic3)), bob.Token, "")
	if u, _ := r.Body["unsigned"].(map[string]any); u == nil || u["prev_content"] == nil || u["prev_content"].(map[string]any)["topic"] != "deuxième" {
		t.Errorf("prev_content of a replaced state event: %s", r.Raw)
	}

	// State keys with special characters, and ?format=event.
	for _, key := range []string{"k", "a/b", alice.ID, "with space", "é", "50%"} {
		putState(t, srv, alice, room, "org.example.thing", key, map[string]any{"key": key})
		r := call(t, "GET", rurl(srv, room, "/state/org.example.thing/"+url.PathEscape(key)), bob.Token, "")
		if r.Status != 200 || r.Body["key"] != key {
			t.Errorf("state key %q: %d %s", key, r.Status, r.Raw)
		}
		r = call(t, "GET", rurl(srv, room, "/state/org.example.thing/"+url.PathEscape(key)+"?format=event"), bob.Token, "")
		if r.Status != 200 || r.Body["state_key"] != key || r.Body["type"] != "org.example.thing" || r.Body["sender"] != alice.ID ||
			r.Body["room_id"] != room || r.Body["event_id"] == nil || r.Body["origin_server_ts"] == nil ||
			r.Body["content"].(map[string]any)["key"] != key {
			t.Errorf("format=event for key %q: %d %s", key, r.Status, r.Raw)
		}
	}
	r = call(t, "GET", rurl(srv, room, "/state/org.example.thing/k?format=content"), bob.Token, "")
	if r.Status != 200 || r.Body["key"] != "k" {
		t.Errorf("format=content: %d %s", r.Status, r.Raw)
	}
	r = call(t, "GET", rurl(srv, room, "/state/org.example.thing/missing"), bob.Token, "")
	wantError(t, r, 404, "M_NOT_FOUND", "missing state key")
	r = call(t, "GET", rurl(srv, room, "/state/org.example.none/"), bob.Token, "")
	wantError(t, r, 404, "M_NOT_FOUND", "missing state type")

	// The whole state.
	all := roomState(t, srv, bob, room)
	seen := map[string]bool{}
	for _, ev := range all {
		if ev["event_id"] == nil || ev["state_key"] == nil || ev["sender"] == nil || ev["content"] == nil {
			t.Errorf("state event without its fields: %v", ev)
		}
		k := fmt.Sprint(ev["type"]) + "|" + fmt.Sprint(ev["state_key"])
		if seen[k] {
			t.Errorf("state has %s twice", k)
		}
		seen[k] = true
	}
	for _, k := range []string{"m.room.create|", "m.room.power_levels|", "m.room.join_rules|", "m.room.history_visibility|",
		"m.room.member|" + alice.ID, "m.room.member|" + bob.ID, "m.room.topic|", "org.example.thing|a/b"} {
		if !seen[k] {
			t.Errorf("state lacks %s", k)
		}
	}
	for _, ev := range all {
		if ev["type"] == "m.room.topic" && ev["event_id"] != topic3 {
			t.Errorf("state has an old topic event")
		}
	}
}

func TestRoomEventAndMembers(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := us[0], us[1], us[2], us[3]
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	other := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	otherMsg := sendText(t, srv, alice, other, "ailleurs")
	msg := sendText(t, srv, alice, room, "avant bob")
	// A token of the point before bob joined.
	r := call(t, "GET", rurl(srv, room, "/messages?dir=b&limit=1"), alice.Token, "")
	mustStatus(t, r, 200, "messages")
	beforeBob, _ := r.Body["end"].(string)
	if beforeBob == "" {
		t.Fatalf("no end token: %s", r.Raw)
	}
	joinRoom(t, srv, bob, room)
	joinRoom(t, srv, carol, room)
	leaveRoom(t, srv, carol, room)
	inviteUser(t, srv, alice, room, dave.ID)

	r = call(t, "GET", rurl(srv, room, "/event/"+url.PathEscape(msg)), bob.Token, "")
	mustStatus(t, r, 200, "GET event")
	if r.Body["event_id"] != msg || r.Body["type"] != "m.room.message" || r.Body["sender"] != alice.ID || r.Body["room_id"] != room ||
		r.Body["content"].(map[string]any)["body"] != "avant bob" || r.Body["origin_server_ts"] == nil {
		t.Errorf("GET event: %s", r.Raw)
	}
	if u, _ := r.Body["unsigned"].(map[string]any); u == nil || u["age"] == nil {
		t.Errorf("GET event lacks unsigned.age: %s", r.Raw)
	}
	r = call(t, "GET", rurl(srv, room, "/event/"+url.PathEscape("$nonexistent")), bob.Token, "")
	wantError(t, r, 404, "M_NOT_FOUND", "unknown event")
	r = call(t, "GET", rurl(srv, room, "/event/"+url.PathEscape(otherMsg)), alice.Token, "")
	wantError(t, r, 404, "M_NOT_FOUND", "event of another room")

	memberships := func(query string, who user) map[string]string {
		t.Helper()
		r := call(t, "GET", rurl(srv, room, "/members"+query), who.Token, "")
		mustStatus(t, r, 200, "members"+query)
		out := map[string]string{}
		for _, ev := range events(r.Body["chunk"]) {
			if ev["type"] != "m.room.member" {
				t.Errorf("members chunk has a %v event", ev["type"])
			}
			out[fmt.Sprint(ev["state_key"])] = fmt.Sprint(ev["content"].(map[string]any)["membership"])
		}
		return out
	}
	all := map[string]string{alice.ID: "join", bob.ID: "join", carol.ID: "leave", dave.ID: "invite"}
	if got := memberships("", bob); mustJSON(got) != mustJSON(all) {
		t.Errorf("members: %v, want %v", got, all)
	}
	if got := memberships("?membership=join", bob); mustJSON(got) != mustJSON(map[string]string{alice.ID: "join", bob.ID: "join"}) {
		t.Errorf("members?membership=join: %v", got)
	}
	if got := memberships("?not_membership=leave", bob); mustJSON(got) != mustJSON(map[string]string{alice.ID: "join", bob.ID: "join", dave.ID: "invite"}) {
		t.Errorf("members?not_membership=leave: %v", got)
	}
	if got := memberships("?membership=invite", bob); mustJSON(got) != mustJSON(map[string]string{dave.ID: "invite"}) {
		t.Errorf("members?membership=invite: %v", got)
	}
	if got := memberships("?at="+url.QueryEscape(beforeBob), bob); mustJSON(got) != mustJSON(map[string]string{alice.ID: "join"}) {
		t.Errorf("members?at=<token before bob joined>: %v", got)
	}
	r = call(t, "GET", rurl(srv, room, "/members?membership=dancing"), bob.Token, "")
	wantError(t, r, 400, "M_INVALID_PARAM", "unknown membership filter")
	r = call(t, "GET", rurl(srv, room, "/members?at=garbage"), bob.Token, "")
	wantError(t, r, 400, "M_INVALID_PARAM", "malformed at token")

	r = call(t, "GET", rurl(srv, room, "/joined_members"), bob.Token, "")
	mustStatus(t, r, 200, "joined_members")
	joined, _ := r.Body["joined"].(map[string]any)
	if len(joined) != 2 || joined[alice.ID] == nil || joined[bob.ID].(map[string]any)["display_name"] != "bob" {
		t.Errorf("joined_members: %s", r.Raw)
	}
	r = call(t, "GET", rurl(srv, room, "/joined_members"), dave.Token, "")
	wantError(t, r, 403, "M_FORBIDDEN", "joined_members by an invited user")

	if got := joinedRooms(t, srv, alice); len(got) != 2 || !containsStr(got, room) || !containsStr(got, other) {
		t.Errorf("alice's joined_rooms: %v", got)
	}
	if got := joinedRooms(t, srv, carol); len(got) != 0 {
		t.Errorf("carol left; joined_rooms %v", got)
	}
	if got := joinedRooms(t, srv, dave); len(got) != 0 {
		t.Errorf("dave is only invited; joined_rooms %v", got)
	}
}

func TestRoomRedaction(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := us[0], us[1], us[2], us[3]
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, srv, bob, room)
	joinRoom(t, srv, carol, room)
	sendText(t, srv, alice, room, "avant")
	secret := sendEvent(t, srv, bob, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "secret", "org.example.extra": "confidential"})
	sendText(t, srv, alice, room, "après")
	eventURL := func(id string) string { return rurl(srv, room, "/event/"+url.PathEscape(id)) }
	redactURL := func(id, txn string) string { return rurl(srv, room, "/redact/"+url.PathEscape(id)+"/"+txn) }

	before := stateIDs(t, srv, alice, room)
	r := call(t, "PUT", redactURL(secret, nextTxn()), carol.Token, `{"reason":"je peux ?"}`)
	if wantError(t, r, 403, "M_FORBIDDEN", "redacting another's event without power") && !strings.Contains(errMessage(r), "50") {
		t.Errorf("the refusal must name the power level needed (50): %s", r.Raw)
	}
	r = call(t, "PUT", redactURL(secret, nextTxn()), dave.Token, `{}`)
	wantError(t, r, 403, "M_FORBIDDEN", "a non-member redacts")
	r = call(t, "PUT", redactURL("$nonexistent", nextTxn()), alice.Token, `{}`)
	wantError(t, r, 404, "M_NOT_FOUND", "redacting an unknown event")
	r = call(t, "PUT", redactURL(secret, nextTxn()), alice.Token, `{"reason":5}`)
	wantError(t, r, 400, "M_BAD_JSON", "reason not a string")
	sameState(t, before, stateIDs(t, srv, alice, room), "refused redactions")
	r = call(t, "GET", eventURL(secret), bob.Token, "")
	if r.Body["content"].(map[string]any)["body"] != "secret" {
		t.Fatalf("a refused redaction removed content: %s", r.Raw)
	}
	if got := bodies(pageAll(t, srv, alice, room, "b", 50, "")); mustJSON(got) != `["après","secret","avant"]` {
		t.Fatalf("refused redactions added events: %v", got)
	}

	// Carol redacts her own message: no power needed.
	own := sendText(t, srv, carol, room, "oups")
	r = call(t, "PUT", redactURL(own, nextTxn()), carol.Token, `{}`)
	mustStatus(t, r, 200, "redacting one's own event")

	// Alice (power 100) redacts Bob's message; a retransmission is idempotent.
	txn := nextTxn()
	r = call(t, "PUT", redactURL(secret, txn), alice.Token, `{"reason":"spam"}`)
	mustStatus(t, r, 200, "moderator redacts")
	redaction := r.Body["event_id"].(string)
	r = call(t, "PUT", redactURL(secret, txn), alice.Token, `{"reason":"spam"}`)
	if r.Status != 200 || r.Body["event_id"] != redaction {
		t.Errorf("redaction retransmission: %d %s", r.Status, r.Raw)
	}
	r = call(t, "GET", eventURL(redaction), bob.Token, "")
	if r.Status != 200 || r.Body["type"] != "m.room.redaction" || r.Body["redacts"] != secret || r.Body["content"].(map[string]any)["reason"] != "spam" {
		t.Errorf("the redaction event: %d %s", r.Status, r.Raw)
	}

	checkRedacted := func(where string, ev map[string]any) {
		t.Helper()
		if content, _ := ev["content"].(map[string]any); len(content) != 0 {
			t.Errorf("%s: redacted event still has content %v", where, content)
		}
		u, _ := ev["unsigned"].(map[string]any)
		because, _ := u["redacted_because"].(map[string]any)
		if because == nil || because["event_id"] != redaction || because["type"] != "m.room.redaction" || because["sender"] != alice.ID {
			t.Errorf("%s: unsigned.redacted_because %v", where, u)
		}
		if ev["sender"] != bob.ID || ev["type"] != "m.room.message" {
			t.Errorf("%s: redaction must keep sender and type: %v", where, ev)
		}
	}
	for _, who := range []user{alice, bob, carol} {
		r := call(t, "GET", eventURL(secret), who.Token, "")
		mustStatus(t, r, 200, "GET redacted event")
		checkRedacted("/event as "+who.ID, r.Body)
		found := false
		for _, dir := range []string{"b", "f"} {
			for _, ev := range pageAll(t, srv, who, room, dir, 3, "") {
				if ev["event_id"] == secret {
					found = true
					checkRedacted("/messages dir="+dir+" as "+who.ID, ev)
				}
				if strings.Contains(mustJSON(ev["content"]), "confidential") {
					t.Errorf("/messages as %s serves the redacted content: %v", who.ID, ev)
				}
			}
		}
		if !found {
			t.Errorf("/messages as %s lost the redacted event", who.ID)
		}
		r = call(t, "GET", rurl(srv, room, "/context/"+url.PathEscape(secret)+"?limit=4"), who.Token, "")
		mustStatus(t, r, 200, "context of the redacted event")
		checkRedacted("/context event as "+who.ID, r.Body["event"].(map[string]any))
		if strings.Contains(r.Raw, "confidential") || strings.Contains(r.Raw, `"secret"`) {
			t.Errorf("/context as %s serves the redacted content: %s", who.ID, r.Raw)
		}
	}
	// Redacted content is not served as part of another event's context either.
	r = call(t, "GET", rurl(srv, room, "/context/"+url.PathEscape(own)+"?limit=10"), bob.Token, "")
	if strings.Contains(r.Raw, "confidential") {
		t.Errorf("/context of a neighbour serves the redacted content: %s", r.Raw)
	}

	// With the power granted, Carol may redact others' events.
	putState(t, srv, alice, room, "m.room.power_levels", "", map[string]any{"users": map[string]any{alice.ID: 100, carol.ID: 50}})
	another := sendText(t, srv, bob, room, "encore")
	r = call(t, "PUT", redactURL(another, nextTxn()), carol.Token, `{}`)
	mustStatus(t, r, 200, "redaction with power")

	// Redacting a state event strips its content from /state too.
	topic := putState(t, srv, alice, room, "m.room.topic", "", map[string]any{"topic": "sensible"})
	r = call(t, "PUT", redactURL(topic, nextTxn()), alice.Token, `{}`)
	mustStatus(t, r, 200, "redact the topic")
	if got := stateContent(t, srv, bob, room, "m.room.topic", ""); len(got) != 0 {
		t.Errorf("redacted topic still served by GET /state/m.room.topic: %v", got)
	}
	for _, ev := range roomState(t, srv, bob, room) {
		if ev["type"] == "m.room.topic" && len(ev["content"].(map[string]any)) != 0 {
			t.Errorf("redacted topic still served by GET /state: %v", ev)
		}
	}

	// An event ID of another room is unknown here.
	other := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	otherMsg := sendText(t, srv, alice, other, "ailleurs")
	r = call(t, "PUT", redactURL(otherMsg, nextTxn()), alice.Token, `{}`)
	wantError(t, r, 404, "M_NOT_FOUND", "redacting another room's event through this room")
	r = call(t, "GET", rurl(srv, other, "/event/"+url.PathEscape(otherMsg)), alice.Token, "")
	if r.Body["content"].(map[string]any)["body"] != "ailleurs" {
		t.Errorf("cross-room redaction removed content: %s", r.Raw)
	}
}
