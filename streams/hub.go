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

// Change is what a committed write concerns: the rooms whose members should
// wake, and users to wake directly (an invitee, the owner of account data).
type Change struct {
	Rooms []string
	Users []string
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
}

// NewHub starts the stream after the highest position already stored.
func NewHub(lastStored int64) *Hub {
	return &Hub{
		next: lastStored, current: lastStored,
		inFlight: map[int64]struct{}{}, pending: map[int64]Change{},
		byUser: map[string]map[*Subscription]struct{}{}, byRoom: map[string]map[*Subscription]struct{}{},
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
