package roomserver

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// Invites across servers. Spec: server-server-api.md, "Inviting to a room":
// the inviting server sends the invite to the invitee's server, which signs
// it too and answers with it (PUT /v2/invite); the invite then goes into the
// room like any event.

// countersignInvite sends a built invite of a remote user to that user's
// server and returns the invite as that server signed it.
func (w *writer) countersignInvite(ctx context.Context, ev gomatrixserverlib.PDU) (gomatrixserverlib.PDU, error) {
	r := w.r
	target := *ev.StateKey()
	server := serverOf(target)
	if err := r.checkServerAllowed(server); err != nil {
		return nil, err
	}
	stripped, err := w.inviteRoomState(ctx)
	if err != nil {
		return nil, err
	}
	signed, err := r.cfg.Federation.Remote.Invite(ctx, server, w.room.RoomID, ev.EventID(), w.room.RoomVersion, ev.JSON(), stripped)
	if err != nil {
		return nil, remoteFailure(server, err)
	}
	got, err := r.parsePDU(ctx, w.room.RoomVersion, signed)
	if err != nil {
		return nil, mxerr.New(mxerr.Forbidden, "%s answered the invite with an event that does not check: %v", server, err)
	}
	if got.EventID() != ev.EventID() || !signedBy(got, server) {
		return nil, mxerr.New(mxerr.Forbidden, "%s did not sign the invite it was sent", server)
	}
	return got, nil
}

// signedBy tells whether server signed ev (checked by parsePDU already).
func signedBy(ev gomatrixserverlib.PDU, server string) bool {
	var c struct {
		Signatures map[string]json.RawMessage `json:"signatures"`
	}
	_ = json.Unmarshal(ev.JSON(), &c)
	_, ok := c.Signatures[server]
	return ok
}

// inviteRoomState is the room's preview sent with an invite, for the
// invitee's client to show the room before joining (see previewState).
func (w *writer) inviteRoomState(ctx context.Context) ([]json.RawMessage, error) {
	return w.r.previewState(ctx, w.q, w.room.RoomVersion, w.state)
}

// ReceiveInvite answers PUT /v2/invite: a remote user invites one of our
// users. The invite is checked (format, border, signatures; an invite of
// an existing local user by a user of origin), signed by us, and kept so the
// invitee's next /sync shows it with the room state the inviter sent.
func (r *Roomserver) ReceiveInvite(ctx context.Context, origin, roomID, eventID, version string, raw json.RawMessage, inviteRoomState []json.RawMessage) (json.RawMessage, error) {
	if version == "" {
		version = "1"
	}
	if !slices.Contains(supportedVersions, version) {
		e := mxerr.New(mxerr.IncompatibleRoomVer, "Room version %s is not supported here", version)
		e.RoomVersion = version
		return nil, e
	}
	ev, err := r.countersignReceivedInvite(ctx, version, raw)
	if err != nil {
		return nil, err
	}
	m, _ := ev.Membership()
	switch {
	case ev.EventID() != eventID || ev.RoomID().String() != roomID:
		return nil, mxerr.New(mxerr.BadJSON, "The event is %s in %s, not %s in %s", ev.EventID(), ev.RoomID().String(), eventID, roomID)
	case ev.Type() != "m.room.member" || m != "invite" || ev.StateKey() == nil:
		return nil, mxerr.New(mxerr.BadJSON, "The event is not an invite")
	case serverOf(string(ev.SenderID())) != origin:
		return nil, mxerr.New(mxerr.Forbidden, "%s may only send its own users' invites", origin)
	case serverOf(*ev.StateKey()) != r.cfg.ServerName:
		return nil, mxerr.New(mxerr.Forbidden, "%s is not a user of this server", *ev.StateKey())
	}
	if r.profiles != nil {
		if ok, err := r.profiles.UserExists(ctx, *ev.StateKey()); err != nil {
			return nil, err
		} else if !ok {
			return nil, mxerr.New(mxerr.NotFound, "There is no user %s", *ev.StateKey())
		}
	}
	preview := r.checkedPreview(ctx, version, roomID, inviteRoomState)
	if versionNumber(version) >= 12 && !hasCreate(preview) {
		return nil, mxerr.New(mxerr.InvalidParam, "invite_room_state must hold the room's create event, correctly signed")
	}
	if err := r.keepInvite(ctx, version, ev, preview); err != nil {
		return nil, err
	}
	return ev.JSON(), nil
}

// countersignReceivedInvite parses an invite sent to us, adds our
// signature, and only then checks its signatures: an invite must carry the
// invited server's signature as well as the sender's (server-server-api.md,
// "Inviting to a room"; the check of parsePDU wants both), so checking it
// before we sign would always fail.
func (r *Roomserver) countersignReceivedInvite(ctx context.Context, version string, raw json.RawMessage) (gomatrixserverlib.PDU, error) {
	ver, err := roomVersion(version)
	if err != nil {
		return nil, err
	}
	ev, err := ver.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, mxerr.New(mxerr.BadJSON, "Invalid event: %v", err)
	}
	return r.parsePDU(ctx, version, signEvent(ev, r.cfg.ServerName, r.key).JSON())
}

