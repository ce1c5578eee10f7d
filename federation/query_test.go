package federation_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"chappe/accounts"
	"chappe/allowlist"
	"chappe/app/apptest"
	"chappe/config"
	"chappe/federation"
	"chappe/mxerr"
	"chappe/roomserver"
)

// scripted is a remote server, them.chappe.test, whose answers the test
// sets, and which records what it was asked.
type scripted struct {
	ca   *apptest.TestCA
	gate fakeGate // lists them.chappe.test at its address

	mu     sync.Mutex
	status int
	body   string
	asked  []*http.Request
	bodies []string
}

func newScripted(t *testing.T) *scripted {
	t.Helper()
	s := &scripted{ca: apptest.NewTestCA(t)}
	addr := tlsServer(t, s.ca.Issue(t, "them.chappe.test"), s)
	s.gate = fakeGate{servers: map[string]allowlist.Server{"them.chappe.test": {Endpoint: addr}}}
	return s
}

// queries is a RemoteQueries whose client reaches the scripted server.
func (s *scripted) queries(t *testing.T, cfg federation.ClientConfig) *federation.RemoteQueries {
	t.Helper()
	cfg.CAFile = s.ca.File
	return federation.NewRemoteQueries(newClient(t, cfg, s.gate, newKey(t)))
}

func (s *scripted) answer(status int, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body = status, body
}

func (s *scripted) last() (*http.Request, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.asked) == 0 {
		return nil, ""
	}
	return s.asked[len(s.asked)-1], s.bodies[len(s.bodies)-1]
}

func (s *scripted) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.asked)
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked, s.bodies = append(s.asked, r), append(s.bodies, string(body))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(s.status)
	_, _ = io.WriteString(w, s.body)
}

// wantMatrix fails unless err is the Matrix error code with that status
// and a message containing msg.
func wantMatrix(t *testing.T, what string, err error, status int, code mxerr.Code, msg string) {
	t.Helper()
	e, ok := mxerr.As(err)
	if !ok || e.Status() != status || e.Code != code || !strings.Contains(e.Message, msg) {
		t.Errorf("%s: got %v, want %d %s mentioning %q", what, err, status, code, msg)
	}
}

