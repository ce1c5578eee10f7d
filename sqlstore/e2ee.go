package sqlstore

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Queries of the end-to-end encryption relay (migration 008): device keys,
// one-time and fallback keys, cross-signing keys and signatures, device-list
// changes, to-device messages and key backups.

// ---- device keys ----------------------------------------------------------

// DeviceKeys is a row of e2ee_device_keys joined with its device.
type DeviceKeys struct {
	UserID      string
	DeviceID    string
	KeyJSON     string
	Ed25519     string
	DisplayName *string
}

const selectDeviceKeysSQL = `
SELECT k.user_id, k.device_id, k.key_json, k.ed25519, d.display_name
FROM e2ee_device_keys k JOIN devices d USING (user_id, device_id)
WHERE k.user_id = ANY($1) ORDER BY k.user_id, k.device_id`

// DeviceKeysOf returns the device keys of every device of the users.
func (q *Queries) DeviceKeysOf(ctx context.Context, userIDs []string) ([]DeviceKeys, error) {
	rows, err := q.q.Query(ctx, selectDeviceKeysSQL, userIDs)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (DeviceKeys, error) {
		var k DeviceKeys
		err := r.Scan(&k.UserID, &k.DeviceID, &k.KeyJSON, &k.Ed25519, &k.DisplayName)
		return k, err
	})
}

const selectOneDeviceKeysSQL = `
SELECT key_json, ed25519 FROM e2ee_device_keys WHERE user_id = $1 AND device_id = $2`

// GetDeviceKeys returns one device's keys; ErrNotFound if it uploaded none.
func (q *Queries) GetDeviceKeys(ctx context.Context, userID, deviceID string) (DeviceKeys, error) {
	k := DeviceKeys{UserID: userID, DeviceID: deviceID}
	err := q.q.QueryRow(ctx, selectOneDeviceKeysSQL, userID, deviceID).Scan(&k.KeyJSON, &k.Ed25519)
	return k, notFound(err)
}

// upsertDeviceKeysSQL stores the keys only if the device exists, so a device
// deleted meanwhile gets no keys back.
const upsertDeviceKeysSQL = `
INSERT INTO e2ee_device_keys (user_id, device_id, key_json, ed25519, updated_ts)
SELECT user_id, device_id, $3, $4, $5 FROM devices WHERE user_id = $1 AND device_id = $2
ON CONFLICT (user_id, device_id) DO UPDATE
SET key_json = EXCLUDED.key_json, ed25519 = EXCLUDED.ed25519, updated_ts = EXCLUDED.updated_ts`

// PutDeviceKeys stores a device's keys; ErrNotFound if the device does not exist.
func (q *Queries) PutDeviceKeys(ctx context.Context, userID, deviceID, keyJSON, ed25519 string, ts int64) error {
	tag, err := q.q.Exec(ctx, upsertDeviceKeysSQL, userID, deviceID, keyJSON, ed25519, ts)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

// ---- one-time and fallback keys -------------------------------------------

// OneTimeKey is a one-time or fallback key of a device.
type OneTimeKey struct {
	Algorithm string
	KeyID     string
	KeyJSON   string
}

const selectOneTimeKeysByIDSQL = `
SELECT algorithm, key_id, key_json FROM e2ee_one_time_keys
WHERE user_id = $1 AND device_id = $2 AND algorithm || ':' || key_id = ANY($3)`

// OneTimeKeysByID returns the stored one-time keys of the device among the
// "<algorithm>:<key_id>" names.
func (q *Queries) OneTimeKeysByID(ctx context.Context, userID, deviceID string, names []string) ([]OneTimeKey, error) {
	rows, err := q.q.Query(ctx, selectOneTimeKeysByIDSQL, userID, deviceID, names)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanOneTimeKey)
}

func scanOneTimeKey(r pgx.CollectableRow) (OneTimeKey, error) {
	var k OneTimeKey
	err := r.Scan(&k.Algorithm, &k.KeyID, &k.KeyJSON)
	return k, err
}

const insertOneTimeKeysSQL = `
INSERT INTO e2ee_one_time_keys (user_id, device_id, algorithm, key_id, key_json)
SELECT $1, $2, k.algorithm, k.key_id, k.key_json
FROM unnest($3::text[], $4::text[], $5::text[]) AS k(algorithm, key_id, key_json)
WHERE EXISTS (SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2)
ON CONFLICT (user_id, device_id, algorithm, key_id) DO NOTHING`

