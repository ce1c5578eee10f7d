package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// This file takes events from other servers into the room graph.
// Spec: server-server-api.md, "Checks performed on receipt of a PDU":
//  1. it is a valid event, otherwise it is dropped (parsePDU);
//  2. it passes signature checks, otherwise it is dropped (parsePDU);
//  3. it passes hash checks, otherwise it is redacted (parsePDU);
//  4. it passes the auth rules based on its auth events, otherwise it is
//     rejected (checkAgainstAuthEvents);
//  5. it passes the auth rules based on the state before the event,
//     otherwise it is rejected (ingest, with stateBeforeRemote);
//  6. it passes the auth rules based on the current state of the room,
//     otherwise it is "soft failed" (storeRemote).
// Chappe adds the border before step 2: the sender's server and every
// server that signed the event must be in the allowlist.

// maxFetchDepth bounds the recursion when fetching missing auth events.
const maxFetchDepth = 16

// maxMissingEvents is how many events one /get_missing_events asks for.
const maxMissingEvents = 20

// ErrRejected marks an event refused by the auth rules (stored as rejected).
var ErrRejected = errors.New("rejected")

// ReceivePDU checks and stores one PDU that origin sent in a transaction.
// The error, if any, is the per-PDU error of the transaction's answer.
func (r *Roomserver) ReceivePDU(ctx context.Context, origin string, raw json.RawMessage) (string, error) {
	roomID := gjson.GetBytes(raw, "room_id").String()
	if roomID == "" {
		return "", mxerr.New(mxerr.BadJSON, "The PDU has no room_id")
	}
	version, err := r.roomVersionOf(ctx, r.db(), roomID)
	if err != nil {
		return "", err
	}
	ev, err := r.parsePDU(ctx, version, raw)
	if err != nil {
		return eventIDOf(version, raw), err
	}
	return ev.EventID(), r.ingest(ctx, origin, version, ev, 0, placeLive)
}

// eventIDOf is the ID of a refused event, so that the transaction's answer
// names it; "" when the event cannot be read at all.
func eventIDOf(version string, raw []byte) string {
	ver, err := roomVersion(version)
	if err != nil {
		return ""
	}
	ev, err := ver.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return ""
	}
	return ev.EventID()
}

// parsePDU applies the checks on receipt that need no other event to an
// event pushed to us as new: format (and the event ID derived from it), the
// border (sender's server and every signing server listed), signatures,
// and hashes (a mismatch redacts the event, as the spec says). Steps 1–3.
func (r *Roomserver) parsePDU(ctx context.Context, version string, raw []byte) (gomatrixserverlib.PDU, error) {
	return r.parseEvent(ctx, version, raw, false)
}

// parseHistoricalPDU is parsePDU for an event we asked for to complete the
// room's graph (auth events, missing events, backfill, the state at a gap,
// a join's state): there the border also admits what a removed server did
// before its removal (see checkBorder).
func (r *Roomserver) parseHistoricalPDU(ctx context.Context, version string, raw []byte) (gomatrixserverlib.PDU, error) {
	return r.parseEvent(ctx, version, raw, true)
}

func (r *Roomserver) parseEvent(ctx context.Context, version string, raw []byte, historical bool) (gomatrixserverlib.PDU, error) {
	if !r.cfg.Federation.enabled() {
		return nil, mxerr.New(mxerr.Forbidden, "Federation is switched off on this server")
	}
	ver, err := roomVersion(version)
	if err != nil {
		return nil, err
	}
	if len(raw) > maxEventBytes {
		return nil, mxerr.New(mxerr.TooLarge, "The event is %d bytes; events are limited to %d", len(raw), maxEventBytes)
	}
	ev, err := ver.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, mxerr.New(mxerr.BadJSON, "Invalid event: %v", err)
	}
	if err := r.checkBorder(ev, historical); err != nil {
		return nil, err
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, r.cfg.Federation.Keys, userIDForSender); err != nil {
		return nil, mxerr.New(mxerr.Forbidden, "Event %s: signature check failed: %v", ev.EventID(), err)
	}
	return ev, nil
}

