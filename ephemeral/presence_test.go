package ephemeral_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"chappe/ephemeral"
	"chappe/mxerr"
)

type presenceEvent struct {
	Type    string `json:"type"`
	Sender  string `json:"sender"`
	Content struct {
		Presence        string  `json:"presence"`
		LastActiveAgo   *int64  `json:"last_active_ago"`
		StatusMsg       *string `json:"status_msg"`
		CurrentlyActive *bool   `json:"currently_active"`
	} `json:"content"`
}

func (f *fixture) presenceSince(viewer string, from, to int64) map[string]presenceEvent {
	f.t.Helper()
	raw, err := f.eph.PresenceSince(context.Background(), viewer, from, to)
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string]presenceEvent{}
	for _, r := range raw {
		var ev presenceEvent
		if err := json.Unmarshal(r, &ev); err != nil || ev.Type != "m.presence" {
			f.t.Fatalf("not an m.presence event: %s", r)
		}
		out[ev.Sender] = ev
	}
	return out
}

// TestPresenceSince: the viewer and users sharing a room; ranges; initial
// sync leaves offline users out; last_active_ago from the clock.
func TestPresenceSince(t *testing.T) {
	f := newFixture(t, true)
	ctx := context.Background()
	alice, bob, carol, stranger := f.user("alice"), f.user("bob"), f.user("carol"), f.user("stranger")
	f.room(alice, "public_chat", bob, carol)
	f.room(stranger, "private_chat")
	p := f.eph.Presence

	if err := p.PutStatus(ctx, bob, "online", ptr("in a meeting")); err != nil {
		t.Fatal(err)
	}
	if err := p.PutStatus(ctx, carol, "offline", nil); err != nil {
		t.Fatal(err)
	}
	if err := p.PutStatus(ctx, stranger, "online", nil); err != nil {
		t.Fatal(err)
	}
	mid := f.pos()
	f.clock.Advance(5 * time.Second)
	if err := f.eph.SetPresence(ctx, alice, ""); err != nil { // a sync: online
		t.Fatal(err)
	}
	end := f.pos()

	got := f.presenceSince(alice, 0, end)
	if len(got) != 2 {
		t.Fatalf("initial for alice: %v (want alice and bob; carol is offline, the stranger shares no room)", got)
	}
	b := got[bob].Content
	if b.Presence != "online" || b.StatusMsg == nil || *b.StatusMsg != "in a meeting" || b.CurrentlyActive == nil || !*b.CurrentlyActive ||
		b.LastActiveAgo == nil || *b.LastActiveAgo != 5000 {
		t.Errorf("bob: %+v", b)
	}
	if got[alice].Content.Presence != "online" {
		t.Errorf("alice: %+v", got[alice])
	}
	// Incremental: offline changes are shown too.
	got = f.presenceSince(bob, 0, mid)
	if _, ok := got[carol]; ok || len(got) != 1 {
		t.Errorf("initial for bob up to mid: %v", got)
	}
	if err := p.PutStatus(ctx, bob, "unavailable", nil); err != nil {
		t.Fatal(err)
	}
	if err := p.PutStatus(ctx, carol, "online", nil); err != nil {
		t.Fatal(err)
	}
	if err := p.PutStatus(ctx, carol, "offline", nil); err != nil {
		t.Fatal(err)
	}
	got = f.presenceSince(alice, end, f.pos())
	if len(got) != 2 || got[bob].Content.Presence != "unavailable" || got[bob].Content.StatusMsg != nil ||
		got[bob].Content.CurrentlyActive != nil || got[carol].Content.Presence != "offline" {
		t.Errorf("incremental for alice: %+v", got)
	}
	if got = f.presenceSince(alice, f.pos(), f.pos()); len(got) != 0 {
		t.Errorf("empty range: %v", got)
	}
}

