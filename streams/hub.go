// Package streams orders everything a client syncs and wakes the clients
// waiting for it.
//
// Every persisted change a client can receive (events, account data,
// receipts, presence, to-device messages, device-list changes…) takes a
// position from one counter, the server's stream. Positions are handed out
// by the Hub while the change's transaction is open and reported back when
// it commits or rolls back. The Hub's current position is the highest one
// below which nothing is still in flight, so a reader that has seen
// "everything up to current" never misses a change committed later with a
// smaller position. Typing notifications are not persisted; they have a
// counter of their own.
//
// A /sync long-poll subscribes before it reads (spec: client-server-api
// "Syncing"), so a change published between its read and its wait still
// wakes it; while waiting it costs no database query.
//
// One Hub serves one process; several processes on one database would need
// the counter in PostgreSQL and pg_notify to share wake-ups.
package streams

import (
	"context"
	"sync"
)

// Kind says what sort of data a change wrote, so a sync can skip reading
// the kinds that did not change for it. The zero value, KindUnknown, means
// "anything": readers then read everything, which is always correct.
type Kind int

// The kinds of change.
const (
	KindUnknown     Kind = iota
	KindEvent            // room events (and membership changes of the Users)
	KindAccountData      // account data of the Users (global or per room)
	KindReceipt          // receipts in the Rooms (or private ones of the Users)
	KindPresence         // presence of the Users
	KindToDevice         // to-device messages for the Users
	KindDeviceList       // device-list changes that concern the Users
	// KindMembership is never given to Commit: it is recorded for the rooms
	// of a KindEvent change that names Users (membership events), so readers
	// can ask whether a room's membership changed.
	KindMembership
	kindCount
)

// Change is what a committed write concerns: the rooms whose members should
// wake, and users to wake directly (an invitee, the owner of account data),
// and what kind of data changed.
type Change struct {
	Rooms []string
	Users []string
	Kind  Kind
}

// Position is a sync position: the stream and the typing counter.
type Position struct {
	Stream int64
	Typing int64
}

// After tells whether p has anything beyond q.
func (p Position) After(q Position) bool { return p.Stream > q.Stream || p.Typing > q.Typing }

// Hub allocates stream positions, tracks the ones in flight and wakes
// subscribers once changes are visible.
type Hub struct {
	mu       sync.Mutex
	next     int64              // last position handed out
	inFlight map[int64]struct{} // allocated, not yet committed or rolled back
	pending  map[int64]Change   // committed but not yet visible (a lower position is in flight)
	current  int64              // highest position with nothing in flight at or below it
	typing   int64              // typing counter
	byUser   map[string]map[*Subscription]struct{}
	byRoom   map[string]map[*Subscription]struct{}

	// start is where this process's memory of changes begins: positions at
	// or before it are not in last, so ChangedSince answers "maybe" for them.
	start int64
	// last is, per kind, the latest visible position of a change naming each
	// room or user. It holds one entry per room and user that changed while
	// the process runs: bounded by the rooms and accounts that exist.
	last [kindCount]map[string]int64
}

// NewHub starts the stream after the highest position already stored.
func NewHub(lastStored int64) *Hub {
	h := &Hub{
		next: lastStored, current: lastStored, start: lastStored,
		inFlight: map[int64]struct{}{}, pending: map[int64]Change{},
		byUser: map[string]map[*Subscription]struct{}{}, byRoom: map[string]map[*Subscription]struct{}{},
	}
	for k := range h.last {
		h.last[k] = map[string]int64{}
	}
	return h
}

// ChangedSince tells whether a change of that kind naming key (a room or
// user ID) became visible after position since. It answers true when it
// cannot know (since is older than this process's memory), and for changes
// of unknown kind, so a false is always safe to act on.
func (h *Hub) ChangedSince(kind Kind, key string, since int64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if since < h.start {
		return true
	}
	return h.last[kind][key] > since || h.last[KindUnknown][key] > since
}

// Anywhere is the key of ChangedSince that matches a change of the kind
// naming any room or user.
const Anywhere = ""