// checkBorder refuses an event whose sender's server, or any server that
// signed it, is outside the federation (DESIGN.md, enforcement point 3).
//
// Servers removed from the list: a room they took part in must stay
// joinable, and they must never be contacted. So in the history we ask
// for (historical: a join's state and auth chain, auth events, the state
// at a gap, backfill), an event of a removed server is admitted when it
// was made before its removal (origin_server_ts before removed_at; its
// signatures then check only with the keys the removal record carries,
// see federation.KeyRing). Anything that would enter the timeline as new
// (/send, get_missing_events) is refused, like any unlisted server's.
// The date is the removed server's own word: with its key, it could still
// backdate an event and have a listed server relay it as history; the
// bound is as strong as the listed servers.
func (r *Roomserver) checkBorder(ev gomatrixserverlib.PDU, historical bool) error {
	sender := serverOf(string(ev.SenderID()))
	if !r.borderAdmits(sender, ev, historical) {
		return mxerr.New(mxerr.Forbidden, "Event %s was sent from %s, outside the federation", ev.EventID(), sender)
	}
	var refused error
	gjson.GetBytes(ev.JSON(), "signatures").ForEach(func(server, _ gjson.Result) bool {
		if s := server.String(); !r.borderAdmits(s, ev, historical) {
			refused = mxerr.New(mxerr.Forbidden, "Event %s is signed by %s, outside the federation", ev.EventID(), s)
			return false
		}
		return true
	})
	return refused
}

// borderAdmits tells whether an event may carry server's name (as sender
// or signer): ours and listed servers always; a removed server in history
// from before its removal.
func (r *Roomserver) borderAdmits(server string, ev gomatrixserverlib.PDU, historical bool) bool {
	gate := r.cfg.Federation.Gate
	if server == r.cfg.ServerName || gate.Allowed(server) {
		return true
	}
	if !historical {
		return false
	}
	removal, ok := gate.Removed(server)
	return ok && int64(ev.OriginServerTS()) < removal.RemovedAt
}

// ingest takes a checked event into the room: its auth events are fetched
// when missing (from origin), it is checked against them, its place in the
// graph is found (missing prev_events fetched, or the state at the gap
// asked for), it is checked against the state before it, and stored where
// place says. depth counts the recursion of fetches.
func (r *Roomserver) ingest(ctx context.Context, origin, version string, ev gomatrixserverlib.PDU, depth int, place placement) error {
	known, err := r.db().EventByID(ctx, ev.EventID())
	switch {
	case err == nil && known.Rejected != nil:
		return mxerr.New(mxerr.Forbidden, "Event %s was rejected: %s", ev.EventID(), *known.Rejected)
	case err == nil && !known.Outlier:
		return nil // already in the timeline: a retried transaction
	case err != nil && !errors.Is(err, sqlstore.ErrNotFound):
		return err
	}
	if err := r.checkAgainstAuthEvents(ctx, origin, version, ev, depth); err != nil {
		return err
	}
	if depth == 0 && place == placeLive {
		if err := r.fetchMissingPrevEvents(ctx, origin, version, ev); err != nil {
			r.log(ctx).Warn().Err(err).Str("event_id", ev.EventID()).Msg("filling a gap with get_missing_events")
		}
	}
	before, err := r.stateBeforeRemote(ctx, origin, version, ev)
	if err != nil {
		return err
	}
	if err := r.checkAgainstState(ctx, r.db(), version, ev, before); err != nil {
		return r.storeRejected(ctx, ev, err)
	}
	return r.inTx(ctx, func(t *txn) error {
		w, err := r.openWriter(ctx, t, ev.RoomID().String())
		if err != nil {
			return err
		}
		_, err = w.storeRemote(ctx, ev, before, place)
		return err
	})
}

// checkAgainstAuthEvents is step 4: the auth events must be known (fetched
// from origin as outliers when not), accepted, and allow the event.
func (r *Roomserver) checkAgainstAuthEvents(ctx context.Context, origin, version string, ev gomatrixserverlib.PDU, depth int) error {
	authIDs := ev.AuthEventIDs()
	rows, err := r.db().EventsByID(ctx, authIDs)
	if err != nil {
		return err
	}
	have := map[string]sqlstore.Event{}
	for _, row := range rows {
		have[row.EventID] = row
	}
	for _, id := range authIDs {
		if _, ok := have[id]; ok {
			continue
		}
		if depth >= maxFetchDepth {
			return mxerr.New(mxerr.Forbidden, "Event %s: its auth chain is too deep to fetch", ev.EventID())
		}
		row, err := r.fetchOutlier(ctx, origin, version, id, depth+1)
		if err != nil {
			return fmt.Errorf("fetching auth event %s of %s: %w", id, ev.EventID(), err)
		}
		have[id] = row
	}
	var auth []gomatrixserverlib.PDU
	for _, id := range authIDs {
		row := have[id]
		if row.Rejected != nil {
			return r.storeRejected(ctx, ev, fmt.Errorf("its auth event %s was rejected", id))
		}
		parsed, err := parseStored(version, row.JSON, row.RedactedBy != nil)
		if err != nil {
			return err
		}
		auth = append(auth, parsed)
	}
	provider, err := newAuthEvents(auth)
	if err != nil {
		return r.storeRejected(ctx, ev, err)
	}
	if err := checkAuth(ev, provider); err != nil {
		return r.storeRejected(ctx, ev, err)
	}
	return nil
}