// InsertOneTimeKeys stores one-time keys of the device; keys whose ID is
// already stored are left as they are.
func (q *Queries) InsertOneTimeKeys(ctx context.Context, userID, deviceID string, keys []OneTimeKey) error {
	if len(keys) == 0 {
		return nil
	}
	algs, ids, jsons := make([]string, len(keys)), make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		algs[i], ids[i], jsons[i] = k.Algorithm, k.KeyID, k.KeyJSON
	}
	_, err := q.q.Exec(ctx, insertOneTimeKeysSQL, userID, deviceID, algs, ids, jsons)
	return err
}

const countOneTimeKeysSQL = `
SELECT algorithm, count(*) FROM e2ee_one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm`

// OneTimeKeyCounts counts the device's unclaimed one-time keys by algorithm.
func (q *Queries) OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, error) {
	rows, err := q.q.Query(ctx, countOneTimeKeysSQL, userID, deviceID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, err
		}
		out[alg] = n
	}
	return out, rows.Err()
}

// claimOneTimeKeySQL removes and returns the device's oldest key of the
// algorithm. SKIP LOCKED lets concurrent claims take different keys instead
// of queueing on the same row; the DELETE makes each key go to one claimer.
const claimOneTimeKeySQL = `
DELETE FROM e2ee_one_time_keys WHERE id = (
    SELECT id FROM e2ee_one_time_keys
    WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
    ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
) RETURNING algorithm, key_id, key_json`

// ClaimOneTimeKey takes one one-time key of the device; ErrNotFound if none is left.
func (q *Queries) ClaimOneTimeKey(ctx context.Context, userID, deviceID, algorithm string) (OneTimeKey, error) {
	var k OneTimeKey
	err := q.q.QueryRow(ctx, claimOneTimeKeySQL, userID, deviceID, algorithm).Scan(&k.Algorithm, &k.KeyID, &k.KeyJSON)
	return k, notFound(err)
}

const claimFallbackKeySQL = `
UPDATE e2ee_fallback_keys SET used = TRUE
WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
RETURNING algorithm, key_id, key_json`

// ClaimFallbackKey returns the device's fallback key of the algorithm and
// marks it used; ErrNotFound if it has none.
func (q *Queries) ClaimFallbackKey(ctx context.Context, userID, deviceID, algorithm string) (OneTimeKey, error) {
	var k OneTimeKey
	err := q.q.QueryRow(ctx, claimFallbackKeySQL, userID, deviceID, algorithm).Scan(&k.Algorithm, &k.KeyID, &k.KeyJSON)
	return k, notFound(err)
}

// upsertFallbackKeySQL replaces the device's fallback key of the algorithm;
// uploading the same key again keeps its used flag.
const upsertFallbackKeySQL = `
INSERT INTO e2ee_fallback_keys (user_id, device_id, algorithm, key_id, key_json)
SELECT user_id, device_id, $3, $4, $5 FROM devices WHERE user_id = $1 AND device_id = $2
ON CONFLICT (user_id, device_id, algorithm) DO UPDATE
SET key_id = EXCLUDED.key_id, key_json = EXCLUDED.key_json, used = FALSE
WHERE e2ee_fallback_keys.key_id <> EXCLUDED.key_id OR e2ee_fallback_keys.key_json <> EXCLUDED.key_json`

// PutFallbackKey stores the device's fallback key for its algorithm.
func (q *Queries) PutFallbackKey(ctx context.Context, userID, deviceID string, k OneTimeKey) error {
	_, err := q.q.Exec(ctx, upsertFallbackKeySQL, userID, deviceID, k.Algorithm, k.KeyID, k.KeyJSON)
	return err
}

const selectUnusedFallbackSQL = `
SELECT algorithm FROM e2ee_fallback_keys WHERE user_id = $1 AND device_id = $2 AND NOT used ORDER BY algorithm`

