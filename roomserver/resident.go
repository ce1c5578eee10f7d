package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// This file is the resident server's side of federation: what we answer
// when another server's user joins, leaves or knocks on one of our rooms,
// and the reads other servers make of a room's graph.
// Spec: server-server-api.md, "Joining Rooms", "Leaving Rooms (Rejecting
// Invites)", "Knocking upon a room", "Retrieving events", "Backfilling and
// retrieving missing events".

type relayKey struct{}

// Relayed tells whether the event being stored arrived through send_join,
// send_leave or send_knock: the resident server sends those on to the other
// servers of the room (the federation outbox reads it).
func Relayed(ctx context.Context) bool { v, _ := ctx.Value(relayKey{}).(bool); return v }

// WithRelay marks ctx: the events stored with it are relayed (see Relayed).
func WithRelay(ctx context.Context) context.Context { return context.WithValue(ctx, relayKey{}, true) }

// MakeMembership answers make_join, make_leave and make_knock: a template of
// userID's membership event, which must be allowed now. versions are the
// room versions the user's server supports (make_join and make_knock).
func (r *Roomserver) MakeMembership(ctx context.Context, origin, roomID, userID, membership string, versions []string) (MakeMembershipResponse, error) {
	if serverOf(userID) != origin {
		return MakeMembershipResponse{}, mxerr.New(mxerr.Forbidden, "%s may only ask for its own users' membership, not %s", origin, userID)
	}
	var resp MakeMembershipResponse
	err := r.inTx(ctx, func(t *txn) error {
		w, err := r.openWriter(ctx, t, roomID)
		if err != nil {
			return err
		}
		if ok, err := r.serverJoined(ctx, t.Queries, roomID, r.cfg.ServerName); err != nil || !ok {
			if err == nil {
				err = mxerr.New(mxerr.NotFound, "This server is not in room %s", roomID)
			}
			return err
		}
		if membership != "leave" {
			if len(versions) == 0 {
				versions = []string{"1"}
			}
			if !slices.Contains(versions, w.room.RoomVersion) {
				e := mxerr.New(mxerr.IncompatibleRoomVer, "Room %s has version %s, which %s does not support", roomID, w.room.RoomVersion, origin)
				e.RoomVersion = w.room.RoomVersion
				return e
			}
		}
		content := map[string]any{"membership": membership}
		if membership == "join" {
			current, err := w.membership(ctx, userID)
			if err != nil {
				return err
			}
			if current != "invite" {
				via, err := r.restrictedJoinAuthoriser(ctx, w, userID)
				if err != nil {
					return err
				}
				if via != "" {
					content["join_authorised_via_users_server"] = via
				}
			}
		}
		raw, _ := json.Marshal(content)
		p := proto{Sender: userID, Type: "m.room.member", StateKey: &userID, Content: raw}
		tuples, err := authTuples(w.ver, p)
		if err != nil {
			return err
		}
		keys := make([]stateKey, 0, len(tuples))
		for _, tu := range tuples {
			keys = append(keys, stateKey{tu.EventType, tu.StateKey})
		}
		authEvs, err := r.stateEvents(ctx, w.q, w.room.RoomVersion, w.state, keys)
		if err != nil {
			return err
		}
		auth, err := newAuthEvents(authEvs)
		if err != nil {
			return err
		}
		tmpl, err := membershipTemplate(w.ver, roomID, userID, raw, w.room.ForwardExtremities, w.room.MaxDepth+1, auth, r.cfg.ServerName, r.key, r.now())
		if err != nil {
			return r.explainMembershipRefusal(ctx, w, MembershipRequest{Sender: userID, RoomID: roomID, Target: userID}, membership, err)
		}
		resp = MakeMembershipResponse{RoomVersion: w.room.RoomVersion, Event: tmpl}
		return nil
	})
	return resp, err
}

