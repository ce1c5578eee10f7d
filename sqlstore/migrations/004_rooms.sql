-- The room graph: rooms, events (stored once), state snapshots, current state,
-- client transaction IDs, aliases and the room directory.
-- Spec: client-server-api/_index.md ("Rooms", "Events"), rooms/v*.md,
-- server-server-api.md ("Room State Resolution").

-- One row per room this server knows.
CREATE TABLE rooms (
    room_id             TEXT    PRIMARY KEY,          -- !opaque:server (or !hash in v12 rooms)
    room_version        TEXT    NOT NULL,             -- room version from the create event
    creator             TEXT    NOT NULL,             -- user who created the room
    created_ts          BIGINT  NOT NULL,             -- creation time on this server, ms
    forward_extremities TEXT[]  NOT NULL,             -- event IDs with no successor yet: prev_events of the next event
    max_depth           BIGINT  NOT NULL,             -- greatest depth among the room's events
    state_snapshot      BIGINT  NOT NULL,             -- snapshot of the current state (state after the extremities)
    published           BOOLEAN NOT NULL DEFAULT FALSE -- listed in the public room directory
);

-- Every event, stored once as the signed JSON. Redaction rewrites json in place
-- with the room version's redaction algorithm, so the content is gone for good.
CREATE TABLE events (
    event_nid        BIGSERIAL PRIMARY KEY,          -- internal numeric ID, referenced by snapshots
    event_id         TEXT    NOT NULL UNIQUE,        -- Matrix event ID
    room_id          TEXT    NOT NULL REFERENCES rooms (room_id),
    type             TEXT    NOT NULL,               -- event type
    state_key        TEXT,                           -- state key; NULL for a message (non-state) event
    sender           TEXT    NOT NULL,               -- sender user ID
    depth            BIGINT  NOT NULL,               -- depth in the room DAG
    origin_server_ts BIGINT  NOT NULL,               -- sender's timestamp, ms
    stream_pos       BIGINT  NOT NULL UNIQUE,        -- position in the server's stream (package streams): order of acceptance
    state_before     BIGINT  NOT NULL,               -- snapshot of the room state just before this event
    json             TEXT    NOT NULL,               -- the event as signed (or redacted) JSON
    redacted_by      TEXT,                           -- event ID of the redaction applied to it, if any
    relates_to       TEXT,                           -- content.m.relates_to.event_id, for /relations
    rel_type         TEXT                            -- content.m.relates_to.rel_type
);
CREATE INDEX events_room_topo ON events (room_id, depth, stream_pos);       -- /messages in both directions
CREATE INDEX events_room_stream ON events (room_id, stream_pos);            -- /sync: a room's events in a stream range
CREATE INDEX events_room_ts ON events (room_id, origin_server_ts);          -- /timestamp_to_event
CREATE INDEX events_members ON events (state_key, stream_pos) WHERE type = 'm.room.member'; -- /sync: a user's membership changes
CREATE INDEX events_relations ON events (relates_to, rel_type, type) WHERE relates_to IS NOT NULL; -- /relations

-- State snapshots: a snapshot is its parent's state plus a delta. Chains are
-- kept short: every 32nd snapshot of a chain is stored in full.
CREATE TABLE state_snapshots (
    snapshot_nid BIGSERIAL PRIMARY KEY, -- internal ID
    room_id      TEXT    NOT NULL,      -- room the state belongs to
    parent_nid   BIGINT  REFERENCES state_snapshots (snapshot_nid), -- NULL: delta holds the full state
    chain_len    INTEGER NOT NULL,      -- number of deltas from the last full snapshot (0 for a full one)
    delta        JSONB   NOT NULL       -- {"type": {"state_key": event_nid}} replacing or adding entries of the parent
);

-- The current state of every room, materialised for fast reads (member lists,
-- joined rooms, auth of the next event). Always equal to rooms.state_snapshot.
CREATE TABLE current_state (
    room_id    TEXT   NOT NULL,  -- room
    type       TEXT   NOT NULL,  -- state event type
    state_key  TEXT   NOT NULL,  -- state key
    event_nid  BIGINT NOT NULL,  -- the event holding this piece of state
    membership TEXT,             -- content.membership for m.room.member, NULL otherwise
    PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_members ON current_state (state_key, membership) WHERE type = 'm.room.member'; -- joined_rooms

-- Client transaction IDs (spec: "Transaction identifiers"): a retried
-- request with the same txnId from the same device to the same endpoint
-- returns the same event.
CREATE TABLE client_txns (
    user_id    TEXT   NOT NULL, -- sender
    device_id  TEXT   NOT NULL, -- sending device (transactions are scoped per device)
    scope      TEXT   NOT NULL, -- the endpoint the ID is scoped to, e.g. "send <room> <type>", "redact <room> <event>"
    txn_id     TEXT   NOT NULL, -- client-chosen transaction ID
    event_id   TEXT   NOT NULL, -- event created by the first request
    created_ts BIGINT NOT NULL, -- ms
    PRIMARY KEY (user_id, device_id, scope, txn_id)
);
CREATE INDEX client_txns_event ON client_txns (event_id); -- unsigned.transaction_id for the sender's device

-- Local room aliases (#alias:server_name).
CREATE TABLE room_aliases (
    alias      TEXT   PRIMARY KEY, -- full alias
    room_id    TEXT   NOT NULL,    -- room it points to
    creator    TEXT   NOT NULL,    -- user who created it (may delete it)
    created_ts BIGINT NOT NULL     -- ms
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- Rooms a user has forgotten (spec: POST /rooms/{roomId}/forget).
CREATE TABLE forgotten_rooms (
    user_id TEXT NOT NULL, -- the user
    room_id TEXT NOT NULL, -- the room they left and forgot
    PRIMARY KEY (user_id, room_id)
);
