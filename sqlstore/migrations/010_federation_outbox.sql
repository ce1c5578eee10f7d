-- The federation outbox: what each remote server still has to receive, in
-- the order it was queued. A row is written in the transaction that stores
-- the event (or the EDU's cause), so a committed event is always queued and
-- a rolled-back one never is; the per-destination senders (package
-- federation) send the rows of a destination in order, batched in
-- transactions (spec: server-server-api.md, "Transactions"), and delete them
-- once the destination acknowledged them. A restart resumes from here.
--
-- A PDU is referenced by its event NID: the event JSON stays in events, once
-- (a redaction applied meanwhile is what gets sent). It is not a foreign
-- key: the event is written in the same transaction and events are never
-- deleted, while the check would cost a lookup per destination on every
-- send; a row whose event is missing is dropped unsent. An EDU has no other
-- home, so its content is stored in the row.
--
-- Rows of a server that the allowlist no longer admits stay until it is
-- admitted again or an administrator purges them (sqlstore.PurgeOutbox).

CREATE TABLE federation_outbox (
    id          BIGSERIAL,                                 -- queue order; also makes transaction IDs (see federation.Sender)
    destination TEXT   NOT NULL,                           -- server name of the receiver, as in user IDs (may hold a port or an IPv6 literal)
    queued_ts   BIGINT NOT NULL,                           -- when it was queued, ms since the Unix epoch
    event_nid   BIGINT,                                    -- the PDU to send (events.event_nid); NULL for an EDU
    edu_type    TEXT,                                      -- the EDU's edu_type (m.typing, m.receipt, m.direct_to_device…); NULL for a PDU
    edu_content JSONB,                                     -- the EDU's content; NULL for a PDU
    CHECK ((event_nid IS NOT NULL AND edu_type IS NULL AND edu_content IS NULL)       -- a PDU
        OR (event_nid IS NULL AND edu_type IS NOT NULL AND edu_content IS NOT NULL)), -- or an EDU
    -- The only index, so a queued item costs one index entry: a
    -- destination's next batch, the deletion of what it acknowledged, and
    -- the list of the destinations with work (a skip scan) all use it.
    PRIMARY KEY (destination, id)
);
