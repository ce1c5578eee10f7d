package roomserver

import (
	"context"

	"github.com/tidwall/gjson"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// reader answers one user's reads of one room: it knows the user's
// membership history, so history visibility can be decided per event.
type reader struct {
	r       *Roomserver
	q       *sqlstore.Queries
	room    sqlstore.Room
	userID  string
	current *snapshot // current state
	history []sqlstore.MembershipChange
}

// openReader loads what a read of the room needs. It does not decide access:
// each read path does, with the rules of its endpoint.
func (r *Roomserver) openReader(ctx context.Context, roomID, userID string) (*reader, error) {
	q := &r.store.Queries
	room, err := r.loadRoom(ctx, q, roomID, false)
	if err != nil {
		return nil, err
	}
	current, err := r.loadSnapshot(ctx, q, room.StateSnapshot)
	if err != nil {
		return nil, err
	}
	history, err := q.MembershipHistory(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	// A forgotten room's history is gone for the user: read as if they had
	// never been there (spec: POST /rooms/{roomId}/forget). Joining or being
	// invited again clears the mark.
	if forgotten, err := q.RoomForgotten(ctx, userID, roomID); err != nil {
		return nil, err
	} else if forgotten {
		history = nil
	}
	return &reader{r: r, q: q, room: room, userID: userID, current: current, history: history}, nil
}

// membership is the user's current membership ("leave" if none).
func (rd *reader) membership() string {
	if len(rd.history) == 0 {
		return "leave"
	}
	return rd.history[len(rd.history)-1].Membership
}

// everMember tells whether the user has any membership event in the room.
func (rd *reader) everMember() bool { return len(rd.history) > 0 }

// historyVisibility returns the m.room.history_visibility in force in snap.
func (rd *reader) historyVisibility(ctx context.Context, snap *snapshot) (string, error) {
	return rd.r.historyVisibilityAt(ctx, rd.q, rd.room.RoomVersion, snap)
}

// historyVisibilityAt returns the m.room.history_visibility in force in
// snap ("shared" when unset, as the spec says).
func (r *Roomserver) historyVisibilityAt(ctx context.Context, q *sqlstore.Queries, version string, snap *snapshot) (string, error) {
	ev, err := r.stateEvent(ctx, q, version, snap, stateKey{"m.room.history_visibility", ""})
	if err != nil || ev == nil {
		return "shared", err
	}
	if v := gjson.GetBytes(ev.Content(), "history_visibility").String(); v != "" {
		return v, nil
	}
	return "shared", nil
}

// worldReadable tells whether the room's current history is world readable.
func (rd *reader) worldReadable(ctx context.Context) (bool, error) {
	v, err := rd.historyVisibility(ctx, rd.current)
	return v == "world_readable", err
}

// canSee applies the spec's history visibility rules to one event.
// Spec: client-server-api/_index.md, "History visibility":
//  1. world_readable at the event: allow;
//  2. the user's membership at the event was join: allow;
//  3. shared at the event, and the user joined at any point after it: allow;
//  4. invited at the event, and the user's membership then was invite: allow;
//  5. otherwise deny.
//
// The user's membership "at" their own membership event is the one it sets,
// so people see their own joins, leaves and invites.
func (rd *reader) canSee(ctx context.Context, row sqlstore.Event) (bool, error) {
	before, err := rd.r.loadSnapshot(ctx, rd.q, row.StateBefore)
	if err != nil {
		return false, err
	}
	visibility, err := rd.historyVisibility(ctx, before)
	if err != nil {
		return false, err
	}
	if visibility == "world_readable" {
		return true, nil
	}
	membership := rd.membershipAt(posOf(row))
	if row.Type == "m.room.member" && row.StateKey != nil && *row.StateKey == rd.userID {
		membership = gjson.Get(row.JSON, "content.membership").String()
		if membership == "leave" || membership == "ban" {
			return true, nil // one's own departure is always visible
		}
	}
	switch {
	case membership == "join":
		return true, nil
	case visibility == "shared" && rd.joinedAfter(posOf(row)):
		return true, nil
	case visibility == "invited" && membership == "invite":
		return true, nil
	}
	return false, nil
}

// Position is a place in a room's order, re-exported for tokens.
type Position = sqlstore.Position

// membershipAt is the user's membership just before pos.
func (rd *reader) membershipAt(pos Position) string {
	m := "leave"
	for _, h := range rd.history {
		if !before(h.Pos, pos) {
			break
		}
		m = h.Membership
	}
	return m
}

// joinedAfter tells whether the user joined the room at any point after pos.
func (rd *reader) joinedAfter(pos Position) bool {
	for _, h := range rd.history {
		if before(pos, h.Pos) && h.Membership == "join" {
			return true
		}
	}
	return false
}

func before(a, b Position) bool {
	return a.Depth < b.Depth || (a.Depth == b.Depth && a.Stream < b.Stream)
}

// visible keeps the events the user may see.
func (rd *reader) visible(ctx context.Context, rows []sqlstore.Event) ([]sqlstore.Event, error) {
	out := rows[:0:0]
	for _, row := range rows {
		ok, err := rd.canSee(ctx, row)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, row)
		}
	}
	return out, nil
}

// stateView is the state the user may read: the current state while joined
// (or if the room is world readable), the state when they left otherwise.
// Spec: GET /rooms/{roomId}/state ("If the user has left the room then the
// state is taken from the state of the room when they left").
func (rd *reader) stateView(ctx context.Context) (*snapshot, error) {
	if rd.membership() == "join" {
		return rd.current, nil
	}
	if wr, err := rd.worldReadable(ctx); err != nil {
		return nil, err
	} else if wr {
		return rd.current, nil
	}
	m := rd.membership()
	if m == "leave" || m == "ban" {
		if len(rd.history) == 0 {
			return nil, rd.notMember()
		}
		// The state after the user's last membership event.
		last := rd.history[len(rd.history)-1]
		rows, err := rd.q.EventsPage(ctx, rd.room.RoomID, last.Pos, true, 1, sqlstore.EventFilter{})
		if err != nil {
			return nil, err
		}
		if len(rows) == 0 {
			return nil, rd.notMember()
		}
		return rd.r.stateAfter(ctx, rd.q, rows[0])
	}
	return nil, rd.notMember()
}

func (rd *reader) notMember() error {
	return mxerr.New(mxerr.Forbidden, "You are not a member of room %s", rd.room.RoomID)
}

// stateAfter is the state right after the event (not stored for message
// events, so computed on the fly).
func (r *Roomserver) stateAfter(ctx context.Context, q *sqlstore.Queries, row sqlstore.Event) (*snapshot, error) {
	before, err := r.loadSnapshot(ctx, q, row.StateBefore)
	if err != nil {
		return nil, err
	}
	if row.StateKey == nil {
		return before, nil
	}
	after := &snapshot{nid: -1, state: make(map[stateKey]int64, len(before.state)+1)}
	for k, v := range before.state {
		after.state[k] = v
	}
	after.state[stateKey{row.Type, *row.StateKey}] = row.NID
	return after, nil
}

// posOf is an event's place in the room's order.
func posOf(row sqlstore.Event) Position {
	return Position{Depth: row.Depth, Stream: row.StreamPos}
}