// SendMembership answers send_join, send_leave and send_knock: the user's
// signed membership event is checked like any PDU, stored, and relayed to
// the room's other servers. For a join, the answer carries the state before
// the join and its auth chain; for a knock, the room's preview
// (knock_room_state, see previewState). An event the auth rules refuse is
// 403 M_FORBIDDEN.
func (r *Roomserver) SendMembership(ctx context.Context, origin, roomID, eventID, membership string, raw json.RawMessage) (SendJoinResponse, error) {
	version, err := r.roomVersionOf(ctx, r.db(), roomID)
	if err != nil {
		return SendJoinResponse{}, err
	}
	ev, err := r.parsePDU(ctx, version, raw)
	if err != nil {
		return SendJoinResponse{}, err
	}
	m, _ := ev.Membership()
	switch {
	case ev.EventID() != eventID || ev.RoomID().String() != roomID:
		return SendJoinResponse{}, mxerr.New(mxerr.BadJSON, "The event is %s in %s, not %s in %s", ev.EventID(), ev.RoomID().String(), eventID, roomID)
	case ev.Type() != "m.room.member" || ev.StateKey() == nil || *ev.StateKey() != string(ev.SenderID()) || m != membership:
		return SendJoinResponse{}, mxerr.New(mxerr.BadJSON, "The event must be the sender's own %s membership event", membership)
	case serverOf(string(ev.SenderID())) != origin:
		return SendJoinResponse{}, mxerr.New(mxerr.Forbidden, "%s may only send its own users' membership", origin)
	}
	if membership == "join" {
		if via := authorisingUser(ev); via != "" && serverOf(via) == r.cfg.ServerName {
			ev = signEvent(ev, r.cfg.ServerName, r.key)
		}
	}
	if err := r.ingest(WithRelay(ctx), origin, version, ev, 0, placeLive); errors.Is(err, ErrRejected) {
		return SendJoinResponse{}, mxerr.New(mxerr.Forbidden, "%v", err)
	} else if err != nil {
		return SendJoinResponse{}, err
	}
	resp := SendJoinResponse{Origin: r.cfg.ServerName, State: []json.RawMessage{}, AuthChain: []json.RawMessage{}}
	if membership == "leave" {
		return resp, nil
	}
	row, err := r.db().EventByID(ctx, eventID)
	if err != nil {
		return resp, err
	}
	if row.Outlier {
		return resp, mxerr.New(mxerr.Forbidden, "The %s of %s is not allowed by the current state of the room", membership, ev.SenderID())
	}
	if membership == "knock" {
		resp.KnockRoomState, err = r.currentPreview(ctx, version, roomID)
		return resp, err
	}
	stateEvs, authEvs, err := r.stateAndAuthChain(ctx, version, row.StateBefore, ev)
	if err != nil {
		return resp, err
	}
	for _, s := range stateEvs {
		resp.State = append(resp.State, s.JSON())
	}
	for _, a := range authEvs {
		resp.AuthChain = append(resp.AuthChain, a.JSON())
	}
	resp.Event = ev.JSON()
	return resp, nil
}

// authorisingUser is join_authorised_via_users_server of a join.
func authorisingUser(ev gomatrixserverlib.PDU) string {
	var c struct {
		Via string `json:"join_authorised_via_users_server"`
	}
	_ = json.Unmarshal(ev.Content(), &c)
	return c.Via
}

// stateAndAuthChain is the state of snapshot nid and the full auth chain of
// those events plus extra (if not nil).
func (r *Roomserver) stateAndAuthChain(ctx context.Context, version string, nid int64, extra gomatrixserverlib.PDU) (state, authChain []gomatrixserverlib.PDU, err error) {
	q := r.db()
	snap, err := r.loadSnapshot(ctx, q, nid)
	if err != nil {
		return nil, nil, err
	}
	state, err = r.allStateEvents(ctx, q, version, snap)
	if err != nil {
		return nil, nil, err
	}
	all := state
	if extra != nil {
		all = append(slices.Clip(state), extra)
	}
	authChain, err = r.authChainOf(ctx, q, version, all)
	return state, authChain, err
}

