package sqlstore

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Event is a row of events.
type Event struct {
	NID            int64
	EventID        string
	RoomID         string
	Type           string
	StateKey       *string
	Sender         string
	Depth          int64
	OriginServerTS int64
	StreamPos      int64
	StateBefore    int64
	JSON           string
	RedactedBy     *string
	RelatesTo      *string
	RelType        *string
	// Outlier: held without a place in the timeline (no stream position;
	// StreamPos is 0). See migration 009.
	Outlier bool
	// Rejected is why the event was rejected; nil when it was accepted.
	Rejected *string
	// SoftFailed marks an outlier that failed against the room's current
	// state: hidden from clients (migration 012).
	SoftFailed bool
}

const insertEventSQL = `
INSERT INTO events (event_id, room_id, type, state_key, sender, depth, origin_server_ts, stream_pos, state_before, json, relates_to, rel_type)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
RETURNING event_nid`

// InsertEvent stores an event at its stream position; ErrConflict if its ID
// is already stored. It fills in NID.
func (q *Queries) InsertEvent(ctx context.Context, e *Event) error {
	err := q.q.QueryRow(ctx, insertEventSQL, e.EventID, e.RoomID, e.Type, e.StateKey, e.Sender, e.Depth, e.OriginServerTS,
		e.StreamPos, e.StateBefore, e.JSON, e.RelatesTo, e.RelType).Scan(&e.NID)
	if isUniqueViolation(err) {
		return ErrConflict
	}
	return err
}

const eventColumns = `event_nid, event_id, room_id, type, state_key, sender, depth, origin_server_ts, COALESCE(stream_pos, 0) AS stream_pos, state_before, json, redacted_by, relates_to, rel_type, stream_pos IS NULL AS outlier, rejected, soft_failed`

