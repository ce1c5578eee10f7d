package clientapi_test

// HTTP tests of the room endpoints (issue 3) through a real server: every
// endpoint, its forbidden and bad-input cases, and after each refusal a check
// that nothing changed. Spec: client-server-api/_index.md ("Rooms", "Room
// membership", "Events", "History visibility", "Room upgrades").

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
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
		{"power levels leave the creator powerless", `{"power_level_content_override":{"users":{}}}`, 400, "M_INVALID_ROOM_STATE"},
		{"unsupported room version", `{"room_version":"999"}`, 400, "M_UNSUPPORTED_ROOM_VERSION"},
		{"unsupported room version name", `{"room_version":"org.example.custom"}`, 400, "M_UNSUPPORTED_ROOM_VERSION"},
		{"power levels with a string", `{"power_level_content_override":{"ban":"fifty"}}`, 400, "M_BAD_JSON"},
		{"power levels with a string user level", `{"power_level_content_override":{"users":{"@alice:localhost":"high"}}}`, 400, "M_BAD_JSON"},
		{"power levels users not an object", `{"power_level_content_override":{"users":[1]}}`, 400, "M_BAD_JSON"},
		{"invitee without @", `{"invite":["bob"]}`, 400, "M_INVALID_PARAM"},
		{"invitee without server", `{"invite":["@bob"]}`, 400, "M_INVALID_PARAM"},
		{"invitee without an account", `{"invite":["@ghost:localhost"]}`, 0, ""},
		{"invitee on an unreachable server", `{"invite":["@bob:example.org"]}`, 0, ""},
		{"unknown preset", `{"preset":"secret_chat"}`, 400, ""},
		{"unknown visibility", `{"visibility":"hidden"}`, 400, ""},
		{"not JSON", `{"name":`, 400, "M_NOT_JSON"},
		{"name not a string", `{"name":5}`, 400, "M_BAD_JSON"},
	} {
		r := call(t, "POST", srv.URL+c+"/createRoom", alice.Token, tc.body)
		if tc.status == 0 && r.Status >= 400 && r.Status < 500 {
			// any client error will do
		} else if r.Status != tc.status || (tc.code != "" && r.errcode() != tc.code) {
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
	// A createRoom refused half-way leaves no alias behind.
	r = call(t, "POST", srv.URL+c+"/createRoom", alice.Token, `{"room_alias_name":"orphan","power_level_content_override":{"users":{}}}`)
	wantError(t, r, 400, "M_INVALID_ROOM_STATE", "createRoom whose power levels leave the creator powerless")
	if r := call(t, "GET", aliasURL(srv, "#orphan:localhost"), alice.Token, ""); r.Status != 404 {
		t.Errorf("a refused createRoom left its alias: %d %s", r.Status, r.Raw)
	}
	if got := joinedRooms(t, srv, alice); mustJSON(got) != mustJSON(rooms) {
		t.Errorf("a refused createRoom left a room: %v", got)
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

func TestRoomMessages(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, srv, bob, room)
	var want []string
	for i := 0; i < 25; i++ {
		b := fmt.Sprintf("m%02d", i)
		sendText(t, srv, alice, room, b)
		want = append(want, b)
		if i%5 == 0 {
			sendEvent(t, srv, bob, room, "org.example.ping", map[string]any{"n": i})
		}
	}
	msgURL := func(q string) string { return rurl(srv, room, "/messages"+q) }

	t.Run("both directions, no gaps or duplicates", func(t *testing.T) {
		back := pageAll(t, srv, alice, room, "b", 7, "")
		fwd := pageAll(t, srv, alice, room, "f", 7, "")
		if got := bodies(back); mustJSON(got) != mustJSON(reversed(want)) {
			t.Errorf("backwards: %v", got)
		}
		if got := bodies(fwd); mustJSON(got) != mustJSON(want) {
			t.Errorf("forwards: %v", got)
		}
		if mustJSON(eventIDs(back)) != mustJSON(reversed(eventIDs(fwd))) {
			t.Errorf("backwards and forwards do not list the same events")
		}
		ids := map[string]bool{}
		for _, id := range eventIDs(fwd) {
			if ids[id] {
				t.Errorf("event %s twice", id)
			}
			ids[id] = true
		}
		if len(fwd) == 0 || fwd[0]["type"] != "m.room.create" || back[len(back)-1]["type"] != "m.room.create" {
			t.Errorf("history must start at m.room.create")
		}
		for _, limit := range []int{1, 3, 1000} {
			if got := eventIDs(pageAll(t, srv, alice, room, "b", limit, "")); mustJSON(got) != mustJSON(eventIDs(back)) {
				t.Errorf("paging backwards by %d gives another history", limit)
			}
		}
	})

	t.Run("limit and tokens", func(t *testing.T) {
		r := call(t, "GET", msgURL("?dir=b&limit=3"), alice.Token, "")
		mustStatus(t, r, 200, "messages")
		if got := bodies(events(r.Body["chunk"])); mustJSON(got) != `["m24","m23","m22"]` {
			t.Errorf("last three: %v", got)
		}
		if r.Body["start"] == nil || r.Body["end"] == nil {
			t.Errorf("start and end tokens: %s", r.Raw)
		}
		r = call(t, "GET", msgURL("?dir=b"), alice.Token, "")
		if n := len(events(r.Body["chunk"])); n != 10 {
			t.Errorf("default limit: %d events, want 10", n)
		}

		// Two backward pages: A is the end of the first, B of the second.
		p1 := call(t, "GET", msgURL("?dir=b&limit=5"), alice.Token, "")
		a := p1.Body["end"].(string)
		p2 := call(t, "GET", msgURL("?dir=b&limit=5&from="+url.QueryEscape(a)), alice.Token, "")
		b := p2.Body["end"].(string)
		page2 := eventIDs(events(p2.Body["chunk"]))
		if p2.Body["start"] != a {
			t.Errorf("start must echo from: %v vs %s", p2.Body["start"], a)
		}
		// to: the events between A and B are exactly the second page.
		r = call(t, "GET", msgURL("?dir=b&limit=50&from="+url.QueryEscape(a)+"&to="+url.QueryEscape(b)), alice.Token, "")
		if got := eventIDs(events(r.Body["chunk"])); mustJSON(got) != mustJSON(page2) {
			t.Errorf("dir=b from=A to=B must return the page between A and B\n got %v\nwant %v", got, page2)
		}
		// Same for forwards.
		f1 := call(t, "GET", msgURL("?dir=f&limit=4"), alice.Token, "")
		fEnd := f1.Body["end"].(string)
		fPage := eventIDs(events(f1.Body["chunk"]))
		r = call(t, "GET", msgURL("?dir=f&limit=50&from="+url.QueryEscape(f1.Body["start"].(string))+"&to="+url.QueryEscape(fEnd)), alice.Token, "")
		if got := eventIDs(events(r.Body["chunk"])); mustJSON(got) != mustJSON(fPage) {
			t.Errorf("dir=f from=start to=end must return the same page\n got %v\nwant %v", got, fPage)
		}
		// Reversing direction at a token: forwards from B gives page 2 again, oldest first.
		r = call(t, "GET", msgURL("?dir=f&limit=5&from="+url.QueryEscape(b)), alice.Token, "")
		if got := eventIDs(events(r.Body["chunk"])); mustJSON(got) != mustJSON(reversed(page2)) {
			t.Errorf("dir=f from the end of a backward page must start with that page's oldest event\n got %v\nwant %v", got, reversed(page2))
		}
	})

	t.Run("filters", func(t *testing.T) {
		for _, tc := range []struct {
			filter string
			check  func([]map[string]any) string
		}{
			{`{"types":["org.example.ping"]}`, func(evs []map[string]any) string {
				return countTypes(evs, map[string]int{"org.example.ping": 5})
			}},
			{`{"types":["org.example.*"]}`, func(evs []map[string]any) string {
				return countTypes(evs, map[string]int{"org.example.ping": 5})
			}},
			{`{"not_types":["m.room.message","m.room.member"]}`, func(evs []map[string]any) string {
				for _, ev := range evs {
					if ev["type"] == "m.room.message" || ev["type"] == "m.room.member" {
						return fmt.Sprint("not_types let through ", ev["type"])
					}
				}
				if len(evs) < 5+5 { // pings and the room's other state
					return fmt.Sprint("not_types removed too much: ", len(evs))
				}
				return ""
			}},
			{`{"senders":["` + bob.ID + `"]}`, func(evs []map[string]any) string {
				return countTypes(evs, map[string]int{"org.example.ping": 5, "m.room.member": 1})
			}},
			{`{"types":["m.room.message"],"not_senders":["` + alice.ID + `"]}`, func(evs []map[string]any) string {
				return countTypes(evs, map[string]int{})
			}},
		} {
			for _, dir := range []string{"b", "f"} {
				evs := pageAll(t, srv, alice, room, dir, 2, "&filter="+url.QueryEscape(tc.filter))
				if msg := tc.check(evs); msg != "" {
					t.Errorf("filter %s dir=%s: %s", tc.filter, dir, msg)
				}
			}
		}
		r := call(t, "GET", msgURL("?dir=b&filter="+url.QueryEscape(`{"types":["m.room.message"]}`)), alice.Token, "")
		if got := bodies(events(r.Body["chunk"])); len(got) != 10 || got[0] != "m24" {
			t.Errorf("types filter, default limit: %v", got)
		}
		r = call(t, "GET", msgURL("?dir=b&filter="+url.QueryEscape(`{"limit":2,"types":["m.room.message"]}`)), alice.Token, "")
		if got := bodies(events(r.Body["chunk"])); mustJSON(got) != `["m24","m23"]` {
			t.Errorf("filter limit: %v", got)
		}
		if got := bodies(pageAll(t, srv, alice, room, "b", 4, "&filter="+url.QueryEscape(`{"types":["m.room.message"]}`))); mustJSON(got) != mustJSON(reversed(want)) {
			t.Errorf("paging with a types filter: %v", got)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for q, code := range map[string]string{
			"?limit=5":             "",
			"?dir=x":               "",
			"?dir=b&from=garbage":  "M_INVALID_PARAM",
			"?dir=b&to=garbage":    "M_INVALID_PARAM",
			"?dir=b&limit=-1":      "M_INVALID_PARAM",
			"?dir=b&limit=many":    "M_INVALID_PARAM",
			"?dir=b&filter=%7Bbad": "",
			"?dir=b&filter=" + "%7B%22types%22%3A5%7D": "",
		} {
			r := call(t, "GET", msgURL(q), alice.Token, "")
			if r.Status != 400 || (code != "" && r.errcode() != code) {
				t.Errorf("messages%s: want 400 %s, got %d %s", q, code, r.Status, r.Raw)
			}
		}
		r := call(t, "GET", msgURL("?dir=b"), carol.Token, "")
		wantError(t, r, 403, "M_FORBIDDEN", "messages by a non-member")
		r = call(t, "GET", rurl(srv, "!nowhere:localhost", "/messages?dir=b"), alice.Token, "")
		wantError(t, r, 404, "M_NOT_FOUND", "messages of an unknown room")
	})
}

// countTypes checks that evs holds exactly want[type] events of each type.
func countTypes(evs []map[string]any, want map[string]int) string {
	got := map[string]int{}
	for _, ev := range evs {
		got[fmt.Sprint(ev["type"])]++
	}
	if mustJSON(got) != mustJSON(want) {
		return fmt.Sprintf("types %v, want %v", got, want)
	}
	return ""
}

func TestRoomContext(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "carol")
	alice, carol := us[0], us[1]
	room := createRoom(t, srv, alice, map[string]any{"preset": "private_chat", "name": "Contexte"})
	ids := map[string]string{}
	for i := 0; i <= 10; i++ {
		b := fmt.Sprintf("c%d", i)
		ids[b] = sendText(t, srv, alice, room, b)
	}
	ctxURL := func(id, q string) string { return rurl(srv, room, "/context/"+url.PathEscape(id)+q) }

	r := call(t, "GET", ctxURL(ids["c5"], "?limit=4"), alice.Token, "")
	mustStatus(t, r, 200, "context")
	ev := r.Body["event"].(map[string]any)
	if ev["event_id"] != ids["c5"] || ev["content"].(map[string]any)["body"] != "c5" {
		t.Errorf("context event: %v", ev)
	}
	if got := bodies(events(r.Body["events_before"])); mustJSON(got) != `["c4","c3"]` {
		t.Errorf("events_before (newest first): %v", got)
	}
	if got := bodies(events(r.Body["events_after"])); mustJSON(got) != `["c6","c7"]` {
		t.Errorf("events_after (oldest first): %v", got)
	}
	stateTypes := map[string]bool{}
	for _, s := range events(r.Body["state"]) {
		stateTypes[fmt.Sprint(s["type"])] = true
	}
	if !stateTypes["m.room.create"] || !stateTypes["m.room.name"] || !stateTypes["m.room.member"] {
		t.Errorf("context state: %v", stateTypes)
	}
	start, _ := r.Body["start"].(string)
	end, _ := r.Body["end"].(string)
	m := call(t, "GET", rurl(srv, room, "/messages?dir=b&limit=2&from="+url.QueryEscape(start)), alice.Token, "")
	if got := bodies(events(m.Body["chunk"])); mustJSON(got) != `["c2","c1"]` {
		t.Errorf("messages backwards from the context's start: %v", got)
	}
	m = call(t, "GET", rurl(srv, room, "/messages?dir=f&limit=2&from="+url.QueryEscape(end)), alice.Token, "")
	if got := bodies(events(m.Body["chunk"])); mustJSON(got) != `["c8","c9"]` {
		t.Errorf("messages forwards from the context's end: %v", got)
	}

	r = call(t, "GET", ctxURL(ids["c10"], "?limit=4"), alice.Token, "")
	if got := bodies(events(r.Body["events_after"])); r.Status != 200 || len(got) != 0 {
		t.Errorf("context of the last event: %d events_after %v", r.Status, got)
	}
	r = call(t, "GET", ctxURL(ids["c5"], "?limit=0"), alice.Token, "")
	if r.Status != 200 || len(events(r.Body["events_before"])) != 0 || len(events(r.Body["events_after"])) != 0 {
		t.Errorf("context limit=0: %d %s", r.Status, r.Raw)
	}
	r = call(t, "GET", ctxURL(ids["c5"], "?limit=4&filter="+url.QueryEscape(`{"types":["m.room.name"]}`)), alice.Token, "")
	if r.Status != 200 || len(events(r.Body["events_after"])) != 0 || len(events(r.Body["events_before"])) != 1 {
		t.Errorf("context with a filter: %d %s", r.Status, r.Raw)
	}
	r = call(t, "GET", ctxURL("$nonexistent", ""), alice.Token, "")
	wantError(t, r, 404, "M_NOT_FOUND", "context of an unknown event")
	r = call(t, "GET", ctxURL(ids["c5"], "?limit=-1"), alice.Token, "")
	wantError(t, r, 400, "M_INVALID_PARAM", "negative context limit")
	r = call(t, "GET", ctxURL(ids["c5"], ""), carol.Token, "")
	if r.Status != 403 && r.Status != 404 {
		t.Errorf("context by a non-member: %d %s", r.Status, r.Raw)
	}
	// The answer names the event ID (which may contain any letters); it
	// must not carry the message itself.
	if strings.Contains(r.Raw, `"body"`) || strings.Contains(r.Raw, `"events_before"`) {
		t.Errorf("context leaks to a non-member: %s", r.Raw)
	}
}

func TestRoomTimestampToEvent(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "carol")
	alice, carol := us[0], us[1]
	room := createRoom(t, srv, alice, map[string]any{"preset": "private_chat"})
	var ids []string
	var ts []int64
	for i := 0; i < 3; i++ {
		time.Sleep(30 * time.Millisecond)
		id := sendText(t, srv, alice, room, fmt.Sprint("t", i))
		r := call(t, "GET", rurl(srv, room, "/event/"+url.PathEscape(id)), alice.Token, "")
		ids = append(ids, id)
		ts = append(ts, int64(r.Body["origin_server_ts"].(float64)))
		time.Sleep(30 * time.Millisecond)
	}
	find := func(who user, q string) response {
		return call(t, "GET", v1url(srv, room, "/timestamp_to_event"+q), who.Token, "")
	}
	for _, tc := range []struct {
		ts   int64
		dir  string
		want int
	}{
		{ts[1], "f", 1}, {ts[1] - 1, "f", 1}, {ts[1] + 1, "f", 2},
		{ts[1], "b", 1}, {ts[1] + 1, "b", 1}, {ts[1] - 1, "b", 0},
		{ts[2] + 5, "b", 2},
	} {
		r := find(alice, fmt.Sprintf("?ts=%d&dir=%s", tc.ts, tc.dir))
		if r.Status != 200 || r.Body["event_id"] != ids[tc.want] || int64(r.Body["origin_server_ts"].(float64)) != ts[tc.want] {
			t.Errorf("ts=%d dir=%s: %d %s, want t%d (%s)", tc.ts, tc.dir, r.Status, r.Raw, tc.want, ids[tc.want])
		}
	}
	r := find(alice, fmt.Sprintf("?ts=%d&dir=f", ts[2]+100000))
	wantError(t, r, 404, "M_NOT_FOUND", "no event after the future")
	r = find(alice, "?ts=1&dir=b")
	wantError(t, r, 404, "M_NOT_FOUND", "no event before 1970")
	for _, q := range []string{"?ts=1", "?dir=f", "?ts=abc&dir=f", "?ts=1&dir=x"} {
		if r := find(alice, q); r.Status != 400 {
			t.Errorf("timestamp_to_event%s: %d %s", q, r.Status, r.Raw)
		}
	}
	r = find(carol, fmt.Sprintf("?ts=%d&dir=f", ts[0]))
	wantError(t, r, 403, "M_FORBIDDEN", "timestamp_to_event by a non-member")
}

func TestRoomRelations(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	room := createRoom(t, srv, alice, map[string]any{"preset": "private_chat"})
	inviteUser(t, srv, alice, room, bob.ID)
	joinRoom(t, srv, bob, room)
	parent := sendText(t, srv, alice, room, "parent")
	annotate := func(u user, key string) string {
		return sendEvent(t, srv, u, room, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": parent, "key": key}})
	}
	r1 := annotate(bob, "👍")
	e1 := sendEvent(t, srv, alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "* parent (edit)",
		"m.new_content": map[string]any{"msgtype": "m.text", "body": "parent (edit)"}, "m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": parent}})
	r2 := annotate(alice, "🎉")
	sendText(t, srv, bob, room, "unrelated")
	t1 := sendEvent(t, srv, bob, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "in thread",
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": parent}})
	r3 := annotate(bob, "❤")
	e2 := sendEvent(t, srv, alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "* parent (edit 2)",
		"m.new_content": map[string]any{"msgtype": "m.text", "body": "parent (edit 2)"}, "m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": parent}})
	chrono := []string{r1, e1, r2, t1, r3, e2}

	rel := func(who user, path, q string) response {
		t.Helper()
		return call(t, "GET", v1url(srv, room, "/relations/"+url.PathEscape(parent)+path+q), who.Token, "")
	}
	// all pages through /relations and returns the event IDs.
	all := func(path, q string, limit int) []string {
		t.Helper()
		var out []string
		from := ""
		for i := 0; i < 50; i++ {
			qq := fmt.Sprintf("?limit=%d%s", limit, q)
			if from != "" {
				qq += "&from=" + url.QueryEscape(from)
			}
			r := rel(bob, path, qq)
			mustStatus(t, r, 200, "relations"+path+qq)
			chunk := events(r.Body["chunk"])
			if len(chunk) > limit {
				t.Fatalf("%d events with limit %d", len(chunk), limit)
			}
			out = append(out, eventIDs(chunk)...)
			next, _ := r.Body["next_batch"].(string)
			if next == "" {
				return out
			}
			from = next
		}
		t.Fatalf("relations pagination does not end")
		return nil
	}

	r := rel(bob, "", "")
	mustStatus(t, r, 200, "relations")
	if got := eventIDs(events(r.Body["chunk"])); mustJSON(got) != mustJSON(reversed(chrono)) {
		t.Errorf("all relations (newest first)\n got %v\nwant %v", got, reversed(chrono))
	}
	if got := all("", "&dir=f", 50); mustJSON(got) != mustJSON(chrono) {
		t.Errorf("relations dir=f: %v", got)
	}
	for _, limit := range []int{1, 2, 4} {
		if got := all("", "", limit); mustJSON(got) != mustJSON(reversed(chrono)) {
			t.Errorf("relations paged by %d: %v", limit, got)
		}
		if got := all("", "&dir=f", limit); mustJSON(got) != mustJSON(chrono) {
			t.Errorf("relations dir=f paged by %d: %v", limit, got)
		}
	}
	if got := all("/m.annotation", "", 2); mustJSON(got) != mustJSON([]string{r3, r2, r1}) {
		t.Errorf("relations/m.annotation: %v", got)
	}
	if got := all("/m.annotation/m.reaction", "", 50); mustJSON(got) != mustJSON([]string{r3, r2, r1}) {
		t.Errorf("relations/m.annotation/m.reaction: %v", got)
	}
	if got := all("/m.annotation/m.room.message", "", 50); len(got) != 0 {
		t.Errorf("relations/m.annotation/m.room.message: %v", got)
	}
	if got := all("/m.replace", "", 50); mustJSON(got) != mustJSON([]string{e2, e1}) {
		t.Errorf("relations/m.replace: %v", got)
	}
	if got := all("/m.thread/m.room.message", "", 50); mustJSON(got) != mustJSON([]string{t1}) {
		t.Errorf("relations/m.thread/m.room.message: %v", got)
	}
	// to stops before the given token.
	r = rel(bob, "", "?dir=f&limit=2")
	next, _ := r.Body["next_batch"].(string)
	r = rel(bob, "", "?dir=f&limit=50&from="+url.QueryEscape(next))
	rest := eventIDs(events(r.Body["chunk"]))
	if mustJSON(rest) != mustJSON(chrono[2:]) {
		t.Errorf("relations dir=f from next_batch: %v", rest)
	}

	// Errors.
	r = call(t, "GET", v1url(srv, room, "/relations/"+url.PathEscape("$nonexistent")), bob.Token, "")
	wantError(t, r, 404, "M_NOT_FOUND", "relations of an unknown event")
	r = rel(carol, "", "")
	if r.Status != 403 && r.Status != 404 {
		t.Errorf("relations by a non-member: %d %s", r.Status, r.Raw)
	}
	if strings.Contains(r.Raw, r1) {
		t.Errorf("relations leak to a non-member: %s", r.Raw)
	}
	for _, q := range []string{"?dir=x", "?limit=-1", "?from=garbage"} {
		if r := rel(bob, "", q); r.Status != 400 {
			t.Errorf("relations%s: %d %s", q, r.Status, r.Raw)
		}
	}

	// Spec "Relationships": when a child event is redacted the relationship
	// is broken, so the server must no longer list it.
	red := call(t, "PUT", rurl(srv, room, "/redact/"+url.PathEscape(r1)+"/"+nextTxn()), bob.Token, `{}`)
	mustStatus(t, red, 200, "redact a reaction")
	if got := all("/m.annotation", "", 50); mustJSON(got) != mustJSON([]string{r3, r2}) {
		t.Errorf("a redacted annotation is still listed as a relation: %v", got)
	}
	// A redacted parent keeps its children.
	red = call(t, "PUT", rurl(srv, room, "/redact/"+url.PathEscape(parent)+"/"+nextTxn()), alice.Token, `{}`)
	mustStatus(t, red, 200, "redact the parent")
	if got := all("/m.replace", "", 50); mustJSON(got) != mustJSON([]string{e2, e1}) {
		t.Errorf("children of a redacted parent: %v", got)
	}
}