// serverJoined tells whether server has a joined member in the room now.
func (r *Roomserver) serverJoined(ctx context.Context, q *sqlstore.Queries, roomID, server string) (bool, error) {
	servers, err := q.JoinedServers(ctx, roomID)
	if err != nil {
		return false, err
	}
	return slices.Contains(servers, server), nil
}

// checkServerMayRead refuses the reads of a server that has no member in
// the room, unless the room is world-readable. Spec: server-server-api.md
// ("Retrieving events": the requesting server must be allowed to see them).
func (r *Roomserver) checkServerMayRead(ctx context.Context, origin, roomID string) (string, error) {
	version, err := r.roomVersionOf(ctx, r.db(), roomID)
	if err != nil {
		return "", err
	}
	if ok, err := r.serverJoined(ctx, r.db(), roomID, origin); err != nil || ok {
		return version, err
	}
	room, err := r.loadRoom(ctx, r.db(), roomID, false)
	if err != nil {
		return "", err
	}
	snap, err := r.loadSnapshot(ctx, r.db(), room.StateSnapshot)
	if err != nil {
		return "", err
	}
	if hv, err := r.historyVisibilityAt(ctx, r.db(), version, snap); err != nil {
		return "", err
	} else if hv == "world_readable" {
		return version, nil
	}
	return "", mxerr.New(mxerr.Forbidden, "%s has no member in room %s", origin, roomID)
}

// EventForServer answers GET /event/{eventId}: an accepted event of a room
// origin may read (redacted if its history visibility hides it from origin).
func (r *Roomserver) EventForServer(ctx context.Context, origin, eventID string) (json.RawMessage, error) {
	row, err := r.db().EventByID(ctx, eventID)
	if errors.Is(err, sqlstore.ErrNotFound) || (err == nil && row.Rejected != nil) {
		return nil, mxerr.New(mxerr.NotFound, "Unknown event %s", eventID)
	}
	if err != nil {
		return nil, err
	}
	version, err := r.checkServerMayRead(ctx, origin, row.RoomID)
	if err != nil {
		return nil, err
	}
	evs, err := r.eventsForServer(ctx, origin, version, []sqlstore.Event{row})
	if err != nil {
		return nil, err
	}
	return evs[0], nil
}

// StateForServer answers GET /state and /state_ids: the state before
// eventID and its auth chain.
func (r *Roomserver) StateForServer(ctx context.Context, origin, roomID, eventID string) (state, authChain []gomatrixserverlib.PDU, err error) {
	version, err := r.checkServerMayRead(ctx, origin, roomID)
	if err != nil {
		return nil, nil, err
	}
	row, err := r.db().EventByID(ctx, eventID)
	if errors.Is(err, sqlstore.ErrNotFound) || (err == nil && (row.RoomID != roomID || row.Outlier || row.Rejected != nil)) {
		return nil, nil, mxerr.New(mxerr.NotFound, "Event %s is not in the timeline of room %s here", eventID, roomID)
	}
	if err != nil {
		return nil, nil, err
	}
	return r.stateAndAuthChain(ctx, version, row.StateBefore, nil)
}

// EventAuthForServer answers GET /event_auth: the auth chain of an event.
func (r *Roomserver) EventAuthForServer(ctx context.Context, origin, roomID, eventID string) ([]gomatrixserverlib.PDU, error) {
	version, err := r.checkServerMayRead(ctx, origin, roomID)
	if err != nil {
		return nil, err
	}
	row, err := r.db().EventByID(ctx, eventID)
	if errors.Is(err, sqlstore.ErrNotFound) || (err == nil && (row.RoomID != roomID || row.Rejected != nil)) {
		return nil, mxerr.New(mxerr.NotFound, "Unknown event %s in room %s", eventID, roomID)
	}
	if err != nil {
		return nil, err
	}
	ev, err := parseStored(version, row.JSON, row.RedactedBy != nil)
	if err != nil {
		return nil, err
	}
	return r.authChainOf(ctx, r.db(), version, []gomatrixserverlib.PDU{ev})
}