// RemoteQueries against a scripted server: what is asked, how the answers
// are read, and how every failure becomes a Matrix error for our client.
func TestRemoteQueries(t *testing.T) {
	ctx := context.Background()
	remote := newScripted(t)
	q := remote.queries(t, federation.ClientConfig{Enabled: true, BackoffInitial: time.Hour, BackoffMax: time.Hour})

	// A whole profile: unset (null) fields are left out.
	remote.answer(200, `{"displayname":"Bob","avatar_url":null,"m.tz":"Europe/Paris"}`)
	p, err := q.Profile(ctx, "@bob:them.chappe.test", "")
	if err != nil || string(p["displayname"]) != `"Bob"` || len(p) != 2 {
		t.Fatalf("profile: %s %v", mustMarshal(p), err)
	}
	req, _ := remote.last()
	if req.URL.Path != "/_matrix/federation/v1/query/profile" || req.URL.Query().Get("user_id") != "@bob:them.chappe.test" || req.URL.Query().Has("field") {
		t.Errorf("profile asked as %s", req.URL)
	}
	// One field: only that one comes back; unset, it is not found.
	remote.answer(200, `{"displayname":"Bob","extra":1}`)
	p, err = q.Profile(ctx, "@bob:them.chappe.test", "displayname")
	if err != nil || len(p) != 1 || string(p["displayname"]) != `"Bob"` {
		t.Errorf("one field: %s %v", mustMarshal(p), err)
	}
	if req, _ := remote.last(); req.URL.Query().Get("field") != "displayname" {
		t.Errorf("field asked as %s", req.URL)
	}
	remote.answer(200, `{"avatar_url":null}`)
	_, err = q.Profile(ctx, "@bob:them.chappe.test", "avatar_url")
	wantMatrix(t, "unset field", err, 404, mxerr.NotFound, "no field")
	remote.answer(200, `null`)
	if p, err := q.Profile(ctx, "@bob:them.chappe.test", ""); err != nil || p == nil || len(p) != 0 {
		t.Errorf("null profile: %v %v", p, err)
	}

	// The remote server's errors.
	for _, tc := range []struct {
		name, answer string
		status       int
		wantStatus   int
		wantCode     mxerr.Code
		wantMsg      string
	}{
		{"unknown user", `{"errcode":"M_NOT_FOUND","error":"User does not exist."}`, 404, 404, mxerr.NotFound, "User does not exist"},
		{"refused", `{"errcode":"M_FORBIDDEN","error":"Profile lookup over federation is disabled"}`, 403, 403, mxerr.Forbidden, "disabled"},
		// A 401 is about our server's signature, not the client's token.
		{"our signature refused", `{"errcode":"M_UNKNOWN_TOKEN","error":"who are you"}`, 401, 502, mxerr.Unknown, "401"},
		{"answer that is not an object", `["x"]`, 200, 502, mxerr.Unknown, "not the expected JSON"},
		{"4xx without a Matrix error", `oops`, 400, 502, mxerr.Unknown, "HTTP 400"},
	} {
		remote.answer(tc.status, tc.answer)
		_, err := q.Profile(ctx, "@bob:them.chappe.test", "")
		wantMatrix(t, tc.name, err, tc.wantStatus, tc.wantCode, tc.wantMsg)
	}
	remote.answer(500, `{"errcode":"M_UNKNOWN","error":"boom"}`)
	_, err = q.Profile(ctx, "@bob:them.chappe.test", "")
	wantMatrix(t, "server error", err, 502, mxerr.Unknown, "500")
	_, err = q.Profile(ctx, "@bob:them.chappe.test", "")
	wantMatrix(t, "backed off", err, 502, mxerr.Unknown, "not called again before")

	// Refused before anything is sent.
	asked := remote.count()
	_, err = q.Profile(ctx, "@eve:rogue.chappe.test", "")
	wantMatrix(t, "server outside the federation", err, 403, mxerr.Forbidden, "rogue.chappe.test is outside the federation")
	for _, bad := range []string{"bob", "@bob", "@bob:", "@bob:Bad Name"} {
		_, err = q.Profile(ctx, bad, "")
		wantMatrix(t, "user ID "+bad, err, 400, mxerr.InvalidParam, "not a valid user ID")
	}
	_, err = q.PublicRooms(ctx, "Bad Name", roomserver.PublicRoomsRequest{})
	wantMatrix(t, "bad server name", err, 400, mxerr.InvalidParam, "server")
	_, err = q.PublicRooms(ctx, "rogue.chappe.test", roomserver.PublicRoomsRequest{})
	wantMatrix(t, "directory outside the federation", err, 403, mxerr.Forbidden, "outside the federation")
	if remote.count() != asked {
		t.Errorf("refused requests reached the server")
	}
	off := remote.queries(t, federation.ClientConfig{Enabled: false})
	_, err = off.Profile(ctx, "@bob:them.chappe.test", "")
	wantMatrix(t, "federation off", err, 403, mxerr.Forbidden, "federation is switched off")
}