// UnusedFallbackKeyTypes lists the algorithms of the device's fallback keys
// that no claim has handed out yet.
func (q *Queries) UnusedFallbackKeyTypes(ctx context.Context, userID, deviceID string) ([]string, error) {
	rows, err := q.q.Query(ctx, selectUnusedFallbackSQL, userID, deviceID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// ---- cross-signing keys and signatures ------------------------------------

// CrossSigningKey is a row of e2ee_cross_signing_keys.
type CrossSigningKey struct {
	UserID    string
	KeyType   string // master, self_signing or user_signing
	PublicKey string
	KeyJSON   string
}

const selectCrossSigningKeysSQL = `
SELECT user_id, key_type, public_key, key_json FROM e2ee_cross_signing_keys WHERE user_id = ANY($1)`

// CrossSigningKeysOf returns the cross-signing keys of the users.
func (q *Queries) CrossSigningKeysOf(ctx context.Context, userIDs []string) ([]CrossSigningKey, error) {
	rows, err := q.q.Query(ctx, selectCrossSigningKeysSQL, userIDs)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (CrossSigningKey, error) {
		var k CrossSigningKey
		err := r.Scan(&k.UserID, &k.KeyType, &k.PublicKey, &k.KeyJSON)
		return k, err
	})
}

const lockCrossSigningKeysSQL = `
SELECT user_id, key_type, public_key, key_json FROM e2ee_cross_signing_keys WHERE user_id = $1 FOR UPDATE`

// LockCrossSigningKeys returns the user's cross-signing keys, locked until
// the end of the transaction.
func (q *Queries) LockCrossSigningKeys(ctx context.Context, userID string) ([]CrossSigningKey, error) {
	rows, err := q.q.Query(ctx, lockCrossSigningKeysSQL, userID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (CrossSigningKey, error) {
		var k CrossSigningKey
		err := r.Scan(&k.UserID, &k.KeyType, &k.PublicKey, &k.KeyJSON)
		return k, err
	})
}

const upsertCrossSigningKeySQL = `
INSERT INTO e2ee_cross_signing_keys (user_id, key_type, public_key, key_json, updated_ts) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (user_id, key_type) DO UPDATE
SET public_key = EXCLUDED.public_key, key_json = EXCLUDED.key_json, updated_ts = EXCLUDED.updated_ts`

// PutCrossSigningKey stores (or replaces) one of the user's cross-signing keys.
func (q *Queries) PutCrossSigningKey(ctx context.Context, k CrossSigningKey, ts int64) error {
	_, err := q.q.Exec(ctx, upsertCrossSigningKeySQL, k.UserID, k.KeyType, k.PublicKey, k.KeyJSON, ts)
	return err
}

// KeySignature is a row of e2ee_key_signatures.
type KeySignature struct {
	TargetUserID string
	TargetKeyID  string
	SignerUserID string
	SignerKeyID  string
	Signature    string
}

const selectKeySignaturesSQL = `
SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature
FROM e2ee_key_signatures WHERE target_user_id = ANY($1) AND (signer_user_id = target_user_id OR signer_user_id = $2)`

// KeySignaturesOf returns the uploaded signatures of the users' keys that
// viewer may see: the users' own, and viewer's.
func (q *Queries) KeySignaturesOf(ctx context.Context, userIDs []string, viewer string) ([]KeySignature, error) {
	rows, err := q.q.Query(ctx, selectKeySignaturesSQL, userIDs, viewer)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (KeySignature, error) {
		var s KeySignature
		err := r.Scan(&s.TargetUserID, &s.TargetKeyID, &s.SignerUserID, &s.SignerKeyID, &s.Signature)
		return s, err
	})
}

const upsertKeySignatureSQL = `
INSERT INTO e2ee_key_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature, created_ts)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id) DO UPDATE
SET signature = EXCLUDED.signature, created_ts = EXCLUDED.created_ts`

// PutKeySignature stores a verified signature.
func (q *Queries) PutKeySignature(ctx context.Context, s KeySignature, ts int64) error {
	_, err := q.q.Exec(ctx, upsertKeySignatureSQL, s.TargetUserID, s.TargetKeyID, s.SignerUserID, s.SignerKeyID, s.Signature, ts)
	return err
}

const deleteKeySignaturesSQL = `DELETE FROM e2ee_key_signatures WHERE target_user_id = $1 AND target_key_id = $2`

// DeleteKeySignaturesOf forgets the uploaded signatures of one key (a device
// whose identity keys were replaced).
func (q *Queries) DeleteKeySignaturesOf(ctx context.Context, userID, keyID string) error {
	_, err := q.q.Exec(ctx, deleteKeySignaturesSQL, userID, keyID)
	return err
}

// ---- device lists -----------------------------------------------------------

