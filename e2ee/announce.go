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
// Each local user has a device-list stream of their own (migration 015,
// e2ee_device_list_streams): a counter that moves by one for each
// m.device_list_update sent, and only then. The spec's stream_id is "unique
// for a given user_id" and prev_id names the updates it follows, so the
// updates of one change are numbered one after the other, each with the
// previous one's stream_id as its prev_id: a server holding stream_id N
// applies N+1, and anything else tells it that it missed one (it then
// resyncs with GET /user/devices, whose stream_id is the counter). The
// counter is taken under the lock of the user's row, so the updates are
// numbered in the order their changes commit. A change that sends no
// m.device_list_update (a new cross-signing key: m.signing_key_update)
// leaves it alone.
//
// The stream positions of the Hub (e2ee_device_list_changes) still say
// when local clients must query keys again (/sync's device_lists.changed);
// they are not sent to other servers.
//
// The row also holds the devices other servers may know of ("told"). Every
// announcement compares them with the devices the user has: those gone are
// announced as deleted, whoever deleted them. A deletion path that forgets
// DevicesDeleted is caught up by the user's next change.

// announcement is what changed in a local user's device list.
type announcement struct {
	devices      []string // devices whose keys changed (sent with their current keys)
	crossSigning bool     // the master or self-signing key changed, or got a signature
}

// markAndAnnounce records a change of userID's device list at pos (as
// markChanged) and queues, in the same transaction, the EDUs that tell the
// servers sharing a room with the user: the devices of a, the devices
// deleted since the last announcement, and the cross-signing keys if a
// says so.
func (s *Service) markAndAnnounce(ctx context.Context, q *sqlstore.Queries, pos int64, userID string, a announcement) (streams.Change, error) {
	st, err := q.LockDeviceListStream(ctx, userID)
	if err != nil {
		return streams.Change{}, err
	}
	ch, err := markChanged(ctx, q, pos, userID)
	if err != nil {
		return ch, err
	}
	current, err := q.ListDevices(ctx, userID)
	if err != nil {
		return ch, err
	}
	var keys map[string]UserDevice
	var master, selfSigning json.RawMessage
	if len(a.devices) > 0 || a.crossSigning {
		if keys, master, selfSigning, err = s.publicKeys(ctx, q, userID); err != nil {
			return ch, err
		}
	}
	edus, next := s.announcementEDUs(userID, st, current, keys, a)
	if a.crossSigning && master != nil {
		edus = append(edus, queuedEDU{EDUSigningKeyUpdate, SigningKeyUpdate{UserID: userID, MasterKey: master, SelfSigningKey: selfSigning}})
	}
	if err := q.SetDeviceListStream(ctx, userID, next); err != nil {
		return ch, err
	}
	if s.fed == nil || len(edus) == 0 {
		return ch, nil
	}
	servers, err := q.ServersSharingRoomWith(ctx, userID)
	if err != nil || len(servers) == 0 {
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

// announcementEDUs builds the m.device_list_update EDUs of a change of
// userID's devices, given the user's stream st before it and the devices
// the user has now (current; keys: their public keys, for the devices of
// a): one per device of a still there, then one per device of st.Told
// gone. Each has its own stream_id, following st.StreamID, and names the
// previous one in prev_id. It returns them with the stream after them.
func (s *Service) announcementEDUs(userID string, st sqlstore.DeviceListStream, current []sqlstore.Device, keys map[string]UserDevice, a announcement) ([]queuedEDU, sqlstore.DeviceListStream) {
	next := sqlstore.DeviceListStream{StreamID: st.StreamID}
	have := map[string]bool{}
	for _, d := range current {
		have[d.DeviceID] = true
		next.Told = append(next.Told, d.DeviceID)
	}
	var out []queuedEDU
	add := func(u DeviceListUpdate) {
		if next.StreamID > 0 {
			u.PrevID = []int64{next.StreamID}
		}
		next.StreamID++
		u.UserID, u.StreamID = userID, next.StreamID
		out = append(out, queuedEDU{EDUDeviceListUpdate, u})
	}
	for _, id := range a.devices {
		d, ok := keys[id]
		if !ok || !have[id] {
			continue // deleted meanwhile: announced as such below or by its deletion
		}
		u := DeviceListUpdate{DeviceID: id, Keys: d.Keys}
		if s.cfg.ShareDeviceNames {
			u.DisplayName = d.DisplayName
		}
		add(u)
	}
	for _, id := range st.Told {
		if !have[id] {
			add(DeviceListUpdate{DeviceID: id, Deleted: true})
		}
	}
	return out, next
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
