package sqlstore

import (
	"context"
	"errors"
)

// Queries of the per-user and ephemeral data around /sync: account data,
// receipts, presence, the user directory (migration 006).

// AccountData is a row of account_data.
type AccountData struct {
	RoomID    string // '' for global account data
	Type      string
	Content   string // JSON object
	StreamPos int64
}

const upsertAccountDataSQL = `
INSERT INTO account_data (user_id, room_id, type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = EXCLUDED.content, stream_pos = EXCLUDED.stream_pos`

// PutAccountData stores (or replaces) one piece of account data at stream position pos.
func (q *Queries) PutAccountData(ctx context.Context, userID, roomID, evType, content string, pos int64) error {
	_, err := q.q.Exec(ctx, upsertAccountDataSQL, userID, roomID, evType, content, pos)
	return err
}

const selectAccountDataSQL = `
SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`

// GetAccountData returns one piece of account data, ErrNotFound if unset.
func (q *Queries) GetAccountData(ctx context.Context, userID, roomID, evType string) (string, error) {
	var content string
	err := q.q.QueryRow(ctx, selectAccountDataSQL, userID, roomID, evType).Scan(&content)
	return content, notFound(err)
}

const selectAccountDataSinceSQL = `
SELECT room_id, type, content, stream_pos FROM account_data
WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3
ORDER BY stream_pos`

