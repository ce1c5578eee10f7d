-- Events received over federation: outliers, rejections, backfill and the
-- transactions already processed.
-- Spec: server-server-api.md ("Transactions", "Checks performed on receipt
-- of a PDU", "Rejection", "Soft failure", "Backfilling and retrieving
-- missing events").

-- An outlier is an event we hold without its place in the timeline: the
-- state and auth chain a join brings, auth events fetched to check another
-- event. It has no stream position, so neither /sync nor /messages shows it,
-- but snapshots may point at it and federation may serve it.
ALTER TABLE events ALTER COLUMN stream_pos DROP NOT NULL;

-- Rejected events are kept, so that we never fetch or check them again, but
-- they never enter a snapshot, the timeline, or a federation answer.
ALTER TABLE events ADD COLUMN rejected TEXT; -- why the event was rejected (NULL: accepted)

-- Events a client paginated back to, fetched with /backfill, take stream
-- positions from this descending sequence: below every live position, so
-- /messages orders them by depth while /sync never sees them as new.
CREATE SEQUENCE backfill_stream_pos INCREMENT BY -1 MAXVALUE -1 START WITH -1;

-- Federation transactions received (PUT /send/{txnId}): a repeated
-- transaction ID from the same origin is answered from here, not
-- processed again.
CREATE TABLE federation_txns_in (
    origin      TEXT   NOT NULL, -- sending server
    txn_id      TEXT   NOT NULL, -- its transaction ID
    received_ts BIGINT NOT NULL, -- when we processed it, ms (rows older than a day are purged)
    response    JSONB  NOT NULL, -- the answer we gave: {"pdus": {event_id: {"error": ...}}}
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_txns_in_age ON federation_txns_in (received_ts);
