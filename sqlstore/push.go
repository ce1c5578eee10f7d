package sqlstore

import (
	"context"
	"math"
	"strings"

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

// PushEvent is the common outcome of an event's push rules for the local
// members joined when it was sent.
type PushEvent struct {
	StreamPos int64
	RoomID    string
	ThreadID  string
	Sender    string
	Notify    bool
	Highlight bool
	Actions   string // JSON array
	TS        int64
}

// PushException is a user whose outcome differs from the event's common one.
type PushException struct {
	UserID    string
	Notify    bool
	Highlight bool
	Actions   string // JSON array
}

// SentMark is a local user's event: it marks their thread read up to it.
type SentMark struct {
	UserID, RoomID, ThreadID string
	StreamPos                int64
}

// PushMembership is a local user's membership event: Joined tells whether
// they are joined after it.
type PushMembership struct {
	UserID, RoomID string
	Joined         bool
	StreamPos      int64
}

// PushRecord is what push stores for one event; every part may be absent.
type PushRecord struct {
	Event      *PushEvent
	Exceptions []PushException // with Event only
	Mark       *SentMark
	Membership *PushMembership
}

const insertPushEventSQL = `
INSERT INTO push_events (stream_pos, room_id, thread_id, sender, notify, highlight, actions, ts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`

const insertPushExceptionsSQL = `
INSERT INTO push_exceptions (user_id, room_id, stream_pos, notify, highlight, actions)
SELECT u.user_id, $2, $3, u.notify, u.highlight, u.actions
FROM unnest($1::text[], $4::boolean[], $5::boolean[], $6::text[]) AS u(user_id, notify, highlight, actions)`

const upsertSentMarkSQL = `
INSERT INTO push_sent_marks (user_id, room_id, thread_id, stream_pos) VALUES ($1, $2, $3, $4)
ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET stream_pos = GREATEST(push_sent_marks.stream_pos, EXCLUDED.stream_pos)`

// insertPushMemberSQL keeps the position of a member already joined: a
// join after a join (a profile change) does not restart the membership.
const insertPushMemberSQL = `
INSERT INTO push_members (user_id, room_id, joined_at) VALUES ($1, $2, $3)
ON CONFLICT (user_id, room_id) DO NOTHING`

const deletePushMemberSQL = `DELETE FROM push_members WHERE user_id = $1 AND room_id = $2`

// RecordPush stores what push computed for one event, in one round trip.
func (q *Queries) RecordPush(ctx context.Context, r PushRecord) error {
	b := &pgx.Batch{}
	if e := r.Event; e != nil {
		b.Queue(insertPushEventSQL, e.StreamPos, e.RoomID, e.ThreadID, e.Sender, e.Notify, e.Highlight, e.Actions, e.TS)
		if n := len(r.Exceptions); n > 0 {
			users, actions := make([]string, n), make([]string, n)
			notify, highlight := make([]bool, n), make([]bool, n)
			for i, x := range r.Exceptions {
				users[i], notify[i], highlight[i], actions[i] = x.UserID, x.Notify, x.Highlight, x.Actions
			}
			b.Queue(insertPushExceptionsSQL, users, e.RoomID, e.StreamPos, notify, highlight, actions)
		}
	}
	if m := r.Mark; m != nil {
		b.Queue(upsertSentMarkSQL, m.UserID, m.RoomID, m.ThreadID, m.StreamPos)
	}
	if m := r.Membership; m != nil {
		if m.Joined {
			b.Queue(insertPushMemberSQL, m.UserID, m.RoomID, m.StreamPos)
		} else {
			b.Queue(deletePushMemberSQL, m.UserID, m.RoomID)
		}
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

// ignoredSQL is the user's m.ignored_user_list (account_data): events of a
// sender whose ID it holds notify them of nothing. User IDs hold no
// character JSON escapes, so a listed sender appears in it quoted as is.
const ignoredSQL = `
ignored AS (
    SELECT content FROM account_data WHERE user_id = $1 AND room_id = '' AND type = 'm.ignored_user_list'
)`

// notifiesSQL is the condition on a push_events row e, with the user's
// exception x, that the user $1 is notified.
const notifiesSQL = `COALESCE(x.notify, e.notify) AND e.sender <> $1
  AND NOT EXISTS (SELECT 1 FROM ignored i WHERE strpos(i.content, '"' || e.sender || '"') > 0)`

// unreadCountsSQL counts, per room and thread, the user's notifications
// after they joined, after the room's unthreaded read mark and after the
// thread's own mark. The lateral join makes each room an index range scan
// starting at its floor.
const unreadCountsSQL = `
WITH ` + readMarksSQL + `, ` + ignoredSQL + `,
floors AS (
    SELECT j.room_id, GREATEST(j.joined_at,
        COALESCE((SELECT max(m.pos) FROM marks m WHERE m.room_id = j.room_id AND m.thread_id = ''), 0)) AS pos
    FROM push_members j WHERE j.user_id = $1 AND j.room_id = ANY($2)
),
threads AS (
    SELECT room_id, thread_id, max(pos) AS pos FROM marks WHERE thread_id <> '' GROUP BY room_id, thread_id
)
SELECT f.room_id, c.thread_id, c.notifications, c.highlights
FROM floors f
CROSS JOIN LATERAL (
    SELECT e.thread_id, count(*) AS notifications, count(*) FILTER (WHERE COALESCE(x.highlight, e.highlight)) AS highlights
    FROM push_events e
    LEFT JOIN push_exceptions x ON x.user_id = $1 AND x.room_id = e.room_id AND x.stream_pos = e.stream_pos
    LEFT JOIN threads t ON t.room_id = e.room_id AND t.thread_id = e.thread_id
    WHERE e.room_id = f.room_id AND e.stream_pos > f.pos AND e.stream_pos > COALESCE(t.pos, 0)
      AND e.stream_pos > $3 AND e.stream_pos <= $4 AND ` + notifiesSQL + `
    GROUP BY e.thread_id
) c`

// ThreadCount is the unread notifications of one thread ('main' or a root's
// event ID) of a room.
type ThreadCount struct {
	RoomID, ThreadID string
	Notifications    int
	Highlights       int
}

// UnreadNotifications counts the user's unread notifications in those of
// roomIDs (distinct) they are joined to, per room and thread; threads
// without any are absent.
func (q *Queries) UnreadNotifications(ctx context.Context, userID string, roomIDs []string) ([]ThreadCount, error) {
	return q.UnreadNotificationsInRange(ctx, userID, roomIDs, 0, math.MaxInt64)
}

// UnreadNotificationsInRange is UnreadNotifications restricted to the
// events with stream positions in (from, to]: what a sync adds to the
// counts it reported at from, when no read mark moved since.
func (q *Queries) UnreadNotificationsInRange(ctx context.Context, userID string, roomIDs []string, from, to int64) ([]ThreadCount, error) {
	rows, err := q.q.Query(ctx, unreadCountsSQL, userID, roomIDs, from, to)
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

// Notification is one of a user's notifications with its event.
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

// notificationsSQL lists the user's notifications in a stream range, in
// two parts: the events of the rooms they are joined to, since they joined
// (the common outcome or their exception), and their exceptions elsewhere
// (an invite, a room they left). Each part, and each room of the first, is
// an index scan limited to the page. Placeholders: $1 user, $2 and $3 the
// range (exclusive, inclusive), $4 highlights only, $5 limit; ORDER is ASC
// or DESC.
const notificationsSQL = `
WITH ` + ignoredSQL + `,
joined AS (SELECT room_id, joined_at FROM push_members WHERE user_id = $1),
page AS (
    (SELECT c.* FROM joined j
     CROSS JOIN LATERAL (
        SELECT e.room_id, e.stream_pos, e.thread_id, COALESCE(x.highlight, e.highlight) AS highlight,
               COALESCE(x.actions, e.actions) AS actions, e.ts
        FROM push_events e
        LEFT JOIN push_exceptions x ON x.user_id = $1 AND x.room_id = e.room_id AND x.stream_pos = e.stream_pos
        WHERE e.room_id = j.room_id AND e.stream_pos > GREATEST(j.joined_at, $2) AND e.stream_pos <= $3
          AND ` + notifiesSQL + ` AND (NOT $4 OR COALESCE(x.highlight, e.highlight))
        ORDER BY e.stream_pos ORDER LIMIT $5
     ) c)
  UNION ALL
    (SELECT x.room_id, x.stream_pos, e.thread_id, x.highlight, x.actions, e.ts
     FROM push_exceptions x JOIN push_events e ON e.stream_pos = x.stream_pos
     WHERE x.user_id = $1 AND x.stream_pos > $2 AND x.stream_pos <= $3 AND ` + notifiesSQL + ` AND (NOT $4 OR x.highlight)
       AND NOT EXISTS (SELECT 1 FROM joined j WHERE j.room_id = x.room_id AND x.stream_pos > j.joined_at)
     ORDER BY x.stream_pos ORDER LIMIT $5)
)
SELECT p.room_id, p.stream_pos, p.thread_id, p.highlight, p.actions, p.ts, ev.event_id, ev.json
FROM page p JOIN events ev ON ev.stream_pos = p.stream_pos
ORDER BY p.stream_pos ORDER LIMIT $5`

var (
	notificationsNewestSQL = strings.ReplaceAll(notificationsSQL, " ORDER LIMIT", " DESC LIMIT")
	notificationsOldestSQL = strings.ReplaceAll(notificationsSQL, " ORDER LIMIT", " ASC LIMIT")
)

// Notifications returns up to limit of the user's notifications in the
// stream range (after, upto], newest first, or oldest first if oldest;
// highlights only if onlyHighlight.
func (q *Queries) Notifications(ctx context.Context, userID string, after, upto int64, onlyHighlight, oldest bool, limit int) ([]Notification, error) {
	sql := notificationsNewestSQL
	if oldest {
		sql = notificationsOldestSQL
	}
	rows, err := q.q.Query(ctx, sql, userID, after, upto, onlyHighlight, limit)
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
  data = EXCLUDED.data, device_id = EXCLUDED.device_id, created_ts = EXCLUDED.created_ts, failing_since_ts = NULL`

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

const selectPushersOfSQL = `SELECT ` + pusherColumns + ` FROM pushers WHERE user_id = ANY($1) ORDER BY user_id, app_id, pushkey`

const selectAllPushersSQL = `SELECT ` + pusherColumns + ` FROM pushers ORDER BY user_id, app_id, pushkey`

// PushersOf returns the pushers of those users; all pushers if userIDs is nil.
func (q *Queries) PushersOf(ctx context.Context, userIDs []string) ([]Pusher, error) {
	sql, args := selectPushersOfSQL, []any{userIDs}
	if userIDs == nil {
		sql, args = selectAllPushersSQL, nil
	}
	rows, err := q.q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return scanPushers(rows)
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
