package sqlstore

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Queries of push notifications (package push, migration 007): push rules,
// the notifications each event produced, read marks, pushers.

const selectPushRulesSQL = `SELECT rules FROM push_rules WHERE user_id = $1`

// PushRules returns the user's stored rule changes (a JSON document),
// ErrNotFound if they never changed a rule.
func (q *Queries) PushRules(ctx context.Context, userID string) ([]byte, error) {
	var doc []byte
	err := q.q.QueryRow(ctx, selectPushRulesSQL, userID).Scan(&doc)
	return doc, notFound(err)
}

// lockPushRulesSQL creates the user's row if needed and returns it locked
// until the end of the transaction: the no-op update takes the row lock.
const lockPushRulesSQL = `
INSERT INTO push_rules (user_id, rules) VALUES ($1, '{}')
ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id
RETURNING rules`

// LockPushRules returns the user's stored rule changes ({} if none), locked
// for an update in the same transaction.
func (q *Queries) LockPushRules(ctx context.Context, userID string) ([]byte, error) {
	var doc []byte
	err := q.q.QueryRow(ctx, lockPushRulesSQL, userID).Scan(&doc)
	return doc, err
}

const updatePushRulesSQL = `UPDATE push_rules SET rules = $2 WHERE user_id = $1`

// SetPushRules replaces the user's stored rule changes.
func (q *Queries) SetPushRules(ctx context.Context, userID string, doc []byte) error {
	_, err := q.q.Exec(ctx, updatePushRulesSQL, userID, doc)
	return err
}

const selectPushRulesOfSQL = `SELECT user_id, rules FROM push_rules WHERE user_id = ANY($1)`

// PushRulesOf returns the stored rule changes of those of userIDs who have any.
func (q *Queries) PushRulesOf(ctx context.Context, userIDs []string) (map[string][]byte, error) {
	rows, err := q.q.Query(ctx, selectPushRulesOfSQL, userIDs)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var user string
		var doc []byte
		if err := rows.Scan(&user, &doc); err != nil {
			return nil, err
		}
		out[user] = doc
	}
	return out, rows.Err()
}

// PushRoomState is the part of a room's current state that push rules read.
type PushRoomState struct {
	Members     []PushMember // joined members, local and remote
	PowerLevels []byte       // content of m.room.power_levels; nil if none
	Create      []byte       // content of m.room.create; nil if none
	Creator     string       // sender of m.room.create
}

// PushMember is a joined member; DisplayName is filled for local users only.
type PushMember struct {
	UserID      string
	DisplayName string
}

// selectPushRoomStateSQL reads the joined members (with the display name of
// the local ones: $2 is the server name), the power levels and the create
// event of the room's current state.
const selectPushRoomStateSQL = `
SELECT cs.type, cs.state_key, e.sender,
  CASE WHEN cs.type <> 'm.room.member' THEN (e.json::jsonb -> 'content')::text
       WHEN right(cs.state_key, length($2) + 1) = ':' || $2 THEN COALESCE(e.json::jsonb -> 'content' ->> 'displayname', '')
       ELSE '' END
FROM current_state cs JOIN events e ON e.event_nid = cs.event_nid
WHERE cs.room_id = $1
  AND ((cs.type = 'm.room.member' AND cs.membership = 'join')
    OR (cs.type IN ('m.room.power_levels', 'm.room.create') AND cs.state_key = ''))`

// PushRoomState reads the room's current state as push rules need it.
func (q *Queries) PushRoomState(ctx context.Context, roomID, serverName string) (PushRoomState, error) {
	var s PushRoomState
	rows, err := q.q.Query(ctx, selectPushRoomStateSQL, roomID, serverName)
	if err != nil {
		return s, err
	}
	defer rows.Close()
	for rows.Next() {
		var typ, key, sender, val string
		if err := rows.Scan(&typ, &key, &sender, &val); err != nil {
			return s, err
		}
		switch typ {
		case "m.room.member":
			s.Members = append(s.Members, PushMember{UserID: key, DisplayName: val})
		case "m.room.power_levels":
			s.PowerLevels = []byte(val)
		case "m.room.create":
			s.Create, s.Creator = []byte(val), sender
		}
	}
	return s, rows.Err()
}