func scanEvents(rows interface {
	Next() bool
	Scan(...any) error
	Err() error
	Close()
}) ([]Event, error) {
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		if err := rows.Scan(&e.NID, &e.EventID, &e.RoomID, &e.Type, &e.StateKey, &e.Sender, &e.Depth, &e.OriginServerTS,
			&e.StreamPos, &e.StateBefore, &e.JSON, &e.RedactedBy, &e.RelatesTo, &e.RelType, &e.Outlier, &e.Rejected, &e.SoftFailed); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

const selectEventByIDSQL = `SELECT ` + eventColumns + ` FROM events WHERE event_id = $1`

// EventByID returns one event, ErrNotFound if unknown.
func (q *Queries) EventByID(ctx context.Context, eventID string) (Event, error) {
	rows, err := q.q.Query(ctx, selectEventByIDSQL, eventID)
	if err != nil {
		return Event{}, err
	}
	evs, err := scanEvents(rows)
	if err != nil {
		return Event{}, err
	}
	if len(evs) == 0 {
		return Event{}, ErrNotFound
	}
	return evs[0], nil
}

const selectEventsByNIDSQL = `SELECT ` + eventColumns + ` FROM events WHERE event_nid = ANY($1)`

// EventsByNID returns the events with these NIDs, in no particular order.
func (q *Queries) EventsByNID(ctx context.Context, nids []int64) ([]Event, error) {
	rows, err := q.q.Query(ctx, selectEventsByNIDSQL, nids)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}

const selectEventsByIDSQL = `SELECT ` + eventColumns + ` FROM events WHERE event_id = ANY($1)`

// EventsByID returns the events with these IDs that exist, in no particular order.
func (q *Queries) EventsByID(ctx context.Context, ids []string) ([]Event, error) {
	rows, err := q.q.Query(ctx, selectEventsByIDSQL, ids)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}

// Position is a place in a room's topological order: (depth, stream_pos).
// Used as a pagination boundary it means the gap just before that place.
type Position struct {
	Depth  int64
	Stream int64
}

// EventFilter narrows a page of events in SQL (spec: RoomEventFilter).
type EventFilter struct {
	Types       []string // nil: any; entries may end in '*'
	NotTypes    []string
	Senders     []string
	NotSenders  []string
	ContainsURL *bool
}

// eventFilterSQL is the RoomEventFilter part of a page query; NULL
// arguments match everything.
const eventFilterSQL = `
  AND ($5::text[] IS NULL OR type LIKE ANY($5))
  AND ($6::text[] IS NULL OR NOT type LIKE ANY($6))
  AND ($7::text[] IS NULL OR sender = ANY($7))
  AND ($8::text[] IS NULL OR NOT sender = ANY($8))
  AND ($9::boolean IS NULL OR ((json::jsonb -> 'content' ? 'url') = $9))`

// eventsForwardSQL and eventsBackwardSQL page through a room in topological
// order from a gap: ($2, $3) stands for the gap just before that position, so
// forwards includes it and backwards excludes it. Two statements so each uses
// the (room_id, depth, stream_pos) index in its own direction.
const eventsForwardSQL = `SELECT ` + eventColumns + ` FROM events
WHERE room_id = $1 AND (depth, stream_pos) >= ($2, $3) AND stream_pos IS NOT NULL` + eventFilterSQL + `
ORDER BY depth, stream_pos LIMIT $4`

const eventsBackwardSQL = `SELECT ` + eventColumns + ` FROM events
WHERE room_id = $1 AND (depth, stream_pos) < ($2, $3) AND stream_pos IS NOT NULL` + eventFilterSQL + `
ORDER BY depth DESC, stream_pos DESC LIMIT $4`

// EventsPage returns up to limit events after (forwards) or before
// (backwards) the gap just before position from, in that direction's order.
func (q *Queries) EventsPage(ctx context.Context, roomID string, from Position, forwards bool, limit int, f EventFilter) ([]Event, error) {
	sql := eventsBackwardSQL
	if forwards {
		sql = eventsForwardSQL
	}
	rows, err := q.q.Query(ctx, sql, roomID, from.Depth, from.Stream, limit,
		likePatterns(f.Types), likePatterns(f.NotTypes), f.Senders, f.NotSenders, f.ContainsURL)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}

// likePatterns turns filter type patterns ("m.room.*") into LIKE patterns,
// escaping LIKE's own wildcards.
func likePatterns(types []string) []string {
	if types == nil {
		return nil
	}
	out := make([]string, 0, len(types))
	for _, t := range types {
		p := make([]rune, 0, len(t)+2)
		for _, c := range t {
			switch c {
			case '%', '_', '\\':
				p = append(p, '\\', c)
			case '*':
				p = append(p, '%')
			default:
				p = append(p, c)
			}
		}
		out = append(out, string(p))
	}
	return out
}

// redactEventSQL also drops the relation: redaction strips m.relates_to, so
// the event no longer relates to anything.
const redactEventSQL = `
UPDATE events SET json = $2, redacted_by = $3, relates_to = NULL, rel_type = NULL
WHERE event_id = $1 AND redacted_by IS NULL`

// RedactEvent replaces an event's JSON with its redacted form, for good.
func (q *Queries) RedactEvent(ctx context.Context, eventID, redactedJSON, redactedBy string) error {
	_, err := q.q.Exec(ctx, redactEventSQL, eventID, redactedJSON, redactedBy)
	return err
}

// The target is content.redacts from room version 11, top-level redacts
// before.
const selectRedactionsOfSQL = `
SELECT ` + eventColumns + ` FROM events WHERE type = 'm.room.redaction' AND room_id = $1
  AND COALESCE(json::jsonb -> 'content' ->> 'redacts', json::jsonb ->> 'redacts') = ANY($2)`

// RedactionsOf returns the redaction events in the room that target any of
// eventIDs (one pass over the room's redactions).
func (q *Queries) RedactionsOf(ctx context.Context, roomID string, eventIDs []string) ([]Event, error) {
	rows, err := q.q.Query(ctx, selectRedactionsOfSQL, roomID, eventIDs)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}

// One query per direction, each ordered as the events_room_ts index is
// (room_id, origin_server_ts), so neither sorts the room.
const (
	eventsAtOrAfterSQL = `
SELECT ` + eventColumns + ` FROM events WHERE room_id = $1 AND origin_server_ts >= $2 AND stream_pos IS NOT NULL
ORDER BY origin_server_ts ASC LIMIT $3`
	eventsAtOrBeforeSQL = `
SELECT ` + eventColumns + ` FROM events WHERE room_id = $1 AND origin_server_ts <= $2 AND stream_pos IS NOT NULL
ORDER BY origin_server_ts DESC LIMIT $3`
)

// EventsNearTimestamp returns events at or after (forwards) or at or before
// ts, closest first.
func (q *Queries) EventsNearTimestamp(ctx context.Context, roomID string, ts int64, forwards bool, limit int) ([]Event, error) {
	sql := eventsAtOrBeforeSQL
	if forwards {
		sql = eventsAtOrAfterSQL
	}
	rows, err := q.q.Query(ctx, sql, roomID, ts, limit)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}

// relationsSQL pages through the events relating to a parent, by stream
// position; $5 is the exclusive boundary, $6 the direction (true: forwards).
const relationsSQL = `
SELECT ` + eventColumns + ` FROM events
WHERE relates_to = $1 AND room_id = $2
  AND ($3::text IS NULL OR rel_type = $3)
  AND ($4::text IS NULL OR type = $4)
  AND CASE WHEN $6 THEN stream_pos > $5 ELSE stream_pos < $5 END
ORDER BY CASE WHEN $6 THEN stream_pos END ASC, CASE WHEN NOT $6 THEN stream_pos END DESC
LIMIT $7`

// Relations returns the events that relate to parent.
func (q *Queries) Relations(ctx context.Context, roomID, parent string, relType, evType *string, from int64, forwards bool, limit int) ([]Event, error) {
	rows, err := q.q.Query(ctx, relationsSQL, parent, roomID, relType, evType, from, forwards, limit)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}

const insertTxnSQL = `
INSERT INTO client_txns (user_id, device_id, scope, txn_id, event_id, created_ts) VALUES ($1, $2, $3, $4, $5, $6)`

// InsertClientTxn records the event created for a client transaction.
func (q *Queries) InsertClientTxn(ctx context.Context, t ClientTxn, eventID string) error {
	_, err := q.q.Exec(ctx, insertTxnSQL, t.UserID, t.DeviceID, t.Scope, t.TxnID, eventID, t.CreatedTS)
	if isUniqueViolation(err) {
		return ErrConflict
	}
	return err
}

const selectTxnSQL = `SELECT event_id FROM client_txns WHERE user_id = $1 AND device_id = $2 AND scope = $3 AND txn_id = $4`

// ClientTxnEvent returns the event of an earlier transaction, ErrNotFound if none.
func (q *Queries) ClientTxnEvent(ctx context.Context, t ClientTxn) (string, error) {
	var id string
	err := q.q.QueryRow(ctx, selectTxnSQL, t.UserID, t.DeviceID, t.Scope, t.TxnID).Scan(&id)
	return id, notFound(err)
}

const selectTxnsOfEventsSQL = `SELECT event_id, txn_id FROM client_txns WHERE event_id = ANY($1) AND user_id = $2 AND device_id = $3`

// TxnsOfEvents maps those of eventIDs that the device sent to their transaction IDs.
func (q *Queries) TxnsOfEvents(ctx context.Context, eventIDs []string, userID, deviceID string) (map[string]string, error) {
	rows, err := q.q.Query(ctx, selectTxnsOfEventsSQL, eventIDs, userID, deviceID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var ev, txn string
		if err := rows.Scan(&ev, &txn); err != nil {
			return nil, err
		}
		out[ev] = txn
	}
	return out, rows.Err()
}

// MembershipChange is one of a user's membership events in a room.
type MembershipChange struct {
	Pos        Position
	Membership string
}

const selectMembershipHistorySQL = `
SELECT depth, stream_pos, COALESCE(json::jsonb -> 'content' ->> 'membership', '') FROM events
WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2 AND stream_pos IS NOT NULL ORDER BY depth, stream_pos`

// MembershipHistory lists the user's membership events in the room, oldest first.
func (q *Queries) MembershipHistory(ctx context.Context, roomID, userID string) ([]MembershipChange, error) {
	rows, err := q.q.Query(ctx, selectMembershipHistorySQL, roomID, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []MembershipChange
	for rows.Next() {
		var m MembershipChange
		if err := rows.Scan(&m.Pos.Depth, &m.Pos.Stream, &m.Membership); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// ClientTxn is a client transaction to record with an event.
type ClientTxn struct {
	UserID, DeviceID string
	Scope            string // the endpoint: "send <room> <type>", "redact <room> <event>"
	TxnID            string
	CreatedTS        int64
}

// AppendEvent stores a non-state event at its stream position, moves the
// room's head to it and records its client transaction, in one round trip (a
// pipelined batch inside the caller's transaction). It fills in NID;
// ErrConflict if the event or the transaction ID already exists.
func (q *Queries) AppendEvent(ctx context.Context, e *Event, extremities []string, maxDepth, snapshot int64, txn *ClientTxn) error {
	b := &pgx.Batch{}
	b.Queue(insertEventSQL, e.EventID, e.RoomID, e.Type, e.StateKey, e.Sender, e.Depth, e.OriginServerTS,
		e.StreamPos, e.StateBefore, e.JSON, e.RelatesTo, e.RelType).QueryRow(func(row pgx.Row) error {
		return row.Scan(&e.NID)
	})
	b.Queue(updateRoomHeadSQL, e.RoomID, extremities, maxDepth, snapshot)
	if txn != nil {
		b.Queue(insertTxnSQL, txn.UserID, txn.DeviceID, txn.Scope, txn.TxnID, e.EventID, txn.CreatedTS)
	}
	err := q.q.SendBatch(ctx, b).Close()
	if isUniqueViolation(err) {
		return ErrConflict
	}
	return err
}

const selectLatestPositionSQL = `
SELECT depth, stream_pos FROM events WHERE room_id = $1 AND stream_pos IS NOT NULL ORDER BY depth DESC, stream_pos DESC LIMIT 1`

// LatestPosition is the position of the room's last event in topological order.
func (q *Queries) LatestPosition(ctx context.Context, roomID string) (Position, error) {
	var p Position
	err := q.q.QueryRow(ctx, selectLatestPositionSQL, roomID).Scan(&p.Depth, &p.Stream)
	return p, notFound(err)
}

// selectMaxStreamSQL is the highest stream position stored in any table
// that takes positions from the stream (see package streams).
const selectMaxStreamSQL = `SELECT GREATEST(
    (SELECT COALESCE(max(stream_pos), 0) FROM events),
    (SELECT COALESCE(max(stream_pos), 0) FROM account_data),
    (SELECT COALESCE(max(stream_pos), 0) FROM receipts),
    (SELECT COALESCE(max(stream_pos), 0) FROM presence),
    (SELECT COALESCE(max(stream_pos), 0) FROM e2ee_device_list_changes),
    (SELECT COALESCE(max(stream_pos), 0) FROM e2ee_to_device),
    (SELECT COALESCE(max(stream_pos), 0) FROM e2ee_to_device_acked)
)`

// MaxStreamPosition is where the stream resumes after a restart.
func (q *Queries) MaxStreamPosition(ctx context.Context) (int64, error) {
	var p int64
	err := q.q.QueryRow(ctx, selectMaxStreamSQL).Scan(&p)
	return p, err
}