// TestPresenceSyncAndSweep: syncing marks an offline user online but keeps
// a chosen state; quiet users go offline; set_presence=offline changes nothing.
func TestPresenceSyncAndSweep(t *testing.T) {
	f := newFixture(t, true)
	ctx := context.Background()
	alice, bob := f.user("alice"), f.user("bob")
	room := f.room(alice, "public_chat", bob)
	p := f.eph.Presence
	state := func(u string) string {
		s, err := p.GetStatus(ctx, u, u)
		if err != nil {
			t.Fatal(err)
		}
		return s.Presence
	}
	if s := state(alice); s != "offline" {
		t.Errorf("never seen: %s", s)
	}
	if err := p.SetPresence(ctx, alice, "offline"); err != nil || state(alice) != "offline" {
		t.Errorf("set_presence=offline marked online: %v %s", err, state(alice))
	}
	wantErr(t, p.SetPresence(ctx, alice, "away"), mxerr.InvalidParam, "set_presence=away")

	sub := f.hub.Subscribe(bob, []string{room})
	defer sub.Close()
	if err := p.SetPresence(ctx, alice, "online"); err != nil || state(alice) != "online" {
		t.Fatalf("sync did not mark online: %v %s", err, state(alice))
	}
	if !f.signalled(sub) {
		t.Error("going online did not wake a member of alice's room")
	}
	before := f.pos()
	if err := p.SetPresence(ctx, alice, "online"); err != nil || f.pos() != before {
		t.Errorf("a second sync wrote: %v, stream %d → %d", err, before, f.pos())
	}
	if err := p.PutStatus(ctx, alice, "unavailable", ptr("away")); err != nil {
		t.Fatal(err)
	}
	if err := p.SetPresence(ctx, alice, "online"); err != nil || state(alice) != "unavailable" {
		t.Errorf("sync overrode a chosen state: %v %s", err, state(alice))
	}

	// Keep syncing for a while: still there.
	for i := 0; i < 4; i++ {
		f.clock.Advance(ephemeral.OfflineAfter / 2)
		if err := p.SetPresence(ctx, alice, "online"); err != nil {
			t.Fatal(err)
		}
		if err := p.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if s := state(alice); s != "unavailable" {
		t.Errorf("syncing user: %s", s)
	}
	f.signalled(sub) // drain
	f.clock.Advance(ephemeral.OfflineAfter + time.Second)
	if err := p.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	s, _ := p.GetStatus(ctx, bob, alice)
	if s.Presence != "offline" || s.StatusMsg == nil || *s.StatusMsg != "away" {
		t.Errorf("quiet user: %+v (offline, status message kept)", s)
	}
	if !f.signalled(sub) {
		t.Error("going offline did not wake a member")
	}
	// Back again.
	if err := p.SetPresence(ctx, alice, "unavailable"); err != nil || state(alice) != "unavailable" {
		t.Errorf("coming back idle: %v %s", err, state(alice))
	}
}

// TestPresenceVisibility: own and room-sharing users only.
func TestPresenceVisibility(t *testing.T) {
	f := newFixture(t, true)
	ctx := context.Background()
	alice, bob, eve := f.user("alice"), f.user("bob"), f.user("eve")
	f.room(alice, "public_chat", bob)
	p := f.eph.Presence
	if err := p.PutStatus(ctx, alice, "online", nil); err != nil {
		t.Fatal(err)
	}
	if s, err := p.GetStatus(ctx, bob, alice); err != nil || s.Presence != "online" {
		t.Errorf("bob reads alice: %+v %v", s, err)
	}
	_, err := p.GetStatus(ctx, eve, alice)
	wantErr(t, err, mxerr.Forbidden, "a stranger reads alice")
	wantErr(t, p.PutStatus(ctx, alice, "busy", nil), mxerr.InvalidParam, "unknown state")
	long := string(make([]byte, ephemeral.MaxStatusMsgBytes+1))
	wantErr(t, p.PutStatus(ctx, alice, "online", &long), mxerr.InvalidParam, "status_msg too long")
}

// TestPresenceDisabled: accepted and ignored, read as offline, not synced.
func TestPresenceDisabled(t *testing.T) {
	f := newFixture(t, false)
	ctx := context.Background()
	alice := f.user("alice")
	p := f.eph.Presence
	before := f.pos()
	if err := p.PutStatus(ctx, alice, "online", ptr("here")); err != nil {
		t.Fatal(err)
	}
	if err := p.SetPresence(ctx, alice, "online"); err != nil {
		t.Fatal(err)
	}
	if f.pos() != before {
		t.Error("disabled presence wrote to the stream")
	}
	if s, err := p.GetStatus(ctx, alice, alice); err != nil || s.Presence != "offline" || s.StatusMsg != nil {
		t.Errorf("GET: %+v %v", s, err)
	}
	if got := f.presenceSince(alice, 0, f.pos()); len(got) != 0 {
		t.Errorf("sync: %v", got)
	}
	wantErr(t, p.PutStatus(ctx, alice, "busy", nil), mxerr.InvalidParam, "still validated")
}

// TestPresenceAfterRestart: users stored online are watched by a new
// process and go offline if they do not come back.
func TestPresenceAfterRestart(t *testing.T) {
	f := newFixture(t, true)
	ctx := context.Background()
	alice := f.user("alice")
	if err := f.eph.Presence.PutStatus(ctx, alice, "online", nil); err != nil {
		t.Fatal(err)
	}
	restarted := ephemeral.NewPresence(f.store, f.hub, ephemeral.PresenceConfig{Enabled: true, ServerName: serverName}, f.clock.Now)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		restarted.Run(runCtx, func(err error) { t.Errorf("presence run: %v", err) })
		close(done)
	}()
	defer func() { stop(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.clock.Advance(ephemeral.OfflineAfter + time.Second)
		if err := restarted.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		s, err := restarted.GetStatus(ctx, alice, alice)
		if err != nil {
			t.Fatal(err)
		}
		if s.Presence == "offline" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a user online before the restart never went offline")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPresenceReceivedOnlyForSharedRooms: another server's presence is kept
// for its users who share a room with one of ours, and dropped for others.
func TestPresenceReceivedOnlyForSharedRooms(t *testing.T) {
	f := newFixture(t, true)
	ctx := context.Background()
	alice := f.user("alice")
	room := f.room(alice, "public_chat")
	member, stranger := fmt.Sprintf("@member%d:remote.example", seq.Add(1)), fmt.Sprintf("@stranger%d:remote.example", seq.Add(1))
	// The remote member's join, as the roomserver would have stored it.
	const joinSQL = `INSERT INTO current_state (room_id, type, state_key, event_nid, membership) VALUES ($1, 'm.room.member', $2, 1, 'join')`
	if _, err := f.store.Pool().Exec(ctx, joinSQL, room, member); err != nil {
		t.Fatal(err)
	}
	before := f.pos()
	if err := f.eph.Presence.ReceivePresence(ctx, ephemeral.PresenceUpdate{UserID: stranger, Presence: "online"}); err != nil {
		t.Fatal(err)
	}
	if f.pos() != before {
		t.Error("the presence of a user sharing no room with ours was stored")
	}
	if err := f.eph.Presence.ReceivePresence(ctx, ephemeral.PresenceUpdate{UserID: member, Presence: "online"}); err != nil {
		t.Fatal(err)
	}
	got := f.presenceSince(alice, before, f.pos())
	if _, ok := got[member]; !ok || len(got) != 1 {
		t.Errorf("alice sees %v, want the remote member's presence", got)
	}
}
