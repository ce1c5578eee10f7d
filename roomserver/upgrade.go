package roomserver

import (
	"context"
	"encoding/json"

	"chappe/mxerr"
)

// upgradeCopiedState is the state carried to the replacement room.
// Spec: "Room Upgrades", server behaviour step 2.
var upgradeCopiedState = []string{
	"m.room.server_acl", "m.room.encryption", "m.room.name", "m.room.avatar", "m.room.topic",
	"m.room.guest_access", "m.room.history_visibility", "m.room.join_rules",
}

// UpgradeRoom replaces a room by a new one of newVersion, in one transaction:
// the new room (predecessor set, state and power levels copied, aliases
// moved), the tombstone in the old room, and the old room's power levels
// raised so only moderators can still speak there.
// Spec: POST /rooms/{roomId}/upgrade, "Room Upgrades".
func (r *Roomserver) UpgradeRoom(ctx context.Context, userID, roomID, newVersion string) (string, error) {
	ver, err := roomVersion(newVersion)
	if err != nil {
		return "", err
	}
	var newRoomID string
	err = r.inTx(ctx, func(q *txn) error {
		old, err := r.openWriter(ctx, q, roomID)
		if err != nil {
			return err
		}
		if m, err := old.membership(ctx, userID); err != nil {
			return err
		} else if m != "join" {
			return mxerr.New(mxerr.Forbidden, "You are not joined to room %s", roomID)
		}
		level, err := old.userLevel(ctx, userID)
		if err != nil {
			return err
		}
		pl, err := old.powerLevels(ctx)
		if err != nil {
			return err
		}
		if needed := pl.EventLevel("m.room.tombstone", true); level < needed {
			return mxerr.New(mxerr.Forbidden, "Upgrading the room needs power level %d; you have %d", needed, level)
		}
		oldCreate, err := r.stateEvent(ctx, q.Queries, old.room.RoomVersion, old.state, stateKey{"m.room.create", ""})
		if err != nil {
			return err
		}
		createContent := map[string]any{}
		_ = json.Unmarshal(oldCreate.Content(), &createContent)
		for _, k := range []string{"creator", "room_version", "predecessor", "additional_creators"} {
			delete(createContent, k)
		}
		if versionNumber(newVersion) < 11 {
			createContent["creator"] = userID
		}
		createContent["room_version"] = newVersion
		createContent["predecessor"] = map[string]string{"room_id": roomID, "event_id": old.room.ForwardExtremities[0]}
		nw, err := r.startRoom(ctx, q, ver, userID, content(createContent))
		if err != nil {
			return err
		}
		newRoomID = nw.room.RoomID
		empty := ""
		if _, err := nw.append(ctx, r.memberProto(userID, userID, r.memberContentMap(ctx, userID, "join", ""))); err != nil {
			return err
		}
		// Power levels: the old ones, with the upgrader able to set up the
		// new room (v12 creators have unlimited power and are not listed).
		oldPL, err := r.stateEvent(ctx, q.Queries, old.room.RoomVersion, old.state, stateKey{"m.room.power_levels", ""})
		if err != nil {
			return err
		}
		plContent := map[string]any{}
		if oldPL != nil {
			_ = json.Unmarshal(oldPL.Content(), &plContent)
		}
		users, _ := plContent["users"].(map[string]any)
		if users == nil {
			users = map[string]any{}
		}
		if privilegedCreators(newVersion) {
			delete(users, userID)
		} else {
			users[userID] = float64(100)
		}
		plContent["users"] = users
		if _, err := nw.append(ctx, proto{Sender: userID, Type: "m.room.power_levels", StateKey: &empty, Content: content(plContent)}); err != nil {
			return err
		}
		for _, typ := range upgradeCopiedState {
			ev, err := r.stateEvent(ctx, q.Queries, old.room.RoomVersion, old.state, stateKey{typ, ""})
			if err != nil {
				return err
			}
			if ev == nil {
				continue
			}
			if _, err := nw.append(ctx, proto{Sender: userID, Type: typ, StateKey: &empty, Content: ev.Content()}); err != nil {
				return err
			}
		}
		// Move the local aliases and the canonical alias.
		aliases, err := q.AliasesOfRoom(ctx, roomID)
		if err != nil {
			return err
		}
		for _, a := range aliases {
			if err := q.DeleteAlias(ctx, a); err != nil {
				return err
			}
			if err := q.InsertAlias(ctx, a, newRoomID, userID, r.now().UnixMilli()); err != nil {
				return err
			}
		}
		if canon, err := r.stateEvent(ctx, q.Queries, old.room.RoomVersion, old.state, stateKey{"m.room.canonical_alias", ""}); err != nil {
			return err
		} else if canon != nil {
			if _, err := nw.append(ctx, proto{Sender: userID, Type: "m.room.canonical_alias", StateKey: &empty, Content: canon.Content()}); err != nil {
				return err
			}
			if _, err := old.append(ctx, proto{Sender: userID, Type: "m.room.canonical_alias", StateKey: &empty, Content: []byte("{}")}); err != nil {
				return err
			}
		}
		if old.room.Published {
			if err := q.SetRoomPublished(ctx, roomID, false); err != nil {
				return err
			}
			if err := q.SetRoomPublished(ctx, newRoomID, true); err != nil {
				return err
			}
		}
		// The tombstone, then restrict the old room.
		if _, err := old.append(ctx, proto{Sender: userID, Type: "m.room.tombstone", StateKey: &empty,
			Content: content(map[string]string{"body": "This room has been replaced", "replacement_room": newRoomID})}); err != nil {
			return err
		}
		restricted := map[string]any{}
		if oldPL != nil {
			_ = json.Unmarshal(oldPL.Content(), &restricted)
		}
		bump := func(key string) {
			v, _ := restricted[key].(float64)
			if v < 50 {
				restricted[key] = 50
			}
		}
		bump("events_default")
		bump("invite")
		if _, err := old.append(ctx, proto{Sender: userID, Type: "m.room.power_levels", StateKey: &empty, Content: content(restricted)}); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return newRoomID, nil
}
