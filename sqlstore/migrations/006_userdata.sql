-- Per-user and ephemeral data around /sync: account data, read receipts and
-- presence. Typing notifications are kept in memory only (package ephemeral).
-- Every row carries the stream position (package streams) of its last change,
-- so /sync reads "what changed in (from, to]" with one indexed range query.
-- Spec: client-server-api/_index.md ("Client Config", "Receipts",
-- "Read and unread markers", "Presence", "Ignoring Users").

-- Account data, global and per room (spec: "Client Config"). One row per
-- (user, room, type), replaced by each PUT; m.fully_read rows are written by
-- the read markers API only.
CREATE TABLE account_data (
    user_id    TEXT   NOT NULL, -- owner: account data is only ever visible to them
    room_id    TEXT   NOT NULL, -- room the data is scoped to; '' for global account data
    type       TEXT   NOT NULL, -- event type, e.g. m.direct, m.ignored_user_list, m.tag, m.fully_read
    content    TEXT   NOT NULL, -- the content: a JSON object, compacted, as the client sent it
    stream_pos BIGINT NOT NULL, -- stream position of the last change (package streams)
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream_pos); -- /sync: a user's changes in a stream range

-- Read receipts (spec: "Receipts"): m.read (shown to the room) and
-- m.read.private (shown to its owner only). One row per (room, user, type,
-- thread); a receipt replaces the row only if it points further in the room.
CREATE TABLE receipts (
    room_id          TEXT   NOT NULL, -- room of the receipt
    user_id          TEXT   NOT NULL, -- user who read
    receipt_type     TEXT   NOT NULL, -- m.read or m.read.private
    thread_id        TEXT   NOT NULL, -- '' for an unthreaded receipt, 'main' or a thread root's event ID for a threaded one
    event_id         TEXT   NOT NULL, -- event read up to (included)
    event_stream_pos BIGINT NOT NULL, -- that event's stream position: orders receipts, bounds unread counts
    ts               BIGINT NOT NULL, -- when the receipt was sent, ms since the Unix epoch
    stream_pos       BIGINT NOT NULL, -- stream position of the last change (package streams)
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_stream ON receipts (room_id, stream_pos); -- /sync: a room's receipts in a stream range

-- Presence (spec: "Presence"): the last state of each user who ever had one.
CREATE TABLE presence (
    user_id        TEXT   PRIMARY KEY, -- the user
    state          TEXT   NOT NULL,    -- online, unavailable or offline
    status_msg     TEXT,               -- free-text status; NULL when none
    last_active_ts BIGINT NOT NULL,    -- last pro-active action seen (sync, presence set online), ms
    stream_pos     BIGINT NOT NULL     -- stream position of the last change (package streams)
);
CREATE INDEX presence_stream ON presence (stream_pos);                       -- /sync: changes in a stream range
CREATE INDEX presence_online ON presence (state) WHERE state <> 'offline'; -- restart: who must be watched for going offline