// NewNotifications are the notifications one event produced, one entry per
// notified user.
type NewNotifications struct {
	RoomID    string
	StreamPos int64
	ThreadID  string
	TS        int64
	Sender    string // users who ignore the sender get no notification
	Users     []string
	Highlight []bool
	Actions   []string // JSON arrays
}

// insertPushNotificationsSQL skips the users whose m.ignored_user_list
// names the sender ($8: the sender's ID as a JSON string).
const insertPushNotificationsSQL = `
INSERT INTO push_notifications (user_id, room_id, stream_pos, thread_id, highlight, actions, ts)
SELECT u.user_id, $2, $3, $4, u.highlight, u.actions, $5
FROM unnest($1::text[], $6::boolean[], $7::text[]) AS u(user_id, highlight, actions)
WHERE NOT EXISTS (
  SELECT 1 FROM account_data a
  WHERE a.user_id = u.user_id AND a.room_id = '' AND a.type = 'm.ignored_user_list' AND strpos(a.content, $8) > 0)`

const upsertSentMarkSQL = `
INSERT INTO push_sent_marks (user_id, room_id, thread_id, stream_pos) VALUES ($1, $2, $3, $4)
ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET stream_pos = GREATEST(push_sent_marks.stream_pos, EXCLUDED.stream_pos)`

// SentMark is a local user's event: it marks their thread read up to it.
type SentMark struct {
	UserID, RoomID, ThreadID string
	StreamPos                int64
}

// RecordPush stores an event's notifications and the sender's read mark
// (either may be absent) in one round trip.
func (q *Queries) RecordPush(ctx context.Context, n *NewNotifications, mark *SentMark) error {
	b := &pgx.Batch{}
	if n != nil && len(n.Users) > 0 {
		// User IDs hold no character JSON escapes, so the sender appears in
		// the list exactly as quoted here.
		b.Queue(insertPushNotificationsSQL, n.Users, n.RoomID, n.StreamPos, n.ThreadID, n.TS, n.Highlight, n.Actions, `"`+n.Sender+`"`)
	}
	if mark != nil {
		b.Queue(upsertSentMarkSQL, mark.UserID, mark.RoomID, mark.ThreadID, mark.StreamPos)
	}
	if b.Len() == 0 {
		return nil
	}
	return q.q.SendBatch(ctx, b).Close()
}

// readMarksSQL is how far the user $1 has read each thread of the rooms
// $2: their m.read and m.read.private receipts (thread "" is unthreaded) and
// their own last events (push_sent_marks).
const readMarksSQL = `
marks AS (
    SELECT room_id, thread_id, event_stream_pos AS pos FROM receipts
    WHERE room_id = ANY($2) AND user_id = $1 AND receipt_type IN ('m.read', 'm.read.private')
  UNION ALL
    SELECT room_id, thread_id, stream_pos FROM push_sent_marks WHERE user_id = $1 AND room_id = ANY($2)
)`

// unreadCountsSQL counts, per room and thread, the notifications after
// both the room's unthreaded mark and the thread's own mark. The lateral
// join makes each room an index range scan starting at its unthreaded mark.
const unreadCountsSQL = `
WITH ` + readMarksSQL + `,
floors AS (
    SELECT r.room_id, COALESCE((SELECT max(m.pos) FROM marks m WHERE m.room_id = r.room_id AND m.thread_id = ''), 0) AS pos
    FROM unnest($2::text[]) AS r(room_id)
),
threads AS (
    SELECT room_id, thread_id, max(pos) AS pos FROM marks WHERE thread_id <> '' GROUP BY room_id, thread_id
)
SELECT f.room_id, c.thread_id, c.notifications, c.highlights
FROM floors f
CROSS JOIN LATERAL (
    SELECT n.thread_id, count(*) AS notifications, count(*) FILTER (WHERE n.highlight) AS highlights
    FROM push_notifications n
    LEFT JOIN threads t ON t.room_id = n.room_id AND t.thread_id = n.thread_id
    WHERE n.user_id = $1 AND n.room_id = f.room_id AND n.stream_pos > f.pos AND n.stream_pos > COALESCE(t.pos, 0)
    GROUP BY n.thread_id
) c`