func TestRoomAliases(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	private := createRoom(t, srv, alice, map[string]any{"preset": "private_chat"})
	joinRoom(t, srv, bob, room)
	put := func(who user, alias, body string) response {
		return call(t, "PUT", aliasURL(srv, alias), who.Token, body)
	}
	resolves := func(alias string) string {
		t.Helper()
		r := call(t, "GET", aliasURL(srv, alias), alice.Token, "")
		if r.Status == 404 {
			return ""
		}
		mustStatus(t, r, 200, "GET alias")
		return fmt.Sprint(r.Body["room_id"])
	}
	aliases := func(who user, roomID string) response {
		return call(t, "GET", rurl(srv, roomID, "/aliases"), who.Token, "")
	}

	r := put(bob, "#bureau:localhost", mustJSON(map[string]string{"room_id": room}))
	mustStatus(t, r, 200, "member creates an alias")
	r = call(t, "GET", aliasURL(srv, "#bureau:localhost"), carol.Token, "")
	if r.Status != 200 || r.Body["room_id"] != room || mustJSON(r.Body["servers"]) != `["localhost"]` {
		t.Errorf("GET alias: %d %s", r.Status, r.Raw)
	}
	r = aliases(alice, room)
	if r.Status != 200 || mustJSON(r.Body["aliases"]) != `["#bureau:localhost"]` {
		t.Errorf("GET /rooms/{id}/aliases: %d %s", r.Status, r.Raw)
	}

	for _, tc := range []struct {
		name   string
		who    user
		alias  string
		body   string
		status int
		code   string
	}{
		{"alias already taken", alice, "#bureau:localhost", mustJSON(map[string]string{"room_id": private}), 409, "M_UNKNOWN"},
		{"non-member", carol, "#carol:localhost", mustJSON(map[string]string{"room_id": room}), 403, "M_FORBIDDEN"},
		{"other server", alice, "#loin:example.org", mustJSON(map[string]string{"room_id": room}), 400, "M_INVALID_PARAM"},
		{"no #", alice, "bureau2:localhost", mustJSON(map[string]string{"room_id": room}), 400, "M_INVALID_PARAM"},
		{"no server", alice, "#bureau2", mustJSON(map[string]string{"room_id": room}), 400, "M_INVALID_PARAM"},
		{"unknown room", alice, "#vide:localhost", `{"room_id":"!nowhere:localhost"}`, 404, "M_NOT_FOUND"},
		{"no room_id", alice, "#vide2:localhost", `{}`, 400, "M_BAD_JSON"},
		{"room_id not a string", alice, "#vide3:localhost", `{"room_id":5}`, 400, "M_BAD_JSON"},
	} {
		r := put(tc.who, tc.alias, tc.body)
		wantError(t, r, tc.status, tc.code, tc.name)
		if tc.name == "alias already taken" {
			if got := resolves(tc.alias); got != room {
				t.Errorf("%s: the alias now points at %s", tc.name, got)
			}
		} else if strings.HasPrefix(tc.alias, "#") && strings.HasSuffix(tc.alias, ":localhost") && resolves(tc.alias) != "" {
			t.Errorf("%s: the alias was created", tc.name)
		}
	}
	r = call(t, "GET", aliasURL(srv, "#nothing:localhost"), alice.Token, "")
	wantError(t, r, 404, "M_NOT_FOUND", "unknown alias")
	r = call(t, "GET", aliasURL(srv, "nothing"), alice.Token, "")
	wantError(t, r, 400, "M_INVALID_PARAM", "malformed alias")

	// /aliases: members only (the room is not world readable).
	r = aliases(carol, room)
	wantError(t, r, 403, "M_FORBIDDEN", "aliases by a non-member")
	r = aliases(alice, "!nowhere:localhost")
	wantError(t, r, 404, "M_NOT_FOUND", "aliases of an unknown room")

	// m.room.canonical_alias: the aliases must point at the room.
	putState(t, srv, alice, room, "m.room.canonical_alias", "", map[string]any{"alias": "#bureau:localhost"})
	put(alice, "#prive:localhost", mustJSON(map[string]string{"room_id": private}))
	r = call(t, "PUT", rurl(srv, room, "/state/m.room.canonical_alias/"), alice.Token, `{"alias":"#bureau:localhost","alt_aliases":["#prive:localhost"]}`)
	wantError(t, r, 400, "M_BAD_ALIAS", "alt alias of another room")
	if got := stateContent(t, srv, alice, room, "m.room.canonical_alias", ""); mustJSON(got) != `{"alias":"#bureau:localhost"}` {
		t.Errorf("canonical alias after a refusal: %v", got)
	}

	// Delete: not by a member without power, yes by the creator of the alias.
	r = call(t, "DELETE", aliasURL(srv, "#prive:localhost"), bob.Token, "")
	wantError(t, r, 403, "M_FORBIDDEN", "a stranger deletes an alias")
	if resolves("#prive:localhost") != private {
		t.Errorf("a refused delete removed the alias")
	}
	put(alice, "#alice-made:localhost", mustJSON(map[string]string{"room_id": room}))
	r = call(t, "DELETE", aliasURL(srv, "#alice-made:localhost"), bob.Token, "")
	wantError(t, r, 403, "M_FORBIDDEN", "a member without power deletes another's alias")
	if resolves("#alice-made:localhost") != room {
		t.Errorf("a refused delete removed the alias")
	}
	put(bob, "#bob-made:localhost", mustJSON(map[string]string{"room_id": room}))
	r = call(t, "DELETE", aliasURL(srv, "#bob-made:localhost"), alice.Token, "")
	mustStatus(t, r, 200, "a room admin deletes a member's alias")
	if resolves("#bob-made:localhost") != "" {
		t.Errorf("deleted alias still resolves")
	}
	r = call(t, "DELETE", aliasURL(srv, "#bureau:localhost"), bob.Token, "")
	mustStatus(t, r, 200, "the alias's creator deletes it")
	if resolves("#bureau:localhost") != "" {
		t.Errorf("deleted alias still resolves")
	}
	r = call(t, "DELETE", aliasURL(srv, "#alice-made:localhost"), alice.Token, "")
	mustStatus(t, r, 200, "delete")
	r = call(t, "DELETE", aliasURL(srv, "#bureau:localhost"), alice.Token, "")
	wantError(t, r, 404, "M_NOT_FOUND", "deleting an unknown alias")
	if r := aliases(alice, room); r.Status != 200 || mustJSON(r.Body["aliases"]) != `[]` {
		t.Errorf("aliases after deletes: %d %s", r.Status, r.Raw)
	}
	// The alias can be reused once deleted.
	mustStatus(t, put(alice, "#bureau:localhost", mustJSON(map[string]string{"room_id": private})), 200, "reuse a deleted alias")

	// Spec: GET /directory/room/{roomAlias} needs no access token.
	r = call(t, "GET", aliasURL(srv, "#bureau:localhost"), "", "")
	if r.Status != 200 || r.Body["room_id"] != private {
		t.Errorf("GET alias without a token: %d %s", r.Status, r.Raw)
	}
}

