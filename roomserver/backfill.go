package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"chappe/sqlstore"
)

// This file fetches the room history we lack from other servers, when a
// client pages back past the oldest event we hold (after joining a room
// over federation we hold only its state and what came after our join).
// Spec: server-server-api.md, "Backfilling and retrieving missing events".
//
// Only the front of the timeline is filled: the history before the oldest
// events we hold. A gap in the middle (events get_missing_events could not
// fetch, bridged by asking for the state at the gap) stays a gap.

const (
	// backfillBatch is how many events one GET /backfill asks for.
	backfillBatch = 50
	// backfillServers is how many servers of the room one backfill tries.
	backfillServers = 3
	// backfillTimeout bounds one backfill, so a slow server cannot hold a
	// client's /messages for long.
	backfillTimeout = 20 * time.Second
	// backfillCooldown: after a backfill that brought nothing new, the room
	// is not asked for again before this (paging at the top of a room's
	// history would otherwise call other servers on every request).
	backfillCooldown = time.Minute
	// backfillFrontier is how many of the oldest timeline events are looked
	// at to find the history we lack.
	backfillFrontier = 20
)

// backfill fetches the history before the oldest events we hold in the room
// from a server of the room, checks every event like any received PDU
// (format, border, signatures, hashes, auth events, state before it) and
// places the accepted ones in the timeline below everything we hold. It
// tells whether any event was placed. Concurrent requests for one room
// share one backfill.
func (r *Roomserver) backfill(ctx context.Context, roomID string) (bool, error) {
	if !r.cfg.Federation.enabled() {
		return false, nil
	}
	if until, ok := r.backfillQuiet.Get(roomID); ok && r.now().Before(until) {
		return false, nil
	}
	got, err, _ := r.backfills.Do(roomID, func() (any, error) {
		// Not cut short when the first client leaves: others wait on it.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), backfillTimeout)
		defer cancel()
		return r.backfillRoom(ctx, roomID)
	})
	if err != nil {
		return false, err
	}
	return got.(bool), nil
}

// backfillRoom is one backfill of the room (see backfill).
func (r *Roomserver) backfillRoom(ctx context.Context, roomID string) (bool, error) {
	room, err := r.loadRoom(ctx, r.db(), roomID, false)
	if err != nil {
		return false, err
	}
	missing, err := r.missingHistory(ctx, roomID)
	if err != nil || len(missing) == 0 {
		return false, err
	}
	servers, err := r.backfillServersOf(ctx, room)
	if err != nil {
		return false, err
	}
	for _, server := range servers {
		raws, err := r.cfg.Federation.Remote.Backfill(ctx, server, roomID, missing, backfillBatch)
		if err != nil {
			r.log(ctx).Info().Err(err).Str("room_id", roomID).Str("server", server).Msg("backfill refused or failed")
			continue
		}
		placed, err := r.takeBackfilled(ctx, server, room.RoomVersion, roomID, raws)
		if err != nil {
			return false, err
		}
		if placed > 0 {
			return true, nil
		}
	}
	r.backfillQuiet.Add(roomID, r.now().Add(backfillCooldown))
	return false, nil
}

// missingHistory is the prev_events of the oldest timeline events that we
// do not hold in the timeline: where backfill starts (its "v" parameter).
// Empty when the timeline starts at the room's creation.
func (r *Roomserver) missingHistory(ctx context.Context, roomID string) ([]string, error) {
	// Forwards from Position{}: the gap before every event (depths start
	// at 1, so backfilled events, with negative stream positions, count).
	oldest, err := r.db().EventsPage(ctx, roomID, Position{}, true, backfillFrontier, sqlstore.EventFilter{})
	if err != nil {
		return nil, err
	}
	var prevs []string
	for _, row := range oldest {
		for _, p := range prevEventIDsOf(row.JSON) {
			if !slices.Contains(prevs, p) {
				prevs = append(prevs, p)
			}
		}
	}
	return r.unknownTimelineEvents(ctx, prevs)
}

