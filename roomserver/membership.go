package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"

	"github.com/tidwall/gjson"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// MembershipRequest is a change of membership. Spec: client-server-api
// "Room membership": join, leave, invite, kick, ban, unban, knock.
type MembershipRequest struct {
	Sender   string // who acts
	RoomID   string
	Target   string // whose membership changes; the sender for join, leave and knock
	Reason   string
	IsDirect bool // invites only
	// Via are servers that may help to join a room this server is not in
	// (the client's server_name / via parameters).
	Via []string
}

// ResolveRoom turns a room ID or a local alias into a room ID.
func (r *Roomserver) ResolveRoom(ctx context.Context, idOrAlias string) (string, error) {
	switch {
	case strings.HasPrefix(idOrAlias, "!"):
		return idOrAlias, nil
	case strings.HasPrefix(idOrAlias, "#"):
		roomID, _, err := r.store.ResolveAlias(ctx, idOrAlias)
		if errors.Is(err, sqlstore.ErrNotFound) {
			if !strings.HasSuffix(idOrAlias, ":"+r.cfg.ServerName) {
				return "", mxerr.New(mxerr.NotFound, "Room alias %s is on another server; federation is not available yet", idOrAlias)
			}
			return "", mxerr.New(mxerr.NotFound, "Room alias %s not found", idOrAlias)
		}
		return roomID, err
	}
	return "", mxerr.New(mxerr.InvalidParam, "%q is neither a room ID (!…) nor a room alias (#…)", idOrAlias)
}

// Join makes the sender join the room (by ID or alias). Joining a room one
// is already joined to changes nothing. Spec: POST /join/{roomIdOrAlias}.
func (r *Roomserver) Join(ctx context.Context, req MembershipRequest) (string, error) {
	return r.localOrRemote(ctx, req, r.joinLocal, r.joinRemote)
}

// localOrRemote routes a join or a knock: a room this server is not in (or
// no longer in) is asked of a resident server through remote; otherwise
// the membership is a local event, written by local. It returns the room ID.
func (r *Roomserver) localOrRemote(ctx context.Context, req MembershipRequest,
	local func(context.Context, MembershipRequest) (string, error),
	remote func(ctx context.Context, req MembershipRequest, roomID string, servers []string) error) (string, error) {
	if !r.cfg.Federation.enabled() {
		return local(ctx, req)
	}
	roomID, servers, err := r.resolveRoomAndServers(ctx, req.RoomID, req.Via)
	if err != nil {
		return "", err
	}
	if joined, err := r.serverJoined(ctx, r.db(), roomID, r.cfg.ServerName); err != nil {
		return "", err
	} else if !joined && slices.ContainsFunc(servers, func(s string) bool { return s != r.cfg.ServerName }) {
		return roomID, remote(ctx, req, roomID, servers)
	}
	req.RoomID = roomID
	return local(ctx, req)
}

// joinLocal joins a room this server is in, with a local event.
func (r *Roomserver) joinLocal(ctx context.Context, req MembershipRequest) (string, error) {
	roomID, err := r.ResolveRoom(ctx, req.RoomID)
	if err != nil {
		return "", err
	}
	err = r.inTx(ctx, func(q *txn) error {
		w, err := r.openWriter(ctx, q, roomID)
		if err != nil {
			if e, ok := mxerr.As(err); ok && e.Code == mxerr.NotFound && !strings.HasSuffix(roomID, ":"+r.cfg.ServerName) {
				return mxerr.New(mxerr.NotFound, "Room %s is not known here, and federation is switched off", roomID)
			}
			return err
		}
		current, err := w.membership(ctx, req.Sender)
		if err != nil {
			return err
		}
		if current == "join" {
			return nil
		}
		c := map[string]any{}
		if err := json.Unmarshal(r.memberContent(ctx, req.Sender, "join", req.Reason, false), &c); err != nil {
			return err
		}
		if current != "invite" {
			if via, err := r.restrictedJoinAuthoriser(ctx, w, req.Sender); err != nil {
				return err
			} else if via != "" {
				c["join_authorised_via_users_server"] = via
			}
		}
		_, err = w.append(ctx, r.memberProto(req.Sender, req.Sender, c))
		if err != nil {
			return r.explainMembershipRefusal(ctx, w, req, "join", err)
		}
		return q.UnforgetRoom(ctx, req.Sender, roomID)
	})
	if err != nil {
		return "", err
	}
	return roomID, nil
}