const upsertDeviceListChangeSQL = `
INSERT INTO e2ee_device_list_changes (user_id, stream_pos) SELECT u, $2 FROM unnest($1::text[]) AS u
ON CONFLICT (user_id) DO UPDATE SET stream_pos = GREATEST(e2ee_device_list_changes.stream_pos, EXCLUDED.stream_pos)`

// MarkDeviceListChanged records that the users' device lists changed at pos.
func (q *Queries) MarkDeviceListChanged(ctx context.Context, userIDs []string, pos int64) error {
	_, err := q.q.Exec(ctx, upsertDeviceListChangeSQL, userIDs, pos)
	return err
}

// changedSharingSQL lists the users whose device list changed in ($2, $3]
// and who are $1 or share a joined room with $1.
const changedSharingSQL = `
SELECT c.user_id FROM e2ee_device_list_changes c
WHERE c.stream_pos > $2 AND c.stream_pos <= $3 AND (c.user_id = $1 OR EXISTS (
    SELECT 1 FROM current_state mine JOIN current_state theirs ON theirs.room_id = mine.room_id
    WHERE mine.type = 'm.room.member' AND mine.state_key = $1 AND mine.membership = 'join'
      AND theirs.type = 'm.room.member' AND theirs.state_key = c.user_id AND theirs.membership = 'join'))
ORDER BY c.user_id`

// DeviceListChangesSharing lists the users whose device list changed in
// (from, to] and who are viewer or share a joined room with viewer.
func (q *Queries) DeviceListChangesSharing(ctx context.Context, viewer string, from, to int64) ([]string, error) {
	rows, err := q.q.Query(ctx, changedSharingSQL, viewer, from, to)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// MemberEvent is a membership event: who, where, which membership.
type MemberEvent struct {
	RoomID     string
	UserID     string
	Membership string
}

// memberEventsAroundSQL lists the membership events in ($2, $3] of the rooms
// $1 is joined to now or had a membership event in the range.
const memberEventsAroundSQL = `
SELECT room_id, state_key, COALESCE(json::jsonb -> 'content' ->> 'membership', '') FROM events
WHERE type = 'm.room.member' AND stream_pos > $2 AND stream_pos <= $3 AND room_id IN (
    SELECT room_id FROM current_state WHERE type = 'm.room.member' AND state_key = $1 AND membership = 'join'
    UNION
    SELECT room_id FROM events WHERE type = 'm.room.member' AND state_key = $1 AND stream_pos > $2 AND stream_pos <= $3)
ORDER BY stream_pos`

// MemberEventsAround returns, oldest first, the membership events in the
// stream range (from, to] of every room where userID is joined now or whose
// own membership changed in the range.
func (q *Queries) MemberEventsAround(ctx context.Context, userID string, from, to int64) ([]MemberEvent, error) {
	rows, err := q.q.Query(ctx, memberEventsAroundSQL, userID, from, to)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (MemberEvent, error) {
		var m MemberEvent
		err := r.Scan(&m.RoomID, &m.UserID, &m.Membership)
		return m, err
	})
}

const joinedMembersOfSQL = `
SELECT DISTINCT state_key FROM current_state
WHERE room_id = ANY($1) AND type = 'm.room.member' AND membership = 'join' ORDER BY state_key`

