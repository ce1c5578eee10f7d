package ephemeral

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"time"

	"chappe/mxerr"
	"chappe/sqlstore"
	"chappe/streams"
)

// Typing limits.
const (
	// MaxTypingTimeout caps the timeout a client asks for.
	MaxTypingTimeout = 120 * time.Second
	// DefaultTypingTimeout applies when a client starts typing without one.
	DefaultTypingTimeout = 30 * time.Second
	// maxTypingEntries bounds the memory: users typing in rooms, all rooms together.
	maxTypingEntries = 200_000
	// typingSweepInterval is how often expired notifications are removed
	// (and the rooms' members told), so a stop is seen within about a second.
	typingSweepInterval = time.Second
	// forgetTypingRoomAfter is how long a room's empty list is remembered,
	// so that a /sync from before the last change still learns it is empty.
	forgetTypingRoomAfter = 10 * time.Minute
)

// typingRoom is the typing state of one room.
type typingRoom struct {
	users      map[string]time.Time // user → when their notification expires
	changed    int64                // typing position (streams.Position.Typing) of the last change of the list
	emptySince time.Time            // when users became empty; zero while someone types
}

// Typing is the typing notifications component. Notifications live in
// memory only and expire by themselves: expiry is checked on every read, and
// a periodic sweep (Run) removes expired ones and tells the rooms' members.
// No timer per notification; memory is bounded by maxTypingEntries.
type Typing struct {
	store *sqlstore.Store
	hub   *streams.Hub
	now   Clock
	fed   Federation // nil: typing stays on this server

	mu      sync.Mutex
	rooms   map[string]*typingRoom
	entries int
	// horizon: a room forgotten after a change at this typing position; a
	// reader from before it cannot tell whether such a room changed.
	horizon int64
}

// NewTyping returns the component; each change bumps hub's typing counter
// and wakes the room's members. now nil is the system clock.
func NewTyping(store *sqlstore.Store, hub *streams.Hub, now Clock) *Typing {
	return &Typing{store: store, hub: hub, now: clockOrNow(now), rooms: map[string]*typingRoom{}}
}

// PutTyping records that userID started (typing, for timeoutMs
// milliseconds; 0 means DefaultTypingTimeout, beyond MaxTypingTimeout is
// capped) or stopped typing in the room, where they must be joined.
// Spec: PUT /rooms/{roomId}/typing/{userId}.
func (t *Typing) PutTyping(ctx context.Context, userID, roomID string, typing bool, timeoutMs int64) error {
	if timeoutMs < 0 {
		return mxerr.New(mxerr.InvalidParam, "timeout must not be negative")
	}
	timeout := time.Duration(min(timeoutMs, MaxTypingTimeout.Milliseconds())) * time.Millisecond
	m, err := t.store.Membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if m != "join" {
		return mxerr.New(mxerr.Forbidden, "You are not joined to room %s", roomID)
	}
	if timeout == 0 {
		timeout = DefaultTypingTimeout
	}
	if !typing {
		t.Stop(roomID, userID)
	} else if err := t.Start(roomID, userID, timeout); err != nil {
		return err
	}
	return t.announceTyping(ctx, roomID, userID, typing)
}

// Start marks userID typing in the room for timeout (the caller has checked
// the membership; federation will call it for remote users). Refreshing a
// notification does not wake anyone: the list is the same.
func (t *Typing) Start(roomID, userID string, timeout time.Duration) error {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	room := t.rooms[roomID]
	if room == nil {
		room = &typingRoom{users: map[string]time.Time{}}
		t.rooms[roomID] = room
	}
	exp, ok := room.users[userID]
	if !ok {
		if t.entries >= maxTypingEntries {
			t.sweepLocked(now)
			if t.entries >= maxTypingEntries {
				return mxerr.New(mxerr.LimitExceeded, "Too many typing notifications on this server; try again shortly")
			}
		}
		t.entries++
	}
	room.users[userID] = now.Add(timeout)
	room.emptySince = time.Time{}
	if !ok || !exp.After(now) { // new, or expired but not swept yet: the list changes
		t.changedLocked(roomID, room)
	}
	return nil
}

// Stop removes userID's typing notification in the room, if any.
func (t *Typing) Stop(roomID, userID string) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	room := t.rooms[roomID]
	if room == nil {
		return
	}
	if _, ok := room.users[userID]; !ok {
		return
	}
	// Even an expired notification, not swept yet, was seen by some
	// clients: they must learn that it is gone.
	delete(room.users, userID)
	t.entries--
	if len(room.users) == 0 {
		room.emptySince = now
	}
	t.changedLocked(roomID, room)
}

// changedLocked bumps the typing counter for the room and records it. Done
// under t.mu, so a reader of TypingSince sees the new list together with a
// position at least as high as the one /sync may already have.
func (t *Typing) changedLocked(roomID string, room *typingRoom) {
	t.hub.Typed(roomID)
	room.changed = t.hub.Current().Typing
}

// Typing lists the users currently typing in the room, sorted.
func (t *Typing) Typing(roomID string) []string {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.listLocked(t.rooms[roomID], now)
}

func (t *Typing) listLocked(room *typingRoom, now time.Time) []string {
	out := []string{}
	if room == nil {
		return out
	}
	for u, exp := range room.users {
		if exp.After(now) {
			out = append(out, u)
		}
	}
	sort.Strings(out)
	return out
}

// TypingSince is what /sync shows of typing in the room: its m.typing event
// ({"user_ids": [...]}, possibly empty: everyone stopped) if the list changed
// after typing position since (streams.Position.Typing of the client's
// token); always when since is 0 (initial sync).
func (t *Typing) TypingSince(roomID string, since int64) (json.RawMessage, bool) {
	now := t.now()
	t.mu.Lock()
	room := t.rooms[roomID]
	changed := since == 0 ||
		(room != nil && room.changed > since) ||
		(room == nil && since < t.horizon) // it may have changed, then been forgotten
	var list []string
	if changed {
		list = t.listLocked(room, now)
	}
	t.mu.Unlock()
	if !changed {
		return nil, false
	}
	ev, _ := json.Marshal(typingEvent{Type: "m.typing", Content: typingContent{UserIDs: list}})
	return ev, true
}

type typingContent struct {
	UserIDs []string `json:"user_ids"`
}

type typingEvent struct {
	Type    string        `json:"type"`
	Content typingContent `json:"content"`
}

// Sweep removes expired notifications, telling the rooms' members, and
// forgets rooms whose list has long been empty.
func (t *Typing) Sweep() {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweepLocked(now)
}

func (t *Typing) sweepLocked(now time.Time) {
	for id, room := range t.rooms {
		expired := false
		for u, exp := range room.users {
			if !exp.After(now) {
				delete(room.users, u)
				t.entries--
				expired = true
			}
		}
		if expired {
			if len(room.users) == 0 {
				room.emptySince = now
			}
			t.changedLocked(id, room)
		}
		if len(room.users) == 0 && now.Sub(room.emptySince) >= forgetTypingRoomAfter {
			delete(t.rooms, id)
			t.horizon = max(t.horizon, room.changed)
		}
	}
}

// Run sweeps every second until ctx ends.
func (t *Typing) Run(ctx context.Context) {
	tick := time.NewTicker(typingSweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.Sweep()
		}
	}
}