// keepInvite stores a received invite. In a room we are in, it is an
// outlier until the room's own traffic places it. Otherwise the room is
// known here only through the invite: a room row whose state is the invite
// alone, so the invitee's /sync lists it; the checked preview the inviter
// sent rides in the stored event's unsigned section (see withPreview).
func (r *Roomserver) keepInvite(ctx context.Context, version string, ev gomatrixserverlib.PDU, preview []StrippedEvent) error {
	roomID := ev.RoomID().String()
	if joined, err := r.serverJoined(ctx, r.db(), roomID, r.cfg.ServerName); err != nil || joined {
		if err == nil {
			_, err = r.storeOutlier(ctx, ev, nil)
		}
		return err
	}
	return r.storeStubMembership(ctx, version, ev, withPreview(ev, "invite_room_state", preview))
}

// storeStubMembership records a user's membership in a room this server is
// not in (an invite received, its rejection): the event takes a stream
// position so the user's /sync sees it, and becomes the room's state for
// that user. The room's graph is not touched: we hold no part of it.
func (r *Roomserver) storeStubMembership(ctx context.Context, version string, ev gomatrixserverlib.PDU, stored []byte) error {
	roomID := ev.RoomID().String()
	return r.inTx(ctx, func(t *txn) error {
		room := sqlstore.Room{RoomID: roomID, RoomVersion: version, Creator: "", CreatedTS: r.now().UnixMilli(), ForwardExtremities: []string{}}
		room, err := t.InsertOrLockRoom(ctx, room)
		if err != nil {
			return err
		}
		r.versions.Add(roomID, version)
		row := rowOf(ev)
		row.JSON = string(stored)
		row.StreamPos = r.hub.Alloc()
		t.positions = append(t.positions, row.StreamPos)
		t.change.Rooms = appendUnique(t.change.Rooms, roomID)
		t.change.Users = appendUnique(t.change.Users, *ev.StateKey())
		current := &snapshot{chainLen: fullSnapshotEvery, state: map[stateKey]int64{}}
		if room.StateSnapshot != 0 {
			if current, err = r.loadSnapshot(ctx, t.Queries, room.StateSnapshot); err != nil {
				return err
			}
		}
		row.StateBefore = current.nid
		w := &writer{r: r, q: t.Queries, t: t, room: room, state: current}
		if err := w.insertOrPlace(ctx, &row); err != nil {
			return err
		}
		t.stored = append(t.stored, row)
		next := make(map[stateKey]int64, len(current.state)+1)
		for k, v := range current.state {
			next[k] = v
		}
		next[stateKey{"m.room.member", *ev.StateKey()}] = row.NID
		if err := w.setCurrentState(ctx, next); err != nil {
			return err
		}
		if err := t.UpdateRoomHead(ctx, roomID, room.ForwardExtremities, max(room.MaxDepth, ev.Depth()), w.state.nid); err != nil {
			return err
		}
		return t.UnforgetRoom(ctx, *ev.StateKey(), roomID)
	})
}

// leaveRemote leaves a room this server is not in (rejecting an invite,
// withdrawing a knock) through the server of whoever invited us, with
// make_leave and send_leave. Spec: server-server-api.md, "Leaving Rooms
// (Rejecting Invites)".
func (r *Roomserver) leaveRemote(ctx context.Context, req MembershipRequest, membershipEv sqlstore.Event) error {
	version, err := r.roomVersionOf(ctx, r.db(), req.RoomID)
	if err != nil {
		return err
	}
	ver, err := roomVersion(version)
	if err != nil {
		return err
	}
	var servers []string
	if membershipEv.Sender != req.Sender {
		servers = append(servers, serverOf(membershipEv.Sender))
	}
	if s := serverOf(req.RoomID); s != "" {
		servers = append(servers, s)
	}
	var lastErr error = mxerr.New(mxerr.NotFound, "No server can help to leave room %s", req.RoomID)
	for _, server := range servers {
		if server == r.cfg.ServerName {
			continue
		}
		if err := r.checkServerAllowed(server); err != nil {
			lastErr = err
			continue
		}
		tmpl, err := r.cfg.Federation.Remote.MakeLeave(ctx, server, req.RoomID, req.Sender)
		if err != nil {
			lastErr = remoteFailure(server, err)
			continue
		}
		content := map[string]any{}
		if req.Reason != "" {
			content["reason"] = req.Reason
		}
		leave, err := buildFromTemplate(ver, tmpl.Event, req.RoomID, req.Sender, "leave", content, r.cfg.ServerName, r.key, r.now())
		if err != nil {
			lastErr = mxerr.New(mxerr.Unknown, "%s sent an unusable leave template: %v", server, err).WithStatus(502)
			continue
		}
		if err := r.cfg.Federation.Remote.SendLeave(ctx, server, req.RoomID, leave.EventID(), leave.JSON()); err != nil {
			lastErr = remoteFailure(server, err)
			continue
		}
		return r.storeStubMembership(ctx, version, leave, leave.JSON())
	}
	return lastErr
}
