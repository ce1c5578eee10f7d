package sqlstore

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
)

// This file holds the queries of end-to-end encryption across servers:
// the cache of remote users' device lists, the message IDs of received
// to-device EDUs, and who shares rooms with whom across servers
// (migration 013).

// RemoteDevice is a device of a remote user in the cache.
type RemoteDevice struct {
	UserID      string
	DeviceID    string
	KeyJSON     *string // nil: the device has no keys
	DisplayName *string
}

// RemoteDeviceList is a remote user's cached device list.
type RemoteDeviceList struct {
	UserID   string
	StreamID int64
	Devices  []RemoteDevice
	// CrossSigning maps "master" and "self_signing" to the key objects.
	CrossSigning map[string]string
}

const lockRemoteDeviceListSQL = `SELECT stream_id FROM e2ee_remote_device_lists WHERE user_id = $1 FOR UPDATE`

// LockRemoteDeviceList returns the stream_id of the user's cached list,
// locked until the end of the transaction; ErrNotFound if none is cached.
func (q *Queries) LockRemoteDeviceList(ctx context.Context, userID string) (int64, error) {
	var id int64
	err := q.q.QueryRow(ctx, lockRemoteDeviceListSQL, userID).Scan(&id)
	return id, notFound(err)
}

const deleteRemoteDeviceListSQL = `DELETE FROM e2ee_remote_device_lists WHERE user_id = $1`

// DeleteRemoteDeviceList drops the user's cached list (devices and keys go
// with it by cascade).
func (q *Queries) DeleteRemoteDeviceList(ctx context.Context, userID string) error {
	_, err := q.q.Exec(ctx, deleteRemoteDeviceListSQL, userID)
	return err
}

const deleteRemoteDeviceListsSQL = `DELETE FROM e2ee_remote_device_lists WHERE user_id = ANY($1)`

// DeleteRemoteDeviceLists drops the cached lists of the users (those of a
// server no longer on the allowlist).
func (q *Queries) DeleteRemoteDeviceLists(ctx context.Context, userIDs []string) error {
	_, err := q.q.Exec(ctx, deleteRemoteDeviceListsSQL, userIDs)
	return err
}

const insertRemoteDeviceListSQL = `
INSERT INTO e2ee_remote_device_lists (user_id, stream_id, updated_ts) VALUES ($1, $2, $3)`

const insertRemoteDevicesSQL = `
INSERT INTO e2ee_remote_devices (user_id, device_id, key_json, display_name)
SELECT $1, d, k, n FROM unnest($2::text[], $3::text[], $4::text[]) AS x(d, k, n)
ON CONFLICT DO NOTHING`

// ReplaceRemoteDeviceList stores the whole list of a resync in place of
// the cached one, unless the cached one is newer (its stream_id greater:
// an m.device_list_update applied while the list was being fetched), and
// says whether it stored it. The cached row stays locked until the end of
// the transaction q is in.
func (q *Queries) ReplaceRemoteDeviceList(ctx context.Context, l RemoteDeviceList, ts int64) (bool, error) {
	held, err := q.LockRemoteDeviceList(ctx, l.UserID)
	switch {
	case err == nil && held > l.StreamID:
		return false, nil
	case err != nil && !errors.Is(err, ErrNotFound):
		return false, err
	}
	if _, err := q.q.Exec(ctx, deleteRemoteDeviceListSQL, l.UserID); err != nil {
		return false, err
	}
	if _, err := q.q.Exec(ctx, insertRemoteDeviceListSQL, l.UserID, l.StreamID, ts); err != nil {
		return false, err
	}
	ids, keys, names := make([]string, len(l.Devices)), make([]*string, len(l.Devices)), make([]*string, len(l.Devices))
	for i, d := range l.Devices {
		ids[i], keys[i], names[i] = d.DeviceID, d.KeyJSON, d.DisplayName
	}
	if _, err := q.q.Exec(ctx, insertRemoteDevicesSQL, l.UserID, ids, keys, names); err != nil {
		return false, err
	}
	for typ, key := range l.CrossSigning {
		if err := q.PutRemoteCrossSigningKey(ctx, l.UserID, typ, key); err != nil {
			return false, err
		}
	}
	return true, nil
}

const advanceRemoteDeviceListSQL = `
UPDATE e2ee_remote_device_lists SET stream_id = $2, updated_ts = $3 WHERE user_id = $1`

const upsertRemoteDeviceSQL = `
INSERT INTO e2ee_remote_devices (user_id, device_id, key_json, display_name) VALUES ($1, $2, $3, $4)
ON CONFLICT (user_id, device_id) DO UPDATE
SET key_json = COALESCE(EXCLUDED.key_json, e2ee_remote_devices.key_json), display_name = EXCLUDED.display_name`

