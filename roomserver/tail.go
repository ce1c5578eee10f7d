package roomserver

import (
	"slices"
	"sort"
	"sync"

	"github.com/tidwall/gjson"

	"chappe/sqlstore"
)

// tailLength is how many of a room's latest events stay in memory.
const tailLength = 32

// roomTail is the latest events of a room, kept so that a /sync woken by a
// new message reads it from memory instead of the database. Every event of
// the room with a stream position above complete is in events once it is
// visible: events are added after their transaction commits and before the
// Hub makes them visible.
type roomTail struct {
	mu       sync.Mutex
	complete int64
	events   []sqlstore.Event // ascending stream positions
}

// rememberCommitted adds committed events to their rooms' tails.
func (r *Roomserver) rememberCommitted(rows []sqlstore.Event) {
	for _, row := range rows {
		t, ok := r.tails.Get(row.RoomID)
		if !ok {
			t = &roomTail{complete: row.StreamPos - 1}
			if prev, loaded, _ := r.tails.PeekOrAdd(row.RoomID, t); loaded {
				t = prev
			}
		}
		t.add(row)
	}
}

func (t *roomTail) add(row sqlstore.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if row.StreamPos <= t.complete {
		return
	}
	i := sort.Search(len(t.events), func(i int) bool { return t.events[i].StreamPos >= row.StreamPos })
	if i < len(t.events) && t.events[i].StreamPos == row.StreamPos {
		return
	}
	t.events = append(t.events, sqlstore.Event{})
	copy(t.events[i+1:], t.events[i:])
	t.events[i] = row
	if len(t.events) > tailLength {
		t.complete = t.events[0].StreamPos
		t.events = append(t.events[:0:0], t.events[1:]...)
	}
}

// forgetTail drops a room's tail (after a redaction rewrote one of its events).
func (r *Roomserver) forgetTail(roomID string) { r.tails.Remove(roomID) }

// tailRange returns the room's newest events in (from, to] that pass the
// filter, newest first, at most limit, if the tail covers the range.
func (r *Roomserver) tailRange(roomID string, from, to int64, limit int, f sqlstore.EventFilter) ([]sqlstore.Event, bool) {
	t, ok := r.tails.Get(roomID)
	if !ok {
		return nil, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if from < t.complete {
		return nil, false
	}
	var out []sqlstore.Event
	for i := len(t.events) - 1; i >= 0 && len(out) < limit; i-- {
		ev := t.events[i]
		if ev.StreamPos > to || !keepsEvent(f, ev) {
			continue
		}
		if ev.StreamPos <= from {
			break
		}
		out = append(out, ev)
	}
	return out, true
}

// keepsEvent is the SQL event filter (eventFilterSQL) applied in memory.
func keepsEvent(f sqlstore.EventFilter, ev sqlstore.Event) bool {
	if f.Types != nil && !TypeMatches(ev.Type, f.Types) {
		return false
	}
	if TypeMatches(ev.Type, f.NotTypes) {
		return false
	}
	if f.Senders != nil && !slices.Contains(f.Senders, ev.Sender) {
		return false
	}
	if slices.Contains(f.NotSenders, ev.Sender) {
		return false
	}
	if f.ContainsURL != nil && gjson.Get(ev.JSON, "content.url").Exists() != *f.ContainsURL {
		return false
	}
	return true
}