func TestRoomDirectory(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	alpha := createRoom(t, srv, alice, map[string]any{"visibility": "public", "preset": "public_chat", "name": "Alpha Télégraphe", "topic": "Le premier", "room_alias_name": "alpha"})
	beta := createRoom(t, srv, alice, map[string]any{"visibility": "public", "preset": "public_chat", "name": "Beta", "topic": "Sémaphore"})
	gamma := createRoom(t, srv, alice, map[string]any{"visibility": "public", "preset": "public_chat", "name": "Gamma"})
	hidden := createRoom(t, srv, alice, map[string]any{"preset": "public_chat", "name": "Alpha caché"})
	joinRoom(t, srv, bob, alpha)
	joinRoom(t, srv, carol, alpha)
	joinRoom(t, srv, bob, beta)
	joinRoom(t, srv, bob, hidden)

	list := func(r response) []string {
		var out []string
		for _, x := range events(r.Body["chunk"]) {
			out = append(out, fmt.Sprint(x["room_id"]))
		}
		return out
	}
	r := call(t, "GET", srv.URL+c+"/publicRooms", alice.Token, "")
	mustStatus(t, r, 200, "publicRooms")
	if got := list(r); mustJSON(got) != mustJSON([]string{alpha, beta, gamma}) {
		t.Errorf("publicRooms (largest first): %v, want %v", got, []string{alpha, beta, gamma})
	}
	if r.Body["total_room_count_estimate"] != float64(3) {
		t.Errorf("total_room_count_estimate %v", r.Body["total_room_count_estimate"])
	}
	first := events(r.Body["chunk"])[0]
	if first["name"] != "Alpha Télégraphe" || first["topic"] != "Le premier" || first["canonical_alias"] != "#alpha:localhost" ||
		first["num_joined_members"] != float64(3) || first["join_rule"] != "public" || first["world_readable"] != false || first["guest_can_join"] != false {
		t.Errorf("publicRooms entry: %v", first)
	}

	// Pagination, GET and POST.
	for _, method := range []string{"GET", "POST"} {
		var got []string
		since := ""
		for i := 0; i < 10; i++ {
			var r response
			if method == "GET" {
				q := "?limit=2"
				if since != "" {
					q += "&since=" + url.QueryEscape(since)
				}
				r = call(t, "GET", srv.URL+c+"/publicRooms"+q, alice.Token, "")
			} else {
				r = call(t, "POST", srv.URL+c+"/publicRooms", alice.Token, mustJSON(map[string]any{"limit": 2, "since": since}))
			}
			mustStatus(t, r, 200, method+" publicRooms page")
			page := list(r)
			if len(page) > 2 {
				t.Fatalf("%s publicRooms: %d rooms with limit 2", method, len(page))
			}
			if since != "" && r.Body["prev_batch"] == nil {
				t.Errorf("%s publicRooms: a later page needs prev_batch: %s", method, r.Raw)
			}
			got = append(got, page...)
			next, _ := r.Body["next_batch"].(string)
			if next == "" {
				break
			}
			since = next
		}
		if mustJSON(got) != mustJSON([]string{alpha, beta, gamma}) {
			t.Errorf("%s publicRooms paged by 2: %v", method, got)
		}
	}

	// Search.
	for term, want := range map[string][]string{
		"alpha":      {alpha},
		"TÉLÉGRAPHE": {alpha},
		"sémaphore":  {beta},
		"#alpha":     {alpha},
		"nothing":    {},
	} {
		r := call(t, "POST", srv.URL+c+"/publicRooms", alice.Token, mustJSON(map[string]any{"filter": map[string]string{"generic_search_term": term}}))
		mustStatus(t, r, 200, "search")
		got := list(r)
		if got == nil {
			got = []string{}
		}
		if mustJSON(got) != mustJSON(want) {
			t.Errorf("search %q: %v, want %v", term, got, want)
		}
	}
	r = call(t, "POST", srv.URL+c+"/publicRooms", alice.Token, `{"limit":1,"filter":{"generic_search_term":"a"}}`)
	if got := list(r); len(got) != 1 || r.Body["next_batch"] == nil {
		t.Errorf("search with a limit: %s", r.Raw)
	}

	// Errors.
	for _, q := range []string{"?limit=-1", "?since=garbage", "?limit=x"} {
		if r := call(t, "GET", srv.URL+c+"/publicRooms"+q, alice.Token, ""); r.Status != 400 {
			t.Errorf("publicRooms%s: %d %s", q, r.Status, r.Raw)
		}
	}
	if r := call(t, "POST", srv.URL+c+"/publicRooms", alice.Token, `{"limit":"two"}`); r.Status != 400 {
		t.Errorf("POST publicRooms with a bad limit: %d %s", r.Status, r.Raw)
	}
	r = call(t, "POST", srv.URL+c+"/publicRooms", "", `{}`)
	wantError(t, r, 401, "M_MISSING_TOKEN", "POST publicRooms without a token")

	// Publishing: GET and PUT /directory/list/room/{roomId}.
	vis := func(roomID, token string) response {
		return call(t, "GET", srv.URL+c+"/directory/list/room/"+url.PathEscape(roomID), token, "")
	}
	setVis := func(who user, roomID, body string) response {
		return call(t, "PUT", srv.URL+c+"/directory/list/room/"+url.PathEscape(roomID), who.Token, body)
	}
	if r := vis(hidden, alice.Token); r.Status != 200 || r.Body["visibility"] != "private" {
		t.Errorf("visibility of an unpublished room: %d %s", r.Status, r.Raw)
	}
	for name, r := range map[string]response{
		"a member without power publishes": setVis(bob, hidden, `{"visibility":"public"}`),
		"a non-member publishes":           setVis(carol, hidden, `{"visibility":"public"}`),
	} {
		wantError(t, r, 403, "M_FORBIDDEN", name)
	}
	if r := setVis(alice, hidden, `{"visibility":"secret"}`); r.Status != 400 {
		t.Errorf("unknown visibility: %d %s", r.Status, r.Raw)
	}
	if r := setVis(alice, hidden, `{}`); r.Status != 400 {
		t.Errorf("no visibility: %d %s", r.Status, r.Raw)
	}
	if r := vis(hidden, alice.Token); r.Body["visibility"] != "private" {
		t.Errorf("refused publications published the room: %s", r.Raw)
	}
	mustStatus(t, setVis(alice, hidden, `{"visibility":"public"}`), 200, "publish")
	if r := vis(hidden, alice.Token); r.Body["visibility"] != "public" {
		t.Errorf("after publishing: %s", r.Raw)
	}
	r = call(t, "GET", srv.URL+c+"/publicRooms", alice.Token, "")
	if got := list(r); !containsStr(got, hidden) || len(got) != 4 {
		t.Errorf("published room not listed: %v", got)
	}
	mustStatus(t, setVis(alice, alpha, `{"visibility":"private"}`), 200, "unpublish")
	r = call(t, "GET", srv.URL+c+"/publicRooms", alice.Token, "")
	if got := list(r); containsStr(got, alpha) || len(got) != 3 {
		t.Errorf("unpublished room still listed: %v", got)
	}
	wantError(t, vis("!nowhere:localhost", alice.Token), 404, "M_NOT_FOUND", "visibility of an unknown room")
	wantError(t, setVis(alice, "!nowhere:localhost", `{"visibility":"public"}`), 404, "M_NOT_FOUND", "publishing an unknown room")

	// Spec: GET /publicRooms and GET /directory/list/room/{roomId} need no access token.
	r = call(t, "GET", srv.URL+c+"/publicRooms", "", "")
	if r.Status != 200 || len(list(r)) != 3 {
		t.Errorf("GET publicRooms without a token: %d %s", r.Status, r.Raw)
	}
	if r := vis(hidden, ""); r.Status != 200 || r.Body["visibility"] != "public" {
		t.Errorf("GET directory/list/room without a token: %d %s", r.Status, r.Raw)
	}
}