// restrictedJoinAuthoriser picks the local member who vouches for a join to a
// restricted room: the sender must be joined to one of the rooms of the
// allow list, and the voucher must have the power to invite.
// Spec: client-server-api "Restricted rooms"; rooms/v8.md.
func (r *Roomserver) restrictedJoinAuthoriser(ctx context.Context, w *writer, userID string) (string, error) {
	rules, err := r.stateEvent(ctx, w.q, w.room.RoomVersion, w.state, stateKey{"m.room.join_rules", ""})
	if err != nil || rules == nil {
		return "", err
	}
	rule := gjson.GetBytes(rules.Content(), "join_rule").String()
	if rule != "restricted" && rule != "knock_restricted" {
		return "", nil
	}
	if versionNumber(w.room.RoomVersion) < 8 {
		return "", nil
	}
	allowed := false
	for _, a := range gjson.GetBytes(rules.Content(), "allow").Array() {
		if a.Get("type").String() != "m.room_membership" {
			continue
		}
		rooms, err := w.q.RoomsWithMembership(ctx, userID, "join")
		if err != nil {
			return "", err
		}
		if slices.Contains(rooms, a.Get("room_id").String()) {
			allowed = true
			break
		}
	}
	if !allowed {
		return "", nil // the auth rules will refuse with the join rule's reason
	}
	pl, err := w.powerLevels(ctx)
	if err != nil {
		return "", err
	}
	members, err := w.q.CurrentStateOfType(ctx, w.room.RoomID, "m.room.member")
	if err != nil {
		return "", err
	}
	for _, m := range members {
		if m.Membership == nil || *m.Membership != "join" || !strings.HasSuffix(m.StateKey, ":"+r.cfg.ServerName) {
			continue
		}
		if level, err := w.userLevel(ctx, m.StateKey); err == nil && level >= pl.Invite {
			return m.StateKey, nil
		}
	}
	return "", mxerr.New(mxerr.Forbidden, "No member of this server can authorise your join to the restricted room")
}

// Leave leaves, rejects an invite or rescinds a knock.
// Spec: POST /rooms/{roomId}/leave.
func (r *Roomserver) Leave(ctx context.Context, req MembershipRequest) error {
	if r.cfg.Federation.enabled() {
		// In a room this server is not in, only an invite or a knock can
		// be left, through a resident server.
		if joined, err := r.serverJoined(ctx, r.db(), req.RoomID, r.cfg.ServerName); err != nil {
			return err
		} else if !joined {
			nid, err := r.db().CurrentStateEvent(ctx, req.RoomID, "m.room.member", req.Sender)
			if err == nil {
				rows, err := r.db().EventsByNID(ctx, []int64{nid})
				if err != nil {
					return err
				}
				if len(rows) == 1 && slices.Contains([]string{"invite", "knock"}, gjson.Get(rows[0].JSON, "content.membership").String()) {
					return r.leaveRemote(ctx, req, rows[0])
				}
			}
		}
	}
	return r.inTx(ctx, func(q *txn) error {
		w, err := r.openWriter(ctx, q, req.RoomID)
		if err != nil {
			return err
		}
		current, ev, err := r.membershipIn(ctx, q.Queries, w.room.RoomVersion, w.state, req.Sender)
		if err != nil {
			return err
		}
		if ev == nil {
			return mxerr.New(mxerr.Forbidden, "You are not a member of room %s", req.RoomID)
		}
		if current == "leave" {
			return nil
		}
		c := r.memberContentMap(ctx, req.Sender, "leave", req.Reason)
		if _, err := w.append(ctx, r.memberProto(req.Sender, req.Sender, c)); err != nil {
			return r.explainMembershipRefusal(ctx, w, req, "leave", err)
		}
		return nil
	})
}

