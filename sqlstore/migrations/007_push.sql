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

-- One row per (local user, event) that the user's push rules said to notify
-- about, written in the transaction that stores the event. Unread counts are
-- the rows after the user's read receipts; /notifications lists them.
CREATE TABLE push_notifications (
    user_id    TEXT    NOT NULL, -- the notified local user
    room_id    TEXT    NOT NULL, -- room of the event
    stream_pos BIGINT  NOT NULL, -- the event's stream position (events.stream_pos)
    thread_id  TEXT    NOT NULL, -- 'main', or the event ID of the root of the thread the event belongs to
    highlight  BOOLEAN NOT NULL, -- the actions set the highlight tweak
    actions    TEXT    NOT NULL, -- the actions of the rule that matched, as a JSON array
    ts         BIGINT  NOT NULL, -- when the notification was generated, ms since the Unix epoch
    PRIMARY KEY (user_id, room_id, stream_pos)
);
CREATE INDEX push_notifications_user ON push_notifications (user_id, stream_pos); -- /notifications, newest first

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
    created_ts          BIGINT NOT NULL, -- when it was set, ms
    last_stream_pos     BIGINT NOT NULL, -- notifications up to this stream position were delivered (or skipped)
    failing_since_ts    BIGINT,          -- first failed delivery of the current run of failures, ms; NULL when healthy
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_key ON pushers (app_id, pushkey); -- append=false: other users' pushers with the same key
