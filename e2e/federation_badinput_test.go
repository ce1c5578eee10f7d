package e2e

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"

	"chappe/federation"
)

// TestFederationBadInputGetsMatrixErrors: a listed server's signed
// requests with bad parameters get a clear Matrix error from the room
// endpoints, never a 500, and change nothing.
func TestFederationBadInputGetsMatrixErrors(t *testing.T) {
	_, hs1, hs2 := fedPair(t)
	alice := registerUser(t, hs1.URL, "alice")
	room, err := alice.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	roomPath := url.PathEscape(room.RoomID.String())
	cases := []struct {
		name         string
		method, path string
		query        url.Values
		body         any
		status       int
		errcode      string
	}{
		{"backfill without v", http.MethodGet, "/_matrix/federation/v1/backfill/" + roomPath, url.Values{"limit": {"10"}}, nil, 400, "M_INVALID_PARAM"},
		{"backfill with a bad limit", http.MethodGet, "/_matrix/federation/v1/backfill/" + roomPath, url.Values{"limit": {"dix"}, "v": {"$x"}}, nil, 400, "M_INVALID_PARAM"},
		{"backfill of an unknown room", http.MethodGet, "/_matrix/federation/v1/backfill/" + url.PathEscape("!inconnue:hs1.chappe.test"), url.Values{"limit": {"10"}, "v": {"$x"}}, nil, 404, "M_NOT_FOUND"},
		{"timestamp_to_event without ts", http.MethodGet, "/_matrix/federation/v1/timestamp_to_event/" + roomPath, url.Values{"dir": {"f"}}, nil, 400, "M_INVALID_PARAM"},
		{"timestamp_to_event with a bad dir", http.MethodGet, "/_matrix/federation/v1/timestamp_to_event/" + roomPath, url.Values{"ts": {"1"}, "dir": {"x"}}, nil, 400, "M_INVALID_PARAM"},
		{"timestamp_to_event of a room hs2 is not in", http.MethodGet, "/_matrix/federation/v1/timestamp_to_event/" + roomPath, url.Values{"ts": {"1"}, "dir": {"f"}}, nil, 403, "M_FORBIDDEN"},
		{"unknown event", http.MethodGet, "/_matrix/federation/v1/event/" + url.PathEscape("$inconnu"), nil, nil, 404, "M_NOT_FOUND"},
		{"get_missing_events with a wrong type", http.MethodPost, "/_matrix/federation/v1/get_missing_events/" + roomPath, nil, json.RawMessage(`{"limit":"dix"}`), 400, "M_BAD_JSON"},
	}
	for _, tc := range cases {
		err := hs2.Federation.Do(t.Context(), federation.Request{Destination: hs1.Name, Method: tc.method, Path: tc.path, Query: tc.query, Body: tc.body}, nil)
		var re *federation.RemoteError
		if !errors.As(err, &re) || re.Status != tc.status || re.ErrCode != tc.errcode {
			t.Errorf("%s: got %v, want %d %s", tc.name, err, tc.status, tc.errcode)
		}
	}
}