// Invite invites a user. Spec: POST /rooms/{roomId}/invite.
func (r *Roomserver) Invite(ctx context.Context, req MembershipRequest) error {
	if err := r.checkInvitee(ctx, req.Target); err != nil {
		return err
	}
	return r.changeOther(ctx, req, "invite")
}

// Kick removes a member. Spec: POST /rooms/{roomId}/kick.
func (r *Roomserver) Kick(ctx context.Context, req MembershipRequest) error {
	return r.changeOther(ctx, req, "kick")
}

// Ban bans a user. Spec: POST /rooms/{roomId}/ban.
func (r *Roomserver) Ban(ctx context.Context, req MembershipRequest) error {
	return r.changeOther(ctx, req, "ban")
}

// Unban lifts a ban. Spec: POST /rooms/{roomId}/unban.
func (r *Roomserver) Unban(ctx context.Context, req MembershipRequest) error {
	return r.changeOther(ctx, req, "unban")
}

// changeOther is invite, kick, ban and unban: the sender changes the target's membership.
func (r *Roomserver) changeOther(ctx context.Context, req MembershipRequest, action string) error {
	if err := r.checkUserID(req.Target); err != nil {
		return err
	}
	return r.inTx(ctx, func(q *txn) error {
		w, err := r.openWriter(ctx, q, req.RoomID)
		if err != nil {
			return err
		}
		current, err := w.membership(ctx, req.Target)
		if err != nil {
			return err
		}
		var membership string
		switch action {
		case "invite":
			if current == "join" || current == "invite" {
				return mxerr.New(mxerr.Forbidden, "%s is already %s", req.Target, map[string]string{"join": "in the room", "invite": "invited"}[current])
			}
			if current == "ban" {
				return mxerr.New(mxerr.Forbidden, "%s is banned from the room", req.Target)
			}
			membership = "invite"
		case "kick":
			if current != "join" && current != "invite" && current != "knock" {
				return mxerr.New(mxerr.Forbidden, "%s is not in the room", req.Target)
			}
			membership = "leave"
		case "ban":
			membership = "ban"
		case "unban":
			if current != "ban" {
				return mxerr.New(mxerr.Forbidden, "%s is not banned", req.Target)
			}
			membership = "leave"
		}
		c := r.memberContentMap(ctx, req.Target, membership, req.Reason)
		if action == "invite" && req.IsDirect {
			c["is_direct"] = true
		}
		if _, err := w.append(ctx, r.memberProto(req.Sender, req.Target, c)); err != nil {
			return r.explainMembershipRefusal(ctx, w, req, action, err)
		}
		if membership == "invite" {
			return q.UnforgetRoom(ctx, req.Target, req.RoomID)
		}
		return nil
	})
}

// Knock asks to be let into a room whose join rule is knock; a room this
// server is not in is knocked on through a resident server (see
// knockRemote). Spec: POST /knock/{roomIdOrAlias} (room versions 7 and
// later).
func (r *Roomserver) Knock(ctx context.Context, req MembershipRequest) (string, error) {
	return r.localOrRemote(ctx, req, r.knockLocal, r.knockRemote)
}

