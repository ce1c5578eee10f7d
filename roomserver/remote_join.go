package roomserver

import (
	"context"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// This file is the joining server's side: a local user joins, or knocks on,
// a room this server is not in, through a resident server.
// Spec: server-server-api.md, "Joining Rooms" (make_join, then send_join,
// then the returned state and auth chain checked before anything is stored)
// and "Knocking upon a room" (make_knock, then send_knock).

// resolveRoomAndServers turns a room ID or alias into a room ID and the
// servers that can help us join it: a remote alias is asked of its server
// (GET /query/directory); a room ID's own server and the client's via
// servers are tried after.
func (r *Roomserver) resolveRoomAndServers(ctx context.Context, idOrAlias string, via []string) (string, []string, error) {
	servers := slices.Clone(via)
	if len(idOrAlias) > 0 && idOrAlias[0] == '#' && serverOf(idOrAlias) != r.cfg.ServerName && serverOf(idOrAlias) != "" {
		if err := checkAliasSyntax(idOrAlias); err != nil {
			return "", nil, err
		}
		server := serverOf(idOrAlias)
		if err := r.checkServerAllowed(server); err != nil {
			return "", nil, err
		}
		roomID, aliasServers, err := r.cfg.Federation.Remote.QueryAlias(ctx, server, idOrAlias)
		if err != nil {
			return "", nil, remoteFailure(server, err)
		}
		return roomID, append(append([]string{server}, aliasServers...), servers...), nil
	}
	roomID, err := r.ResolveRoom(ctx, idOrAlias)
	if err != nil {
		return "", nil, err
	}
	if s := serverOf(roomID); s != "" {
		servers = append(servers, s)
	}
	return roomID, servers, nil
}

// remoteFailure turns a failed federation request into an error for the
// client: Matrix errors the remote server gave pass through.
func remoteFailure(server string, err error) error {
	if e, ok := mxerr.As(err); ok {
		return e
	}
	return mxerr.New(mxerr.Unknown, "%s could not be reached: %v", server, err).WithStatus(502)
}

// joinRemote joins the room through the first of servers that accepts.
func (r *Roomserver) joinRemote(ctx context.Context, req MembershipRequest, roomID string, servers []string) error {
	return r.throughServers(ctx, "join", roomID, servers, func(server string) error {
		return r.joinVia(ctx, req, roomID, server)
	})
}

// throughServers runs try with each of servers in turn until one succeeds,
// and returns the last failure otherwise. Our own name, empty and repeated
// names are skipped; a server outside the federation is refused without
// being asked. what names the attempt in logs and errors ("join", "knock on").
func (r *Roomserver) throughServers(ctx context.Context, what, roomID string, servers []string, try func(server string) error) error {
	var lastErr error
	tried := map[string]bool{}
	for _, server := range servers {
		if server == r.cfg.ServerName || server == "" || tried[server] {
			continue
		}
		tried[server] = true
		if err := r.checkServerAllowed(server); err != nil {
			lastErr = err
			continue
		}
		err := try(server)
		if err == nil {
			return nil
		}
		r.log(ctx).Info().Err(err).Str("room_id", roomID).Str("via", server).Msg("remote " + what + " failed")
		lastErr = err
	}
	if lastErr == nil {
		lastErr = mxerr.New(mxerr.NotFound, "No server in the federation could help to %s room %s", what, roomID)
	}
	return lastErr
}

// joinVia is make_join and send_join through one resident server, then the
// room as the answer describes it stored here.
func (r *Roomserver) joinVia(ctx context.Context, req MembershipRequest, roomID, server string) error {
	fed := r.cfg.Federation
	tmpl, err := fed.Remote.MakeJoin(ctx, server, roomID, req.Sender, SupportedVersions())
	if err != nil {
		return remoteFailure(server, err)
	}
	version, join, err := r.ownMembership(ctx, server, tmpl, roomID, req, "join")
	if err != nil {
		return err
	}
	resp, err := fed.Remote.SendJoin(ctx, server, roomID, join.EventID(), join.JSON())
	if err != nil {
		return remoteFailure(server, err)
	}
	if len(resp.Event) > 0 {
		// A restricted join comes back signed by the resident server too.
		signed, err := r.parsePDU(ctx, version, resp.Event)
		if err == nil && signed.EventID() == join.EventID() {
			join = signed
		}
	}
	missing := func(_ gomatrixserverlib.RoomVersion, ids []string) ([]gomatrixserverlib.PDU, error) {
		var out []gomatrixserverlib.PDU
		for _, id := range ids {
			raw, err := fed.Remote.Event(ctx, server, id)
			if err != nil {
				return nil, err
			}
			ev, err := r.parseHistoricalPDU(ctx, version, raw)
			if err != nil {
				return nil, err
			}
			out = append(out, ev)
		}
		return out, nil
	}
	state, authChain, err := checkJoinResponse(ctx, version, resp.State, resp.AuthChain, join, fed.Keys, missing)
	if err != nil {
		return mxerr.New(mxerr.Forbidden, "The answer of %s to our join does not check: %v", server, err)
	}
	return r.adoptJoinedRoom(ctx, req, version, join, state, authChain)
}

// adoptJoinedRoom stores a room we just joined: the auth chain and the
// state as outliers, then our join in the timeline on top of that state.
// The room's head moves to the join: what happened before it arrives by
// backfill when a client asks.
func (r *Roomserver) adoptJoinedRoom(ctx context.Context, req MembershipRequest, version string, join gomatrixserverlib.PDU, state, authChain []gomatrixserverlib.PDU) error {
	roomID := join.RoomID().String()
	var create gomatrixserverlib.PDU
	for _, ev := range state {
		if ev.Type() == "m.room.create" && ev.StateKey() != nil && *ev.StateKey() == "" {
			create = ev
		}
		if err := r.checkBorder(ev, true); err != nil {
			return err
		}
	}
	if create == nil {
		return mxerr.New(mxerr.Forbidden, "The room state of %s has no create event", roomID)
	}
	ver, err := roomVersion(version)
	if err != nil {
		return err
	}
	return r.inTx(ctx, func(t *txn) error {
		room := sqlstore.Room{RoomID: roomID, RoomVersion: version, Creator: string(create.SenderID()), CreatedTS: r.now().UnixMilli(), ForwardExtremities: []string{}}
		room, err := t.InsertOrLockRoom(ctx, room)
		if err != nil {
			return err
		}
		if room.RoomVersion != version {
			return mxerr.New(mxerr.Forbidden, "Room %s is version %s here, the resident server says %s", roomID, room.RoomVersion, version)
		}
		r.versions.Add(roomID, version)
		for _, ev := range authChain {
			row := rowOf(ev)
			if err := t.InsertOutlier(ctx, &row); err != nil {
				return err
			}
		}
		before := map[stateKey]int64{}
		for _, ev := range state {
			row := rowOf(ev)
			if err := t.InsertOutlier(ctx, &row); err != nil {
				return err
			}
			r.events.Add(row.NID, ev)
			before[stateKey{ev.Type(), *ev.StateKey()}] = row.NID
		}
		empty := &snapshot{chainLen: fullSnapshotEvery, state: map[stateKey]int64{}}
		snap, err := r.snapshotFor(ctx, t.Queries, roomID, empty, before)
		if err != nil {
			return err
		}
		current := &snapshot{state: map[stateKey]int64{}}
		if room.StateSnapshot != 0 {
			if current, err = r.loadSnapshot(ctx, t.Queries, room.StateSnapshot); err != nil {
				return err
			}
		}
		// The head jumps to our join: its prev_events are the resident's
		// extremities, and the state before it is the answer's.
		room.ForwardExtremities = []string{}
		w := &writer{r: r, q: t.Queries, t: t, room: room, ver: ver, state: current}
		if err := w.applyCurrentState(ctx, snap); err != nil {
			return err
		}
		stored, err := w.storeRemote(ctx, join, before, placeLive)
		if err != nil {
			return err
		}
		if stored == nil {
			return mxerr.New(mxerr.Forbidden, "Our join to %s is not allowed by the room's state", roomID)
		}
		return t.UnforgetRoom(ctx, req.Sender, roomID)
	})
}

// knockRemote knocks on a room this server is not in, through the first of
// servers that accepts.
func (r *Roomserver) knockRemote(ctx context.Context, req MembershipRequest, roomID string, servers []string) error {
	return r.throughServers(ctx, "knock on", roomID, servers, func(server string) error {
		return r.knockVia(ctx, req, roomID, server)
	})
}

// knockVia is make_knock and send_knock through one resident server. The
// knock is kept as the user's membership in a room we hold no part of (like
// a received invite), with the room's state the resident server answered
// (knock_room_state, checked) for the user's /sync to show.
// Spec: server-server-api.md, "Knocking upon a room".
func (r *Roomserver) knockVia(ctx context.Context, req MembershipRequest, roomID, server string) error {
	fed := r.cfg.Federation
	tmpl, err := fed.Remote.MakeKnock(ctx, server, roomID, req.Sender, SupportedVersions())
	if err != nil {
		return remoteFailure(server, err)
	}
	version, knock, err := r.ownMembership(ctx, server, tmpl, roomID, req, "knock")
	if err != nil {
		return err
	}
	if versionNumber(version) < 7 {
		return mxerr.New(mxerr.Forbidden, "Room version %s does not support knocking", version)
	}
	roomState, err := fed.Remote.SendKnock(ctx, server, roomID, knock.EventID(), knock.JSON())
	if err != nil {
		return remoteFailure(server, err)
	}
	preview := r.checkedPreview(ctx, version, roomID, roomState)
	return r.storeStubMembership(ctx, version, knock, withPreview(knock, "knock_room_state", preview))
}

// ownMembership builds and signs req.Sender's join or knock from the
// template server answered to make_join or make_knock, with the user's
// profile and reason. It returns the room version too (1 when the template
// names none, as the spec says).
func (r *Roomserver) ownMembership(ctx context.Context, server string, tmpl MakeMembershipResponse, roomID string, req MembershipRequest, membership string) (string, gomatrixserverlib.PDU, error) {
	version := tmpl.RoomVersion
	if version == "" {
		version = "1"
	}
	ver, err := roomVersion(version)
	if err != nil {
		return "", nil, err
	}
	content := r.memberContentMap(ctx, req.Sender, membership, req.Reason)
	ev, err := buildFromTemplate(ver, tmpl.Event, roomID, req.Sender, membership, content, r.cfg.ServerName, r.key, r.now())
	if err != nil {
		return "", nil, mxerr.New(mxerr.Unknown, "%s sent an unusable %s template: %v", server, membership, err).WithStatus(502)
	}
	return version, ev, nil
}
