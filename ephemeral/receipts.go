package ephemeral

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"chappe/mxerr"
	"chappe/sqlstore"
	"chappe/streams"
)

// Receipt types. Spec: modules/receipts.md; m.fully_read is the read marker
// (modules/read_markers.md), which the receipt endpoint also accepts.
const (
	ReceiptRead        = "m.read"
	ReceiptReadPrivate = "m.read.private"
	ReceiptFullyRead   = "m.fully_read"
)

// ThreadMain is the thread ID of the main timeline in threaded receipts.
const ThreadMain = "main"

// maxThreadDepth is how many relations are followed to find an event's
// thread (spec: "a maximum of 3 hops is recommended").
const maxThreadDepth = 3

// FullyReadMarker stores read markers: the account data component.
type FullyReadMarker interface {
	SetFullyRead(ctx context.Context, userID, roomID, eventID string) error
}

// Receipts is the read receipts and read markers component.
type Receipts struct {
	store   *sqlstore.Store
	hub     *streams.Hub
	markers FullyReadMarker
	now     Clock
	fed     Federation // nil: receipts stay on this server
}

// NewReceipts returns the component. Receipts take stream positions from hub
// and wake the room's members (private ones: their owner only); read markers
// are stored through markers. now nil is the system clock.
func NewReceipts(store *sqlstore.Store, hub *streams.Hub, markers FullyReadMarker, now Clock) *Receipts {
	return &Receipts{store: store, hub: hub, markers: markers, now: clockOrNow(now)}
}

// PostReceipt records the user's receipt of receiptType (m.read,
// m.read.private, or m.fully_read: the read marker) up to eventID in the
// room, in the thread threadID (nil: unthreaded; "main" or a thread root's
// event ID). Spec: POST /rooms/{roomId}/receipt/{receiptType}/{eventId}.
func (r *Receipts) PostReceipt(ctx context.Context, userID, roomID, receiptType, eventID string, threadID *string) error {
	switch receiptType {
	case ReceiptRead, ReceiptReadPrivate, ReceiptFullyRead:
	default:
		return mxerr.New(mxerr.InvalidParam, "Receipt type must be m.read, m.read.private or m.fully_read, not %q", receiptType)
	}
	if threadID != nil {
		if receiptType == ReceiptFullyRead {
			return mxerr.New(mxerr.InvalidParam, "thread_id is not compatible with m.fully_read: the read marker is not threaded")
		}
		if *threadID == "" {
			return mxerr.New(mxerr.InvalidParam, "thread_id field must be a non-empty string")
		}
		if *threadID != ThreadMain && !strings.HasPrefix(*threadID, "$") {
			return mxerr.New(mxerr.InvalidParam, "thread_id must be \"main\" or the event ID of a thread root, not %q", *threadID)
		}
	}
	if err := r.checkMember(ctx, userID, roomID); err != nil {
		return err
	}
	ev, err := r.roomEvent(ctx, roomID, eventID)
	if err != nil {
		return err
	}
	if receiptType == ReceiptFullyRead {
		return r.markers.SetFullyRead(ctx, userID, roomID, eventID)
	}
	thread := ""
	if threadID != nil {
		thread = *threadID
		if err := r.checkThread(ctx, ev, thread); err != nil {
			return err
		}
	}
	return r.store1(ctx, userID, receiptType, thread, ev)
}

// ReadMarkers is the body of POST /rooms/{roomId}/read_markers: each field
// is an event ID, "" when absent.
type ReadMarkers struct {
	FullyRead   string
	Read        string
	ReadPrivate string
}

// SetReadMarkers moves the user's read marker and, in the same request, their
// public and private read receipts (unthreaded), as the receipt endpoint
// would. Everything is checked before anything is written.
// Spec: POST /rooms/{roomId}/read_markers.
func (r *Receipts) SetReadMarkers(ctx context.Context, userID, roomID string, m ReadMarkers) error {
	if err := r.checkMember(ctx, userID, roomID); err != nil {
		return err
	}
	events := map[string]sqlstore.Event{}
	for _, id := range []string{m.FullyRead, m.Read, m.ReadPrivate} {
		if id == "" {
			continue
		}
		ev, err := r.roomEvent(ctx, roomID, id)
		if err != nil {
			return err
		}
		events[id] = ev
	}
	if m.Read != "" {
		if err := r.store1(ctx, userID, ReceiptRead, "", events[m.Read]); err != nil {
			return err
		}
	}
	if m.ReadPrivate != "" {
		if err := r.store1(ctx, userID, ReceiptReadPrivate, "", events[m.ReadPrivate]); err != nil {
			return err
		}
	}
	if m.FullyRead != "" {
		return r.markers.SetFullyRead(ctx, userID, roomID, m.FullyRead)
	}
	return nil
}

// store1 stores one receipt of a local user unless the user already has
// one as far or further in the room for that type and thread; a public one
// is announced to the room's other servers (announceReceipt).
func (r *Receipts) store1(ctx context.Context, userID, receiptType, thread string, ev sqlstore.Event) error {
	return r.put(ctx, userID, receiptType, thread, ev, r.now().UnixMilli(), true)
}

// put stores a receipt made at ts (ms), as store1, announcing it if local.
func (r *Receipts) put(ctx context.Context, userID, receiptType, thread string, ev sqlstore.Event, ts int64, local bool) error {
	return inStream(ctx, r.store, r.hub, func(q *sqlstore.Queries, pos int64) (bool, streams.Change, error) {
		stored, err := q.PutReceipt(ctx, sqlstore.Receipt{
			RoomID: ev.RoomID, UserID: userID, Type: receiptType, ThreadID: thread,
			EventID: ev.EventID, EventStreamPos: ev.StreamPos, TS: ts, StreamPos: pos,
		})
		change := streams.Change{Rooms: []string{ev.RoomID}, Kind: streams.KindReceipt}
		if receiptType == ReceiptReadPrivate {
			change = streams.Change{Users: []string{userID}, Kind: streams.KindReceipt}
		}
		if err == nil && stored && local && receiptType == ReceiptRead {
			err = r.announceReceipt(ctx, q, userID, thread, ev, ts)
		}
		return stored, change, err
	})
}