// The directory of another server: GET with a page size when there is no
// filter, POST with the filter otherwise.
func TestRemotePublicRooms(t *testing.T) {
	ctx := context.Background()
	remote := newScripted(t)
	q := remote.queries(t, federation.ClientConfig{Enabled: true})

	remote.answer(200, `{"chunk":[{"room_id":"!a:them.chappe.test","num_joined_members":3,"name":"Salon","world_readable":true,"guest_can_join":false}],"next_batch":"n1","total_room_count_estimate":7}`)
	resp, err := q.PublicRooms(ctx, "them.chappe.test", roomserver.PublicRoomsRequest{Since: "p1"})
	if err != nil || len(resp.Chunk) != 1 || resp.Chunk[0].Name != "Salon" || resp.Chunk[0].NumJoinedMembers != 3 || resp.NextBatch != "n1" || resp.TotalRoomCountEstimate != 7 {
		t.Fatalf("directory: %+v %v", resp, err)
	}
	req, _ := remote.last()
	if req.Method != "GET" || req.URL.Path != "/_matrix/federation/v1/publicRooms" || req.URL.Query().Get("limit") != "100" || req.URL.Query().Get("since") != "p1" {
		t.Errorf("asked as %s %s", req.Method, req.URL)
	}

	remote.answer(200, `{"chunk":null}`)
	video := "m.video"
	resp, err = q.PublicRooms(ctx, "them.chappe.test", roomserver.PublicRoomsRequest{Limit: 5,
		Filter: roomserver.PublicRoomsFilter{Search: "salon", RoomTypes: []*string{nil, &video}}})
	if err != nil || resp.Chunk == nil || len(resp.Chunk) != 0 {
		t.Fatalf("filtered directory: %+v %v", resp, err)
	}
	req, body := remote.last()
	var sent map[string]any
	if err := json.Unmarshal([]byte(body), &sent); err != nil || req.Method != "POST" {
		t.Fatalf("asked as %s with %q", req.Method, body)
	}
	filter, _ := sent["filter"].(map[string]any)
	if sent["limit"] != float64(5) || filter["generic_search_term"] != "salon" || mustMarshal(filter["room_types"]) != `[null,"m.video"]` {
		t.Errorf("POST body %s", body)
	}

	_, err = q.PublicRooms(ctx, "them.chappe.test", roomserver.PublicRoomsRequest{Limit: -1})
	wantMatrix(t, "negative limit", err, 400, mxerr.InvalidParam, "limit")
	remote.answer(403, `{"errcode":"M_FORBIDDEN","error":"This server does not publish its room directory over federation"}`)
	_, err = q.PublicRooms(ctx, "them.chappe.test", roomserver.PublicRoomsRequest{})
	wantMatrix(t, "directory not served", err, 403, mxerr.Forbidden, "does not publish")
}

// MatrixError on each failure Client.Do reports.
func TestMatrixError(t *testing.T) {
	if federation.MatrixError("x.test", nil) != nil {
		t.Fatal("nil is not nil")
	}
	own := mxerr.New(mxerr.NotFound, "mine")
	for _, tc := range []struct {
		name   string
		err    error
		status int
		code   mxerr.Code
		msg    string
	}{
		{"a Matrix error", own, 404, mxerr.NotFound, "mine"},
		{"federation off", federation.ErrDisabled, 403, mxerr.Forbidden, "federation is switched off"},
		{"not allowed", &allowlist.NotAllowedError{Server: "x.test", Reason: "it is not listed"}, 403, mxerr.Forbidden, "x.test is outside the federation: federation with x.test is refused: it is not listed"},
		{"remote 404", &federation.RemoteError{Destination: "x.test", Status: 404, ErrCode: "M_NOT_FOUND", Message: "no"}, 404, mxerr.NotFound, "x.test answered: no"},
		{"remote 401", &federation.RemoteError{Destination: "x.test", Status: 401, ErrCode: "M_UNKNOWN_TOKEN", Message: "no"}, 502, mxerr.Unknown, "401"},
		{"remote 503", &federation.RemoteError{Destination: "x.test", Status: 503, ErrCode: "M_UNKNOWN", Message: "down"}, 502, mxerr.Unknown, "503"},
		{"backoff", &federation.BackoffError{Destination: "x.test", Until: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}, 502, mxerr.Unknown, "2030-01-02T03:04:05Z"},
		{"unreachable", &federation.ConnectError{Destination: "x.test", Err: errors.New("connection refused")}, 502, mxerr.Unknown, "connection refused"},
	} {
		wantMatrix(t, tc.name, federation.MatrixError("x.test", tc.err), tc.status, tc.code, tc.msg)
	}
}