// JoinedMembersOf lists the users joined to any of the rooms.
func (q *Queries) JoinedMembersOf(ctx context.Context, roomIDs []string) ([]string, error) {
	rows, err := q.q.Query(ctx, joinedMembersOfSQL, roomIDs)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

const sharingAmongSQL = `
SELECT DISTINCT theirs.state_key FROM current_state mine JOIN current_state theirs ON theirs.room_id = mine.room_id
WHERE mine.type = 'm.room.member' AND mine.state_key = $1 AND mine.membership = 'join'
  AND theirs.type = 'm.room.member' AND theirs.state_key = ANY($2) AND theirs.membership = 'join'`

// SharingAmong returns the candidates who share a joined room with userID.
func (q *Queries) SharingAmong(ctx context.Context, userID string, candidates []string) ([]string, error) {
	rows, err := q.q.Query(ctx, sharingAmongSQL, userID, candidates)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// ---- to-device ----------------------------------------------------------------

// ToDeviceMessage is a to-device message for a recipient device. DeviceID
// "*" on insert means every device of the user not named on its own.
type ToDeviceMessage struct {
	UserID    string
	DeviceID  string
	Content   string
	Sender    string
	Type      string
	StreamPos int64
}

const insertToDeviceTxnSQL = `
INSERT INTO e2ee_to_device_txns (user_id, device_id, event_type, txn_id, created_ts) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT DO NOTHING`

const purgeToDeviceTxnsSQL = `
DELETE FROM e2ee_to_device_txns WHERE user_id = $1 AND device_id = $2 AND created_ts < $3`

// ClaimToDeviceTxn records a transaction ID of the sending device; ErrConflict
// if it was already used. Transaction IDs older than purgeBefore (ms) are
// forgotten.
func (q *Queries) ClaimToDeviceTxn(ctx context.Context, userID, deviceID, evType, txnID string, now, purgeBefore int64) error {
	if _, err := q.q.Exec(ctx, purgeToDeviceTxnsSQL, userID, deviceID, purgeBefore); err != nil {
		return err
	}
	tag, err := q.q.Exec(ctx, insertToDeviceTxnSQL, userID, deviceID, evType, txnID, now)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrConflict
	}
	return err
}

// insertToDeviceSQL expands "*" to the devices of the user not named on
// their own, and drops recipients without such a device.
const insertToDeviceSQL = `
WITH m AS (SELECT * FROM unnest($4::text[], $5::text[], $6::text[]) AS m(user_id, device_id, content))
INSERT INTO e2ee_to_device (user_id, device_id, stream_pos, sender, type, content)
SELECT d.user_id, d.device_id, $1, $2, $3, m.content
FROM m JOIN devices d ON d.user_id = m.user_id AND (d.device_id = m.device_id OR (m.device_id = '*'
    AND NOT EXISTS (SELECT 1 FROM m m2 WHERE m2.user_id = m.user_id AND m2.device_id = d.device_id)))
RETURNING user_id, device_id`

// trimToDeviceSQL drops, for each device, the messages beyond the newest $3.
const trimToDeviceSQL = `
DELETE FROM e2ee_to_device WHERE id IN (
    SELECT x.id FROM unnest($1::text[], $2::text[]) AS r(user_id, device_id)
    CROSS JOIN LATERAL (
        SELECT id FROM e2ee_to_device t WHERE t.user_id = r.user_id AND t.device_id = r.device_id
        ORDER BY stream_pos DESC, id DESC OFFSET $3
    ) x)`

// InsertToDevice stores one message per recipient at stream position pos
// and keeps at most maxPending messages per device, dropping the oldest.
// It returns the devices that got a message and how many old ones were dropped.
func (q *Queries) InsertToDevice(ctx context.Context, pos int64, sender, evType string, msgs []ToDeviceMessage, maxPending int) (delivered []ToDeviceMessage, dropped int64, err error) {
	users, devices, contents := make([]string, len(msgs)), make([]string, len(msgs)), make([]string, len(msgs))
	for i, m := range msgs {
		users[i], devices[i], contents[i] = m.UserID, m.DeviceID, m.Content
	}
	rows, err := q.q.Query(ctx, insertToDeviceSQL, pos, sender, evType, users, devices, contents)
	if err != nil {
		return nil, 0, err
	}
	delivered, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (ToDeviceMessage, error) {
		var m ToDeviceMessage
		err := r.Scan(&m.UserID, &m.DeviceID)
		return m, err
	})
	if err != nil || len(delivered) == 0 {
		return delivered, 0, err
	}
	tu, td := make([]string, len(delivered)), make([]string, len(delivered))
	for i, m := range delivered {
		tu[i], td[i] = m.UserID, m.DeviceID
	}
	tag, err := q.q.Exec(ctx, trimToDeviceSQL, tu, td, maxPending)
	if err != nil {
		return nil, 0, err
	}
	return delivered, tag.RowsAffected(), nil
}

const deleteAckedToDeviceSQL = `
WITH gone AS (DELETE FROM e2ee_to_device WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3 RETURNING stream_pos)
SELECT COALESCE(max(stream_pos), 0) FROM gone`

const markToDeviceAckedSQL = `
INSERT INTO e2ee_to_device_acked (singleton, stream_pos) VALUES (TRUE, $1)
ON CONFLICT (singleton) DO UPDATE SET stream_pos = EXCLUDED.stream_pos
WHERE e2ee_to_device_acked.stream_pos < EXCLUDED.stream_pos`

