package sqlstore

import (
	"context"
)

// roomEventsInRangeSQL returns, for each room, its latest events with
// stream positions in ($2, $3], at most $4 per room, newest first; $5.. is
// the timeline filter (see eventFilterSQL, shifted by one).
const roomEventsInRangeSQL = `
SELECT e.* FROM unnest($1::text[]) AS r(room_id)
CROSS JOIN LATERAL (
    SELECT ` + eventColumns + ` FROM events
    WHERE room_id = r.room_id AND stream_pos > $2 AND stream_pos <= $3
      AND ($5::text[] IS NULL OR type LIKE ANY($5))
      AND ($6::text[] IS NULL OR NOT type LIKE ANY($6))
      AND ($7::text[] IS NULL OR sender = ANY($7))
      AND ($8::text[] IS NULL OR NOT sender = ANY($8))
      AND ($9::boolean IS NULL OR ((json::jsonb -> 'content' ? 'url') = $9))
    ORDER BY stream_pos DESC LIMIT $4
) e`

// RoomEventsInRange returns up to perRoom latest events of each room in the
// stream range (from, to], filtered, newest first within a room.
func (q *Queries) RoomEventsInRange(ctx context.Context, roomIDs []string, from, to int64, perRoom int, f EventFilter) ([]Event, error) {
	rows, err := q.q.Query(ctx, roomEventsInRangeSQL, roomIDs, from, to, perRoom,
		likePatterns(f.Types), likePatterns(f.NotTypes), f.Senders, f.NotSenders, f.ContainsURL)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}

// lastEventsAtOrBeforeSQL is, for each room, its last event at or before
// stream position $2.
const lastEventsAtOrBeforeSQL = `
SELECT e.* FROM unnest($1::text[]) AS r(room_id)
CROSS JOIN LATERAL (
    SELECT ` + eventColumns + ` FROM events
    WHERE room_id = r.room_id AND stream_pos <= $2 ORDER BY stream_pos DESC LIMIT 1
) e`

// LastEventsAtOrBefore returns each room's last event at or before pos.
func (q *Queries) LastEventsAtOrBefore(ctx context.Context, roomIDs []string, pos int64) ([]Event, error) {
	rows, err := q.q.Query(ctx, lastEventsAtOrBeforeSQL, roomIDs, pos)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}

// MembershipEvent is one of a user's membership events.
type MembershipEvent struct {
	RoomID     string
	Membership string
	Pos        Position
}

const membershipChangesSQL = `
SELECT room_id, COALESCE(json::jsonb -> 'content' ->> 'membership', ''), depth, stream_pos FROM events
WHERE type = 'm.room.member' AND state_key = $1 AND stream_pos > $2 AND stream_pos <= $3
ORDER BY stream_pos`

// MembershipChanges lists the user's membership events in the stream range
// (from, to], oldest first, across all rooms.
func (q *Queries) MembershipChanges(ctx context.Context, userID string, from, to int64) ([]MembershipEvent, error) {
	rows, err := q.q.Query(ctx, membershipChangesSQL, userID, from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []MembershipEvent
	for rows.Next() {
		var m MembershipEvent
		if err := rows.Scan(&m.RoomID, &m.Membership, &m.Pos.Depth, &m.Pos.Stream); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

const membershipHistoriesSQL = `
SELECT room_id, COALESCE(json::jsonb -> 'content' ->> 'membership', ''), depth, stream_pos FROM events
WHERE type = 'm.room.member' AND state_key = $1 AND room_id = ANY($2) AND stream_pos IS NOT NULL
ORDER BY depth, stream_pos`

// MembershipHistories is MembershipHistory for several rooms at once.
func (q *Queries) MembershipHistories(ctx context.Context, userID string, roomIDs []string) (map[string][]MembershipChange, error) {
	rows, err := q.q.Query(ctx, membershipHistoriesSQL, userID, roomIDs)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]MembershipChange{}
	for rows.Next() {
		var room string
		var m MembershipChange
		if err := rows.Scan(&room, &m.Membership, &m.Pos.Depth, &m.Pos.Stream); err != nil {
			return nil, err
		}
		out[room] = append(out[room], m)
	}
	return out, rows.Err()
}

// CurrentMembership is a user's current membership in one room.
type CurrentMembership struct {
	RoomID     string
	Membership string
	EventNID   int64
}

const currentMembershipsSQL = `
SELECT room_id, membership, event_nid FROM current_state
WHERE type = 'm.room.member' AND state_key = $1 AND membership IS NOT NULL`

// CurrentMemberships lists every room where the user has a membership.
func (q *Queries) CurrentMemberships(ctx context.Context, userID string) ([]CurrentMembership, error) {
	rows, err := q.q.Query(ctx, currentMembershipsSQL, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []CurrentMembership
	for rows.Next() {
		var m CurrentMembership
		if err := rows.Scan(&m.RoomID, &m.Membership, &m.EventNID); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// RoomMemberSummary is the membership counts and heroes of a room.
type RoomMemberSummary struct {
	Joined  int
	Invited int
	Heroes  []string // up to 5 joined or invited members other than the viewer, by user ID
}

const memberCountsSQL = `
SELECT room_id, membership, count(*) FROM current_state
WHERE room_id = ANY($1) AND type = 'm.room.member' AND membership IN ('join', 'invite')
GROUP BY room_id, membership`

const heroesSQL = `
SELECT r.room_id, h.state_key FROM unnest($1::text[]) AS r(room_id)
CROSS JOIN LATERAL (
    SELECT state_key FROM current_state
    WHERE room_id = r.room_id AND type = 'm.room.member' AND membership IN ('join', 'invite') AND state_key <> $2
    ORDER BY state_key LIMIT 5
) h`

// MemberSummaries returns the counts and heroes of each room for viewer.
func (q *Queries) MemberSummaries(ctx context.Context, roomIDs []string, viewer string) (map[string]*RoomMemberSummary, error) {
	out := map[string]*RoomMemberSummary{}
	for _, r := range roomIDs {
		out[r] = &RoomMemberSummary{}
	}
	rows, err := q.q.Query(ctx, memberCountsSQL, roomIDs)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var room, membership string
		var n int
		if err := rows.Scan(&room, &membership, &n); err != nil {
			rows.Close()
			return nil, err
		}
		if membership == "join" {
			out[room].Joined = n
		} else {
			out[room].Invited = n
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = q.q.Query(ctx, heroesSQL, roomIDs, viewer)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var room, user string
		if err := rows.Scan(&room, &user); err != nil {
			return nil, err
		}
		out[room].Heroes = append(out[room].Heroes, user)
	}
	return out, rows.Err()
}

const firstEventAfterStreamSQL = `
SELECT depth, stream_pos FROM events WHERE room_id = $1 AND stream_pos > $2 ORDER BY stream_pos LIMIT 1`

// FirstPositionAfterStream is the room position of the first event after
// stream position pos; ErrNotFound if there is none.
func (q *Queries) FirstPositionAfterStream(ctx context.Context, roomID string, pos int64) (Position, error) {
	var p Position
	err := q.q.QueryRow(ctx, firstEventAfterStreamSQL, roomID, pos).Scan(&p.Depth, &p.Stream)
	return p, notFound(err)
}