// ThreadCount is the unread notifications of one thread ('main' or a root's
// event ID) of a room.
type ThreadCount struct {
	RoomID, ThreadID string
	Notifications    int
	Highlights       int
}

// UnreadNotifications counts the user's unread notifications in roomIDs
// (distinct), per room and thread; threads without any are absent.
func (q *Queries) UnreadNotifications(ctx context.Context, userID string, roomIDs []string) ([]ThreadCount, error) {
	rows, err := q.q.Query(ctx, unreadCountsSQL, userID, roomIDs)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ThreadCount
	for rows.Next() {
		var c ThreadCount
		if err := rows.Scan(&c.RoomID, &c.ThreadID, &c.Notifications, &c.Highlights); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

const selectReadMarksSQL = `WITH ` + readMarksSQL + `
SELECT room_id, thread_id, max(pos) FROM marks GROUP BY room_id, thread_id`

// ReadMark is how far a user has read a thread of a room (thread "":
// every thread, from an unthreaded receipt).
type ReadMark struct {
	RoomID, ThreadID string
	StreamPos        int64
}

// ReadMarks returns how far the user has read the threads of roomIDs.
func (q *Queries) ReadMarks(ctx context.Context, userID string, roomIDs []string) ([]ReadMark, error) {
	rows, err := q.q.Query(ctx, selectReadMarksSQL, userID, roomIDs)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ReadMark
	for rows.Next() {
		var m ReadMark
		if err := rows.Scan(&m.RoomID, &m.ThreadID, &m.StreamPos); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// Notification is a row of push_notifications with its event.
type Notification struct {
	RoomID    string
	StreamPos int64
	ThreadID  string
	Highlight bool
	Actions   string
	TS        int64
	EventID   string
	JSON      string
}

const selectNotificationsSQL = `
SELECT n.room_id, n.stream_pos, n.thread_id, n.highlight, n.actions, n.ts, e.event_id, e.json
FROM push_notifications n JOIN events e ON e.stream_pos = n.stream_pos
WHERE n.user_id = $1 AND n.stream_pos < $2 AND (NOT $3 OR n.highlight)
ORDER BY n.stream_pos DESC LIMIT $4`

// Notifications returns up to limit of the user's notifications before
// stream position before, newest first; highlights only if onlyHighlight.
func (q *Queries) Notifications(ctx context.Context, userID string, before int64, onlyHighlight bool, limit int) ([]Notification, error) {
	rows, err := q.q.Query(ctx, selectNotificationsSQL, userID, before, onlyHighlight, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Notification
	for rows.Next() {
		var n Notification
		if err := rows.Scan(&n.RoomID, &n.StreamPos, &n.ThreadID, &n.Highlight, &n.Actions, &n.TS, &n.EventID, &n.JSON); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// Pusher is a row of pushers.
type Pusher struct {
	UserID            string
	AppID             string
	Pushkey           string
	Kind              string
	AppDisplayName    string
	DeviceDisplayName string
	ProfileTag        *string
	Lang              string
	Data              string // JSON object
	DeviceID          string
	CreatedTS         int64
	LastStreamPos     int64
	FailingSinceTS    *int64
}

const pusherColumns = `user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, device_id, created_ts, last_stream_pos, failing_since_ts`

func scanPushers(rows pgx.Rows) ([]Pusher, error) {
	defer rows.Close()
	var out []Pusher
	for rows.Next() {
		var p Pusher
		if err := rows.Scan(&p.UserID, &p.AppID, &p.Pushkey, &p.Kind, &p.AppDisplayName, &p.DeviceDisplayName, &p.ProfileTag,
			&p.Lang, &p.Data, &p.DeviceID, &p.CreatedTS, &p.LastStreamPos, &p.FailingSinceTS); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// upsertPusherSQL keeps the delivery position of an updated pusher: only
// notifications after it was first set are sent.
const upsertPusherSQL = `
INSERT INTO pushers (` + pusherColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL)
ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = EXCLUDED.kind, app_display_name = EXCLUDED.app_display_name,
  device_display_name = EXCLUDED.device_display_name, profile_tag = EXCLUDED.profile_tag, lang = EXCLUDED.lang,
  data = EXCLUDED.data, device_id = EXCLUDED.device_id, failing_since_ts = NULL`

// PutPusher creates or updates the pusher (user, app ID, pushkey).
func (q *Queries) PutPusher(ctx context.Context, p Pusher) error {
	_, err := q.q.Exec(ctx, upsertPusherSQL, p.UserID, p.AppID, p.Pushkey, p.Kind, p.AppDisplayName, p.DeviceDisplayName,
		p.ProfileTag, p.Lang, p.Data, p.DeviceID, p.CreatedTS, p.LastStreamPos)
	return err
}

const deletePusherSQL = `DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`

// DeletePusher removes the user's pusher; nothing if there is none.
func (q *Queries) DeletePusher(ctx context.Context, userID, appID, pushkey string) error {
	_, err := q.q.Exec(ctx, deletePusherSQL, userID, appID, pushkey)
	return err
}

const deleteOtherPushersSQL = `DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3`

// DeleteOtherUsersPushers removes the pushers with this app ID and pushkey
// that belong to other users than userID.
func (q *Queries) DeleteOtherUsersPushers(ctx context.Context, appID, pushkey, userID string) error {
	_, err := q.q.Exec(ctx, deleteOtherPushersSQL, appID, pushkey, userID)
	return err
}

const selectPushersSQL = `SELECT ` + pusherColumns + ` FROM pushers WHERE user_id = $1 ORDER BY created_ts, app_id, pushkey`

// Pushers returns the user's pushers, oldest first.
func (q *Queries) Pushers(ctx context.Context, userID string) ([]Pusher, error) {
	rows, err := q.q.Query(ctx, selectPushersSQL, userID)
	if err != nil {
		return nil, err
	}
	return scanPushers(rows)
}

// selectPushersBehindSQL: pushers with notifications after their delivery
// position, among notifications up to $1 (the stream's visible position).
const selectPushersBehindSQL = `
SELECT ` + pusherColumns + ` FROM pushers p
WHERE EXISTS (SELECT 1 FROM push_notifications n WHERE n.user_id = p.user_id AND n.stream_pos > p.last_stream_pos AND n.stream_pos <= $1)
ORDER BY p.user_id, p.app_id, p.pushkey`

// PushersBehind returns the pushers that have notifications to deliver up
// to stream position upto.
func (q *Queries) PushersBehind(ctx context.Context, upto int64) ([]Pusher, error) {
	rows, err := q.q.Query(ctx, selectPushersBehindSQL, upto)
	if err != nil {
		return nil, err
	}
	return scanPushers(rows)
}

const selectNotificationsAfterSQL = `
SELECT n.room_id, n.stream_pos, n.thread_id, n.highlight, n.actions, n.ts, e.event_id, e.json
FROM push_notifications n JOIN events e ON e.stream_pos = n.stream_pos
WHERE n.user_id = $1 AND n.stream_pos > $2 AND n.stream_pos <= $3
ORDER BY n.stream_pos LIMIT $4`

// NotificationsAfter returns up to limit of the user's notifications in
// the stream range (after, upto], oldest first.
func (q *Queries) NotificationsAfter(ctx context.Context, userID string, after, upto int64, limit int) ([]Notification, error) {
	rows, err := q.q.Query(ctx, selectNotificationsAfterSQL, userID, after, upto, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Notification
	for rows.Next() {
		var n Notification
		if err := rows.Scan(&n.RoomID, &n.StreamPos, &n.ThreadID, &n.Highlight, &n.Actions, &n.TS, &n.EventID, &n.JSON); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

const updatePusherProgressSQL = `
UPDATE pushers SET last_stream_pos = GREATEST(last_stream_pos, $4), failing_since_ts = $5
WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`

// SetPusherProgress records a pusher's delivery position and whether (since
// when) its deliveries are failing.
func (q *Queries) SetPusherProgress(ctx context.Context, userID, appID, pushkey string, lastStreamPos int64, failingSince *int64) error {
	_, err := q.q.Exec(ctx, updatePusherProgressSQL, userID, appID, pushkey, lastStreamPos, failingSince)
	return err
}