// fetchOutlier fetches an event we lack from server, checks it (steps 1–4)
// and stores it as an outlier.
func (r *Roomserver) fetchOutlier(ctx context.Context, server, version, eventID string, depth int) (sqlstore.Event, error) {
	raw, err := r.cfg.Federation.Remote.Event(ctx, server, eventID)
	if err != nil {
		return sqlstore.Event{}, err
	}
	ev, err := r.parseHistoricalPDU(ctx, version, raw)
	if err != nil {
		return sqlstore.Event{}, err
	}
	if ev.EventID() != eventID {
		return sqlstore.Event{}, mxerr.New(mxerr.Forbidden, "%s answered event %s when asked for %s", server, ev.EventID(), eventID)
	}
	if err := r.checkAgainstAuthEvents(ctx, server, version, ev, depth); err != nil && !errors.Is(err, ErrRejected) {
		return sqlstore.Event{}, err
	}
	return r.storeOutlier(ctx, ev, nil)
}

// storeOutlier stores an event without a place in the timeline.
func (r *Roomserver) storeOutlier(ctx context.Context, ev gomatrixserverlib.PDU, rejected *string) (sqlstore.Event, error) {
	row := rowOf(ev)
	row.Rejected = rejected
	err := r.db().InsertOutlier(ctx, &row)
	return row, err
}

// storeRejected records ev as rejected for cause, and returns the error
// that reports it (wrapping ErrRejected).
func (r *Roomserver) storeRejected(ctx context.Context, ev gomatrixserverlib.PDU, cause error) error {
	reason := cause.Error()
	if _, err := r.storeOutlier(ctx, ev, &reason); err != nil {
		return err
	}
	r.log(ctx).Info().Str("event_id", ev.EventID()).Str("reason", reason).Msg("rejected a remote event")
	return fmt.Errorf("event %s %w by the auth rules: %s", ev.EventID(), ErrRejected, reason)
}

// rowOf is the events row of an event, before it is placed.
func rowOf(ev gomatrixserverlib.PDU) sqlstore.Event {
	row := sqlstore.Event{
		EventID: ev.EventID(), RoomID: ev.RoomID().String(), Type: ev.Type(), StateKey: ev.StateKey(),
		Sender: string(ev.SenderID()), Depth: ev.Depth(), OriginServerTS: int64(ev.OriginServerTS()), JSON: string(ev.JSON()),
	}
	if rel := gjson.GetBytes(ev.Content(), `m\.relates_to`); rel.IsObject() {
		if id := rel.Get("event_id").String(); id != "" {
			row.RelatesTo = &id
			if t := rel.Get("rel_type").String(); t != "" {
				row.RelType = &t
			}
		}
	}
	return row
}

// fetchMissingPrevEvents asks origin for the events between our forward
// extremities and ev, and takes them in oldest first. Spec: POST
// /get_missing_events.
func (r *Roomserver) fetchMissingPrevEvents(ctx context.Context, origin, version string, ev gomatrixserverlib.PDU) error {
	missing, err := r.unknownTimelineEvents(ctx, ev.PrevEventIDs())
	if err != nil || len(missing) == 0 {
		return err
	}
	room, err := r.db().GetRoom(ctx, ev.RoomID().String())
	if err != nil {
		return err
	}
	raws, err := r.cfg.Federation.Remote.MissingEvents(ctx, origin, room.RoomID, room.ForwardExtremities, []string{ev.EventID()},
		maxMissingEvents, max(0, ev.Depth()-maxMissingEvents-1))
	if err != nil {
		return err
	}
	var evs []gomatrixserverlib.PDU
	for _, raw := range raws {
		// Live rules: these events enter the timeline as new, so a removed
		// server's (however dated) are refused; the gap is then bridged
		// with the state at it.
		got, err := r.parsePDU(ctx, version, raw)
		if err != nil {
			r.log(ctx).Warn().Err(err).Msg("dropping an event of get_missing_events")
			continue
		}
		if got.RoomID().String() == room.RoomID {
			evs = append(evs, got)
		}
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Depth() < evs[j].Depth() })
	for _, got := range evs {
		if err := r.ingest(ctx, origin, version, got, 1, placeLive); err != nil && !errors.Is(err, ErrRejected) {
			return err
		}
	}
	return nil
}

