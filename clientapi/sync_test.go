package clientapi_test

import (
	"net/url"
	"testing"
	"time"

	"chappe/app/apptest"
)

// syncOnce calls /sync with the query params and returns the decoded body.
func syncOnce(t *testing.T, srv *apptest.Server, u user, params url.Values) response {
	t.Helper()
	r := call(t, "GET", srv.URL+c+"/sync?"+params.Encode(), u.Token, "")
	if r.Status != 200 {
		t.Fatalf("sync %v: %d %s", params, r.Status, r.Raw)
	}
	return r
}

func joinedSection(r response) map[string]any {
	rooms, _ := r.Body["rooms"].(map[string]any)
	j, _ := rooms["join"].(map[string]any)
	return j
}

func roomSection(r response, kind, roomID string) map[string]any {
	rooms, _ := r.Body["rooms"].(map[string]any)
	k, _ := rooms[kind].(map[string]any)
	room, _ := k[roomID].(map[string]any)
	return room
}

func timelineBodies(room map[string]any) []string {
	tl, _ := room["timeline"].(map[string]any)
	return bodies(events(tl["events"]))
}

func TestSyncInitialAndIncremental(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "alice-password")
	bob := register(t, srv, "bob", "bob-password")
	room := createRoom(t, srv, alice, map[string]any{"preset": "public_chat", "name": "Salon"})
	joinRoom(t, srv, bob, room)
	for i := 0; i < 3; i++ {
		sendText(t, srv, alice, room, "hello")
	}
	first := syncOnce(t, srv, bob, url.Values{})
	jr := roomSection(first, "join", room)
	if jr == nil {
		t.Fatalf("initial sync without the room: %s", first.Raw)
	}
	if got := timelineBodies(jr); len(got) != 3 {
		t.Fatalf("timeline bodies %v", got)
	}
	since := first.Body["next_batch"].(string)

	// Long-poll: a message sent while bob waits arrives within the timeout.
	done := make(chan response, 1)
	start := time.Now()
	go func() { done <- syncOnce(t, srv, bob, url.Values{"since": {since}, "timeout": {"10000"}}) }()
	time.Sleep(200 * time.Millisecond)
	sendText(t, srv, alice, room, "live")
	select {
	case r := <-done:
		if got := timelineBodies(roomSection(r, "join", room)); len(got) != 1 || got[0] != "live" {
			t.Fatalf("incremental timeline %v: %s", got, r.Raw)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("the long-poll did not return promptly")
		}
		since = r.Body["next_batch"].(string)
	case <-time.After(10 * time.Second):
		t.Fatal("long-poll never returned")
	}
	// Nothing new: the long-poll waits the timeout and returns empty.
	start = time.Now()
	r := syncOnce(t, srv, bob, url.Values{"since": {since}, "timeout": {"300"}})
	if time.Since(start) < 250*time.Millisecond {
		t.Fatalf("an empty long-poll returned after %v", time.Since(start))
	}
	if len(joinedSection(r)) != 0 {
		t.Fatalf("quiet rooms listed: %s", r.Raw)
	}
}