func TestRoomUpgrade(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	old := createRoom(t, srv, alice, map[string]any{"visibility": "public", "preset": "public_chat", "name": "Ancienne", "topic": "Sujet",
		"room_alias_name": "salle", "initial_state": []map[string]any{
			{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}},
		}})
	joinRoom(t, srv, bob, old)
	putState(t, srv, alice, old, "m.room.power_levels", "", map[string]any{"users": map[string]any{alice.ID: 100, carol.ID: 20}, "state_default": 50, "events_default": 0, "invite": 0,
		"events": map[string]any{"m.room.tombstone": 100, "m.room.power_levels": 100}})
	up := func(who user, roomID, body string) response {
		return call(t, "POST", rurl(srv, roomID, "/upgrade"), who.Token, body)
	}

	before := stateIDs(t, srv, alice, old)
	r := up(bob, old, `{"new_version":"11"}`)
	if wantError(t, r, 403, "M_FORBIDDEN", "upgrade without power") && !strings.Contains(errMessage(r), "100") {
		t.Errorf("the refusal must name the power level needed (100): %s", r.Raw)
	}
	wantError(t, up(carol, old, `{"new_version":"11"}`), 403, "M_FORBIDDEN", "upgrade by a non-member")
	wantError(t, up(alice, old, `{"new_version":"999"}`), 400, "M_UNSUPPORTED_ROOM_VERSION", "upgrade to an unknown version")
	if r := up(alice, old, `{}`); r.Status != 400 {
		t.Errorf("upgrade without new_version: %d %s", r.Status, r.Raw)
	}
	wantError(t, up(alice, "!nowhere:localhost", `{"new_version":"11"}`), 404, "M_NOT_FOUND", "upgrade of an unknown room")
	sameState(t, before, stateIDs(t, srv, alice, old), "refused upgrades")
	if r := call(t, "GET", aliasURL(srv, "#salle:localhost"), alice.Token, ""); r.Body["room_id"] != old {
		t.Errorf("refused upgrades moved the alias: %s", r.Raw)
	}
	if got := joinedRooms(t, srv, alice); len(got) != 1 {
		t.Errorf("refused upgrades created rooms: %v", got)
	}

	r = up(alice, old, `{"new_version":"11"}`)
	mustStatus(t, r, 200, "upgrade")
	nw, _ := r.Body["replacement_room"].(string)
	if !strings.HasPrefix(nw, "!") || nw == old {
		t.Fatalf("replacement_room %q", nw)
	}
	tomb := stateContent(t, srv, bob, old, "m.room.tombstone", "")
	if tomb["replacement_room"] != nw {
		t.Errorf("tombstone: %v", tomb)
	}
	create := stateContent(t, srv, alice, nw, "m.room.create", "")
	pred, _ := create["predecessor"].(map[string]any)
	if create["room_version"] != "11" || pred["room_id"] != old {
		t.Errorf("new room's create event: %v", create)
	}
	for typ, want := range map[string]string{
		"m.room.name":               `{"name":"Ancienne"}`,
		"m.room.join_rules":         `{"join_rule":"public"}`,
		"m.room.history_visibility": `{"history_visibility":"joined"}`,
		"m.room.canonical_alias":    `{"alias":"#salle:localhost"}`,
	} {
		if got := stateContent(t, srv, alice, nw, typ, ""); mustJSON(got) != want {
			t.Errorf("new room %s: %v, want %s", typ, mustJSON(got), want)
		}
	}
	if got := stateContent(t, srv, alice, nw, "m.room.topic", "")["topic"]; got != "Sujet" {
		t.Errorf("new room topic: %v", got)
	}
	pl := stateContent(t, srv, alice, nw, "m.room.power_levels", "")
	users, _ := pl["users"].(map[string]any)
	if users[alice.ID] != float64(100) || users[carol.ID] != float64(20) {
		t.Errorf("power levels not copied: %v", pl)
	}
	if r := call(t, "GET", aliasURL(srv, "#salle:localhost"), alice.Token, ""); r.Body["room_id"] != nw {
		t.Errorf("alias not moved: %s", r.Raw)
	}
	if r := call(t, "GET", rurl(srv, nw, "/aliases"), alice.Token, ""); mustJSON(r.Body["aliases"]) != `["#salle:localhost"]` {
		t.Errorf("new room aliases: %s", r.Raw)
	}
	if r := call(t, "GET", rurl(srv, old, "/aliases"), alice.Token, ""); mustJSON(r.Body["aliases"]) != `[]` {
		t.Errorf("old room aliases: %s", r.Raw)
	}
	if r := call(t, "GET", srv.URL+c+"/directory/list/room/"+url.PathEscape(nw), alice.Token, ""); r.Body["visibility"] != "public" {
		t.Errorf("published status not moved: %s", r.Raw)
	}
	// The old room is now restricted: a plain member can no longer speak.
	r = call(t, "PUT", rurl(srv, old, "/send/m.room.message/"+nextTxn()), bob.Token, `{"msgtype":"m.text","body":"encore là ?"}`)
	wantError(t, r, 403, "M_FORBIDDEN", "a plain member speaks in the replaced room")
	// Bob can follow.
	joinRoom(t, srv, bob, nw)

	// Upgrading to v12: creators are not listed in the power levels.
	r = up(alice, nw, `{"new_version":"12"}`)
	mustStatus(t, r, 200, "upgrade to v12")
	v12 := r.Body["replacement_room"].(string)
	if strings.Contains(v12, ":") {
		t.Errorf("v12 room ID %s", v12)
	}
	if got := stateContent(t, srv, alice, v12, "m.room.create", "")["predecessor"].(map[string]any)["room_id"]; got != nw {
		t.Errorf("v12 predecessor %v", got)
	}
	putState(t, srv, alice, v12, "m.room.name", "", map[string]any{"name": "v12"})
}

