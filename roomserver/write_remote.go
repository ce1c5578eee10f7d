package roomserver

import (
	"context"
	"errors"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// placement is where a checked remote event goes.
type placement int

const (
	// placeLive: a new event of the room (from /send, a join, a leave):
	// into the timeline and the stream, moving the room's extremities and
	// current state.
	placeLive placement = iota
	// placeBackfill: history a client paginated back to: into the timeline
	// below every live stream position, without touching the room's head.
	placeBackfill
)

// storeRemote stores a remote event whose earlier checks passed, given the
// state before it. A live event that the current state of the room does not
// allow is soft-failed (spec: "Soft failure"): kept as an outlier, neither an
// extremity nor shown to clients. It returns nil, nil for a soft failure.
func (w *writer) storeRemote(ctx context.Context, ev gomatrixserverlib.PDU, before map[stateKey]int64, place placement) (*appended, error) {
	version := w.room.RoomVersion
	if place == placeLive {
		if err := w.r.checkAgainstState(ctx, w.q, version, ev, w.state.state); err != nil {
			w.r.log(ctx).Info().Err(err).Str("event_id", ev.EventID()).Msg("soft-failed a remote event")
			row := rowOf(ev)
			row.SoftFailed = true
			return nil, w.q.InsertOutlier(ctx, &row)
		}
	}
	beforeSnap, err := w.r.snapshotFor(ctx, w.q, w.room.RoomID, w.state, before)
	if err != nil {
		return nil, err
	}
	row := rowOf(ev)
	row.StateBefore = beforeSnap.nid
	if place == placeBackfill {
		if row.StreamPos, err = w.q.NextBackfillPosition(ctx); err != nil {
			return nil, err
		}
	} else {
		row.StreamPos = w.r.hub.Alloc()
		w.t.positions = append(w.t.positions, row.StreamPos)
		w.t.change.Rooms = appendUnique(w.t.change.Rooms, w.room.RoomID)
		if ev.Type() == "m.room.member" && ev.StateKey() != nil {
			w.t.change.Users = appendUnique(w.t.change.Users, *ev.StateKey())
		}
	}
	if err := w.insertOrPlace(ctx, &row); err != nil {
		return nil, err
	}
	w.r.events.Add(row.NID, ev)
	if place == placeBackfill {
		// A backfilled redaction applies to its target; the redactions
		// we already held of backfilled events: see applyLateRedactions.
		if ev.Type() == "m.room.redaction" {
			err = w.applyRemoteRedaction(ctx, ev)
		}
		return &appended{Event: ev, Row: row}, err
	}
	w.t.stored = append(w.t.stored, row)

	after := before
	if sk := ev.StateKey(); sk != nil {
		after = make(map[stateKey]int64, len(before)+1)
		for k, v := range before {
			after[k] = v
		}
		after[stateKey{ev.Type(), *sk}] = row.NID
	}
	extremities := []string{ev.EventID()}
	for _, id := range w.room.ForwardExtremities {
		if !slices.Contains(ev.PrevEventIDs(), id) && id != ev.EventID() {
			extremities = append(extremities, id)
		}
	}
	current := after
	if len(extremities) > 1 {
		if current, err = w.r.mergeStates(ctx, w.q, version, []map[stateKey]int64{w.state.state, after}); err != nil {
			return nil, err
		}
	}
	if err := w.setCurrentState(ctx, current); err != nil {
		return nil, err
	}
	w.room.ForwardExtremities = extremities
	w.room.MaxDepth = max(w.room.MaxDepth, ev.Depth())
	if err := w.q.UpdateRoomHead(ctx, w.room.RoomID, w.room.ForwardExtremities, w.room.MaxDepth, w.state.nid); err != nil {
		return nil, err
	}
	if ev.Type() == "m.room.redaction" {
		if err := w.applyRemoteRedaction(ctx, ev); err != nil {
			return nil, err
		}
	}
	if err := w.notifyListeners(ctx, row); err != nil {
		return nil, err
	}
	return &appended{Event: ev, Row: row}, nil
}

// insertOrPlace stores a new timeline event, or gives an outlier we already
// hold its place in the timeline.
// (Looked up first: a failed INSERT would abort the whole transaction.)
func (w *writer) insertOrPlace(ctx context.Context, row *sqlstore.Event) error {
	known, err := w.q.EventByID(ctx, row.EventID)
	if errors.Is(err, sqlstore.ErrNotFound) {
		return w.q.InsertEvent(ctx, row)
	}
	if err != nil {
		return err
	}
	if !known.Outlier || known.Rejected != nil {
		return mxerr.New(mxerr.Unknown, "Event %s is already stored", row.EventID)
	}
	row.NID = known.NID
	return w.q.PlaceOutlier(ctx, row)
}

// setCurrentState makes state the room's current state: a snapshot and the
// materialised current_state rows, changed where they differ.
func (w *writer) setCurrentState(ctx context.Context, state map[stateKey]int64) error {
	next, err := w.r.snapshotFor(ctx, w.q, w.room.RoomID, w.state, state)
	if err != nil || next == w.state {
		return err
	}
	return w.applyCurrentState(ctx, next)
}

// applyCurrentState makes the stored snapshot next the room's current state.
func (w *writer) applyCurrentState(ctx context.Context, next *snapshot) error {
	state := next.state
	var changed []int64
	for k, nid := range state {
		if w.state.state[k] != nid {
			changed = append(changed, nid)
		}
	}
	evs, err := w.r.loadEvents(ctx, w.q, w.room.RoomVersion, changed)
	if err != nil {
		return err
	}
	for k, nid := range state {
		if w.state.state[k] == nid {
			continue
		}
		entry := sqlstore.StateEntry{Type: k.Type, StateKey: k.StateKey, EventNID: nid}
		if ev, ok := evs[nid]; ok && k.Type == "m.room.member" {
			if m, err := ev.Membership(); err == nil {
				entry.Membership = &m
			}
			w.t.change.Users = appendUnique(w.t.change.Users, k.StateKey)
		}
		if err := w.q.SetCurrentState(ctx, w.room.RoomID, entry); err != nil {
			return err
		}
	}
	for k := range w.state.state {
		if _, ok := state[k]; !ok {
			if err := w.q.DeleteCurrentState(ctx, w.room.RoomID, k.Type, k.StateKey); err != nil {
				return err
			}
		}
	}
	w.state = next
	w.room.StateSnapshot = next.nid
	return nil
}

// applyRemoteRedaction applies a received redaction when its sender may
// redact the target: the same server as the target's sender, or enough
// power (spec: rooms/v3.md and later, "Handling redactions").
func (w *writer) applyRemoteRedaction(ctx context.Context, redaction gomatrixserverlib.PDU) error {
	target, err := w.q.EventByID(ctx, redactsOf(redaction))
	if errors.Is(err, sqlstore.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	sender := string(redaction.SenderID())
	if serverOf(sender) != serverOf(target.Sender) {
		pl, err := w.powerLevels(ctx)
		if err != nil {
			return err
		}
		level, err := w.userLevel(ctx, sender)
		if err != nil || level < pl.Redact {
			return err
		}
	}
	return w.applyRedaction(ctx, redaction)
}

// snapshotFor stores (or reuses) the snapshot of state, built as a delta on
// base when state only adds or replaces entries of it.
func (r *Roomserver) snapshotFor(ctx context.Context, q *sqlstore.Queries, roomID string, base *snapshot, state map[stateKey]int64) (*snapshot, error) {
	entries := map[stateKey]int64{}
	for k, v := range state {
		if base.state[k] != v {
			entries[k] = v
		}
	}
	removed := false
	for k := range base.state {
		if _, ok := state[k]; !ok {
			removed = true
			break
		}
	}
	if !removed && len(entries) == 0 {
		return base, nil
	}
	if !removed {
		return r.addToSnapshot(ctx, q, roomID, base, entries)
	}
	empty := &snapshot{chainLen: fullSnapshotEvery, state: map[stateKey]int64{}}
	return r.addToSnapshot(ctx, q, roomID, empty, state)
}