// knockLocal knocks on a room this server is in, with a local event.
func (r *Roomserver) knockLocal(ctx context.Context, req MembershipRequest) (string, error) {
	roomID, err := r.ResolveRoom(ctx, req.RoomID)
	if err != nil {
		return "", err
	}
	err = r.inTx(ctx, func(q *txn) error {
		w, err := r.openWriter(ctx, q, roomID)
		if err != nil {
			return err
		}
		if versionNumber(w.room.RoomVersion) < 7 {
			return mxerr.New(mxerr.Forbidden, "Room version %s does not support knocking", w.room.RoomVersion)
		}
		current, err := w.membership(ctx, req.Sender)
		if err != nil {
			return err
		}
		switch current {
		case "join", "invite":
			return mxerr.New(mxerr.Forbidden, "You are already %s", map[string]string{"join": "in the room", "invite": "invited"}[current])
		case "ban":
			return mxerr.New(mxerr.Forbidden, "You are banned from this room")
		case "knock":
			return nil
		}
		c := r.memberContentMap(ctx, req.Sender, "knock", req.Reason)
		if _, err := w.append(ctx, r.memberProto(req.Sender, req.Sender, c)); err != nil {
			return r.explainMembershipRefusal(ctx, w, req, "knock", err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return roomID, nil
}

// Forget hides a room the user has left from their history.
// Spec: POST /rooms/{roomId}/forget.
func (r *Roomserver) Forget(ctx context.Context, userID, roomID string) error {
	room, err := r.loadRoom(ctx, &r.store.Queries, roomID, false)
	if err != nil {
		return err
	}
	snap, err := r.loadSnapshot(ctx, &r.store.Queries, room.StateSnapshot)
	if err != nil {
		return err
	}
	current, ev, err := r.membershipIn(ctx, &r.store.Queries, room.RoomVersion, snap, userID)
	if err != nil {
		return err
	}
	if ev == nil {
		return mxerr.New(mxerr.NotFound, "You were never in room %s", roomID)
	}
	if current == "join" || current == "invite" || current == "knock" {
		return mxerr.New(mxerr.Unknown, "Leave the room before forgetting it (your membership is %q)", current)
	}
	return r.store.ForgetRoom(ctx, userID, roomID)
}

// RefreshMemberProfile re-sends the user's member event, with their new
// display name and avatar, in every room they are joined to.
// Spec: "Events on Change of Profile Information".
func (r *Roomserver) RefreshMemberProfile(ctx context.Context, userID string) error {
	rooms, err := r.store.RoomsWithMembership(ctx, userID, "join")
	if err != nil {
		return err
	}
	for _, roomID := range rooms {
		err := r.inTx(ctx, func(q *txn) error {
			w, err := r.openWriter(ctx, q, roomID)
			if err != nil {
				return err
			}
			if m, err := w.membership(ctx, userID); err != nil || m != "join" {
				return err
			}
			_, err = w.append(ctx, r.memberProto(userID, userID, r.memberContentMap(ctx, userID, "join", "")))
			return err
		})
		if err != nil {
			r.log(ctx).Warn().Err(err).Str("room_id", roomID).Msg("updating the member event after a profile change")
		}
	}
	return nil
}

func (r *Roomserver) memberContentMap(ctx context.Context, userID, membership, reason string) map[string]any {
	c := map[string]any{}
	_ = json.Unmarshal(r.memberContent(ctx, userID, membership, reason, false), &c)
	return c
}

func (r *Roomserver) memberProto(sender, target string, c map[string]any) proto {
	t := target
	return proto{Sender: sender, Type: "m.room.member", StateKey: &t, Content: content(c)}
}

// explainMembershipRefusal gives the power level needed when that is why a
// membership change was refused.
func (r *Roomserver) explainMembershipRefusal(ctx context.Context, w *writer, req MembershipRequest, action string, cause error) error {
	e, ok := mxerr.As(cause)
	if !ok || e.Code != mxerr.Forbidden {
		return cause
	}
	if action == "join" || action == "knock" || action == "leave" {
		return cause
	}
	pl, err := w.powerLevels(ctx)
	if err != nil {
		return cause
	}
	level, err := w.userLevel(ctx, req.Sender)
	if err != nil {
		return cause
	}
	needed := map[string]int64{"invite": pl.Invite, "kick": pl.Kick, "ban": pl.Ban, "unban": pl.Ban}[action]
	if level < needed {
		return mxerr.New(mxerr.Forbidden, "To %s you need power level %d; you have %d", action, needed, level)
	}
	return cause
}