// TestRoomHistoryVisibility checks the spec's rules ("History visibility")
// on every read path: a user invited then joined, a user who never joined,
// and the same user after leaving.
func TestRoomHistoryVisibility(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	for _, tc := range []struct {
		visibility string
		bobSees    []string // the messages bob sees once joined, newest first
	}{
		{"shared", []string{"after-join", "while-invited", "before-invite"}},
		{"invited", []string{"after-join", "while-invited"}},
		{"joined", []string{"after-join"}},
		{"world_readable", []string{"after-join", "while-invited", "before-invite"}},
	} {
		t.Run(tc.visibility, func(t *testing.T) {
			wr := tc.visibility == "world_readable"
			room := createRoom(t, srv, alice, map[string]any{"preset": "private_chat", "name": "original", "initial_state": []map[string]any{
				{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": tc.visibility}},
			}})
			ids := map[string]string{}
			ids["before-invite"] = sendText(t, srv, alice, room, "before-invite")
			sendEvent(t, srv, alice, room, "m.reaction", map[string]any{
				"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": ids["before-invite"], "key": "👍"}})
			inviteUser(t, srv, alice, room, bob.ID)
			ids["while-invited"] = sendText(t, srv, alice, room, "while-invited")
			joinRoom(t, srv, bob, room)
			ids["after-join"] = sendText(t, srv, alice, room, "after-join")

			visible := func(who user, text string, expect bool, phase string) {
				t.Helper()
				id := ids[text]
				r := call(t, "GET", rurl(srv, room, "/event/"+url.PathEscape(id)), who.Token, "")
				if expect && r.Status != 200 {
					t.Errorf("%s: %s cannot GET /event %s: %d %s", phase, who.ID, text, r.Status, r.Raw)
				}
				if !expect && r.Status != 404 && r.Status != 403 {
					t.Errorf("%s: %s may GET /event %s: %d %s", phase, who.ID, text, r.Status, r.Raw)
				}
				r = call(t, "GET", rurl(srv, room, "/context/"+url.PathEscape(id)), who.Token, "")
				if expect != (r.Status == 200) {
					t.Errorf("%s: %s /context of %s: %d %s", phase, who.ID, text, r.Status, r.Raw)
				}
				if !expect && strings.Contains(r.Raw, text) {
					t.Errorf("%s: /context leaks %s to %s", phase, text, who.ID)
				}
			}
			messages := func(who user) ([]string, int) {
				t.Helper()
				r := call(t, "GET", rurl(srv, room, "/messages?dir=b&limit=100"), who.Token, "")
				if r.Status != 200 {
					return nil, r.Status
				}
				return bodies(events(r.Body["chunk"])), 200
			}

			// Bob, invited then joined.
			got, status := messages(bob)
			if status != 200 || mustJSON(got) != mustJSON(tc.bobSees) {
				t.Errorf("joined bob's /messages: %d %v, want %v", status, got, tc.bobSees)
			}
			fwd := bodies(pageAll(t, srv, bob, room, "f", 2, ""))
			if mustJSON(fwd) != mustJSON(reversed(tc.bobSees)) {
				t.Errorf("joined bob's /messages dir=f: %v", fwd)
			}
			for _, text := range []string{"before-invite", "while-invited", "after-join"} {
				visible(bob, text, containsStr(tc.bobSees, text), "joined")
			}
			r := call(t, "GET", v1url(srv, room, "/relations/"+url.PathEscape(ids["before-invite"])), bob.Token, "")
			if seen := containsStr(tc.bobSees, "before-invite"); seen != (r.Status == 200) {
				t.Errorf("bob's /relations of before-invite: %d %s", r.Status, r.Raw)
			}
			r = call(t, "GET", rurl(srv, room, "/event/"+url.PathEscape(ids["after-join"])), bob.Token, "")
			ts := int64(r.Body["origin_server_ts"].(float64))
			r = call(t, "GET", v1url(srv, room, fmt.Sprintf("/timestamp_to_event?dir=b&ts=%d", ts-1)), bob.Token, "")
			if len(tc.bobSees) == 1 {
				// Nothing bob may see before after-join except his own join.
				if r.Status == 200 && (r.Body["event_id"] == ids["while-invited"] || r.Body["event_id"] == ids["before-invite"]) {
					t.Errorf("timestamp_to_event reveals a hidden event: %s", r.Raw)
				}
			}

			// Carol, who never joined.
			got, status = messages(carol)
			if wr {
				if status != 200 || mustJSON(got) != mustJSON(tc.bobSees) {
					t.Errorf("non-member's /messages of a world_readable room: %d %v", status, got)
				}
			} else if status != 403 {
				t.Errorf("non-member's /messages: %d %v", status, got)
			}
			st, _, raw := callList(t, "GET", rurl(srv, room, "/state"), carol.Token)
			if (st == 200) != wr || (!wr && st != 403) {
				t.Errorf("non-member's /state: %d %s", st, raw)
			}
			r = call(t, "GET", rurl(srv, room, "/state/m.room.name/"), carol.Token, "")
			if (r.Status == 200) != wr || (!wr && r.Status != 403) {
				t.Errorf("non-member's /state/m.room.name: %d %s", r.Status, r.Raw)
			}
			r = call(t, "GET", rurl(srv, room, "/members"), carol.Token, "")
			if (r.Status == 200) != wr || (!wr && r.Status != 403) {
				t.Errorf("non-member's /members: %d %s", r.Status, r.Raw)
			}
			r = call(t, "GET", rurl(srv, room, "/aliases"), carol.Token, "")
			if (r.Status == 200) != wr || (!wr && r.Status != 403) {
				t.Errorf("non-member's /aliases: %d %s", r.Status, r.Raw)
			}
			r = call(t, "GET", v1url(srv, room, fmt.Sprintf("/timestamp_to_event?dir=b&ts=%d", ts+1)), carol.Token, "")
			if (r.Status == 200) != wr || (!wr && r.Status != 403) {
				t.Errorf("non-member's /timestamp_to_event: %d %s", r.Status, r.Raw)
			}
			r = call(t, "GET", v1url(srv, room, "/relations/"+url.PathEscape(ids["before-invite"])), carol.Token, "")
			if (r.Status == 200) != wr {
				t.Errorf("non-member's /relations: %d %s", r.Status, r.Raw)
			}
			for _, text := range []string{"before-invite", "while-invited", "after-join"} {
				visible(carol, text, wr, "never joined")
			}

			// Bob leaves; what happens afterwards is hidden from him.
			leaveRoom(t, srv, bob, room)
			ids["after-leave"] = sendText(t, srv, alice, room, "after-leave")
			putState(t, srv, alice, room, "m.room.name", "", map[string]any{"name": "renamed"})
			want := tc.bobSees
			if wr {
				want = append([]string{"after-leave"}, want...)
			}
			got, status = messages(bob)
			if status != 200 || mustJSON(got) != mustJSON(want) {
				t.Errorf("departed bob's /messages: %d %v, want %v", status, got, want)
			}
			visible(bob, "after-leave", wr, "left")
			visible(bob, "after-join", true, "left")
			wantName := "original"
			if wr {
				wantName = "renamed"
			}
			r = call(t, "GET", rurl(srv, room, "/state/m.room.name/"), bob.Token, "")
			if r.Status != 200 || r.Body["name"] != wantName {
				t.Errorf("departed bob's /state/m.room.name: %d %s, want %s", r.Status, r.Raw, wantName)
			}
			st, evs, raw := callList(t, "GET", rurl(srv, room, "/state"), bob.Token)
			if st != 200 {
				t.Errorf("departed bob's /state: %d %s", st, raw)
			}
			for _, ev := range evs {
				if ev["type"] == "m.room.name" && ev["content"].(map[string]any)["name"] != wantName {
					t.Errorf("departed bob's /state has name %v, want %s", ev["content"], wantName)
				}
				if ev["type"] == "m.room.member" && ev["state_key"] == bob.ID && ev["content"].(map[string]any)["membership"] != "leave" {
					t.Errorf("departed bob's /state shows him %v", ev["content"])
				}
			}
		})
	}
}

