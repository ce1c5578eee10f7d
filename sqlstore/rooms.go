package sqlstore

import (
	"context"
	"encoding/json"
)

// Room is a row of rooms.
type Room struct {
	RoomID             string
	RoomVersion        string
	Creator            string
	CreatedTS          int64
	ForwardExtremities []string
	MaxDepth           int64
	StateSnapshot      int64
	Published          bool
}

const insertRoomSQL = `
INSERT INTO rooms (room_id, room_version, creator, created_ts, forward_extremities, max_depth, state_snapshot)
VALUES ($1, $2, $3, $4, $5, $6, $7)`

// InsertRoom creates a room row; ErrConflict if the room ID exists.
func (q *Queries) InsertRoom(ctx context.Context, r Room) error {
	_, err := q.q.Exec(ctx, insertRoomSQL, r.RoomID, r.RoomVersion, r.Creator, r.CreatedTS, r.ForwardExtremities, r.MaxDepth, r.StateSnapshot)
	if isUniqueViolation(err) {
		return ErrConflict
	}
	return err
}

const insertOrKeepRoomSQL = insertRoomSQL + `
ON CONFLICT (room_id) DO UPDATE SET creator = EXCLUDED.creator WHERE rooms.creator = ''`

// InsertOrLockRoom creates a room row unless the room ID exists, and locks
// the row for the rest of the transaction. An existing room keeps its row;
// only an unknown creator (a room known through an invite or a knock) is
// filled in. It never fails on a conflict, so the transaction goes on.
func (q *Queries) InsertOrLockRoom(ctx context.Context, r Room) (Room, error) {
	if _, err := q.q.Exec(ctx, insertOrKeepRoomSQL, r.RoomID, r.RoomVersion, r.Creator, r.CreatedTS, r.ForwardExtremities, r.MaxDepth, r.StateSnapshot); err != nil {
		return Room{}, err
	}
	return q.LockRoom(ctx, r.RoomID)
}

const selectRoomSQL = `
SELECT room_id, room_version, creator, created_ts, forward_extremities, max_depth, state_snapshot, published
FROM rooms WHERE room_id = $1`

// selectRoomForUpdateSQL locks the room's row: every writer of a room's graph
// holds it for its whole transaction, so sends to one room are serialised and
// the graph never forks locally.
const selectRoomForUpdateSQL = selectRoomSQL + ` FOR UPDATE`

// GetRoom returns the room, ErrNotFound if unknown.
func (q *Queries) GetRoom(ctx context.Context, roomID string) (Room, error) {
	return q.scanRoom(ctx, selectRoomSQL, roomID)
}

// LockRoom returns the room and holds its row lock until the transaction ends.
func (q *Queries) LockRoom(ctx context.Context, roomID string) (Room, error) {
	return q.scanRoom(ctx, selectRoomForUpdateSQL, roomID)
}

func (q *Queries) scanRoom(ctx context.Context, sql, roomID string) (Room, error) {
	var r Room
	err := q.q.QueryRow(ctx, sql, roomID).Scan(&r.RoomID, &r.RoomVersion, &r.Creator, &r.CreatedTS, &r.ForwardExtremities, &r.MaxDepth, &r.StateSnapshot, &r.Published)
	return r, notFound(err)
}

const updateRoomHeadSQL = `
UPDATE rooms SET forward_extremities = $2, max_depth = $3, state_snapshot = $4 WHERE room_id = $1`

// UpdateRoomHead records the room's new extremities, depth and current state.
func (q *Queries) UpdateRoomHead(ctx context.Context, roomID string, extremities []string, maxDepth, snapshot int64) error {
	_, err := q.q.Exec(ctx, updateRoomHeadSQL, roomID, extremities, maxDepth, snapshot)
	return err
}

const setPublishedSQL = `UPDATE rooms SET published = $2 WHERE room_id = $1`