const deleteRemoteDeviceSQL = `DELETE FROM e2ee_remote_devices WHERE user_id = $1 AND device_id = $2`

// ApplyRemoteDeviceUpdate moves the user's cached list to streamID with one
// device changed (keys nil: kept as they were) or deleted.
func (q *Queries) ApplyRemoteDeviceUpdate(ctx context.Context, d RemoteDevice, deleted bool, streamID, ts int64) error {
	if _, err := q.q.Exec(ctx, advanceRemoteDeviceListSQL, d.UserID, streamID, ts); err != nil {
		return err
	}
	var err error
	if deleted {
		_, err = q.q.Exec(ctx, deleteRemoteDeviceSQL, d.UserID, d.DeviceID)
	} else {
		_, err = q.q.Exec(ctx, upsertRemoteDeviceSQL, d.UserID, d.DeviceID, d.KeyJSON, d.DisplayName)
	}
	return err
}

const upsertRemoteCrossSigningKeySQL = `
INSERT INTO e2ee_remote_cross_signing_keys (user_id, key_type, key_json)
SELECT user_id, $2, $3 FROM e2ee_remote_device_lists WHERE user_id = $1
ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = EXCLUDED.key_json`

// PutRemoteCrossSigningKey stores a cross-signing key of a cached remote
// user (nothing if the user's list is not cached).
func (q *Queries) PutRemoteCrossSigningKey(ctx context.Context, userID, keyType, keyJSON string) error {
	_, err := q.q.Exec(ctx, upsertRemoteCrossSigningKeySQL, userID, keyType, keyJSON)
	return err
}

const selectRemoteListsSQL = `SELECT user_id, stream_id FROM e2ee_remote_device_lists WHERE user_id = ANY($1)`

const selectRemoteDevicesSQL = `
SELECT user_id, device_id, key_json, display_name FROM e2ee_remote_devices WHERE user_id = ANY($1)
ORDER BY user_id, device_id`

const selectRemoteCrossSigningSQL = `
SELECT user_id, key_type, key_json FROM e2ee_remote_cross_signing_keys WHERE user_id = ANY($1)`

// RemoteDeviceLists returns the cached lists of those of the users that
// have one, by user ID.
func (q *Queries) RemoteDeviceLists(ctx context.Context, userIDs []string) (map[string]*RemoteDeviceList, error) {
	out := map[string]*RemoteDeviceList{}
	rows, err := q.q.Query(ctx, selectRemoteListsSQL, userIDs)
	if err != nil {
		return nil, err
	}
	lists, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (RemoteDeviceList, error) {
		l := RemoteDeviceList{CrossSigning: map[string]string{}}
		err := r.Scan(&l.UserID, &l.StreamID)
		return l, err
	})
	if err != nil || len(lists) == 0 {
		return out, err
	}
	for i := range lists {
		out[lists[i].UserID] = &lists[i]
	}
	rows, err = q.q.Query(ctx, selectRemoteDevicesSQL, userIDs)
	if err != nil {
		return nil, err
	}
	devices, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (RemoteDevice, error) {
		var d RemoteDevice
		err := r.Scan(&d.UserID, &d.DeviceID, &d.KeyJSON, &d.DisplayName)
		return d, err
	})
	if err != nil {
		return nil, err
	}
	for _, d := range devices {
		out[d.UserID].Devices = append(out[d.UserID].Devices, d)
	}
	rows, err = q.q.Query(ctx, selectRemoteCrossSigningSQL, userIDs)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var user, typ, key string
		if err := rows.Scan(&user, &typ, &key); err != nil {
			return nil, err
		}
		out[user].CrossSigning[typ] = key
	}
	return out, rows.Err()
}

const insertToDeviceReceivedSQL = `
INSERT INTO e2ee_to_device_received (origin, sender, message_id, received_ts) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING`

const purgeToDeviceReceivedSQL = `DELETE FROM e2ee_to_device_received WHERE received_ts < $1`

// ClaimToDeviceMessageID records a received to-device message ID of the
// sender; ErrConflict if it was already received. IDs received before
// purgeBefore (ms) are forgotten.
func (q *Queries) ClaimToDeviceMessageID(ctx context.Context, origin, sender, messageID string, now, purgeBefore int64) error {
	if _, err := q.q.Exec(ctx, purgeToDeviceReceivedSQL, purgeBefore); err != nil {
		return err
	}
	tag, err := q.q.Exec(ctx, insertToDeviceReceivedSQL, origin, sender, messageID, now)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrConflict
	}
	return err
}