// unknownTimelineEvents returns the IDs we do not hold in the timeline
// (unknown, or only as outliers).
func (r *Roomserver) unknownTimelineEvents(ctx context.Context, ids []string) ([]string, error) {
	rows, err := r.db().EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	placed := map[string]bool{}
	for _, row := range rows {
		if !row.Outlier && row.Rejected == nil {
			placed[row.EventID] = true
		}
	}
	var out []string
	for _, id := range ids {
		if !placed[id] {
			out = append(out, id)
		}
	}
	return out, nil
}

// stateBeforeRemote is the state before ev: the state after each of its
// prev_events, resolved together when they differ. A prev event we do not
// hold in the timeline is a gap: origin is asked for the state at it
// (GET /state_ids), and the events we lack are fetched as outliers.
func (r *Roomserver) stateBeforeRemote(ctx context.Context, origin, version string, ev gomatrixserverlib.PDU) (map[stateKey]int64, error) {
	q := r.db()
	var sets []map[stateKey]int64
	for _, prevID := range ev.PrevEventIDs() {
		prev, err := q.EventByID(ctx, prevID)
		if err == nil && !prev.Outlier && prev.Rejected == nil {
			after, err := r.stateAfterRow(ctx, q, prev)
			if err != nil {
				return nil, err
			}
			sets = append(sets, after)
			continue
		}
		if err != nil && !errors.Is(err, sqlstore.ErrNotFound) {
			return nil, err
		}
		after, err := r.stateAtGap(ctx, origin, version, ev.RoomID().String(), prevID)
		if err != nil {
			return nil, fmt.Errorf("state at the gap before %s: %w", ev.EventID(), err)
		}
		sets = append(sets, after)
	}
	return r.mergeStates(ctx, q, version, sets)
}

// stateAfterRow is the state after a timeline event: the state before it,
// plus itself if it is a state event.
func (r *Roomserver) stateAfterRow(ctx context.Context, q *sqlstore.Queries, row sqlstore.Event) (map[stateKey]int64, error) {
	snap, err := r.loadSnapshot(ctx, q, row.StateBefore)
	if err != nil {
		return nil, err
	}
	out := make(map[stateKey]int64, len(snap.state)+1)
	for k, v := range snap.state {
		out[k] = v
	}
	if row.StateKey != nil {
		out[stateKey{row.Type, *row.StateKey}] = row.NID
	}
	return out, nil
}

// stateAtGap asks server for the state after prevID, an event we do not hold
// in the timeline: the state before it (GET /state_ids) plus itself. Every
// event we lack is fetched and checked as an outlier.
func (r *Roomserver) stateAtGap(ctx context.Context, server, version, roomID, prevID string) (map[stateKey]int64, error) {
	stateIDs, _, err := r.cfg.Federation.Remote.StateIDs(ctx, server, roomID, prevID)
	if err != nil {
		return nil, err
	}
	prevRow, err := r.outlierByID(ctx, server, version, prevID)
	if err != nil {
		return nil, err
	}
	out := map[stateKey]int64{}
	for _, id := range stateIDs {
		row, err := r.outlierByID(ctx, server, version, id)
		if err != nil {
			return nil, err
		}
		if row.Rejected != nil || row.StateKey == nil || row.RoomID != roomID {
			continue
		}
		out[stateKey{row.Type, *row.StateKey}] = row.NID
	}
	if prevRow.StateKey != nil && prevRow.Rejected == nil {
		out[stateKey{prevRow.Type, *prevRow.StateKey}] = prevRow.NID
	}
	return out, nil
}

