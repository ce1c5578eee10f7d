package roomserver

import (
	"context"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"

	"chappe/sqlstore"
)

// stateKey identifies a piece of room state.
type stateKey struct {
	Type     string
	StateKey string
}

// snapshot is a materialised state snapshot: every piece of state and the
// event NID holding it. Snapshots are immutable once built; never modify one
// returned by the cache.
type snapshot struct {
	nid      int64
	chainLen int
	state    map[stateKey]int64
}

// fullSnapshotEvery bounds delta chains: a snapshot that would be the 32nd
// delta in a row is stored in full instead.
const fullSnapshotEvery = 32

// loadSnapshot returns the materialised snapshot nid.
// Snapshot 0 is the unknown state before an outlier (an event held
// without its place in the graph): empty.
func (r *Roomserver) loadSnapshot(ctx context.Context, q *sqlstore.Queries, nid int64) (*snapshot, error) {
	if nid == 0 {
		return &snapshot{state: map[stateKey]int64{}}, nil
	}
	if s, ok := r.snapshots.Get(nid); ok {
		return s, nil
	}
	chain, err := q.SnapshotChain(ctx, nid)
	if err != nil {
		return nil, fmt.Errorf("loading state snapshot %d: %w", nid, err)
	}
	s := &snapshot{nid: nid, state: map[stateKey]int64{}}
	for _, link := range chain {
		for typ, keys := range link.Delta {
			for k, eventNID := range keys {
				s.state[stateKey{typ, k}] = eventNID
			}
		}
		s.chainLen = link.ChainLen
	}
	r.snapshots.Add(nid, s)
	return s, nil
}

// addToSnapshot stores the snapshot "parent plus these entries" and returns it.
func (r *Roomserver) addToSnapshot(ctx context.Context, q *sqlstore.Queries, roomID string, parent *snapshot, entries map[stateKey]int64) (*snapshot, error) {
	next := &snapshot{state: make(map[stateKey]int64, len(parent.state)+len(entries))}
	for k, v := range parent.state {
		next.state[k] = v
	}
	for k, v := range entries {
		next.state[k] = v
	}
	var delta sqlstore.StateDelta
	var parentNID *int64
	if parent.chainLen+1 >= fullSnapshotEvery {
		delta = toDelta(next.state)
	} else {
		delta = toDelta(entries)
		parentNID = &parent.nid
		next.chainLen = parent.chainLen + 1
	}
	nid, err := q.InsertSnapshot(ctx, roomID, parentNID, next.chainLen, delta)
	if err != nil {
		return nil, err
	}
	next.nid = nid
	// Cached only after commit would be stricter; a rolled-back snapshot NID
	// is never referenced again, so caching it now is harmless.
	r.snapshots.Add(nid, next)
	return next, nil
}

// emptySnapshot stores the empty state a new room starts from.
func (r *Roomserver) emptySnapshot(ctx context.Context, q *sqlstore.Queries, roomID string) (*snapshot, error) {
	nid, err := q.InsertSnapshot(ctx, roomID, nil, 0, sqlstore.StateDelta{})
	if err != nil {
		return nil, err
	}
	s := &snapshot{nid: nid, state: map[stateKey]int64{}}
	r.snapshots.Add(nid, s)
	return s, nil
}

func toDelta(m map[stateKey]int64) sqlstore.StateDelta {
	d := sqlstore.StateDelta{}
	for k, v := range m {
		if d[k.Type] == nil {
			d[k.Type] = map[string]int64{}
		}
		d[k.Type][k.StateKey] = v
	}
	return d
}

// loadEvents returns the parsed events for nids, from the cache where possible.
func (r *Roomserver) loadEvents(ctx context.Context, q *sqlstore.Queries, version string, nids []int64) (map[int64]gomatrixserverlib.PDU, error) {
	out := make(map[int64]gomatrixserverlib.PDU, len(nids))
	var missing []int64
	for _, nid := range nids {
		if ev, ok := r.events.Get(nid); ok {
			out[nid] = ev
		} else {
			missing = append(missing, nid)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	rows, err := q.EventsByNID(ctx, missing)
	if err != nil {
		return nil, err
	}
	for _, row := range rows {
		ev, err := parseStored(version, row.JSON, row.RedactedBy != nil)
		if err != nil {
			return nil, fmt.Errorf("parsing stored event %s: %w", row.EventID, err)
		}
		r.events.Add(row.NID, ev)
		out[row.NID] = ev
	}
	return out, nil
}

// stateEvents returns the events of the given state keys in snap (absent keys are skipped).
func (r *Roomserver) stateEvents(ctx context.Context, q *sqlstore.Queries, version string, snap *snapshot, keys []stateKey) ([]gomatrixserverlib.PDU, error) {
	var nids []int64
	for _, k := range keys {
		if nid, ok := snap.state[k]; ok {
			nids = append(nids, nid)
		}
	}
	evs, err := r.loadEvents(ctx, q, version, nids)
	if err != nil {
		return nil, err
	}
	out := make([]gomatrixserverlib.PDU, 0, len(nids))
	for _, nid := range nids {
		if ev, ok := evs[nid]; ok {
			out = append(out, ev)
		}
	}
	return out, nil
}

// stateEvent returns one piece of state in snap, or nil.
func (r *Roomserver) stateEvent(ctx context.Context, q *sqlstore.Queries, version string, snap *snapshot, k stateKey) (gomatrixserverlib.PDU, error) {
	evs, err := r.stateEvents(ctx, q, version, snap, []stateKey{k})
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	return evs[0], nil
}

// allStateEvents returns every state event of snap.
func (r *Roomserver) allStateEvents(ctx context.Context, q *sqlstore.Queries, version string, snap *snapshot) ([]gomatrixserverlib.PDU, error) {
	keys := make([]stateKey, 0, len(snap.state))
	for k := range snap.state {
		keys = append(keys, k)
	}
	return r.stateEvents(ctx, q, version, snap, keys)
}

// membershipIn returns the user's membership in snap ("leave" if none).
func (r *Roomserver) membershipIn(ctx context.Context, q *sqlstore.Queries, version string, snap *snapshot, userID string) (string, gomatrixserverlib.PDU, error) {
	ev, err := r.stateEvent(ctx, q, version, snap, stateKey{"m.room.member", userID})
	if err != nil || ev == nil {
		return "leave", nil, err
	}
	m, err := ev.Membership()
	if err != nil {
		return "leave", ev, nil
	}
	return m, ev, nil
}
