-- The ephemeral EDUs of the federation outbox go stale: typing and presence
-- after minutes, receipts after a day (federation.StaleTypingAfter,
-- StaleReceiptAfter). The senders leave the stale ones out of what they
-- send, and delete them from every destination's queue every minute
-- (sqlstore.PurgeStaleEDUs), so that the queue of a server down for days
-- does not grow with them; a typing EDU also replaces the one about the
-- same user and room still queued (sqlstore.DropQueuedTyping). This index
-- finds them without reading the queues: it holds only those EDUs, so a
-- PDU or a to-device message still costs one index entry (migration 010).

CREATE INDEX federation_outbox_ephemeral
    ON federation_outbox (edu_type, queued_ts)  -- the EDU's type, then when it was queued (ms): the purge's range per type
    WHERE edu_type IN ('m.typing', 'm.presence', 'm.receipt');

-- The cache of other servers' media (migration 014) is bounded in time:
-- what nobody here asked for in media.RemoteCacheRetention is dropped (its
-- files too, unless something else uses them) and fetched again if asked
-- for later. Reading a cached media records the time, at a day's precision
-- (media.accessTouchEvery), so serving costs no write most of the time.
ALTER TABLE remote_media ADD COLUMN accessed_ts BIGINT; -- when its content or a thumbnail was last served (or it was fetched), ms since the Unix epoch, at a day's precision
UPDATE remote_media SET accessed_ts = COALESCE(fetched_ts, created_ts);
ALTER TABLE remote_media ALTER COLUMN accessed_ts SET NOT NULL;
-- The retention's purge finds the media unused for long; quarantined ones
-- are an administrator's to delete.
CREATE INDEX remote_media_accessed ON remote_media (accessed_ts) WHERE quarantined_ts IS NULL;
