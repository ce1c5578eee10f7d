package clientapi_test

// Helpers of the room endpoint tests (rooms_test.go).

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"chappe/app/apptest"
)

var txnCounter atomic.Int64

// nextTxn is a transaction ID never used before in this test binary.
func nextTxn() string { return fmt.Sprintf("txn%d", txnCounter.Add(1)) }

// rurl is the URL of a room endpoint: /_matrix/client/v3/rooms/{roomID}{rest}.
func rurl(srv *apptest.Server, roomID, rest string) string {
	return srv.URL + c + "/rooms/" + url.PathEscape(roomID) + rest
}

// v1url is the URL of a /_matrix/client/v1/rooms/{roomID}{rest} endpoint.
func v1url(srv *apptest.Server, roomID, rest string) string {
	return srv.URL + "/_matrix/client/v1/rooms/" + url.PathEscape(roomID) + rest
}

// aliasURL is the URL of /directory/room/{alias}.
func aliasURL(srv *apptest.Server, alias string) string {
	return srv.URL + c + "/directory/room/" + url.PathEscape(alias)
}

func mustStatus(t *testing.T, r response, status int, what string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: want %d, got %d %s", what, status, r.Status, r.Raw)
	}
}

// wantError checks an error answer (without stopping the test).
func wantError(t *testing.T, r response, status int, code, what string) bool {
	t.Helper()
	if r.Status != status || r.errcode() != code {
		t.Errorf("%s: want %d %s, got %d %s", what, status, code, r.Status, r.Raw)
		return false
	}
	return true
}

// createRoom creates a room and returns its ID.
func createRoom(t *testing.T, srv *apptest.Server, u user, body map[string]any) string {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	r := call(t, "POST", srv.URL+c+"/createRoom", u.Token, mustJSON(body))
	mustStatus(t, r, 200, "createRoom "+mustJSON(body))
	id, _ := r.Body["room_id"].(string)
	if !strings.HasPrefix(id, "!") {
		t.Fatalf("createRoom: room_id %q", id)
	}
	return id
}

// sendEvent sends a message event with a fresh transaction ID.
func sendEvent(t *testing.T, srv *apptest.Server, u user, roomID, evType string, content any) string {
	t.Helper()
	r := call(t, "PUT", rurl(srv, roomID, "/send/"+url.PathEscape(evType)+"/"+nextTxn()), u.Token, mustJSON(content))
	mustStatus(t, r, 200, "send "+evType)
	id, _ := r.Body["event_id"].(string)
	if !strings.HasPrefix(id, "$") {
		t.Fatalf("send: event_id %q", id)
	}
	return id
}

// sendText sends an m.room.message with body text.
func sendText(t *testing.T, srv *apptest.Server, u user, roomID, text string) string {
	t.Helper()
	return sendEvent(t, srv, u, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": text})
}

// putState sets a piece of state.
func putState(t *testing.T, srv *apptest.Server, u user, roomID, evType, key string, content any) string {
	t.Helper()
	r := call(t, "PUT", rurl(srv, roomID, "/state/"+url.PathEscape(evType)+"/"+url.PathEscape(key)), u.Token, mustJSON(content))
	mustStatus(t, r, 200, "put state "+evType)
	id, _ := r.Body["event_id"].(string)
	if !strings.HasPrefix(id, "$") {
		t.Fatalf("put state: event_id %q", id)
	}
	return id
}

func joinRoom(t *testing.T, srv *apptest.Server, u user, roomID string) {
	t.Helper()
	r := call(t, "POST", rurl(srv, roomID, "/join"), u.Token, `{}`)
	mustStatus(t, r, 200, u.ID+" joins")
	if r.Body["room_id"] != roomID {
		t.Fatalf("join answered room_id %v, want %s", r.Body["room_id"], roomID)
	}
}

func inviteUser(t *testing.T, srv *apptest.Server, inviter user, roomID, target string) {
	t.Helper()
	r := call(t, "POST", rurl(srv, roomID, "/invite"), inviter.Token, mustJSON(map[string]string{"user_id": target}))
	mustStatus(t, r, 200, inviter.ID+" invites "+target)
}

func leaveRoom(t *testing.T, srv *apptest.Server, u user, roomID string) {
	t.Helper()
	r := call(t, "POST", rurl(srv, roomID, "/leave"), u.Token, `{}`)
	mustStatus(t, r, 200, u.ID+" leaves")
}

// callList is call for endpoints that answer a JSON array.
func callList(t *testing.T, method, u, token string) (int, []map[string]any, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return resp.StatusCode, nil, string(data)
	}
	var out []map[string]any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("%s %s: answer is not a JSON array of objects: %s", method, u, data)
	}
	return resp.StatusCode, out, string(data)
}

