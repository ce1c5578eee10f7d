package clientapi_test

// HTTP tests of the room endpoints (issue 3) through a real server: every
// endpoint, its forbidden and bad-input cases, and after each refusal a check
// that nothing changed. Spec: client-server-api/_index.md ("Rooms", "Room
// membership", "Events", "History visibility", "Room upgrades").

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

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