// DeleteAckedToDevice deletes the device's messages at or before pos (the
// device has acknowledged them) and remembers the highest deleted position,
// so that the stream never restarts below it.
func (q *Queries) DeleteAckedToDevice(ctx context.Context, userID, deviceID string, pos int64) error {
	var highest int64
	if err := q.q.QueryRow(ctx, deleteAckedToDeviceSQL, userID, deviceID, pos).Scan(&highest); err != nil {
		return err
	}
	if highest == 0 {
		return nil
	}
	_, err := q.q.Exec(ctx, markToDeviceAckedSQL, highest)
	return err
}

const selectToDeviceSQL = `
SELECT sender, type, content, stream_pos FROM e2ee_to_device
WHERE user_id = $1 AND device_id = $2 AND stream_pos > $3 AND stream_pos <= $4
ORDER BY stream_pos, id`

// ToDeviceInRange returns the device's messages in (from, to], in order.
func (q *Queries) ToDeviceInRange(ctx context.Context, userID, deviceID string, from, to int64) ([]ToDeviceMessage, error) {
	rows, err := q.q.Query(ctx, selectToDeviceSQL, userID, deviceID, from, to)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (ToDeviceMessage, error) {
		m := ToDeviceMessage{UserID: userID, DeviceID: deviceID}
		err := r.Scan(&m.Sender, &m.Type, &m.Content, &m.StreamPos)
		return m, err
	})
}

// ---- key backup -----------------------------------------------------------------

// BackupVersion is a row of e2ee_backup_versions with its key count.
type BackupVersion struct {
	Version   int64
	Algorithm string
	AuthData  string
	Etag      int64
	Count     int64
	Deleted   bool
}

const insertBackupVersionSQL = `
INSERT INTO e2ee_backup_versions (user_id, version, algorithm, auth_data)
SELECT $1, COALESCE(max(version), 0) + 1, $2, $3 FROM e2ee_backup_versions WHERE user_id = $1
RETURNING version`

// CreateBackupVersion creates the user's next backup version.
func (q *Queries) CreateBackupVersion(ctx context.Context, userID, algorithm, authData string) (int64, error) {
	for attempt := 0; ; attempt++ {
		var v int64
		err := q.q.QueryRow(ctx, insertBackupVersionSQL, userID, algorithm, authData).Scan(&v)
		if err != nil && isUniqueViolation(err) && attempt < 5 {
			continue // a concurrent creation took the number
		}
		return v, err
	}
}

const selectBackupVersionSQL = `
SELECT v.version, v.algorithm, v.auth_data, v.etag, v.deleted,
       (SELECT count(*) FROM e2ee_backup_keys k WHERE k.user_id = v.user_id AND k.version = v.version)
FROM e2ee_backup_versions v
WHERE v.user_id = $1 AND (($2::bigint IS NULL AND NOT v.deleted) OR v.version = $2)
ORDER BY v.version DESC LIMIT 1`

// GetBackupVersion returns a backup version (deleted ones included), or the
// latest one not deleted when version is nil; ErrNotFound if there is none.
func (q *Queries) GetBackupVersion(ctx context.Context, userID string, version *int64) (BackupVersion, error) {
	var b BackupVersion
	err := q.q.QueryRow(ctx, selectBackupVersionSQL, userID, version).
		Scan(&b.Version, &b.Algorithm, &b.AuthData, &b.Etag, &b.Deleted, &b.Count)
	return b, notFound(err)
}

const lockCurrentBackupSQL = `
SELECT version FROM e2ee_backup_versions WHERE user_id = $1 AND NOT deleted
ORDER BY version DESC LIMIT 1 FOR UPDATE`

// LockCurrentBackupVersion returns the user's current backup version,
// locked until the end of the transaction; ErrNotFound if there is none.
func (q *Queries) LockCurrentBackupVersion(ctx context.Context, userID string) (int64, error) {
	var v int64
	err := q.q.QueryRow(ctx, lockCurrentBackupSQL, userID).Scan(&v)
	return v, notFound(err)
}

const updateBackupAuthDataSQL = `
UPDATE e2ee_backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2 AND NOT deleted`

