package push

import (
	"context"
	"encoding/json"
	"math"
	"strconv"

	"github.com/tidwall/gjson"

	"chappe/mxerr"
)

// Counts are unread notification counts (spec: /sync, Unread Notification
// Counts).
type Counts struct {
	Notifications int `json:"notification_count"`
	Highlights    int `json:"highlight_count"`
}

// RoomCounts are a room's unread counts.
type RoomCounts struct {
	// Counts cover the whole room, every thread included: unread_notifications
	// when the filter does not ask for unread_thread_notifications.
	Counts
	// Main covers the main timeline only: unread_notifications when the
	// filter asks for unread_thread_notifications.
	Main Counts
	// Threads are the counts of each thread with unread notifications, by
	// thread root: unread_thread_notifications.
	Threads map[string]Counts
}

// UnreadCounts returns the user's unread notification counts in roomIDs:
// the notifications after how far they have read, which is the furthest of
// their m.read and m.read.private receipts (an unthreaded receipt covers
// every thread, a threaded one its thread) and their own last event in the
// thread. Every requested room is in the map, with zero counts if nothing
// is unread. One query, whatever the number of rooms. Spec: receipts.md and
// push.md ("Receiving notifications", "Marking notifications as read").
func (s *Service) UnreadCounts(ctx context.Context, userID string, roomIDs []string) (map[string]RoomCounts, error) {
	return s.UnreadCountsInRange(ctx, userID, roomIDs, 0, math.MaxInt64)
}

// UnreadCountsInRange counts only the notifications of events with stream
// positions in (from, to]. When none of the user's read marks moved since
// from, adding them to the counts at from gives the counts at to.
func (s *Service) UnreadCountsInRange(ctx context.Context, userID string, roomIDs []string, from, to int64) (map[string]RoomCounts, error) {
	out := make(map[string]RoomCounts, len(roomIDs))
	distinct := make([]string, 0, len(roomIDs))
	for _, r := range roomIDs {
		if _, dup := out[r]; !dup {
			out[r] = RoomCounts{}
			distinct = append(distinct, r)
		}
	}
	if len(distinct) == 0 {
		return out, nil
	}
	rows, err := s.store.UnreadNotificationsInRange(ctx, userID, distinct, from, to)
	if err != nil {
		return nil, err
	}
	for _, row := range rows {
		rc := out[row.RoomID]
		c := Counts{Notifications: row.Notifications, Highlights: row.Highlights}
		rc.Notifications += c.Notifications
		rc.Highlights += c.Highlights
		if row.ThreadID == threadMain {
			rc.Main = c
		} else {
			if rc.Threads == nil {
				rc.Threads = map[string]Counts{}
			}
			rc.Threads[row.ThreadID] = c
		}
		out[row.RoomID] = rc
	}
	return out, nil
}

// Notification is an entry of GET /notifications.
type Notification struct {
	Actions    []json.RawMessage `json:"actions"`
	Event      json.RawMessage   `json:"event"`
	ProfileTag string            `json:"profile_tag,omitempty"`
	Read       bool              `json:"read"`
	RoomID     string            `json:"room_id"`
	TS         int64             `json:"ts"`
}

// NotificationsPage is the answer of GET /notifications.
type NotificationsPage struct {
	NextToken     string         `json:"next_token,omitempty"`
	Notifications []Notification `json:"notifications"`
}

// Notification page sizes.
const (
	defaultNotificationsLimit = 20
	maxNotificationsLimit     = 100
)

// Notifications pages through the events the user was notified about,
// newest first. from is an earlier next_token ("" for the newest), limit
// ≤ 0 the default, only "highlight" keeps highlights only. Spec: GET
// /notifications.
func (s *Service) Notifications(ctx context.Context, userID, from string, limit int, only string) (NotificationsPage, error) {
	upto := s.hub.Current().Stream
	if from != "" {
		n, err := strconv.ParseInt(from, 10, 64)
		if err != nil || n <= 0 {
			return NotificationsPage{}, mxerr.New(mxerr.InvalidParam, "Invalid from token %q", from)
		}
		upto = min(upto, n-1)
	}
	if limit <= 0 {
		limit = defaultNotificationsLimit
	}
	if limit > maxNotificationsLimit {
		limit = maxNotificationsLimit
	}
	rows, err := s.store.Notifications(ctx, userID, 0, upto, only == "highlight", false, limit+1)
	if err != nil {
		return NotificationsPage{}, err
	}
	page := NotificationsPage{Notifications: []Notification{}}
	if len(rows) > limit {
		rows = rows[:limit]
		page.NextToken = strconv.FormatInt(rows[limit-1].StreamPos, 10)
	}
	if len(rows) == 0 {
		return page, nil
	}
	var rooms []string
	seen := map[string]bool{}
	for _, r := range rows {
		if !seen[r.RoomID] {
			seen[r.RoomID] = true
			rooms = append(rooms, r.RoomID)
		}
	}
	marks, err := s.store.ReadMarks(ctx, userID, rooms)
	if err != nil {
		return NotificationsPage{}, err
	}
	readTo := map[[2]string]int64{}
	for _, m := range marks {
		readTo[[2]string{m.RoomID, m.ThreadID}] = m.StreamPos
	}
	now := s.now().UnixMilli()
	for _, r := range rows {
		var actions []json.RawMessage
		if json.Unmarshal([]byte(r.Actions), &actions) != nil {
			actions = []json.RawMessage{}
		}
		read := r.StreamPos <= readTo[[2]string{r.RoomID, ""}] || r.StreamPos <= readTo[[2]string{r.RoomID, r.ThreadID}]
		page.Notifications = append(page.Notifications, Notification{
			Actions: actions, Event: clientEvent(r.JSON, r.EventID, now), Read: read, RoomID: r.RoomID, TS: r.TS,
		})
	}
	return page, nil
}

// clientEvent formats a stored event as a ClientEventWithoutRoomID: the
// client-visible fields and unsigned.age.
func clientEvent(eventJSON, eventID string, now int64) json.RawMessage {
	ev := gjson.Parse(eventJSON)
	out := map[string]any{
		"event_id":         eventID,
		"type":             ev.Get("type").String(),
		"sender":           ev.Get("sender").String(),
		"origin_server_ts": ev.Get("origin_server_ts").Int(),
		"content":          json.RawMessage("{}"),
	}
	if c := ev.Get("content"); c.IsObject() {
		out["content"] = json.RawMessage(c.Raw)
	}
	if sk := ev.Get("state_key"); sk.Exists() {
		out["state_key"] = sk.String()
	}
	if r := ev.Get("redacts"); r.Exists() {
		out["redacts"] = r.String()
	}
	if age := now - ev.Get("origin_server_ts").Int(); age >= 0 {
		out["unsigned"] = map[string]any{"age": age}
	}
	b, _ := json.Marshal(out)
	return b
}
