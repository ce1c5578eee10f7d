package roomserver

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"

	"chappe/mxerr"
	"chappe/sqlstore"
	"chappe/streams"
)

// writer appends local events to one room inside one database transaction.
// It holds the room's row lock, so nothing else writes the room meanwhile:
// each event is built at the current extremity and the graph stays linear.
type writer struct {
	r     *Roomserver
	q     *sqlstore.Queries
	t     *txn // the transaction: stream positions taken and who to wake
	room  sqlstore.Room
	ver   gomatrixserverlib.IRoomVersion
	state *snapshot // current state (after the last appended event)
}

// txn is a database transaction of the roomserver: the queries, the stream
// positions it took and what its changes concern, for the Hub.
type txn struct {
	*sqlstore.Queries
	positions []int64
	change    streams.Change
	stored    []sqlstore.Event // the events written, for the rooms' tails
	redacted  []string         // rooms where an event was redacted
}

// inTx runs fn in one database transaction, then reports the stream
// positions it took to the Hub: visible (and waking the rooms' members) once
// the commit is durable (see sqlstore.FlushLater), abandoned if it rolled
// back.
func (r *Roomserver) inTx(ctx context.Context, fn func(q *txn) error) error {
	t := &txn{change: streams.Change{Kind: streams.KindEvent}}
	err := r.store.InTx(ctx, func(q *sqlstore.Queries) error {
		t.Queries = q
		return fn(t)
	})
	if err == nil {
		// Into the tails before the Hub makes the events visible.
		for _, room := range t.redacted {
			r.forgetTail(room)
		}
		r.rememberCommitted(t.stored)
	}
	if err != nil {
		for _, p := range t.positions {
			r.hub.Abort(p)
		}
		return err
	}
	sqlstore.WhenDurable(ctx, func() {
		for _, p := range t.positions {
			r.hub.Commit(p, t.change)
		}
	})
	return nil
}

// openWriter locks the room for the transaction q.
func (r *Roomserver) openWriter(ctx context.Context, t *txn, roomID string) (*writer, error) {
	q := t.Queries
	room, err := r.loadRoom(ctx, q, roomID, true)
	if err != nil {
		return nil, err
	}
	ver, err := roomVersion(room.RoomVersion)
	if err != nil {
		return nil, err
	}
	state, err := r.loadSnapshot(ctx, q, room.StateSnapshot)
	if err != nil {
		return nil, err
	}
	return &writer{r: r, q: q, t: t, room: room, ver: ver, state: state}, nil
}

// appended is an event the writer stored.
type appended struct {
	Event gomatrixserverlib.PDU
	Row   sqlstore.Event
}

// append builds, signs, authorises and stores one event, updating the room's
// extremities and state. Nothing is written if the auth rules refuse it.
func (w *writer) append(ctx context.Context, p proto) (*appended, error) {
	return w.appendWithTxn(ctx, p, nil)
}

// appendWithTxn is append that also records the client transaction ID.
func (w *writer) appendWithTxn(ctx context.Context, p proto, txn *sqlstore.ClientTxn) (*appended, error) {
	tuples, err := authTuples(w.ver, p)
	if err != nil {
		return nil, err
	}
	keys := make([]stateKey, 0, len(tuples))
	for _, t := range tuples {
		keys = append(keys, stateKey{t.EventType, t.StateKey})
	}
	authEvs, err := w.r.stateEvents(ctx, w.q, w.room.RoomVersion, w.state, keys)
	if err != nil {
		return nil, err
	}
	auth, err := newAuthEvents(authEvs)
	if err != nil {
		return nil, err
	}
	ev, err := buildEvent(w.ver, w.room.RoomID, p, w.room.ForwardExtremities, w.room.MaxDepth+1, auth, w.r.cfg.ServerName, w.r.key, w.r.now())
	if err != nil {
		return nil, err
	}
	if len(ev.JSON()) > maxEventBytes {
		return nil, mxerr.New(mxerr.TooLarge, "The event would be %d bytes; events are limited to %d", len(ev.JSON()), maxEventBytes)
	}
	if m, _ := ev.Membership(); ev.Type() == "m.room.member" && m == "invite" && serverOf(*ev.StateKey()) != w.r.cfg.ServerName {
		if ev, err = w.countersignInvite(ctx, ev); err != nil {
			return nil, err
		}
	}
	return w.storeWithTxn(ctx, ev, txn)
}