// UpdateBackupAuthData replaces a backup's auth_data; ErrNotFound if it does
// not exist or was deleted.
func (q *Queries) UpdateBackupAuthData(ctx context.Context, userID string, version int64, authData string) error {
	tag, err := q.q.Exec(ctx, updateBackupAuthDataSQL, userID, version, authData)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

const markBackupDeletedSQL = `
UPDATE e2ee_backup_versions SET deleted = TRUE, etag = etag + 1 WHERE user_id = $1 AND version = $2`

const deleteAllBackupKeysSQL = `DELETE FROM e2ee_backup_keys WHERE user_id = $1 AND version = $2`

// DeleteBackupVersion marks a backup deleted and removes its keys;
// ErrNotFound if it never existed.
func (q *Queries) DeleteBackupVersion(ctx context.Context, userID string, version int64) error {
	tag, err := q.q.Exec(ctx, markBackupDeletedSQL, userID, version)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	_, err = q.q.Exec(ctx, deleteAllBackupKeysSQL, userID, version)
	return err
}

// BackupKey is a row of e2ee_backup_keys.
type BackupKey struct {
	RoomID            string
	SessionID         string
	FirstMessageIndex int64
	ForwardedCount    int64
	IsVerified        bool
	SessionData       string
}

const selectBackupKeysSQL = `
SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
FROM e2ee_backup_keys
WHERE user_id = $1 AND version = $2 AND ($3::text IS NULL OR room_id = $3) AND ($4::text IS NULL OR session_id = $4)
ORDER BY room_id, session_id`

// BackupKeys returns the keys of a backup, of one room (roomID non-nil) or
// one session (both non-nil).
func (q *Queries) BackupKeys(ctx context.Context, userID string, version int64, roomID, sessionID *string) ([]BackupKey, error) {
	rows, err := q.q.Query(ctx, selectBackupKeysSQL, userID, version, roomID, sessionID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanBackupKey)
}

func scanBackupKey(r pgx.CollectableRow) (BackupKey, error) {
	var k BackupKey
	err := r.Scan(&k.RoomID, &k.SessionID, &k.FirstMessageIndex, &k.ForwardedCount, &k.IsVerified, &k.SessionData)
	return k, err
}

const selectBackupKeysByIDSQL = `
SELECT k.room_id, k.session_id, k.first_message_index, k.forwarded_count, k.is_verified, k.session_data
FROM unnest($3::text[], $4::text[]) AS w(room_id, session_id)
JOIN e2ee_backup_keys k ON k.user_id = $1 AND k.version = $2 AND k.room_id = w.room_id AND k.session_id = w.session_id`

// BackupKeysByID returns the stored keys among the (room, session) pairs.
func (q *Queries) BackupKeysByID(ctx context.Context, userID string, version int64, rooms, sessions []string) ([]BackupKey, error) {
	rows, err := q.q.Query(ctx, selectBackupKeysByIDSQL, userID, version, rooms, sessions)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanBackupKey)
}

const upsertBackupKeySQL = `
INSERT INTO e2ee_backup_keys (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE
SET first_message_index = EXCLUDED.first_message_index, forwarded_count = EXCLUDED.forwarded_count,
    is_verified = EXCLUDED.is_verified, session_data = EXCLUDED.session_data`

const bumpBackupEtagSQL = `UPDATE e2ee_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2`

// PutBackupKeys stores (or replaces) keys of a backup and, if there were
// any, moves its etag.
func (q *Queries) PutBackupKeys(ctx context.Context, userID string, version int64, keys []BackupKey) error {
	if len(keys) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, k := range keys {
		b.Queue(upsertBackupKeySQL, userID, version, k.RoomID, k.SessionID, k.FirstMessageIndex, k.ForwardedCount, k.IsVerified, k.SessionData)
	}
	b.Queue(bumpBackupEtagSQL, userID, version)
	return q.q.SendBatch(ctx, b).Close()
}

const deleteBackupKeysSQL = `
DELETE FROM e2ee_backup_keys
WHERE user_id = $1 AND version = $2 AND ($3::text IS NULL OR room_id = $3) AND ($4::text IS NULL OR session_id = $4)`

// DeleteBackupKeys deletes the keys of a backup, of one room or one session,
// and moves the etag if any was deleted.
func (q *Queries) DeleteBackupKeys(ctx context.Context, userID string, version int64, roomID, sessionID *string) error {
	tag, err := q.q.Exec(ctx, deleteBackupKeysSQL, userID, version, roomID, sessionID)
	if err != nil || tag.RowsAffected() == 0 {
		return err
	}
	_, err = q.q.Exec(ctx, bumpBackupEtagSQL, userID, version)
	return err
}