// MissingEventsForServer answers POST /get_missing_events: walking
// prev_events back from latest, the events origin lacks, stopping at
// earliest, oldest first.
func (r *Roomserver) MissingEventsForServer(ctx context.Context, origin, roomID string, earliest, latest []string, limit int, minDepth int64) ([]json.RawMessage, error) {
	version, err := r.checkServerMayRead(ctx, origin, roomID)
	if err != nil {
		return nil, err
	}
	limit = min(max(limit, 1), 100)
	rows, err := r.walkBack(ctx, roomID, latest, earliest, limit, minDepth, false)
	if err != nil {
		return nil, err
	}
	return r.eventsForServer(ctx, origin, version, rows)
}

// BackfillForServer answers GET /backfill: up to limit events from the
// given ones backwards, including them.
func (r *Roomserver) BackfillForServer(ctx context.Context, origin, roomID string, from []string, limit int) ([]json.RawMessage, error) {
	version, err := r.checkServerMayRead(ctx, origin, roomID)
	if err != nil {
		return nil, err
	}
	limit = min(max(limit, 1), 100)
	rows, err := r.walkBack(ctx, roomID, from, nil, limit, 0, true)
	if err != nil {
		return nil, err
	}
	return r.eventsForServer(ctx, origin, version, rows)
}

// walkBack walks the DAG from start through prev_events, breadth first
// (deepest first), never past stop, and returns up to limit accepted
// timeline events. includeStart says whether the start events themselves
// count (backfill) or only their ancestors (get_missing_events). The
// events come oldest first.
func (r *Roomserver) walkBack(ctx context.Context, roomID string, start, stop []string, limit int, minDepth int64, includeStart bool) ([]sqlstore.Event, error) {
	seen := map[string]bool{}
	for _, id := range stop {
		seen[id] = true
	}
	var out []sqlstore.Event
	frontier := slices.Clone(start)
	first := true
	for len(frontier) > 0 && len(out) < limit {
		var ids []string
		for _, id := range frontier {
			if !seen[id] || (first && includeStart && !slices.Contains(stop, id)) {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		frontier = nil
		rows, err := r.db().EventsByID(ctx, ids)
		if err != nil {
			return nil, err
		}
		slices.SortFunc(rows, func(a, b sqlstore.Event) int { return int(b.Depth - a.Depth) })
		for _, row := range rows {
			if row.RoomID != roomID || row.Rejected != nil || row.Outlier {
				continue
			}
			if (!first || includeStart) && len(out) < limit && row.Depth >= minDepth {
				out = append(out, row)
			}
			frontier = append(frontier, prevEventIDsOf(row.JSON)...)
		}
		first = false
	}
	slices.SortFunc(out, func(a, b sqlstore.Event) int { return int(a.Depth - b.Depth) })
	return out, nil
}

// prevEventIDsOf reads prev_events from stored JSON, in both formats (room
// versions 1–2: [id, hashes] pairs; later: IDs).
func prevEventIDsOf(eventJSON string) []string {
	var raw struct {
		Prev []json.RawMessage `json:"prev_events"`
	}
	_ = json.Unmarshal([]byte(eventJSON), &raw)
	var out []string
	for _, p := range raw.Prev {
		var id string
		if json.Unmarshal(p, &id) == nil {
			out = append(out, id)
			continue
		}
		var pair []json.RawMessage
		if json.Unmarshal(p, &pair) == nil && len(pair) > 0 && json.Unmarshal(pair[0], &id) == nil {
			out = append(out, id)
		}
	}
	return out
}