// backfillServersOf is the servers to ask: those of the room's joined
// members that the allowlist admits, the creator's first (it holds the
// room from its start), at most backfillServers of them.
func (r *Roomserver) backfillServersOf(ctx context.Context, room sqlstore.Room) ([]string, error) {
	joined, err := r.db().JoinedServers(ctx, room.RoomID)
	if err != nil {
		return nil, err
	}
	creator := serverOf(room.Creator)
	sort.Slice(joined, func(i, j int) bool {
		if (joined[i] == creator) != (joined[j] == creator) {
			return joined[i] == creator
		}
		return joined[i] < joined[j]
	})
	var out []string
	for _, s := range joined {
		if s != r.cfg.ServerName && r.cfg.Federation.Gate.Allowed(s) && len(out) < backfillServers {
			out = append(out, s)
		}
	}
	return out, nil
}

// takeBackfilled checks and places the events server answered, oldest
// first, and returns how many new events reached the timeline. An event
// that fails its checks is dropped (or stored as rejected) without
// stopping the others.
func (r *Roomserver) takeBackfilled(ctx context.Context, server, version, roomID string, raws []json.RawMessage) (int, error) {
	var evs []gomatrixserverlib.PDU
	var ids []string
	for _, raw := range raws {
		ev, err := r.parseHistoricalPDU(ctx, version, raw)
		if err != nil {
			r.log(ctx).Warn().Err(err).Str("server", server).Msg("dropping a backfilled event")
			continue
		}
		if ev.RoomID().String() != roomID || slices.Contains(ids, ev.EventID()) {
			continue
		}
		evs = append(evs, ev)
		ids = append(ids, ev.EventID())
	}
	newIDs, err := r.unknownTimelineEvents(ctx, ids)
	if err != nil || len(newIDs) == 0 {
		return 0, err
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Depth() < evs[j].Depth() })
	for _, ev := range evs {
		if !slices.Contains(newIDs, ev.EventID()) {
			continue
		}
		if ctx.Err() != nil {
			break // out of time: keep what is placed
		}
		if err := r.ingest(ctx, server, version, ev, 0, placeBackfill); err != nil && !errors.Is(err, ErrRejected) {
			r.log(ctx).Info().Err(err).Str("event_id", ev.EventID()).Str("server", server).Msg("backfilled event not placed")
		}
	}
	ctx = context.WithoutCancel(ctx) // what is placed is kept: finish it
	stillMissing, err := r.unknownTimelineEvents(ctx, newIDs)
	if err != nil {
		return 0, err
	}
	var placed []string
	for _, id := range newIDs {
		if !slices.Contains(stillMissing, id) {
			placed = append(placed, id)
		}
	}
	if err := r.applyLateRedactions(ctx, roomID, placed); err != nil {
		return 0, err
	}
	return len(placed), nil
}

// applyLateRedactions applies to newly backfilled events the redactions of
// them we already held: a redaction can reach us before its target (spec
// rooms/v3.md, "Handling redactions"). One query for the whole batch.
func (r *Roomserver) applyLateRedactions(ctx context.Context, roomID string, eventIDs []string) error {
	if len(eventIDs) == 0 {
		return nil
	}
	rows, err := r.db().RedactionsOf(ctx, roomID, eventIDs)
	if err != nil || len(rows) == 0 {
		return err
	}
	return r.inTx(ctx, func(t *txn) error {
		w, err := r.openWriter(ctx, t, roomID)
		if err != nil {
			return err
		}
		for _, row := range rows {
			if row.Rejected != nil || row.Outlier {
				continue
			}
			redaction, err := parseStored(w.room.RoomVersion, row.JSON, row.RedactedBy != nil)
			if err != nil {
				return err
			}
			if err := w.applyRemoteRedaction(ctx, redaction); err != nil {
				return err
			}
		}
		return nil
	})
}