func TestRoomProfileChangeUpdatesMemberEvents(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob")
	alice, bob := us[0], us[1]
	joined := createRoom(t, srv, bob, map[string]any{"preset": "public_chat"})
	left := createRoom(t, srv, bob, map[string]any{"preset": "public_chat"})
	second := createRoom(t, srv, bob, map[string]any{"preset": "public_chat"})
	joinRoom(t, srv, alice, joined)
	joinRoom(t, srv, alice, second)
	joinRoom(t, srv, alice, left)
	leaveRoom(t, srv, alice, left)
	leftBefore := stateIDs(t, srv, bob, left)

	r := call(t, "PUT", srv.URL+c+"/profile/"+url.PathEscape(alice.ID)+"/displayname", alice.Token, `{"displayname":"Alice Martin"}`)
	mustStatus(t, r, 200, "set displayname")
	r = call(t, "PUT", srv.URL+c+"/profile/"+url.PathEscape(alice.ID)+"/avatar_url", alice.Token, `{"avatar_url":"mxc://localhost/avatar"}`)
	mustStatus(t, r, 200, "set avatar_url")
	for _, room := range []string{joined, second} {
		content := stateContent(t, srv, bob, room, "m.room.member", alice.ID)
		if content["membership"] != "join" || content["displayname"] != "Alice Martin" || content["avatar_url"] != "mxc://localhost/avatar" {
			t.Errorf("member event after a profile change: %v", content)
		}
		r := call(t, "GET", rurl(srv, room, "/joined_members"), bob.Token, "")
		m, _ := r.Body["joined"].(map[string]any)[alice.ID].(map[string]any)
		if m["display_name"] != "Alice Martin" || m["avatar_url"] != "mxc://localhost/avatar" {
			t.Errorf("joined_members after a profile change: %s", r.Raw)
		}
	}
	sameState(t, leftBefore, stateIDs(t, srv, bob, left), "a profile change (room already left)")
	if m := membershipOf(t, srv, bob, left, alice.ID); m != "leave" {
		t.Errorf("a profile change rejoined a left room: %q", m)
	}
	// The member event of the change is a join with the old profile as prev_content.
	r = call(t, "GET", rurl(srv, joined, "/state/m.room.member/"+url.PathEscape(alice.ID)+"?format=event"), bob.Token, "")
	if r.Body["sender"] != alice.ID {
		t.Errorf("profile member event sender: %s", r.Raw)
	}
	r = call(t, "DELETE", srv.URL+c+"/profile/"+url.PathEscape(alice.ID)+"/avatar_url", alice.Token, "")
	if r.Status == 200 {
		if content := stateContent(t, srv, bob, joined, "m.room.member", alice.ID); content["avatar_url"] != nil {
			t.Errorf("member event still has the deleted avatar: %v", content)
		}
	}
}

// TestRoomNonMemberIsRefusedEverywhere runs every room endpoint as a user
// who is not in a private room, then checks nothing changed.
func TestRoomNonMemberIsRefusedEverywhere(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := us[0], us[1], us[2], us[3]
	room := createRoom(t, srv, alice, map[string]any{"preset": "private_chat", "name": "Privée"})
	inviteUser(t, srv, alice, room, bob.ID)
	joinRoom(t, srv, bob, room)
	msg := sendText(t, srv, bob, room, "privé")
	before := stateIDs(t, srv, alice, room)
	msgs := func() []string {
		return eventIDs(pageAll(t, srv, alice, room, "b", 100, ""))
	}
	history := msgs()
	e := url.PathEscape(msg)
	for _, tc := range []struct {
		method, url, body string
		eventRead         bool // 404 is acceptable: the event's existence is hidden
	}{
		{"PUT", rurl(srv, room, "/send/m.room.message/"+nextTxn()), `{"msgtype":"m.text","body":"x"}`, false},
		{"PUT", rurl(srv, room, "/state/m.room.name/"), `{"name":"x"}`, false},
		{"PUT", rurl(srv, room, "/state/org.example.x/k"), `{}`, false},
		{"PUT", rurl(srv, room, "/redact/"+e+"/"+nextTxn()), `{}`, false},
		{"POST", rurl(srv, room, "/invite"), mustJSON(map[string]string{"user_id": dave.ID}), false},
		{"POST", rurl(srv, room, "/kick"), mustJSON(map[string]string{"user_id": bob.ID}), false},
		{"POST", rurl(srv, room, "/ban"), mustJSON(map[string]string{"user_id": bob.ID}), false},
		{"POST", rurl(srv, room, "/join"), `{}`, false},
		{"POST", rurl(srv, room, "/leave"), `{}`, false},
		{"POST", rurl(srv, room, "/upgrade"), `{"new_version":"11"}`, false},
		{"GET", rurl(srv, room, "/state/m.room.name/"), "", false},
		{"GET", rurl(srv, room, "/messages?dir=b"), "", false},
		{"GET", rurl(srv, room, "/members"), "", false},
		{"GET", rurl(srv, room, "/joined_members"), "", false},
		{"GET", rurl(srv, room, "/aliases"), "", false},
		{"GET", v1url(srv, room, "/timestamp_to_event?dir=b&ts=99999999999999"), "", false},
		{"GET", rurl(srv, room, "/event/"+e), "", true},
		{"GET", rurl(srv, room, "/context/"+e), "", true},
		{"GET", v1url(srv, room, "/relations/"+e), "", true},
		{"PUT", aliasURL(srv, "#carol:localhost"), mustJSON(map[string]string{"room_id": room}), false},
		{"PUT", srv.URL + c + "/directory/list/room/" + url.PathEscape(room), `{"visibility":"public"}`, false},
	} {
		r := call(t, tc.method, tc.url, carol.Token, tc.body)
		if tc.eventRead && r.Status == 404 {
			continue
		}
		wantError(t, r, 403, "M_FORBIDDEN", "non-member: "+tc.method+" "+tc.url)
		if strings.Contains(r.Raw, "privé") {
			t.Errorf("%s %s leaks the message: %s", tc.method, tc.url, r.Raw)
		}
	}
	if st, _, raw := callList(t, "GET", rurl(srv, room, "/state"), carol.Token); st != 403 {
		t.Errorf("non-member GET /state: %d %s", st, raw)
	}
	sameState(t, before, stateIDs(t, srv, alice, room), "the non-member's requests")
	if got := msgs(); mustJSON(got) != mustJSON(history) {
		t.Errorf("the non-member's requests added events")
	}
	if r := call(t, "GET", aliasURL(srv, "#carol:localhost"), alice.Token, ""); r.Status != 404 {
		t.Errorf("the non-member created an alias: %s", r.Raw)
	}
	if r := call(t, "GET", srv.URL+c+"/directory/list/room/"+url.PathEscape(room), alice.Token, ""); r.Body["visibility"] != "private" {
		t.Errorf("the non-member published the room: %s", r.Raw)
	}
	if got := joinedRooms(t, srv, carol); len(got) != 0 {
		t.Errorf("carol's joined_rooms: %v", got)
	}
}

// TestRoomUnknownRoomEverywhere: every room endpoint answers 404 M_NOT_FOUND
// for a room the server does not know, and 400 for a malformed room ID.
func TestRoomUnknownRoomEverywhere(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "password-alice")
	known := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	msg := sendText(t, srv, alice, known, "réel")
	e := url.PathEscape(msg)
	endpoints := func(room string) []struct{ method, url, body string } {
		return []struct{ method, url, body string }{
			{"PUT", rurl(srv, room, "/send/m.room.message/"+nextTxn()), `{"msgtype":"m.text","body":"x"}`},
			{"PUT", rurl(srv, room, "/state/m.room.name/"), `{"name":"x"}`},
			{"GET", rurl(srv, room, "/state"), ""},
			{"GET", rurl(srv, room, "/state/m.room.name/"), ""},
			{"GET", rurl(srv, room, "/event/"+e), ""},
			{"GET", rurl(srv, room, "/members"), ""},
			{"GET", rurl(srv, room, "/joined_members"), ""},
			{"PUT", rurl(srv, room, "/redact/"+e+"/"+nextTxn()), `{}`},
			{"GET", rurl(srv, room, "/messages?dir=b"), ""},
			{"GET", rurl(srv, room, "/context/"+e), ""},
			{"GET", v1url(srv, room, "/timestamp_to_event?dir=b&ts=99999999999999"), ""},
			{"GET", v1url(srv, room, "/relations/"+e), ""},
			{"GET", rurl(srv, room, "/aliases"), ""},
			{"POST", rurl(srv, room, "/join"), `{}`},
			{"POST", rurl(srv, room, "/leave"), `{}`},
			{"POST", rurl(srv, room, "/invite"), `{"user_id":"@bob:localhost"}`},
			{"POST", rurl(srv, room, "/kick"), `{"user_id":"@bob:localhost"}`},
			{"POST", rurl(srv, room, "/ban"), `{"user_id":"@bob:localhost"}`},
			{"POST", rurl(srv, room, "/unban"), `{"user_id":"@bob:localhost"}`},
			{"POST", rurl(srv, room, "/forget"), `{}`},
			{"POST", rurl(srv, room, "/upgrade"), `{"new_version":"11"}`},
			{"GET", srv.URL + c + "/directory/list/room/" + url.PathEscape(room), ""},
			{"PUT", srv.URL + c + "/directory/list/room/" + url.PathEscape(room), `{"visibility":"public"}`},
		}
	}
	for _, ep := range endpoints("!unknown:localhost") {
		var r response
		if strings.HasSuffix(ep.url, "/state") {
			st, _, raw := callList(t, ep.method, ep.url, alice.Token)
			if st != 404 || !strings.Contains(raw, "M_NOT_FOUND") {
				t.Errorf("unknown room: GET state: %d %s", st, raw)
			}
			continue
		}
		r = call(t, ep.method, ep.url, alice.Token, ep.body)
		wantError(t, r, 404, "M_NOT_FOUND", "unknown room: "+ep.method+" "+ep.url)
	}
	for _, ep := range endpoints("notaroom") {
		if strings.HasSuffix(ep.url, "/state") {
			st, _, raw := callList(t, ep.method, ep.url, alice.Token)
			if st != 400 {
				t.Errorf("malformed room ID: GET state: %d %s", st, raw)
			}
			continue
		}
		r := call(t, ep.method, ep.url, alice.Token, ep.body)
		wantError(t, r, 400, "M_INVALID_PARAM", "malformed room ID: "+ep.method+" "+ep.url)
	}
	for _, ep := range endpoints(known) {
		if strings.Contains(ep.url, "/forget") || strings.Contains(ep.url, "/directory/") {
			continue
		}
		if r := call(t, ep.method, ep.url, "", ep.body); r.Status != 401 {
			t.Errorf("no token: %s %s: %d %s", ep.method, ep.url, r.Status, r.Raw)
		}
	}
}