func mustMarshal(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// The query endpoints of a real server, asked by another listed server
// (hs1 serves its room directory, hs2 does not), with good and bad input;
// OpenID userinfo, asked by a third party that signs nothing.
func TestQueryEndpoints(t *testing.T) {
	ctx := context.Background()
	fed := apptest.NewFederation(t)
	hs1 := fed.Start(t, "hs1.chappe.test", func(c *config.Config) { c.Federation.ServePublicRooms = true })
	hs2 := fed.Start(t, "hs2.chappe.test")
	fed.Publish(t)
	if _, err := hs1.Accounts.Register(ctx, accounts.RegisterRequest{Localpart: "alice", Password: "alice-password", DisplayName: "Alice", InhibitLogin: true}); err != nil {
		t.Fatal(err)
	}
	const alice = "@alice:hs1.chappe.test"
	if err := hs1.Accounts.SetProfileField(ctx, alice, "avatar_url", json.RawMessage(`"mxc://hs1.chappe.test/abc"`)); err != nil {
		t.Fatal(err)
	}
	name := "Salon de hs1"
	roomID, err := hs1.Rooms.CreateRoom(ctx, alice, roomserver.CreateRoomRequest{Preset: roomserver.PresetPublic, Visibility: "public", Name: &name})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("profile", func(t *testing.T) {
		var p map[string]string
		err := hs2.Federation.Do(ctx, federation.Request{Destination: hs1.Name, Method: "GET", Path: "/_matrix/federation/v1/query/profile",
			Query: url.Values{"user_id": {alice}}}, &p)
		if err != nil || p["displayname"] != "Alice" || p["avatar_url"] != "mxc://hs1.chappe.test/abc" {
			t.Fatalf("whole profile: %v %v", p, err)
		}
		p = nil
		err = hs2.Federation.Do(ctx, federation.Request{Destination: hs1.Name, Method: "GET", Path: "/_matrix/federation/v1/query/profile",
			Query: url.Values{"user_id": {alice}, "field": {"displayname"}}}, &p)
		if err != nil || len(p) != 1 || p["displayname"] != "Alice" {
			t.Fatalf("one field: %v %v", p, err)
		}
	})

	t.Run("directory", func(t *testing.T) {
		var page roomserver.PublicRoomsResponse
		err := hs2.Federation.Do(ctx, federation.Request{Destination: hs1.Name, Method: "GET", Path: "/_matrix/federation/v1/publicRooms"}, &page)
		if err != nil || len(page.Chunk) != 1 || page.Chunk[0].RoomID != roomID || page.Chunk[0].Name != name || page.Chunk[0].NumJoinedMembers != 1 {
			t.Fatalf("GET: %+v %v", page, err)
		}
		for search, want := range map[string]int{"SALON": 1, "cuisine": 0} {
			page = roomserver.PublicRoomsResponse{}
			err := hs2.Federation.Do(ctx, federation.Request{Destination: hs1.Name, Method: "POST", Path: "/_matrix/federation/v1/publicRooms",
				Body: map[string]any{"filter": map[string]any{"generic_search_term": search}}}, &page)
			if err != nil || len(page.Chunk) != want {
				t.Errorf("POST searching %q: %+v %v, want %d rooms", search, page, err, want)
			}
		}
	})

	t.Run("bad input", func(t *testing.T) {
		c := rawFedClient(fed.CA.Pool, hs1.Name, hs1.FedAddr)
		c2 := rawFedClient(fed.CA.Pool, hs2.Name, hs2.FedAddr)
		const profile, rooms = "/_matrix/federation/v1/query/profile", "/_matrix/federation/v1/publicRooms"
		for _, tc := range []struct {
			name, method, uri, body string
			client                  *http.Client
			dest                    string
			status                  int
			code                    string
		}{
			{"unknown user", "GET", profile + "?user_id=%40nobody%3Ahs1.chappe.test", "", c, hs1.Name, 404, "M_NOT_FOUND"},
			{"unset field", "GET", profile + "?user_id=%40alice%3Ahs1.chappe.test&field=m.tz", "", c, hs1.Name, 404, "M_NOT_FOUND"},
			{"no user_id", "GET", profile, "", c, hs1.Name, 400, "M_MISSING_PARAM"},
			{"user_id that is no user ID", "GET", profile + "?user_id=alice", "", c, hs1.Name, 400, "M_INVALID_PARAM"},
			{"user of another server", "GET", profile + "?user_id=%40bob%3Ahs2.chappe.test", "", c, hs1.Name, 400, "M_INVALID_PARAM"},
			{"empty field", "GET", profile + "?user_id=%40alice%3Ahs1.chappe.test&field=", "", c, hs1.Name, 400, "M_INVALID_PARAM"},
			{"oversized field", "GET", profile + "?user_id=%40alice%3Ahs1.chappe.test&field=" + strings.Repeat("a", 300), "", c, hs1.Name, 400, "M_INVALID_PARAM"},
			{"negative limit", "GET", rooms + "?limit=-1", "", c, hs1.Name, 400, "M_INVALID_PARAM"},
			{"limit that is no number", "GET", rooms + "?limit=ten", "", c, hs1.Name, 400, "M_INVALID_PARAM"},
			{"bad since token", "GET", rooms + "?since=nope", "", c, hs1.Name, 400, "M_INVALID_PARAM"},
			{"POST with a mistyped limit", "POST", rooms, `{"limit":"ten"}`, c, hs1.Name, 400, "M_BAD_JSON"},
			{"POST with a negative limit", "POST", rooms, `{"limit":-3}`, c, hs1.Name, 400, "M_INVALID_PARAM"},
			{"POST with a mistyped filter", "POST", rooms, `{"filter":{"room_types":"m.space"}}`, c, hs1.Name, 400, "M_BAD_JSON"},
			{"POST with an array", "POST", rooms, `[]`, c, hs1.Name, 400, "M_BAD_JSON"},
			{"directory not served", "GET", rooms, "", c2, hs2.Name, 403, "M_FORBIDDEN"},
			{"directory not served, bad input", "POST", rooms, `{"limit":"ten"}`, c2, hs2.Name, 403, "M_FORBIDDEN"},
		} {
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			origin, key := hs2.Name, hs2.Key
			if tc.dest == hs2.Name {
				origin, key = hs1.Name, hs1.Key
			}
			status, code, _ := send(t, tc.client, signedRequest(t, tc.method, tc.uri, origin, key, tc.dest, body, body))
			if status != tc.status || code != tc.code {
				t.Errorf("%s: %d %s, want %d %s", tc.name, status, code, tc.status, tc.code)
			}
		}
		// Unsigned, the query endpoints are refused.
		req, _ := http.NewRequest("GET", "https://"+hs1.Name+profile+"?user_id=%40alice%3Ahs1.chappe.test", nil)
		if status, code, _ := send(t, c, req); status != 401 || code != "M_UNAUTHORIZED" {
			t.Errorf("unsigned profile query: %d %s", status, code)
		}
	})

	t.Run("openid userinfo", func(t *testing.T) {
		tok, err := hs1.Accounts.RequestOpenIDToken(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		c := rawFedClient(fed.CA.Pool, hs1.Name, hs1.FedAddr)
		userinfo := "https://" + hs1.Name + "/_matrix/federation/v1/openid/userinfo"
		resp, err := c.Get(userinfo + "?access_token=" + url.QueryEscape(tok.AccessToken))
		if err != nil {
			t.Fatal(err)
		}
		var info map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&info)
		resp.Body.Close()
		if resp.StatusCode != 200 || info["sub"] != alice || len(info) != 1 {
			t.Fatalf("userinfo: %d %v", resp.StatusCode, info)
		}
		big := strings.Repeat("x", 11<<20)
		for _, tc := range []struct {
			name, query, body string
			status            int
			code              string
		}{
			{"wrong token", "?access_token=cho_nope", "", 401, "M_UNKNOWN_TOKEN"},
			{"the token with a byte added", "?access_token=" + url.QueryEscape(tok.AccessToken) + "x", "", 401, "M_UNKNOWN_TOKEN"},
			{"no token", "", "", 400, "M_MISSING_PARAM"},
			{"body beyond the cap", "?access_token=" + url.QueryEscape(tok.AccessToken), big, 413, "M_TOO_LARGE"},
		} {
			var rd io.Reader
			if tc.body != "" {
				rd = strings.NewReader(tc.body)
			}
			req, _ := http.NewRequest("GET", userinfo+tc.query, rd)
			if status, code, _ := send(t, c, req); status != tc.status || code != tc.code {
				t.Errorf("%s: %d %s, want %d %s", tc.name, status, code, tc.status, tc.code)
			}
		}
	})
}
