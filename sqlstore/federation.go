package sqlstore

import (
	"context"
	"encoding/json"
)

// This file holds the queries of events received over federation: outliers,
// rejections, backfill positions and the transactions already processed.
// See migration 009.

const insertOutlierSQL = `
INSERT INTO events (event_id, room_id, type, state_key, sender, depth, origin_server_ts, stream_pos, state_before, json, rejected, soft_failed)
VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $10, $11)
ON CONFLICT (event_id) DO UPDATE
  SET rejected = COALESCE(events.rejected, EXCLUDED.rejected), soft_failed = events.soft_failed OR EXCLUDED.soft_failed
  WHERE events.stream_pos IS NULL
RETURNING event_nid`

const selectNIDByIDSQL = `SELECT event_nid FROM events WHERE event_id = $1`

// InsertOutlier stores an event without a place in the timeline (no stream
// position), accepted, rejected (e.Rejected) or soft-failed (e.SoftFailed).
// An event already stored keeps its JSON; an outlier takes the marks (a
// rejection or soft failure found later is never lost); a timeline event
// is left as it is. NID is filled in either way.
func (q *Queries) InsertOutlier(ctx context.Context, e *Event) error {
	err := q.q.QueryRow(ctx, insertOutlierSQL, e.EventID, e.RoomID, e.Type, e.StateKey, e.Sender, e.Depth,
		e.OriginServerTS, e.StateBefore, e.JSON, e.Rejected, e.SoftFailed).Scan(&e.NID)
	if err == nil {
		e.Outlier = true
		return nil
	}
	if notFound(err) != ErrNotFound {
		return err
	}
	return notFound(q.q.QueryRow(ctx, selectNIDByIDSQL, e.EventID).Scan(&e.NID))
}

const placeOutlierSQL = `
UPDATE events SET stream_pos = $2, state_before = $3, relates_to = $4, rel_type = $5, soft_failed = FALSE
WHERE event_nid = $1 AND stream_pos IS NULL AND rejected IS NULL`

// PlaceOutlier gives an accepted outlier its place in the timeline: a stream
// position and the state before it. ErrNotFound if it is not an accepted
// outlier any more.
func (q *Queries) PlaceOutlier(ctx context.Context, e *Event) error {
	tag, err := q.q.Exec(ctx, placeOutlierSQL, e.NID, e.StreamPos, e.StateBefore, e.RelatesTo, e.RelType)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	e.Outlier = false
	return nil
}

const nextBackfillPosSQL = `SELECT nextval('backfill_stream_pos')`

// NextBackfillPosition is a stream position for a backfilled event: negative,
// below every live position and below every earlier backfilled event.
func (q *Queries) NextBackfillPosition(ctx context.Context) (int64, error) {
	var p int64
	err := q.q.QueryRow(ctx, nextBackfillPosSQL).Scan(&p)
	return p, err
}

const selectFederationTxnSQL = `SELECT response FROM federation_txns_in WHERE origin = $1 AND txn_id = $2`

// FederationTxnResponse is the answer given to a transaction already
// processed, ErrNotFound if it is new.
func (q *Queries) FederationTxnResponse(ctx context.Context, origin, txnID string) (json.RawMessage, error) {
	var resp json.RawMessage
	err := q.q.QueryRow(ctx, selectFederationTxnSQL, origin, txnID).Scan(&resp)
	return resp, notFound(err)
}

const insertFederationTxnSQL = `
INSERT INTO federation_txns_in (origin, txn_id, received_ts, response) VALUES ($1, $2, $3, $4)
ON CONFLICT (origin, txn_id) DO UPDATE SET received_ts = EXCLUDED.received_ts`

const purgeFederationTxnsSQL = `DELETE FROM federation_txns_in WHERE received_ts < $1`

// RecordFederationTxn stores the answer to a processed transaction, and
// forgets the transactions received before purgeBefore (ms). It always
// writes (a repeat keeps the first answer but updates its time), so that
// its commit flushes the transaction's PDUs (see FlushLater).
func (q *Queries) RecordFederationTxn(ctx context.Context, origin, txnID string, now, purgeBefore int64, response json.RawMessage) error {
	if _, err := q.q.Exec(ctx, insertFederationTxnSQL, origin, txnID, now, response); err != nil {
		return err
	}
	_, err := q.q.Exec(ctx, purgeFederationTxnsSQL, purgeBefore)
	return err
}

const deleteCurrentStateSQL = `DELETE FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3`

// DeleteCurrentState removes (type, state_key) from the room's current state
// (state resolution may drop a key every fork's candidate failed).
func (q *Queries) DeleteCurrentState(ctx context.Context, roomID, evType, stateKey string) error {
	_, err := q.q.Exec(ctx, deleteCurrentStateSQL, roomID, evType, stateKey)
	return err
}

const selectRoomEventsByDepthSQL = `
SELECT ` + eventColumns + ` FROM events
WHERE room_id = $1 AND depth <= $2 AND depth >= $3 AND stream_pos IS NOT NULL AND rejected IS NULL
ORDER BY depth DESC, stream_pos DESC LIMIT $4`

// TimelineEventsBetweenDepths returns the room's timeline events with depth in
// [minDepth, maxDepth], deepest first, at most limit.
func (q *Queries) TimelineEventsBetweenDepths(ctx context.Context, roomID string, maxDepth, minDepth int64, limit int) ([]Event, error) {
	rows, err := q.q.Query(ctx, selectRoomEventsByDepthSQL, roomID, maxDepth, minDepth, limit)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}
