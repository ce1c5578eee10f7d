-- End-to-end encryption across servers: the cache of remote users' device
-- lists kept current by m.device_list_update and m.signing_key_update EDUs,
-- and the message IDs of the m.direct_to_device EDUs already delivered.
-- See the e2ee package (remotekeys.go, remotelists.go, todevice.go).
-- Spec: server-server-api.md, "Device Management", "Send-to-device
-- messaging"; data/api/server-server/user_devices.yaml.
--
-- A remote user's list is cached only when complete: it is filled from
-- GET /user/devices/{userId} on their server (a resync) and then moved
-- forward by the EDUs that follow it without a gap. A gap deletes the list
-- (the devices and keys go with it by cascade) until the next resync.

-- A remote user whose device list we hold.
CREATE TABLE e2ee_remote_device_lists (
    user_id    TEXT   PRIMARY KEY, -- the remote user
    stream_id  BIGINT NOT NULL,    -- the stream_id of their server that the cached list is at
    updated_ts BIGINT NOT NULL     -- when it last changed here, ms since the Unix epoch
);

-- The devices of the cached remote users.
CREATE TABLE e2ee_remote_devices (
    user_id      TEXT NOT NULL, -- the remote user (e2ee_remote_device_lists)
    device_id    TEXT NOT NULL, -- their device
    key_json     TEXT,          -- the signed DeviceKeys object as their server sent it; NULL when the device has no keys
    display_name TEXT,          -- device_display_name as their server sent it; NULL when none
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id) REFERENCES e2ee_remote_device_lists (user_id) ON DELETE CASCADE
);

-- The public cross-signing keys of the cached remote users (the user-signing
-- key never leaves its server).
CREATE TABLE e2ee_remote_cross_signing_keys (
    user_id  TEXT NOT NULL, -- the remote user (e2ee_remote_device_lists)
    key_type TEXT NOT NULL CHECK (key_type IN ('master', 'self_signing')), -- which key
    key_json TEXT NOT NULL, -- the CrossSigningKey object as their server sent it, with its signatures
    PRIMARY KEY (user_id, key_type),
    FOREIGN KEY (user_id) REFERENCES e2ee_remote_device_lists (user_id) ON DELETE CASCADE
);

-- The m.direct_to_device messages received, by message_id, so that a
-- message arriving twice (a retried transaction, or the same message in a
-- new one) is delivered once. Rows older than a week are purged by later
-- receptions.
CREATE TABLE e2ee_to_device_received (
    origin      TEXT   NOT NULL, -- the server that sent the EDU
    sender      TEXT   NOT NULL, -- the sending user (of origin)
    message_id  TEXT   NOT NULL, -- the EDU's message_id
    received_ts BIGINT NOT NULL, -- when it was first received, ms
    PRIMARY KEY (origin, sender, message_id)
);
CREATE INDEX e2ee_to_device_received_ts ON e2ee_to_device_received (received_ts); -- purge by age