// checkMember refuses users not joined to the room.
func (r *Receipts) checkMember(ctx context.Context, userID, roomID string) error {
	m, err := r.store.Membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if m != "join" {
		return mxerr.New(mxerr.Forbidden, "You are not joined to room %s", roomID)
	}
	return nil
}

// roomEvent returns the event, which must be one of the room's.
func (r *Receipts) roomEvent(ctx context.Context, roomID, eventID string) (sqlstore.Event, error) {
	if !strings.HasPrefix(eventID, "$") {
		return sqlstore.Event{}, mxerr.New(mxerr.InvalidParam, "%q is not an event ID", eventID)
	}
	ev, err := r.store.EventByID(ctx, eventID)
	if errors.Is(err, sqlstore.ErrNotFound) || (err == nil && ev.RoomID != roomID) {
		return sqlstore.Event{}, mxerr.New(mxerr.NotFound, "Event %s is not in room %s", eventID, roomID)
	}
	return ev, err
}

// checkThread refuses a threaded receipt for an event outside that thread.
// Spec: receipts.md, "Threaded read receipts": an event is in a thread if it
// has rel_type m.thread, or if a parent within 3 hops has; thread roots and
// everything else are in the main timeline. A redacted event has lost its
// relation, so any thread is accepted for it.
func (r *Receipts) checkThread(ctx context.Context, ev sqlstore.Event, thread string) error {
	if ev.RedactedBy != nil || ev.EventID == thread {
		return nil
	}
	actual, err := r.threadOf(ctx, ev)
	if err != nil {
		return err
	}
	if actual != thread {
		where := "the main timeline"
		if actual != ThreadMain {
			where = "the thread of " + actual
		}
		return mxerr.New(mxerr.InvalidParam, "Event %s is in %s, not in thread %s", ev.EventID, where, thread)
	}
	return nil
}

// threadOf is the thread an event belongs to: a thread root's event ID, or
// "main".
func (r *Receipts) threadOf(ctx context.Context, ev sqlstore.Event) (string, error) {
	cur := ev
	for hop := 0; hop < maxThreadDepth; hop++ {
		if cur.RelatesTo == nil {
			return ThreadMain, nil
		}
		if cur.RelType != nil && *cur.RelType == "m.thread" {
			return *cur.RelatesTo, nil
		}
		parent, err := r.store.EventByID(ctx, *cur.RelatesTo)
		if errors.Is(err, sqlstore.ErrNotFound) || (err == nil && parent.RoomID != ev.RoomID) {
			return ThreadMain, nil
		}
		if err != nil {
			return "", err
		}
		cur = parent
	}
	return ThreadMain, nil
}

// receiptContent is one user's receipt in an m.receipt event.
type receiptContent struct {
	TS       int64  `json:"ts"`
	ThreadID string `json:"thread_id,omitempty"`
}

// ReceiptsSince is what /sync shows of receipts in these rooms: for each
// room with receipts changed at stream positions in (from, to], its m.receipt
// event, whose content is {eventID: {type: {userID: {ts, thread_id}}}}.
// from = 0 gives all current receipts. m.read.private receipts appear only
// to their owner, viewerUserID.
func (r *Receipts) ReceiptsSince(ctx context.Context, viewerUserID string, roomIDs []string, from, to int64) (map[string]json.RawMessage, error) {
	out := map[string]json.RawMessage{}
	if len(roomIDs) == 0 || to <= from {
		return out, nil
	}
	rows, err := r.store.ReceiptsSince(ctx, viewerUserID, roomIDs, from, to)
	if err != nil {
		return nil, err
	}
	type byUser = map[string]receiptContent
	content := map[string]map[string]map[string]byUser{} // room → event → type → user
	for _, row := range rows {
		room := content[row.RoomID]
		if room == nil {
			room = map[string]map[string]byUser{}
			content[row.RoomID] = room
		}
		evt := room[row.EventID]
		if evt == nil {
			evt = map[string]byUser{}
			room[row.EventID] = evt
		}
		users := evt[row.Type]
		if users == nil {
			users = byUser{}
			evt[row.Type] = users
		}
		users[row.UserID] = receiptContent{TS: row.TS, ThreadID: row.ThreadID}
	}
	for roomID, c := range content {
		data, err := json.Marshal(c)
		if err != nil {
			return nil, err
		}
		ev, err := json.Marshal(Event{Type: "m.receipt", Content: data})
		if err != nil {
			return nil, err
		}
		out[roomID] = ev
	}
	return out, nil
}

// ReadUpTo is the stream position of the event the user has read up to in
// the room, for unread and notification counts: the furthest of their m.read
// and m.read.private receipts, unthreaded or for threadID ("" or "main": the
// main timeline; otherwise a thread root's event ID). 0 if they have none.
// Spec: receipts.md ("the receipt which is more ahead is used"; an
// unthreaded receipt marks every thread read up to its event).
func (r *Receipts) ReadUpTo(ctx context.Context, userID, roomID, threadID string) (int64, error) {
	if threadID == "" {
		threadID = ThreadMain
	}
	return r.store.ReadUpTo(ctx, userID, roomID, []string{"", threadID})
}
