package e2ee

import (
	"context"
	"encoding/json"

	"chappe/sqlstore"
	"chappe/streams"
)

// This file tells other servers about local users' device-list changes.
// Spec: server-server-api.md, "Device Management" (m.device_list_update)
// and "Cross-signing keys" (m.signing_key_update).
//
// The stream_id of an update is the stream position of the change (the
// position e2ee_device_list_changes records for the user), and its prev_id
// the user's previous position there: both only grow. A change that sends
// no m.device_list_update (a new cross-signing key) still moves the
// position, so the next update's prev_id is one the receivers never saw:
// they resync the user with GET /user/devices, whose stream_id is that same
// position. Several devices changed at once share the change's stream_id
// (receivers apply an update whose stream_id is the one they hold).

// announcement is what changed in a local user's device list.
type announcement struct {
	devices      []string // devices whose keys changed (sent with their current keys)
	deleted      []string // devices deleted
	crossSigning bool     // the master or self-signing key changed, or got a signature
}

// markAndAnnounce records a change of userID's device list at pos (as
// markChanged) and queues, in the same transaction, the EDUs that tell the
// servers sharing a room with the user.
func (s *Service) markAndAnnounce(ctx context.Context, q *sqlstore.Queries, pos int64, userID string, a announcement) (streams.Change, error) {
	prev, err := q.LastDeviceListChange(ctx, userID)
	if err != nil {
		return streams.Change{}, err
	}
	ch, err := markChanged(ctx, q, pos, userID)
	if err != nil || s.fed == nil || (len(a.devices) == 0 && len(a.deleted) == 0 && !a.crossSigning) {
		return ch, err
	}
	servers, err := q.ServersSharingRoomWith(ctx, userID)
	if err != nil || len(servers) == 0 {
		return ch, err
	}
	edus, err := s.announcementEDUs(ctx, q, pos, prev, userID, a)
	if err != nil {
		return ch, err
	}
	for _, e := range edus {
		if err := s.fed.QueueEDU(ctx, q, servers, e.typ, e.content); err != nil {
			return ch, err
		}
	}
	return ch, nil
}

type queuedEDU struct {
	typ     string
	content any
}

// announcementEDUs builds the EDUs of a change at pos following prev.
func (s *Service) announcementEDUs(ctx context.Context, q *sqlstore.Queries, pos, prev int64, userID string, a announcement) ([]queuedEDU, error) {
	var prevID []int64
	if prev > 0 {
		prevID = []int64{prev}
	}
	var out []queuedEDU
	if len(a.devices) > 0 || a.crossSigning {
		devices, master, selfSigning, err := s.publicKeys(ctx, q, userID)
		if err != nil {
			return nil, err
		}
		for _, id := range a.devices {
			d, ok := devices[id]
			if !ok {
				continue // deleted meanwhile: its deletion is announced on its own
			}
			out = append(out, queuedEDU{EDUDeviceListUpdate, DeviceListUpdate{
				UserID: userID, DeviceID: id, DisplayName: d.DisplayName, StreamID: pos, PrevID: prevID, Keys: d.Keys}})
		}
		if a.crossSigning && master != nil {
			out = append(out, queuedEDU{EDUSigningKeyUpdate, SigningKeyUpdate{UserID: userID, MasterKey: master, SelfSigningKey: selfSigning}})
		}
	}
	for _, id := range a.deleted {
		out = append(out, queuedEDU{EDUDeviceListUpdate, DeviceListUpdate{
			UserID: userID, DeviceID: id, StreamID: pos, PrevID: prevID, Deleted: true}})
	}
	return out, nil
}

// publicKeys is what other servers may see of a local user's keys: the
// device keys with the user's own signatures, by device ID, and the master
// and self-signing keys (nil when none). The user-signing key and other
// users' signatures stay here.
func (s *Service) publicKeys(ctx context.Context, q *sqlstore.Queries, userID string) (map[string]UserDevice, json.RawMessage, json.RawMessage, error) {
	users := []string{userID}
	keys, err := q.DeviceKeysOf(ctx, users)
	if err != nil {
		return nil, nil, nil, err
	}
	cross, err := q.CrossSigningKeysOf(ctx, users)
	if err != nil {
		return nil, nil, nil, err
	}
	sigs, err := q.KeySignaturesOf(ctx, users, userID)
	if err != nil {
		return nil, nil, nil, err
	}
	byKey := map[string][]sqlstore.KeySignature{}
	for _, sg := range sigs {
		if sg.SignerUserID == userID {
			byKey[sg.TargetKeyID] = append(byKey[sg.TargetKeyID], sg)
		}
	}
	devices := make(map[string]UserDevice, len(keys))
	for _, d := range keys {
		devices[d.DeviceID] = UserDevice{DeviceID: d.DeviceID, DisplayName: d.DisplayName,
			Keys: mergeSignatures([]byte(d.KeyJSON), byKey[d.DeviceID])}
	}
	var master, selfSigning json.RawMessage
	for _, k := range cross {
		obj := mergeSignatures([]byte(k.KeyJSON), byKey[k.PublicKey])
		switch k.KeyType {
		case "master":
			master = obj
		case "self_signing":
			selfSigning = obj
		}
	}
	return devices, master, selfSigning, nil
}
