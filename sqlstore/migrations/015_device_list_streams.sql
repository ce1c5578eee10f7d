-- The device-list stream of each local user as the other servers see it:
-- the stream_id and prev_id of the m.device_list_update EDUs and the
-- stream_id of GET /_matrix/federation/v1/user/devices/{userId}. The spec
-- asks for an ID "unique for a given user_id" that only grows, each update
-- naming the previous one in prev_id (server-server-api.md, "Device
-- Management"). The stream positions of e2ee_device_list_changes (migration
-- 008) serve local /sync and are not that: they move for changes that send
-- no update and are taken before the user's row is locked. See e2ee
-- package, announce.go.

-- One row per local user whose device list was announced or served to
-- other servers. Every change locks the row (it is inserted first if
-- missing), so the changes of one user are numbered in the order they
-- commit.
CREATE TABLE e2ee_device_list_streams (
    user_id      TEXT   PRIMARY KEY,              -- the local user
    stream_id    BIGINT NOT NULL,                 -- stream_id of the user's latest m.device_list_update; 0: none yet
    told_devices TEXT[] NOT NULL DEFAULT '{}'     -- device IDs other servers may hold: announced or served, deletion not yet announced
);

-- The users who had changes before this migration start from the position
-- the other servers were told (the stream position was the stream_id), so
-- that the next update follows it; the devices they have may be known.
INSERT INTO e2ee_device_list_streams (user_id, stream_id, told_devices)
SELECT c.user_id, c.stream_pos,
       COALESCE((SELECT array_agg(d.device_id ORDER BY d.device_id) FROM devices d WHERE d.user_id = c.user_id), '{}')
FROM e2ee_device_list_changes c JOIN users u ON u.user_id = c.user_id;