// roomState is GET /rooms/{roomId}/state, which must succeed.
func roomState(t *testing.T, srv *apptest.Server, u user, roomID string) []map[string]any {
	t.Helper()
	status, evs, raw := callList(t, "GET", rurl(srv, roomID, "/state"), u.Token)
	if status != 200 {
		t.Fatalf("GET state as %s: %d %s", u.ID, status, raw)
	}
	return evs
}

// stateIDs maps "type|state_key" to event ID in the room's current state as u sees it.
func stateIDs(t *testing.T, srv *apptest.Server, u user, roomID string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, ev := range roomState(t, srv, u, roomID) {
		out[fmt.Sprint(ev["type"])+"|"+fmt.Sprint(ev["state_key"])] = fmt.Sprint(ev["event_id"])
	}
	return out
}

// sameState fails the test if the state changed.
func sameState(t *testing.T, before, after map[string]string, what string) {
	t.Helper()
	if mustJSON(before) != mustJSON(after) {
		t.Errorf("%s changed the room state:\nbefore %v\nafter  %v", what, before, after)
	}
}

// stateContent is GET /state/{type}/{key} (the content), which must succeed.
func stateContent(t *testing.T, srv *apptest.Server, u user, roomID, evType, key string) map[string]any {
	t.Helper()
	r := call(t, "GET", rurl(srv, roomID, "/state/"+url.PathEscape(evType)+"/"+url.PathEscape(key)), u.Token, "")
	mustStatus(t, r, 200, "GET state "+evType+" "+key)
	return r.Body
}

// membershipOf is target's membership as viewer reads it ("" if none).
func membershipOf(t *testing.T, srv *apptest.Server, viewer user, roomID, target string) string {
	t.Helper()
	r := call(t, "GET", rurl(srv, roomID, "/state/m.room.member/"+url.PathEscape(target)), viewer.Token, "")
	if r.Status == 404 {
		return ""
	}
	mustStatus(t, r, 200, "GET member state")
	s, _ := r.Body["membership"].(string)
	return s
}

func joinedRooms(t *testing.T, srv *apptest.Server, u user) []string {
	t.Helper()
	r := call(t, "GET", srv.URL+c+"/joined_rooms", u.Token, "")
	mustStatus(t, r, 200, "joined_rooms")
	var out []string
	for _, x := range r.Body["joined_rooms"].([]any) {
		out = append(out, x.(string))
	}
	sort.Strings(out)
	return out
}

// events converts a JSON list of events.
func events(v any) []map[string]any {
	l, _ := v.([]any)
	out := make([]map[string]any, 0, len(l))
	for _, x := range l {
		if m, ok := x.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// pageAll pages /messages in dir from the start of that direction, with
// limit per page and extra query parameters, until there is no end token.
// It fails on a page that repeats the token or on more than 200 pages.
func pageAll(t *testing.T, srv *apptest.Server, u user, roomID, dir string, limit int, extra string) []map[string]any {
	t.Helper()
	var out []map[string]any
	from := ""
	for i := 0; ; i++ {
		if i > 200 {
			t.Fatalf("pagination does not end")
		}
		q := fmt.Sprintf("?dir=%s&limit=%d%s", dir, limit, extra)
		if from != "" {
			q += "&from=" + url.QueryEscape(from)
		}
		r := call(t, "GET", rurl(srv, roomID, "/messages"+q), u.Token, "")
		mustStatus(t, r, 200, "messages "+q)
		chunk := events(r.Body["chunk"])
		if len(chunk) > limit {
			t.Fatalf("page of %d events with limit %d", len(chunk), limit)
		}
		out = append(out, chunk...)
		end, _ := r.Body["end"].(string)
		if end == "" || len(chunk) == 0 {
			return out
		}
		if end == from {
			t.Fatalf("end token %q repeats from", end)
		}
		from = end
	}
}

// bodies lists content.body of the m.room.message events, in order.
func bodies(evs []map[string]any) []string {
	out := []string{}
	for _, ev := range evs {
		if ev["type"] != "m.room.message" {
			continue
		}
		content, _ := ev["content"].(map[string]any)
		b, _ := content["body"].(string)
		out = append(out, b)
	}
	return out
}

func eventIDs(evs []map[string]any) []string {
	out := []string{}
	for _, ev := range evs {
		out = append(out, fmt.Sprint(ev["event_id"]))
	}
	return out
}

func reversed[T any](l []T) []T {
	out := make([]T, len(l))
	for i, x := range l {
		out[len(l)-1-i] = x
	}
	return out
}

func containsStr(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// errMessage is the "error" field of an error answer.
func errMessage(r response) string {
	s, _ := r.Body["error"].(string)
	return s
}

func sortStrings(l []string) { sort.Strings(l) }
