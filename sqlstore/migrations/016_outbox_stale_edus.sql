-- The ephemeral EDUs of the federation outbox go stale: typing and presence
-- after minutes, receipts after a day (federation.StaleTypingAfter,
-- StaleReceiptAfter). The senders leave the stale ones out of what they
-- send, and delete them from every destination's queue every minute
-- (sqlstore.PurgeStaleEDUs), so that the queue of a server down for days
-- does not grow with them. This index finds them without reading the
-- queues: it holds only those EDUs, so a PDU or a to-device message still
-- costs one index entry (migration 010).

CREATE INDEX federation_outbox_ephemeral
    ON federation_outbox (edu_type, queued_ts)  -- the EDU's type, then when it was queued (ms): the purge's range per type
    WHERE edu_type IN ('m.typing', 'm.presence', 'm.receipt');