// store writes an authorised event and moves the room's head past it.
func (w *writer) store(ctx context.Context, ev gomatrixserverlib.PDU) (*appended, error) {
	return w.storeWithTxn(ctx, ev, nil)
}

// storeWithTxn is store that also records the client transaction ID. A
// message event (the hot path) is written in a single round trip.
func (w *writer) storeWithTxn(ctx context.Context, ev gomatrixserverlib.PDU, txn *sqlstore.ClientTxn) (*appended, error) {
	row := sqlstore.Event{
		EventID: ev.EventID(), RoomID: w.room.RoomID, Type: ev.Type(), StateKey: ev.StateKey(),
		Sender: string(ev.SenderID()), Depth: ev.Depth(), OriginServerTS: int64(ev.OriginServerTS()),
		StateBefore: w.state.nid, JSON: string(ev.JSON()),
	}
	// The stream position is taken under the room's lock, so a room's
	// events are in the same order in the stream as in the room.
	row.StreamPos = w.r.hub.Alloc()
	w.t.positions = append(w.t.positions, row.StreamPos)
	w.t.change.Rooms = appendUnique(w.t.change.Rooms, w.room.RoomID)
	if ev.Type() == "m.room.member" && ev.StateKey() != nil {
		// The target may not be in the room yet (an invite): wake them too.
		w.t.change.Users = appendUnique(w.t.change.Users, *ev.StateKey())
	}
	if rel := gjson.GetBytes(ev.Content(), `m\.relates_to`); rel.IsObject() {
		if id := rel.Get("event_id").String(); id != "" {
			row.RelatesTo = &id
			if t := rel.Get("rel_type").String(); t != "" {
				row.RelType = &t
			}
		}
	}
	if ev.StateKey() == nil && ev.Type() != "m.room.redaction" {
		extremities := []string{ev.EventID()}
		if err := w.q.AppendEvent(ctx, &row, extremities, ev.Depth(), w.state.nid, txn); err != nil {
			return nil, err
		}
		w.room.ForwardExtremities, w.room.MaxDepth = extremities, ev.Depth()
		w.r.events.Add(row.NID, ev)
		w.t.stored = append(w.t.stored, row)
		if err := w.notifyListeners(ctx, row); err != nil {
			return nil, err
		}
		return &appended{Event: ev, Row: row}, nil
	}
	if err := w.q.InsertEvent(ctx, &row); err != nil {
		if errors.Is(err, sqlstore.ErrConflict) {
			return nil, mxerr.New(mxerr.Unknown, "Event %s already exists", ev.EventID())
		}
		return nil, err
	}
	w.r.events.Add(row.NID, ev)
	w.t.stored = append(w.t.stored, row)
	if sk := ev.StateKey(); sk != nil {
		next, err := w.r.addToSnapshot(ctx, w.q, w.room.RoomID, w.state, map[stateKey]int64{{ev.Type(), *sk}: row.NID})
		if err != nil {
			return nil, err
		}
		entry := sqlstore.StateEntry{Type: ev.Type(), StateKey: *sk, EventNID: row.NID}
		if ev.Type() == "m.room.member" {
			if m, err := ev.Membership(); err == nil {
				entry.Membership = &m
			}
		}
		if err := w.q.SetCurrentState(ctx, w.room.RoomID, entry); err != nil {
			return nil, err
		}
		w.state = next
	}
	w.room.ForwardExtremities = []string{ev.EventID()}
	w.room.MaxDepth = ev.Depth()
	w.room.StateSnapshot = w.state.nid
	if err := w.q.UpdateRoomHead(ctx, w.room.RoomID, w.room.ForwardExtremities, w.room.MaxDepth, w.room.StateSnapshot); err != nil {
		return nil, err
	}
	if ev.Type() == "m.room.redaction" {
		if err := w.applyRedaction(ctx, ev); err != nil {
			return nil, err
		}
	}
	if txn != nil {
		if err := w.q.InsertClientTxn(ctx, *txn, ev.EventID()); err != nil {
			return nil, err
		}
	}
	if err := w.notifyListeners(ctx, row); err != nil {
		return nil, err
	}
	return &appended{Event: ev, Row: row}, nil
}

