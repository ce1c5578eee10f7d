-- The end-to-end encryption relay: device keys, one-time and fallback keys,
-- cross-signing keys and signatures, device-list changes, to-device messages
-- and server-side key backups. The server stores and relays public keys and
-- ciphertext only. See the e2ee package.
-- Spec: client-server-api/modules/end_to_end_encryption.md, send_to_device.md,
-- secrets.md; data/api/client-server/keys.yaml, cross_signing.yaml,
-- to_device.yaml, key_backup.yaml.
--
-- Keys and messages of a device reference the devices table with ON DELETE
-- CASCADE: deleting a device (logout, DELETE /devices, deactivation) removes
-- its keys and pending messages in the same statement. Announcing the change
-- to other users takes a stream position, which only the running process can
-- hand out: the client API calls e2ee.Service.DevicesDeleted after the
-- accounts component deleted devices.

-- The identity keys of each device (spec: POST /keys/upload, device_keys).
CREATE TABLE e2ee_device_keys (
    user_id    TEXT   NOT NULL, -- owner of the device
    device_id  TEXT   NOT NULL, -- the device
    key_json   TEXT   NOT NULL, -- the signed DeviceKeys object as uploaded (canonical JSON, without unsigned)
    ed25519    TEXT   NOT NULL, -- the device's ed25519 public key (keys."ed25519:<device_id>"), to verify signatures by the device
    updated_ts BIGINT NOT NULL, -- upload time, ms since the Unix epoch
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

-- Unclaimed one-time keys. A claim deletes the row it hands out, so each key
-- is given to one claimer only (spec: POST /keys/claim).
CREATE TABLE e2ee_one_time_keys (
    id        BIGSERIAL PRIMARY KEY, -- upload order: keys are claimed oldest first
    user_id   TEXT NOT NULL,         -- owner of the device
    device_id TEXT NOT NULL,         -- the device that uploaded the key
    algorithm TEXT NOT NULL,         -- key algorithm, e.g. signed_curve25519
    key_id    TEXT NOT NULL,         -- key ID (the part after "<algorithm>:")
    key_json  TEXT NOT NULL,         -- the key object (a string for curve25519, a signed object for signed_curve25519)
    UNIQUE (user_id, device_id, algorithm, key_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

-- Fallback keys: at most one per device and algorithm, handed out when the
-- one-time keys run out and kept until the device replaces them.
CREATE TABLE e2ee_fallback_keys (
    user_id   TEXT    NOT NULL,               -- owner of the device
    device_id TEXT    NOT NULL,               -- the device that uploaded the key
    algorithm TEXT    NOT NULL,               -- key algorithm, e.g. signed_curve25519
    key_id    TEXT    NOT NULL,               -- key ID (the part after "<algorithm>:")
    key_json  TEXT    NOT NULL,               -- the signed key object (with "fallback": true)
    used      BOOLEAN NOT NULL DEFAULT FALSE, -- handed out by a claim at least once (sync's device_unused_fallback_key_types)
    PRIMARY KEY (user_id, device_id, algorithm),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

-- Cross-signing keys of local users (spec: POST /keys/device_signing/upload).
-- Not tied to a device: they survive the deletion of every device.
CREATE TABLE e2ee_cross_signing_keys (
    user_id    TEXT   NOT NULL, -- owner
    key_type   TEXT   NOT NULL CHECK (key_type IN ('master', 'self_signing', 'user_signing')), -- which of the three keys
    public_key TEXT   NOT NULL, -- unpadded base64 ed25519 public key (the key ID is "ed25519:" || public_key)
    key_json   TEXT   NOT NULL, -- the CrossSigningKey object as uploaded, with its signatures (canonical JSON)
    updated_ts BIGINT NOT NULL, -- upload time, ms
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded through POST /keys/signatures/upload, merged into the
-- signed objects by /keys/query. A signature by another user (made with
-- their user-signing key) is shown to its signer only.
CREATE TABLE e2ee_key_signatures (
    target_user_id TEXT   NOT NULL, -- owner of the signed key
    target_key_id  TEXT   NOT NULL, -- the signed key: a device ID, or the public key of a cross-signing key
    signer_user_id TEXT   NOT NULL, -- the user who signed
    signer_key_id  TEXT   NOT NULL, -- the signing key, "ed25519:<device ID or public key>"
    signature      TEXT   NOT NULL, -- unpadded base64 ed25519 signature of the canonical JSON of the key
    created_ts     BIGINT NOT NULL, -- upload time, ms
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);

-- Device-list changes: the latest stream position at which each user's
-- devices, device keys or cross-signing keys changed (one row per user,
-- moved forward by each change). /sync's device_lists.changed and
-- /keys/changes read the rows in a stream range. Holds remote users too once
-- federation reports their changes.
CREATE TABLE e2ee_device_list_changes (
    user_id    TEXT   PRIMARY KEY, -- the user whose device list changed
    stream_pos BIGINT NOT NULL     -- position of the latest change (package streams)
);
CREATE INDEX e2ee_device_list_changes_pos ON e2ee_device_list_changes (stream_pos);

-- To-device messages waiting for their recipient device. A message is
-- returned by every /sync of the device whose range covers its position and
-- deleted once the device syncs with a since token at or after it (spec:
-- send_to_device.md). At most e2ee.Config.MaxPendingToDevice rows are kept
-- per device: beyond that the oldest are dropped.
CREATE TABLE e2ee_to_device (
    id         BIGSERIAL PRIMARY KEY, -- order of the messages (several share a stream position)
    user_id    TEXT   NOT NULL,       -- recipient user (local)
    device_id  TEXT   NOT NULL,       -- recipient device
    stream_pos BIGINT NOT NULL,       -- position of the send (package streams)
    sender     TEXT   NOT NULL,       -- sending user
    type       TEXT   NOT NULL,       -- event type, e.g. m.room.encrypted
    content    TEXT   NOT NULL,       -- event content as sent (JSON object)
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX e2ee_to_device_device ON e2ee_to_device (user_id, device_id, stream_pos);

-- The highest stream position of the to-device messages deleted after their
-- acknowledgement: one row at most. The stream must not restart below a
-- position a client has seen, even when every message was deleted.
CREATE TABLE e2ee_to_device_acked (
    singleton  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton), -- always TRUE: one row at most
    stream_pos BIGINT  NOT NULL                                    -- highest deleted position
);

-- Transaction IDs of PUT /sendToDevice, so a retried request is not
-- delivered twice (spec: "Transaction identifiers": per device and endpoint).
CREATE TABLE e2ee_to_device_txns (
    user_id    TEXT   NOT NULL, -- sender
    device_id  TEXT   NOT NULL, -- sending device
    event_type TEXT   NOT NULL, -- the {eventType} of the path: part of the endpoint
    txn_id     TEXT   NOT NULL, -- client-chosen transaction ID
    created_ts BIGINT NOT NULL, -- ms; rows older than a week are purged by later sends of the device
    PRIMARY KEY (user_id, device_id, event_type, txn_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

-- Server-side key backup versions (spec: POST/GET/PUT/DELETE /room_keys/version).
-- Deleted versions keep their row (deleted = TRUE) so that deleting again
-- succeeds and version numbers are never reused.
CREATE TABLE e2ee_backup_versions (
    user_id   TEXT    NOT NULL,               -- owner
    version   BIGINT  NOT NULL,               -- 1, 2, 3… per user; the latest not deleted is the current backup
    algorithm TEXT    NOT NULL,               -- e.g. m.megolm_backup.v1.curve25519-aes-sha2
    auth_data TEXT    NOT NULL,               -- algorithm-dependent auth_data (JSON object, public key and signatures)
    etag      BIGINT  NOT NULL DEFAULT 0,     -- bumped whenever the stored keys change (the etag of the spec)
    deleted   BOOLEAN NOT NULL DEFAULT FALSE, -- deleted by the user: its keys are gone
    PRIMARY KEY (user_id, version)
);

-- The backed-up session keys, encrypted by the client (session_data).
CREATE TABLE e2ee_backup_keys (
    user_id             TEXT    NOT NULL, -- owner
    version             BIGINT  NOT NULL, -- backup version holding the key
    room_id             TEXT    NOT NULL, -- room of the megolm session
    session_id          TEXT    NOT NULL, -- megolm session ID
    first_message_index BIGINT  NOT NULL, -- lowest message index the key can decrypt (lower wins on replacement)
    forwarded_count     BIGINT  NOT NULL, -- times the key was forwarded (lower wins on replacement)
    is_verified         BOOLEAN NOT NULL, -- the key came from a verified device (TRUE wins on replacement)
    session_data        TEXT    NOT NULL, -- the encrypted session data (JSON object), opaque to the server
    PRIMARY KEY (user_id, version, room_id, session_id),
    FOREIGN KEY (user_id, version) REFERENCES e2ee_backup_versions (user_id, version) ON DELETE CASCADE
);