// SetRoomPublished lists or unlists the room in the public directory.
func (q *Queries) SetRoomPublished(ctx context.Context, roomID string, published bool) error {
	tag, err := q.q.Exec(ctx, setPublishedSQL, roomID, published)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

// StateDelta maps event type → state key → event NID.
type StateDelta map[string]map[string]int64

// Snapshot is a row of state_snapshots.
type Snapshot struct {
	NID       int64
	ParentNID *int64
	ChainLen  int
	Delta     StateDelta
}

const insertSnapshotSQL = `
INSERT INTO state_snapshots (room_id, parent_nid, chain_len, delta) VALUES ($1, $2, $3, $4) RETURNING snapshot_nid`

// InsertSnapshot stores a snapshot (full when parent is nil) and returns its NID.
func (q *Queries) InsertSnapshot(ctx context.Context, roomID string, parent *int64, chainLen int, delta StateDelta) (int64, error) {
	var nid int64
	err := q.q.QueryRow(ctx, insertSnapshotSQL, roomID, parent, chainLen, delta).Scan(&nid)
	return nid, err
}

// selectSnapshotChainSQL walks from a snapshot up to its full ancestor; the
// rows come back from the full snapshot down to the requested one.
const selectSnapshotChainSQL = `
WITH RECURSIVE chain AS (
    SELECT snapshot_nid, parent_nid, chain_len, delta FROM state_snapshots WHERE snapshot_nid = $1
  UNION ALL
    SELECT s.snapshot_nid, s.parent_nid, s.chain_len, s.delta
    FROM state_snapshots s JOIN chain c ON s.snapshot_nid = c.parent_nid
)
SELECT snapshot_nid, parent_nid, chain_len, delta FROM chain ORDER BY chain_len`

// SnapshotChain returns the snapshots needed to materialise nid, full one first.
func (q *Queries) SnapshotChain(ctx context.Context, nid int64) ([]Snapshot, error) {
	rows, err := q.q.Query(ctx, selectSnapshotChainSQL, nid)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Snapshot
	for rows.Next() {
		var s Snapshot
		var raw []byte
		if err := rows.Scan(&s.NID, &s.ParentNID, &s.ChainLen, &raw); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(raw, &s.Delta); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, ErrNotFound
	}
	return out, nil
}

// StateEntry is a row of current_state.
type StateEntry struct {
	Type       string
	StateKey   string
	EventNID   int64
	Membership *string
}

const upsertCurrentStateSQL = `
INSERT INTO current_state (room_id, type, state_key, event_nid, membership) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_nid = EXCLUDED.event_nid, membership = EXCLUDED.membership`

// SetCurrentState records event nid as the room's current (type, state_key).
func (q *Queries) SetCurrentState(ctx context.Context, roomID string, e StateEntry) error {
	_, err := q.q.Exec(ctx, upsertCurrentStateSQL, roomID, e.Type, e.StateKey, e.EventNID, e.Membership)
	return err
}

const selectCurrentStateSQL = `
SELECT type, state_key, event_nid, membership FROM current_state WHERE room_id = $1`

// CurrentState returns the room's whole current state.
func (q *Queries) CurrentState(ctx context.Context, roomID string) ([]StateEntry, error) {
	return q.scanStateEntries(ctx, selectCurrentStateSQL, roomID)
}

const selectCurrentStateOfTypeSQL = selectCurrentStateSQL + ` AND type = $2`

// CurrentStateOfType returns the room's current state events of one type.
func (q *Queries) CurrentStateOfType(ctx context.Context, roomID, evType string) ([]StateEntry, error) {
	return q.scanStateEntries(ctx, selectCurrentStateOfTypeSQL, roomID, evType)
}

func (q *Queries) scanStateEntries(ctx context.Context, sql string, args ...any) ([]StateEntry, error) {
	rows, err := q.q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []StateEntry
	for rows.Next() {
		var e StateEntry
		if err := rows.Scan(&e.Type, &e.StateKey, &e.EventNID, &e.Membership); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

const selectCurrentStateEntrySQL = `
SELECT event_nid FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3`

// CurrentStateEvent returns the NID of the room's current (type, state_key), ErrNotFound if unset.
func (q *Queries) CurrentStateEvent(ctx context.Context, roomID, evType, stateKey string) (int64, error) {
	var nid int64
	err := q.q.QueryRow(ctx, selectCurrentStateEntrySQL, roomID, evType, stateKey).Scan(&nid)
	return nid, notFound(err)
}

const selectRoomsOfMemberSQL = `
SELECT room_id FROM current_state WHERE type = 'm.room.member' AND state_key = $1 AND membership = $2 ORDER BY room_id`

// RoomsWithMembership lists the rooms where the user's current membership is membership.
func (q *Queries) RoomsWithMembership(ctx context.Context, userID, membership string) ([]string, error) {
	rows, err := q.q.Query(ctx, selectRoomsOfMemberSQL, userID, membership)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

const countMembersSQL = `
SELECT count(*) FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join'`

// JoinedMemberCount counts the room's joined members.
func (q *Queries) JoinedMemberCount(ctx context.Context, roomID string) (int, error) {
	var n int
	err := q.q.QueryRow(ctx, countMembersSQL, roomID).Scan(&n)
	return n, err
}