// TestRoomPowerLevelErrors: each refusal for lack of power names the power
// level that was needed, and succeeds once the power is granted.
func TestRoomPowerLevelErrors(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "carol", "dave", "erin")
	alice, bob, carol, dave := us[0], us[1], us[2], us[3]
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat", "power_level_content_override": map[string]any{
		"invite": 60, "kick": 70, "ban": 80, "redact": 40, "state_default": 55, "events_default": 0,
		"events": map[string]any{"m.room.name": 65, "m.room.power_levels": 100, "m.room.topic": 45, "m.room.tombstone": 100, "org.example.restricted": 30},
	}})
	joinRoom(t, srv, bob, room)
	joinRoom(t, srv, carol, room)
	r := call(t, "POST", rurl(srv, room, "/ban"), alice.Token, mustJSON(map[string]string{"user_id": dave.ID}))
	mustStatus(t, r, 200, "ban dave")
	target := sendText(t, srv, alice, room, "message d'alice")
	before := stateIDs(t, srv, alice, room)
	for _, tc := range []struct {
		name, method, path, body, level string
	}{
		{"invite", "POST", "/invite", mustJSON(map[string]string{"user_id": "@erin:localhost"}), "60"},
		{"kick", "POST", "/kick", mustJSON(map[string]string{"user_id": carol.ID}), "70"},
		{"ban", "POST", "/ban", mustJSON(map[string]string{"user_id": carol.ID}), "80"},
		{"unban", "POST", "/unban", mustJSON(map[string]string{"user_id": dave.ID}), "80"},
		{"redact", "PUT", "/redact/" + url.PathEscape(target) + "/" + nextTxn(), `{}`, "40"},
		{"name", "PUT", "/state/m.room.name/", `{"name":"x"}`, "65"},
		{"topic", "PUT", "/state/m.room.topic/", `{"topic":"x"}`, "45"},
		{"custom state", "PUT", "/state/org.example.thing/", `{}`, "55"},
		{"power levels", "PUT", "/state/m.room.power_levels/", `{"users":{"@bob:localhost":100}}`, "100"},
		{"restricted message type", "PUT", "/send/org.example.restricted/" + nextTxn(), `{}`, "30"},
		{"upgrade", "POST", "/upgrade", `{"new_version":"11"}`, "100"},
	} {
		r := call(t, tc.method, rurl(srv, room, tc.path), bob.Token, tc.body)
		if wantError(t, r, 403, "M_FORBIDDEN", tc.name) && !strings.Contains(errMessage(r), tc.level) {
			t.Errorf("%s: the refusal must name the power level needed (%s): %s", tc.name, tc.level, r.Raw)
		}
	}
	sameState(t, before, stateIDs(t, srv, alice, room), "refusals for lack of power")
	if r := call(t, "GET", rurl(srv, room, "/event/"+url.PathEscape(target)), alice.Token, ""); r.Body["content"].(map[string]any)["body"] != "message d'alice" {
		t.Errorf("a refused redaction removed content")
	}

	// Granted 50, bob may now redact, set the topic and send the restricted type, still not rename.
	putState(t, srv, alice, room, "m.room.power_levels", "", map[string]any{
		"invite": 60, "kick": 70, "ban": 80, "redact": 40, "state_default": 55, "events_default": 0,
		"events": map[string]any{"m.room.name": 65, "m.room.power_levels": 100, "m.room.topic": 45, "org.example.restricted": 30},
		"users":  map[string]any{alice.ID: 100, bob.ID: 50},
	})
	mustStatus(t, call(t, "PUT", rurl(srv, room, "/redact/"+url.PathEscape(target)+"/"+nextTxn()), bob.Token, `{}`), 200, "redact with power")
	putState(t, srv, bob, room, "m.room.topic", "", map[string]any{"topic": "sujet de bob"})
	sendEvent(t, srv, bob, room, "org.example.restricted", map[string]any{})
	r = call(t, "PUT", rurl(srv, room, "/state/m.room.name/"), bob.Token, `{"name":"x"}`)
	if wantError(t, r, 403, "M_FORBIDDEN", "rename with 50 of 65") && !strings.Contains(errMessage(r), "65") {
		t.Errorf("rename refusal must name 65: %s", r.Raw)
	}
	// Nobody may raise a user above their own level, nor demote an equal.
	r = call(t, "PUT", rurl(srv, room, "/state/m.room.power_levels/"), alice.Token, mustJSON(map[string]any{
		"users": map[string]any{alice.ID: 100, bob.ID: 50}, "events": map[string]any{"m.room.power_levels": 100}}))
	mustStatus(t, r, 200, "alice rewrites power levels")
}

// TestRoomConcurrentSends: many clients sending into one room at once; each
// event is accepted exactly once and /messages returns them in one order.
func TestRoomConcurrentSends(t *testing.T) {
	srv := apptest.Start(t)
	const senders, each = 8, 10
	creator := register(t, srv, "creator", "password-creator")
	room := createRoom(t, srv, creator, map[string]any{"preset": "public_chat"})
	var us []user
	for i := 0; i < senders; i++ {
		u := register(t, srv, fmt.Sprintf("sender%d", i), "password-sender")
		joinRoom(t, srv, u, room)
		us = append(us, u)
	}
	var wg sync.WaitGroup
	errs := make(chan string, senders*each)
	ids := make(chan string, senders*each)
	for i, u := range us {
		wg.Add(1)
		go func(i int, u user) {
			defer wg.Done()
			for j := 0; j < each; j++ {
				body := fmt.Sprintf(`{"msgtype":"m.text","body":"s%d-%d"}`, i, j)
				req, _ := http.NewRequest("PUT", rurl(srv, room, fmt.Sprintf("/send/m.room.message/c%d", j)), strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+u.Token)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					errs <- err.Error()
					continue
				}
				var out map[string]any
				_ = json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Sprint(resp.StatusCode, out)
					continue
				}
				ids <- fmt.Sprint(out["event_id"])
			}
		}(i, u)
	}
	wg.Wait()
	close(errs)
	close(ids)
	for e := range errs {
		t.Errorf("concurrent send: %s", e)
	}
	sent := map[string]bool{}
	for id := range ids {
		if sent[id] {
			t.Errorf("two sends got event %s", id)
		}
		sent[id] = true
	}
	msgs := pageAll(t, srv, creator, room, "b", 13, "&filter="+url.QueryEscape(`{"types":["m.room.message"]}`))
	if len(msgs) != senders*each {
		t.Errorf("/messages lists %d messages, want %d", len(msgs), senders*each)
	}
	lastOf := map[int]int{}
	for _, ev := range reversed(msgs) {
		if !sent[fmt.Sprint(ev["event_id"])] {
			t.Errorf("unexpected event %v", ev["event_id"])
		}
		var i, j int
		fmt.Sscanf(ev["content"].(map[string]any)["body"].(string), "s%d-%d", &i, &j)
		if prev, ok := lastOf[i]; ok && j != prev+1 {
			t.Errorf("sender %d: message %d follows %d", i, j, prev)
		}
		lastOf[i] = j
	}
	fwd := pageAll(t, srv, creator, room, "f", 17, "&filter="+url.QueryEscape(`{"types":["m.room.message"]}`))
	if mustJSON(eventIDs(fwd)) != mustJSON(reversed(eventIDs(msgs))) {
		t.Errorf("forwards and backwards disagree on the order")
	}
}

// TestRoomHistoryVisibilityOverTime: the visibility in force at each event
// decides, and a user who left and came back sees what the rules allow for
// each period.
func TestRoomHistoryVisibilityOverTime(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	setHV := func(room, v string) {
		putState(t, srv, alice, room, "m.room.history_visibility", "", map[string]any{"history_visibility": v})
	}
	seen := func(who user, room string) []string {
		t.Helper()
		return bodies(pageAll(t, srv, who, room, "b", 4, ""))
	}

	t.Run("rejoin under joined", func(t *testing.T) {
		room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
		setHV(room, "joined")
		joinRoom(t, srv, bob, room)
		sendText(t, srv, alice, room, "first stay")
		leaveRoom(t, srv, bob, room)
		sendText(t, srv, alice, room, "while away")
		joinRoom(t, srv, bob, room)
		sendText(t, srv, alice, room, "second stay")
		if got := seen(bob, room); mustJSON(got) != `["second stay","first stay"]` {
			t.Errorf("bob sees %v", got)
		}
	})
	t.Run("rejoin under shared", func(t *testing.T) {
		room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
		joinRoom(t, srv, bob, room)
		sendText(t, srv, alice, room, "first stay")
		leaveRoom(t, srv, bob, room)
		sendText(t, srv, alice, room, "while away")
		if got := seen(bob, room); mustJSON(got) != `["first stay"]` {
			t.Errorf("departed bob sees %v", got)
		}
		joinRoom(t, srv, bob, room)
		sendText(t, srv, alice, room, "second stay")
		if got := seen(bob, room); mustJSON(got) != `["second stay","while away","first stay"]` {
			t.Errorf("bob sees %v", got)
		}
	})
	t.Run("visibility changes", func(t *testing.T) {
		room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
		setHV(room, "joined")
		sendText(t, srv, alice, room, "joined-only")
		setHV(room, "shared")
		sendText(t, srv, alice, room, "shared")
		setHV(room, "world_readable")
		sendText(t, srv, alice, room, "public")
		if got := seen(carol, room); mustJSON(got) != `["public"]` {
			t.Errorf("non-member sees %v, want only the world_readable period", got)
		}
		setHV(room, "joined")
		sendText(t, srv, alice, room, "joined again")
		if r := call(t, "GET", rurl(srv, room, "/messages?dir=b"), carol.Token, ""); r.Status != 403 {
			t.Errorf("the room is no longer world readable: non-member's /messages %d %s", r.Status, r.Raw)
		}
		joinRoom(t, srv, bob, room)
		sendText(t, srv, alice, room, "after bob")
		if got := seen(bob, room); mustJSON(got) != `["after bob","public","shared"]` {
			t.Errorf("late joiner sees %v", got)
		}
	})
}

func TestRoomMessagesFilterExtras(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, srv, bob, room)
	joinRoom(t, srv, carol, room)
	sendText(t, srv, carol, room, "carol")
	sendEvent(t, srv, alice, room, "m.room.message", map[string]any{"msgtype": "m.image", "body": "image", "url": "mxc://localhost/img"})
	sendText(t, srv, bob, room, "bob")

	r := call(t, "GET", rurl(srv, room, "/messages?dir=b&filter="+url.QueryEscape(`{"contains_url":true}`)), alice.Token, "")
	if got := bodies(events(r.Body["chunk"])); r.Status != 200 || mustJSON(got) != `["image"]` {
		t.Errorf("contains_url true: %d %v", r.Status, got)
	}
	r = call(t, "GET", rurl(srv, room, "/messages?dir=b&filter="+url.QueryEscape(`{"contains_url":false,"types":["m.room.message"]}`)), alice.Token, "")
	if got := bodies(events(r.Body["chunk"])); r.Status != 200 || mustJSON(got) != `["bob","carol"]` {
		t.Errorf("contains_url false: %d %v", r.Status, got)
	}
	r = call(t, "GET", rurl(srv, room, "/messages?dir=b&limit=2&filter="+url.QueryEscape(`{"lazy_load_members":true}`)), alice.Token, "")
	mustStatus(t, r, 200, "lazy_load_members")
	members := map[string]bool{}
	for _, ev := range events(r.Body["state"]) {
		if ev["type"] == "m.room.member" {
			members[fmt.Sprint(ev["state_key"])] = true
		}
	}
	if !members[bob.ID] || !members[alice.ID] || members[carol.ID] {
		t.Errorf("lazy-loaded members for a chunk sent by bob and alice: %v (%s)", members, r.Raw)
	}
}