// notifyListeners shows a stored event to the listeners, in the writer's
// transaction, with the state after it.
func (w *writer) notifyListeners(ctx context.Context, row sqlstore.Event) error {
	for _, l := range w.r.listeners {
		if err := l.EventStored(ctx, w.q, row, w.state.nid); err != nil {
			return err
		}
	}
	return nil
}

// redactsOf returns the target of a redaction: top-level "redacts" before
// room version 11, content.redacts from 11 on.
func redactsOf(ev gomatrixserverlib.PDU) string {
	if id := ev.Redacts(); id != "" {
		return id
	}
	return gjson.GetBytes(ev.Content(), "redacts").String()
}

// applyRedaction rewrites the target of a redaction with the room version's
// redaction algorithm, so its content is never served again. The target must
// be in the same room; whether the sender may redact it was checked before
// the redaction was built (canRedact).
func (w *writer) applyRedaction(ctx context.Context, redaction gomatrixserverlib.PDU) error {
	target, err := w.q.EventByID(ctx, redactsOf(redaction))
	if errors.Is(err, sqlstore.ErrNotFound) {
		return nil // the target may arrive later; nothing to rewrite now
	}
	if err != nil || target.RoomID != w.room.RoomID || target.RedactedBy != nil {
		return err
	}
	redacted, err := redactJSON(w.room.RoomVersion, []byte(target.JSON))
	if err != nil {
		return err
	}
	if err := w.q.RedactEvent(ctx, target.EventID, string(redacted), redaction.EventID()); err != nil {
		return err
	}
	w.r.events.Remove(target.NID)
	w.t.redacted = append(w.t.redacted, w.room.RoomID)
	return nil
}

// powerLevels returns the power levels in force now.
func (w *writer) powerLevels(ctx context.Context) (gomatrixserverlib.PowerLevelContent, error) {
	evs, err := w.r.stateEvents(ctx, w.q, w.room.RoomVersion, w.state, []stateKey{{"m.room.create", ""}, {"m.room.power_levels", ""}})
	if err != nil {
		return gomatrixserverlib.PowerLevelContent{}, err
	}
	auth, err := newAuthEvents(evs)
	if err != nil {
		return gomatrixserverlib.PowerLevelContent{}, err
	}
	return powerLevels(auth, w.room.Creator)
}

// userLevel is the user's power in the room, creators of v12 rooms included.
func (w *writer) userLevel(ctx context.Context, userID string) (int64, error) {
	if privilegedCreators(w.room.RoomVersion) {
		create, err := w.r.stateEvent(ctx, w.q, w.room.RoomVersion, w.state, stateKey{"m.room.create", ""})
		if err != nil {
			return 0, err
		}
		for _, c := range gomatrixserverlib.CreatorsFromCreateEvent(create) {
			if c == userID {
				return gomatrixserverlib.CreatorPowerLevel, nil
			}
		}
	}
	pl, err := w.powerLevels(ctx)
	if err != nil {
		return 0, err
	}
	return pl.UserLevel(specSender(userID)), nil
}

// membership returns the user's current membership ("leave" if none).
func (w *writer) membership(ctx context.Context, userID string) (string, error) {
	m, _, err := w.r.membershipIn(ctx, w.q, w.room.RoomVersion, w.state, userID)
	return m, err
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// content marshals an event content.
func content(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