// serversSharingSQL: the servers of the members joined to the rooms $1 is
// joined to (the server name is everything after the first colon).
const serversSharingSQL = `
SELECT DISTINCT substr(theirs.state_key, strpos(theirs.state_key, ':') + 1)
FROM current_state mine JOIN current_state theirs ON theirs.room_id = mine.room_id
WHERE mine.type = 'm.room.member' AND mine.state_key = $1 AND mine.membership = 'join'
  AND theirs.type = 'm.room.member' AND theirs.membership = 'join' AND strpos(theirs.state_key, ':') > 0`

// ServersSharingRoomWith lists the servers of the users who share a joined
// room with userID (its own server among them), unsorted.
func (q *Queries) ServersSharingRoomWith(ctx context.Context, userID string) ([]string, error) {
	return q.strings(ctx, serversSharingSQL, userID)
}

// sharesWithServerSQL: does $1 share a joined room with a user of server $2?
const sharesWithServerSQL = `
SELECT EXISTS (
    SELECT 1 FROM current_state mine JOIN current_state theirs ON theirs.room_id = mine.room_id
    WHERE mine.type = 'm.room.member' AND mine.state_key = $1 AND mine.membership = 'join'
      AND theirs.type = 'm.room.member' AND theirs.membership = 'join'
      AND substr(theirs.state_key, strpos(theirs.state_key, ':') + 1) = $2)`

// SharesRoomWithServer tells whether userID shares a joined room with a
// user of server.
func (q *Queries) SharesRoomWithServer(ctx context.Context, userID, server string) (bool, error) {
	var ok bool
	err := q.q.QueryRow(ctx, sharesWithServerSQL, userID, server).Scan(&ok)
	return ok, err
}

// purgeUnfollowedSQL: the cached lists of remote users who share no joined
// room with a user of server $1.
const purgeUnfollowedSQL = `
DELETE FROM e2ee_remote_device_lists l WHERE NOT EXISTS (
    SELECT 1 FROM current_state theirs JOIN current_state mine ON mine.room_id = theirs.room_id
    WHERE theirs.type = 'm.room.member' AND theirs.state_key = l.user_id AND theirs.membership = 'join'
      AND mine.type = 'm.room.member' AND mine.membership = 'join'
      AND substr(mine.state_key, strpos(mine.state_key, ':') + 1) = $1)`

// PurgeUnfollowedRemoteDeviceLists forgets the cached device lists (devices
// and cross-signing keys with them) of the remote users no user of server
// shares a joined room with any more, and says how many.
func (q *Queries) PurgeUnfollowedRemoteDeviceLists(ctx context.Context, server string) (int64, error) {
	tag, err := q.q.Exec(ctx, purgeUnfollowedSQL, server)
	return tag.RowsAffected(), err
}

// lockDeviceListStreamSQL inserts the user's row if missing and locks it
// either way (ON CONFLICT DO UPDATE locks the existing row): the very first
// change of a user is serialised like the others. Only for a local account:
// other servers cannot make rows for user IDs nobody has.
const lockDeviceListStreamSQL = `
INSERT INTO e2ee_device_list_streams (user_id, stream_id) SELECT user_id, 0 FROM users WHERE user_id = $1
ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id
RETURNING stream_id, told_devices`

// DeviceListStream is a local user's device-list stream as other servers
// see it (migration 015).
type DeviceListStream struct {
	// StreamID is the stream_id of the user's latest m.device_list_update
	// (0: none yet).
	StreamID int64
	// Told are the device IDs other servers may hold: announced or served
	// by GET /user/devices, and whose deletion was not announced yet.
	Told []string
}

// LockDeviceListStream returns the user's device-list stream, locked until
// the end of the transaction q is in (call it in one); ErrNotFound if the
// user has no account here.
func (q *Queries) LockDeviceListStream(ctx context.Context, userID string) (DeviceListStream, error) {
	var st DeviceListStream
	err := q.q.QueryRow(ctx, lockDeviceListStreamSQL, userID).Scan(&st.StreamID, &st.Told)
	return st, notFound(err)
}

const setDeviceListStreamSQL = `
UPDATE e2ee_device_list_streams SET stream_id = $2, told_devices = $3 WHERE user_id = $1`

// SetDeviceListStream stores the user's device-list stream (after
// LockDeviceListStream, in the same transaction).
func (q *Queries) SetDeviceListStream(ctx context.Context, userID string, st DeviceListStream) error {
	told := st.Told
	if told == nil {
		told = []string{}
	}
	_, err := q.q.Exec(ctx, setDeviceListStreamSQL, userID, st.StreamID, told)
	return err
}