// AccountDataSince returns the user's account data changed in (from, to], in stream order.
func (q *Queries) AccountDataSince(ctx context.Context, userID string, from, to int64) ([]AccountData, error) {
	rows, err := q.q.Query(ctx, selectAccountDataSinceSQL, userID, from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AccountData
	for rows.Next() {
		var a AccountData
		if err := rows.Scan(&a.RoomID, &a.Type, &a.Content, &a.StreamPos); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

const selectMembershipSQL = `
SELECT COALESCE(membership, '') FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2`

// Membership is the user's current membership of the room, "" if none.
func (q *Queries) Membership(ctx context.Context, roomID, userID string) (string, error) {
	var m string
	err := q.q.QueryRow(ctx, selectMembershipSQL, roomID, userID).Scan(&m)
	if err = notFound(err); errors.Is(err, ErrNotFound) {
		return "", nil
	}
	return m, err
}

const selectShareRoomSQL = `
SELECT EXISTS (
  SELECT 1 FROM current_state a JOIN current_state b ON b.room_id = a.room_id
  WHERE a.type = 'm.room.member' AND a.state_key = $1 AND a.membership = 'join'
    AND b.type = 'm.room.member' AND b.state_key = $2 AND b.membership = 'join')`

// ShareJoinedRoom tells whether both users are joined to at least one common room.
func (q *Queries) ShareJoinedRoom(ctx context.Context, a, b string) (bool, error) {
	var ok bool
	err := q.q.QueryRow(ctx, selectShareRoomSQL, a, b).Scan(&ok)
	return ok, err
}

// Receipt is a row of receipts.
type Receipt struct {
	RoomID         string
	UserID         string
	Type           string // m.read or m.read.private
	ThreadID       string // '' unthreaded, 'main' or a thread root event ID
	EventID        string
	EventStreamPos int64
	TS             int64
	StreamPos      int64
}

// upsertReceiptSQL replaces the receipt only if it points further in the
// room than the stored one: receipts never move backwards.
const upsertReceiptSQL = `
INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, event_stream_pos, ts, stream_pos)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE
SET event_id = EXCLUDED.event_id, event_stream_pos = EXCLUDED.event_stream_pos, ts = EXCLUDED.ts, stream_pos = EXCLUDED.stream_pos
WHERE receipts.event_stream_pos < EXCLUDED.event_stream_pos`

// PutReceipt stores r unless the stored receipt of the same (room, user,
// type, thread) is for the same or a later event; it tells whether r was stored.
func (q *Queries) PutReceipt(ctx context.Context, r Receipt) (bool, error) {
	tag, err := q.q.Exec(ctx, upsertReceiptSQL, r.RoomID, r.UserID, r.Type, r.ThreadID, r.EventID, r.EventStreamPos, r.TS, r.StreamPos)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() > 0, nil
}

// selectReceiptsSinceSQL: private receipts only reach their owner.
const selectReceiptsSinceSQL = `
SELECT room_id, user_id, receipt_type, thread_id, event_id, event_stream_pos, ts, stream_pos FROM receipts
WHERE room_id = ANY($1) AND stream_pos > $2 AND stream_pos <= $3
  AND (receipt_type <> 'm.read.private' OR user_id = $4)
ORDER BY stream_pos`

// ReceiptsSince returns the receipts of the rooms changed in (from, to] that
// viewer may see, in stream order.
func (q *Queries) ReceiptsSince(ctx context.Context, viewer string, roomIDs []string, from, to int64) ([]Receipt, error) {
	rows, err := q.q.Query(ctx, selectReceiptsSinceSQL, roomIDs, from, to, viewer)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Receipt
	for rows.Next() {
		var r Receipt
		if err := rows.Scan(&r.RoomID, &r.UserID, &r.Type, &r.ThreadID, &r.EventID, &r.EventStreamPos, &r.TS, &r.StreamPos); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

const selectReadUpToSQL = `
SELECT COALESCE(max(event_stream_pos), 0) FROM receipts
WHERE room_id = $1 AND user_id = $2 AND receipt_type IN ('m.read', 'm.read.private') AND thread_id = ANY($3)`

// ReadUpTo is the highest event stream position the user's m.read and
// m.read.private receipts of these thread IDs point to; 0 if none.
func (q *Queries) ReadUpTo(ctx context.Context, userID, roomID string, threadIDs []string) (int64, error) {
	var pos int64
	err := q.q.QueryRow(ctx, selectReadUpToSQL, roomID, userID, threadIDs).Scan(&pos)
	return pos, err
}

// Presence is a row of presence.
type Presence struct {
	UserID       string
	State        string
	StatusMsg    *string
	LastActiveTS int64
	StreamPos    int64
}

const upsertPresenceSQL = `
INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_pos) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (user_id) DO UPDATE SET state = EXCLUDED.state, status_msg = EXCLUDED.status_msg,
  last_active_ts = EXCLUDED.last_active_ts, stream_pos = EXCLUDED.stream_pos`

// PutPresence stores the user's presence at stream position p.StreamPos.
func (q *Queries) PutPresence(ctx context.Context, p Presence) error {
	_, err := q.q.Exec(ctx, upsertPresenceSQL, p.UserID, p.State, p.StatusMsg, p.LastActiveTS, p.StreamPos)
	return err
}

const presenceColumns = `user_id, state, status_msg, last_active_ts, stream_pos`

func (q *Queries) scanPresence(ctx context.Context, sql string, args ...any) ([]Presence, error) {
	rows, err := q.q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Presence
	for rows.Next() {
		var p Presence
		if err := rows.Scan(&p.UserID, &p.State, &p.StatusMsg, &p.LastActiveTS, &p.StreamPos); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

const selectPresenceSQL = `SELECT ` + presenceColumns + ` FROM presence WHERE user_id = $1`

// GetPresence returns the user's stored presence, ErrNotFound if none.
func (q *Queries) GetPresence(ctx context.Context, userID string) (Presence, error) {
	ps, err := q.scanPresence(ctx, selectPresenceSQL, userID)
	if err != nil {
		return Presence{}, err
	}
	if len(ps) == 0 {
		return Presence{}, ErrNotFound
	}
	return ps[0], nil
}

// selectPresenceSinceSQL: the viewer's own presence and that of the users
// joined to a room the viewer is joined to.
const selectPresenceSinceSQL = `SELECT ` + presenceColumns + ` FROM presence p
WHERE p.stream_pos > $2 AND p.stream_pos <= $3 AND ($4 OR p.state <> 'offline')
  AND (p.user_id = $1 OR EXISTS (
    SELECT 1 FROM current_state a JOIN current_state b ON b.room_id = a.room_id
    WHERE a.type = 'm.room.member' AND a.state_key = $1 AND a.membership = 'join'
      AND b.type = 'm.room.member' AND b.state_key = p.user_id AND b.membership = 'join'))
ORDER BY p.stream_pos`

// PresenceSince returns the presence changed in (from, to] of viewer and of
// the users sharing a joined room with them; offline ones only if includeOffline.
func (q *Queries) PresenceSince(ctx context.Context, viewer string, from, to int64, includeOffline bool) ([]Presence, error) {
	return q.scanPresence(ctx, selectPresenceSinceSQL, viewer, from, to, includeOffline)
}

const selectPresenceNotOfflineSQL = `SELECT ` + presenceColumns + ` FROM presence WHERE state <> 'offline'`

// PresenceNotOffline returns every user whose stored state is not offline.
func (q *Queries) PresenceNotOffline(ctx context.Context) ([]Presence, error) {
	return q.scanPresence(ctx, selectPresenceNotOfflineSQL)
}

// DirectoryUser is a user directory search result.
type DirectoryUser struct {
	UserID      string
	DisplayName *string
	AvatarURL   *string
}

// searchUserDirectorySQL searches the users joined to a room that the
// searcher is joined to, or to a room anyone may join (join rule public) or
// read (history visibility world_readable). Each word of $2 (lower case) must
// be in the user ID or the display name. A local user's profile gives the
// name and avatar; a remote user's, their member event in one of the rooms.
// Ranking: a name or localpart starting with the first word, then users with
// a display name, then by user ID.
const searchUserDirectorySQL = `
WITH visible_rooms AS (
    SELECT room_id FROM current_state
    WHERE type = 'm.room.member' AND state_key = $1 AND membership = 'join'
  UNION
    SELECT cs.room_id FROM current_state cs JOIN events e ON e.event_nid = cs.event_nid
    WHERE cs.type = 'm.room.join_rules' AND cs.state_key = ''
      AND e.json::jsonb -> 'content' ->> 'join_rule' = 'public'
  UNION
    SELECT cs.room_id FROM current_state cs JOIN events e ON e.event_nid = cs.event_nid
    WHERE cs.type = 'm.room.history_visibility' AND cs.state_key = ''
      AND e.json::jsonb -> 'content' ->> 'history_visibility' = 'world_readable'
), members AS (
    SELECT DISTINCT ON (m.state_key) m.state_key AS user_id, e.json::jsonb -> 'content' AS content
    FROM current_state m
    JOIN visible_rooms v ON v.room_id = m.room_id
    JOIN events e ON e.event_nid = m.event_nid
    WHERE m.type = 'm.room.member' AND m.membership = 'join' AND m.state_key <> $1
    ORDER BY m.state_key, e.stream_pos DESC
), named AS (
    SELECT m.user_id,
           CASE WHEN u.user_id IS NOT NULL THEN u.profile ->> 'displayname' ELSE m.content ->> 'displayname' END AS display_name,
           CASE WHEN u.user_id IS NOT NULL THEN u.profile ->> 'avatar_url' ELSE m.content ->> 'avatar_url' END AS avatar_url
    FROM members m LEFT JOIN users u ON u.user_id = m.user_id
    WHERE u.deactivated IS NOT TRUE
)
SELECT user_id, display_name, avatar_url FROM named
WHERE NOT EXISTS (
    SELECT 1 FROM unnest($2::text[]) w
    WHERE strpos(lower(user_id), w) = 0 AND strpos(lower(COALESCE(display_name, '')), w) = 0)
ORDER BY
    (lower(user_id) LIKE '@' || $3::text || '%' OR lower(COALESCE(display_name, '')) LIKE $3::text || '%') DESC,
    (display_name IS NOT NULL AND display_name <> '') DESC,
    user_id
LIMIT $4`

// SearchUserDirectory returns up to limit users visible to searcher whose ID
// or display name contains every word (lower case); firstWord ranks them.
func (q *Queries) SearchUserDirectory(ctx context.Context, searcher string, words []string, limit int) ([]DirectoryUser, error) {
	first := ""
	if len(words) > 0 {
		first = likeEscape(words[0])
	}
	if words == nil {
		words = []string{}
	}
	rows, err := q.q.Query(ctx, searchUserDirectorySQL, searcher, words, first, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []DirectoryUser
	for rows.Next() {
		var u DirectoryUser
		if err := rows.Scan(&u.UserID, &u.DisplayName, &u.AvatarURL); err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// likeEscape escapes LIKE's wildcards (the default escape character is \).
func likeEscape(s string) string {
	out := make([]rune, 0, len(s))
	for _, r := range s {
		if r == '\\' || r == '%' || r == '_' {
			out = append(out, '\\')
		}
		out = append(out, r)
	}
	return string(out)
}
