-- Push notifications (package push): each user's push rules, the
-- notifications the rules produced for each event, how far each user has
-- implicitly read by sending, and the pushers clients registered.
-- Spec: client-server-api/modules/push.md, receipts.md ("Receiving
-- notifications", "Marking notifications as read").

-- The push rules a user changed: their own rules, and the enabled flag and
-- actions they set on server-default rules. A user without a row has the
-- server-default rules only. The rendered ruleset is also written, for /sync,
-- as the m.push_rules account data (account_data) at each change.
CREATE TABLE push_rules (
    user_id TEXT  PRIMARY KEY, -- owner of the rules
    rules   JSONB NOT NULL     -- {"override": [...], "content": [...], "room": [...], "sender": [...], "underride": [...],
                               --  "defaults": {"<kind>/<rule_id>": {"enabled": bool, "actions": [...]}}}:
                               --  user-defined rules of each kind, most important first, and changes to server-default rules
);

-- Notifications are stored per event, not per user: evaluating the rules of
-- every local member usually gives most of them the same outcome (a message
-- notifies everyone, a join no one), so an event in a room of 1,000 members
-- costs one row here plus a row in push_exceptions for each member whose
-- outcome differs (a mention, their own rules, an invitee). An event is only
-- stored if it notifies someone.
CREATE TABLE push_events (
    stream_pos BIGINT  PRIMARY KEY, -- the event's stream position (events.stream_pos)
    room_id    TEXT    NOT NULL,    -- room of the event
    thread_id  TEXT    NOT NULL,    -- 'main', or the event ID of the root of the thread the event belongs to
    sender     TEXT    NOT NULL,    -- sender, never notified of their own event
    notify     BOOLEAN NOT NULL,    -- common outcome of the members who were joined at the event: notified?
    highlight  BOOLEAN NOT NULL,    -- common outcome: highlighted?
    actions    TEXT    NOT NULL,    -- common outcome: the actions of the rule that matched, as a JSON array
    ts         BIGINT  NOT NULL     -- when the notifications were generated, ms since the Unix epoch
);
CREATE INDEX push_events_room ON push_events (room_id, stream_pos); -- counts and lists: a room's events after a position

-- Local users whose outcome for an event differs from the common one of
-- push_events (or who were not joined, like an invitee).
CREATE TABLE push_exceptions (
    user_id    TEXT    NOT NULL, -- the local user
    room_id    TEXT    NOT NULL, -- room of the event
    stream_pos BIGINT  NOT NULL, -- the event (push_events.stream_pos)
    notify     BOOLEAN NOT NULL, -- notified?
    highlight  BOOLEAN NOT NULL, -- highlighted?
    actions    TEXT    NOT NULL, -- the actions of the rule that matched, as a JSON array
    PRIMARY KEY (user_id, room_id, stream_pos)
);
CREATE INDEX push_exceptions_user ON push_exceptions (user_id, stream_pos); -- notifications outside the user's rooms (invites)

-- Since when each local user has been joined to each room they are in: the
-- common outcome of an event applies to the members joined when it was
-- sent. A change of display name (join to join) keeps the position. Kept by
-- package push as it sees each membership event; the initial rows come from
-- the current state (remote users' rows among them are never read).
CREATE TABLE push_members (
    user_id   TEXT   NOT NULL, -- joined member
    room_id   TEXT   NOT NULL, -- room they are joined to
    joined_at BIGINT NOT NULL, -- stream position of the event that made them join
    PRIMARY KEY (user_id, room_id)
);
INSERT INTO push_members (user_id, room_id, joined_at)
SELECT cs.state_key, cs.room_id, e.stream_pos
FROM current_state cs JOIN events e ON e.event_nid = cs.event_nid
WHERE cs.type = 'm.room.member' AND cs.membership = 'join';

-- Sending an event marks everything before it read (spec: "Receiving
-- notifications"): the last event each local user sent in each thread of a
-- room acts as a read receipt of that thread.
CREATE TABLE push_sent_marks (
    user_id    TEXT   NOT NULL, -- local sender
    room_id    TEXT   NOT NULL, -- room
    thread_id  TEXT   NOT NULL, -- 'main', or a thread root's event ID
    stream_pos BIGINT NOT NULL, -- stream position of the user's last event in that thread
    PRIMARY KEY (user_id, room_id, thread_id)
);

-- Pushers (spec: POST /_matrix/client/v3/pushers/set): where to send a
-- user's notifications.
CREATE TABLE pushers (
    user_id             TEXT   NOT NULL, -- owner
    app_id              TEXT   NOT NULL, -- reverse-DNS application ID, at most 64 characters
    pushkey             TEXT   NOT NULL, -- routing key of the device (APNS token, FCM registration ID…), at most 512 bytes
    kind                TEXT   NOT NULL, -- 'http'
    app_display_name    TEXT   NOT NULL, -- application name shown to the user
    device_display_name TEXT   NOT NULL, -- device name shown to the user
    profile_tag         TEXT,            -- device-specific rule set tag; NULL when none was given
    lang                TEXT   NOT NULL, -- preferred language of the notifications, e.g. 'en-US'
    data                TEXT   NOT NULL, -- PusherData: a JSON object with url (the push gateway), format and custom keys
    device_id           TEXT   NOT NULL, -- device of the access token that set the pusher
    created_ts          BIGINT NOT NULL, -- when it was last set, ms (pushkey_ts of gateway requests)
    last_stream_pos     BIGINT NOT NULL, -- notifications up to this stream position were delivered (or skipped)
    failing_since_ts    BIGINT,          -- first failed delivery of the current run of failures, ms; NULL when healthy
    PRIMARY KEY (user_id, app_id, pushkey),
    -- Logging out, deleting the device or deactivating the account removes its pushers.
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX pushers_key ON pushers (app_id, pushkey); -- append=false: other users' pushers with the same key