func TestRoomV12Creators(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	room := createRoom(t, srv, alice, map[string]any{"room_version": "12", "preset": "trusted_private_chat",
		"invite": []string{bob.ID}, "creation_content": map[string]any{"additional_creators": []string{carol.ID, bob.ID}}})
	create := stateContent(t, srv, alice, room, "m.room.create", "")
	if got := mustJSON(create["additional_creators"]); got != mustJSON([]string{carol.ID, bob.ID}) {
		t.Errorf("additional_creators %s: the invitees must be merged in without duplicates", got)
	}
	pl := stateContent(t, srv, alice, room, "m.room.power_levels", "")
	events, _ := pl["events"].(map[string]any)
	if tomb, _ := events["m.room.tombstone"].(float64); tomb <= pl["state_default"].(float64) {
		t.Errorf("v12: the tombstone level must exceed state_default: %v", pl)
	}
	r := call(t, "POST", srv.URL+c+"/join/"+url.PathEscape(room), bob.Token, `{}`)
	if r.Status != 200 || r.Body["room_id"] != room {
		t.Fatalf("join a v12 room by /join/{roomId}: %d %s", r.Status, r.Raw)
	}
	// An additional creator has unlimited power.
	putState(t, srv, bob, room, "m.room.name", "", map[string]any{"name": "par bob"})
	r = call(t, "POST", rurl(srv, room, "/kick"), bob.Token, mustJSON(map[string]string{"user_id": alice.ID}))
	wantError(t, r, 403, "M_FORBIDDEN", "a creator kicks another creator")
	if m := membershipOf(t, srv, bob, room, alice.ID); m != "join" {
		t.Errorf("alice: %q", m)
	}
	r = call(t, "POST", srv.URL+c+"/join/"+url.PathEscape("!unknownv12room"), bob.Token, `{}`)
	wantError(t, r, 404, "M_NOT_FOUND", "join an unknown v12-style room ID")
}

// TestRoomForgetHidesHistory: spec POST /rooms/{roomId}/forget, "After this
// API is called, a user will no longer be able to retrieve history for this
// room."
func TestRoomForgetHidesHistory(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob")
	alice, bob := us[0], us[1]
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat", "name": "Oubli"})
	joinRoom(t, srv, bob, room)
	msg := sendText(t, srv, alice, room, "souvenir")
	leaveRoom(t, srv, bob, room)
	if got := bodies(pageAll(t, srv, bob, room, "b", 10, "")); mustJSON(got) != `["souvenir"]` {
		t.Fatalf("before forgetting, the departed user still reads history: %v", got)
	}
	mustStatus(t, call(t, "POST", rurl(srv, room, "/forget"), bob.Token, `{}`), 200, "forget")

	r := call(t, "GET", rurl(srv, room, "/messages?dir=b"), bob.Token, "")
	if r.Status == 200 && len(bodies(events(r.Body["chunk"]))) > 0 {
		t.Errorf("/messages still serves history after forget: %s", r.Raw)
	}
	r = call(t, "GET", rurl(srv, room, "/event/"+url.PathEscape(msg)), bob.Token, "")
	if r.Status == 200 {
		t.Errorf("/event still serves history after forget: %s", r.Raw)
	}
	r = call(t, "GET", rurl(srv, room, "/context/"+url.PathEscape(msg)), bob.Token, "")
	if r.Status == 200 {
		t.Errorf("/context still serves history after forget: %s", r.Raw)
	}
	if st, _, raw := callList(t, "GET", rurl(srv, room, "/state"), bob.Token); st == 200 {
		t.Errorf("/state still served after forget: %s", raw)
	}
	// Joining again makes the room (and what the rules allow) visible again.
	joinRoom(t, srv, bob, room)
	if got := bodies(pageAll(t, srv, bob, room, "b", 10, "")); mustJSON(got) != `["souvenir"]` {
		t.Errorf("after rejoining: %v", got)
	}
}

// TestRoomContentLimits: the size and canonical JSON limits of events
// (spec "Size limits"; rooms v6+: "enforce canonical JSON").
func TestRoomContentLimits(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "password-alice")
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	last := sendText(t, srv, alice, room, "dernier")
	before := stateIDs(t, srv, alice, room)
	long := strings.Repeat("k", 256)
	for _, tc := range []struct {
		name, path, body string
		status           int
		code             string
	}{
		{"state key over 255 bytes", "/state/org.example.thing/" + long, `{}`, 0, ""},
		{"event type over 255 bytes", "/send/" + long + "/" + nextTxn(), `{}`, 0, ""},
		{"state event type over 255 bytes", "/state/" + long + "/", `{}`, 0, ""},
		{"integer beyond 2^53", "/send/org.example.n/" + nextTxn(), `{"n":9007199254740993}`, 400, "M_BAD_JSON"},
		{"float in a v10 room", "/send/org.example.n/" + nextTxn(), `{"n":1.5}`, 400, "M_BAD_JSON"},
		{"float in state", "/state/org.example.n/", `{"n":1.5}`, 400, "M_BAD_JSON"},
	} {
		r := call(t, "PUT", rurl(srv, room, tc.path), alice.Token, tc.body)
		if tc.status == 0 { // over a length limit: 400, or 413 M_TOO_LARGE as Synapse answers
			if r.Status != 400 && !(r.Status == 413 && r.errcode() == "M_TOO_LARGE") {
				t.Errorf("%s: want 400 or 413 M_TOO_LARGE, got %d %s", tc.name, r.Status, r.Raw)
			}
		} else if r.Status != tc.status || (tc.code != "" && r.errcode() != tc.code) {
			t.Errorf("%s: want %d %s, got %d %s", tc.name, tc.status, tc.code, r.Status, r.Raw)
		}
		sameState(t, before, stateIDs(t, srv, alice, room), tc.name)
		r = call(t, "GET", rurl(srv, room, "/messages?dir=b&limit=1"), alice.Token, "")
		if got := eventIDs(events(r.Body["chunk"])); len(got) != 1 || got[0] != last {
			t.Errorf("%s: a refused request added an event: %v", tc.name, got)
			last = got[0]
		}
	}
	// Big, but within the limit: accepted.
	sendEvent(t, srv, alice, room, "org.example.big", map[string]any{"data": strings.Repeat("x", 60000)})
}

// TestRoomDirectoryRoomTypes: POST /publicRooms filter.room_types (spec: null
// stands for rooms without a type) and room_type in the entries.
func TestRoomDirectoryRoomTypes(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "password-alice")
	space := createRoom(t, srv, alice, map[string]any{"preset": "public_chat", "visibility": "public", "creation_content": map[string]any{"type": "m.space"}})
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat", "visibility": "public"})
	ids := func(r response) []string {
		out := []string{}
		for _, x := range events(r.Body["chunk"]) {
			out = append(out, fmt.Sprint(x["room_id"]))
		}
		return out
	}
	r := call(t, "GET", srv.URL+c+"/publicRooms", alice.Token, "")
	for _, e := range events(r.Body["chunk"]) {
		if e["room_id"] == space && e["room_type"] != "m.space" {
			t.Errorf("space entry without room_type: %v", e)
		}
	}
	for filter, want := range map[string][]string{
		`["m.space"]`:       {space},
		`[null]`:            {room},
		`[null,"m.space"]`:  {space, room},
		`["org.example.x"]`: {},
	} {
		r := call(t, "POST", srv.URL+c+"/publicRooms", alice.Token, `{"filter":{"room_types":`+filter+`}}`)
		got := ids(r)
		sortStrings(got)
		sortStrings(want)
		if r.Status != 200 || mustJSON(got) != mustJSON(want) {
			t.Errorf("room_types %s: %d %v, want %v", filter, r.Status, got, want)
		}
	}
}

// TestRoomPathEncoding: clients encode path parameters with
// encodeURIComponent (':' as %3A, '$' as %24, '#' as %23, '!' as %21).
func TestRoomPathEncoding(t *testing.T) {
	srv := apptest.Start(t)
	us := newUsers(t, srv, "alice", "bob")
	alice, bob := us[0], us[1]
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat", "room_alias_name": "codée"})
	enc := func(s string) string {
		return strings.NewReplacer(":", "%3A", "$", "%24", "@", "%40", "+", "%2B", "=", "%3D").Replace(url.PathEscape(s))
	}
	r := call(t, "POST", srv.URL+c+"/join/"+enc("#codée:localhost"), bob.Token, `{}`)
	if r.Status != 200 || r.Body["room_id"] != room {
		t.Fatalf("join by an encoded alias: %d %s", r.Status, r.Raw)
	}
	r = call(t, "PUT", srv.URL+c+"/rooms/"+enc(room)+"/send/m.room.message/"+enc("txn:1$"), bob.Token, `{"msgtype":"m.text","body":"codé"}`)
	mustStatus(t, r, 200, "send with an encoded room ID")
	id := r.Body["event_id"].(string)
	r = call(t, "GET", srv.URL+c+"/rooms/"+enc(room)+"/event/"+enc(id), alice.Token, "")
	if r.Status != 200 || r.Body["event_id"] != id {
		t.Errorf("GET event with encoded IDs: %d %s", r.Status, r.Raw)
	}
	r = call(t, "GET", srv.URL+c+"/rooms/"+enc(room)+"/state/m.room.member/"+enc(bob.ID), alice.Token, "")
	if r.Status != 200 || r.Body["membership"] != "join" {
		t.Errorf("GET member state with an encoded user ID: %d %s", r.Status, r.Raw)
	}
	r = call(t, "GET", srv.URL+c+"/directory/room/"+enc("#codée:localhost"), alice.Token, "")
	if r.Status != 200 || r.Body["room_id"] != room {
		t.Errorf("GET an encoded alias: %d %s", r.Status, r.Raw)
	}
	r = call(t, "GET", srv.URL+"/_matrix/client/v1/rooms/"+enc(room)+"/relations/"+enc(id), alice.Token, "")
	if r.Status != 200 {
		t.Errorf("relations with encoded IDs: %d %s", r.Status, r.Raw)
	}
	r = call(t, "PUT", srv.URL+c+"/rooms/"+enc(room)+"/redact/"+enc(id)+"/"+enc("r:1"), alice.Token, `{}`)
	mustStatus(t, r, 200, "redact with encoded IDs")
	// The transaction ID is echoed back decoded.
	r = call(t, "GET", rurl(srv, room, "/messages?dir=b&filter="+url.QueryEscape(`{"types":["m.room.message"]}`)), bob.Token, "")
	chunk := events(r.Body["chunk"])
	if len(chunk) != 1 {
		t.Fatalf("messages: %s", r.Raw)
	}
	if u, _ := chunk[0]["unsigned"].(map[string]any); u["transaction_id"] != "txn:1$" {
		t.Errorf("transaction_id %v, want the decoded txn:1$", u["transaction_id"])
	}
}