// outlierByID returns the stored event, fetching it from server first if we
// do not hold it.
func (r *Roomserver) outlierByID(ctx context.Context, server, version, id string) (sqlstore.Event, error) {
	row, err := r.db().EventByID(ctx, id)
	if err == nil {
		return row, nil
	}
	if !errors.Is(err, sqlstore.ErrNotFound) {
		return row, err
	}
	return r.fetchOutlier(ctx, server, version, id, 1)
}

// mergeStates resolves several state sets into one (state resolution, see
// resolveState); a single set, or identical sets, need no resolution.
func (r *Roomserver) mergeStates(ctx context.Context, q *sqlstore.Queries, version string, sets []map[stateKey]int64) (map[stateKey]int64, error) {
	switch {
	case len(sets) == 0:
		return map[stateKey]int64{}, nil
	case len(sets) == 1 || allEqual(sets):
		return sets[0], nil
	}
	var nids []int64
	for _, s := range sets {
		for _, nid := range s {
			nids = append(nids, nid)
		}
	}
	evs, err := r.loadEvents(ctx, q, version, nids)
	if err != nil {
		return nil, err
	}
	stateSets := make([][]gomatrixserverlib.PDU, len(sets))
	for i, s := range sets {
		for _, nid := range s {
			if ev, ok := evs[nid]; ok {
				stateSets[i] = append(stateSets[i], ev)
			}
		}
	}
	all := make([]gomatrixserverlib.PDU, 0, len(evs))
	for _, ev := range evs {
		all = append(all, ev)
	}
	authChain, err := r.authChainOf(ctx, q, version, all)
	if err != nil {
		return nil, err
	}
	resolved, err := resolveState(version, stateSets, authChain)
	if err != nil {
		return nil, fmt.Errorf("state resolution: %w", err)
	}
	byID := map[string]int64{}
	for nid, ev := range evs {
		byID[ev.EventID()] = nid
	}
	out := make(map[stateKey]int64, len(resolved))
	for _, ev := range resolved {
		if nid, ok := byID[ev.EventID()]; ok && ev.StateKey() != nil {
			out[stateKey{ev.Type(), *ev.StateKey()}] = nid
		}
	}
	return out, nil
}

// authChainOf loads the full auth chains of evs (every auth event,
// recursively) from the database.
func (r *Roomserver) authChainOf(ctx context.Context, q *sqlstore.Queries, version string, evs []gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	seen := map[string]bool{}
	var chain []gomatrixserverlib.PDU
	var frontier []string
	for _, ev := range evs {
		frontier = append(frontier, ev.AuthEventIDs()...)
	}
	for len(frontier) > 0 {
		var ids []string
		for _, id := range frontier {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		frontier = nil
		if len(ids) == 0 {
			break
		}
		rows, err := q.EventsByID(ctx, ids)
		if err != nil {
			return nil, err
		}
		for _, row := range rows {
			ev, err := parseStored(version, row.JSON, row.RedactedBy != nil)
			if err != nil {
				return nil, err
			}
			chain = append(chain, ev)
			frontier = append(frontier, ev.AuthEventIDs()...)
		}
	}
	return chain, nil
}

func allEqual(sets []map[stateKey]int64) bool {
	for _, s := range sets[1:] {
		if len(s) != len(sets[0]) {
			return false
		}
		for k, v := range s {
			if sets[0][k] != v {
				return false
			}
		}
	}
	return true
}

// checkAgainstState is step 5: the auth rules with the auth events taken from
// the state before the event.
func (r *Roomserver) checkAgainstState(ctx context.Context, q *sqlstore.Queries, version string, ev gomatrixserverlib.PDU, state map[stateKey]int64) error {
	provider, err := r.authProviderFor(ctx, q, version, ev, state)
	if err != nil {
		return err
	}
	return checkAuth(ev, provider)
}

// authProviderFor picks, from state, the events the auth rules need for ev.
func (r *Roomserver) authProviderFor(ctx context.Context, q *sqlstore.Queries, version string, ev gomatrixserverlib.PDU, state map[stateKey]int64) (*gomatrixserverlib.AuthEvents, error) {
	var nids []int64
	for _, t := range authTuplesOf(ev) {
		if nid, ok := state[stateKey{t.EventType, t.StateKey}]; ok {
			nids = append(nids, nid)
		}
	}
	evs, err := r.loadEvents(ctx, q, version, nids)
	if err != nil {
		return nil, err
	}
	list := make([]gomatrixserverlib.PDU, 0, len(evs))
	for _, e := range evs {
		list = append(list, e)
	}
	return newAuthEvents(list)
}