// record notes that change became visible at pos.
func (h *Hub) record(pos int64, ch Change) {
	h.last[ch.Kind][Anywhere] = pos
	if ch.Kind == KindEvent && len(ch.Users) > 0 {
		for _, r := range ch.Rooms {
			h.last[KindMembership][r] = pos
		}
	}
	for _, keys := range [][]string{ch.Rooms, ch.Users} {
		for _, k := range keys {
			if h.last[ch.Kind][k] < pos {
				h.last[ch.Kind][k] = pos
			}
		}
	}
}

// Current is the position up to which every change is visible.
func (h *Hub) Current() Position {
	h.mu.Lock()
	defer h.mu.Unlock()
	return Position{Stream: h.current, Typing: h.typing}
}

// Alloc hands out the next stream position. The caller must call Commit or
// Abort exactly once for it.
func (h *Hub) Alloc() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.next++
	h.inFlight[h.next] = struct{}{}
	return h.next
}

// Commit reports that the write at pos committed, concerning change.
func (h *Hub) Commit(pos int64, change Change) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.inFlight, pos)
	h.pending[pos] = change
	h.advance()
}

// Abort reports that the write at pos rolled back: the position stays unused.
func (h *Hub) Abort(pos int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.inFlight, pos)
	h.advance()
}

// advance moves current up to just below the lowest position in flight and
// wakes the subscribers of every change that became visible.
func (h *Hub) advance() {
	limit := h.next
	for p := range h.inFlight {
		if p-1 < limit {
			limit = p - 1
		}
	}
	if limit <= h.current {
		return
	}
	woken := map[*Subscription]struct{}{}
	for p, ch := range h.pending {
		if p > limit {
			continue
		}
		delete(h.pending, p)
		h.record(p, ch)
		h.collect(ch, woken)
	}
	h.current = limit
	for s := range woken {
		s.signal()
	}
}

// Typed bumps the typing counter and wakes the rooms' members.
func (h *Hub) Typed(roomID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.typing++
	woken := map[*Subscription]struct{}{}
	h.collect(Change{Rooms: []string{roomID}}, woken)
	for s := range woken {
		s.signal()
	}
}

func (h *Hub) collect(ch Change, into map[*Subscription]struct{}) {
	for _, u := range ch.Users {
		for s := range h.byUser[u] {
			into[s] = struct{}{}
		}
	}
	for _, r := range ch.Rooms {
		for s := range h.byRoom[r] {
			into[s] = struct{}{}
		}
	}
}

// Subscription is one waiting client: its user and the rooms it is in.
type Subscription struct {
	hub    *Hub
	user   string
	rooms  []string
	wake   chan struct{}
	closed bool
}

// Subscribe registers interest in changes for userID and rooms. Call it
// before reading, then Wait; Close when done.
func (h *Hub) Subscribe(userID string, rooms []string) *Subscription {
	s := &Subscription{hub: h, user: userID, rooms: rooms, wake: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	add := func(m map[string]map[*Subscription]struct{}, k string) {
		if m[k] == nil {
			m[k] = map[*Subscription]struct{}{}
		}
		m[k][s] = struct{}{}
	}
	add(h.byUser, userID)
	for _, r := range rooms {
		add(h.byRoom, r)
	}
	return s
}

func (s *Subscription) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Wait returns the position to read up to: at once if the stream is already
// beyond since (the caller then reads, and if nothing concerned the user,
// waits again from the returned position), otherwise when a change for the
// subscriber becomes visible or ctx ends.
func (s *Subscription) Wait(ctx context.Context, since Position) Position {
	if cur := s.hub.Current(); cur.After(since) {
		return cur
	}
	select {
	case <-s.wake:
	case <-ctx.Done():
	}
	return s.hub.Current()
}

// Close unregisters the subscription; the maps drop empty entries so they
// never grow beyond the live subscriptions.
func (s *Subscription) Close() {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	drop := func(m map[string]map[*Subscription]struct{}, k string) {
		delete(m[k], s)
		if len(m[k]) == 0 {
			delete(m, k)
		}
	}
	drop(h.byUser, s.user)
	for _, r := range s.rooms {
		drop(h.byRoom, r)
	}
}
