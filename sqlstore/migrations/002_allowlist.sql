-- The signed allowlist of federation servers: the list in force, the outcome
-- of the latest refresh, and the append-only audit trail of every list
-- applied or refused. See ../shared/DESIGN.md, "The allowlist", and the
-- allowlist package.

-- The list in force: at most one row. Kept so that a restart, even with the
-- list's file gone, never opens federation to everyone; its serial bars any
-- older list (no rollback). Replaced only by a list with a higher serial.
CREATE TABLE allowlist_current (
    singleton    BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton), -- always TRUE: makes the table hold one row at most
    serial       BIGINT  NOT NULL, -- the list's serial, strictly increasing from one list to the next
    content_hash TEXT    NOT NULL, -- SHA-256 (hex) of the signed content: canonical JSON without signatures and unsigned
    document     BYTEA   NOT NULL, -- the signed document exactly as received (served byte for byte to peers)
    source       TEXT    NOT NULL, -- where it came from: file:PATH, url:URL or peer:SERVER_NAME
    applied_ts   BIGINT  NOT NULL  -- when it was applied, ms since the Unix epoch
);

-- The outcome of the latest refresh (file, URL, database), for the status
-- endpoint and `chappe allowlist status`: at most one row, overwritten.
CREATE TABLE allowlist_refresh (
    singleton    BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton), -- always TRUE: one row at most
    refreshed_ts BIGINT  NOT NULL, -- when the refresh ended, ms since the Unix epoch
    result       JSONB   NOT NULL  -- allowlist.RefreshStatus: per source its result (applied, unchanged, refused…) and detail
);

-- Every list applied or refused, in order. Append-only: the triggers below
-- refuse UPDATE, DELETE and TRUNCATE, so the trail cannot be rewritten
-- through the application's role.
CREATE TABLE allowlist_audit (
    id              BIGSERIAL PRIMARY KEY, -- order of the events
    ts              BIGINT  NOT NULL,      -- when the list was applied or refused, ms since the Unix epoch
    outcome         TEXT    NOT NULL CHECK (outcome IN ('applied', 'refused')), -- what happened to the list
    reason          TEXT    NOT NULL DEFAULT '', -- for a refusal: the kind (malformed, wrong_federation, signatures, expired, rollback) and why
    federation      TEXT,                  -- the list's federation name; NULL if the document could not be read
    serial          BIGINT,                -- the list's serial; NULL if the document could not be read
    content_hash    TEXT    NOT NULL,      -- SHA-256 (hex) of the signed content; of the raw bytes if the document could not be read
    signers         TEXT[]  NOT NULL DEFAULT '{}', -- valid signatures that counted, as 'SIGNER ed25519:KEYID'
    servers_added   TEXT[]  NOT NULL DEFAULT '{}', -- servers in this list and not in the list in force at the time
    servers_removed TEXT[]  NOT NULL DEFAULT '{}', -- servers in the list in force and not in this one
    servers_changed TEXT[]  NOT NULL DEFAULT '{}', -- servers in both whose organisation, endpoint or pinned keys differ
    source          TEXT    NOT NULL,      -- where the list came from: file:PATH, url:URL or peer:SERVER_NAME
    document        BYTEA                  -- the signed document, for applied lists (the history of the lists in force); NULL for refusals
);
CREATE INDEX allowlist_audit_outcome ON allowlist_audit (outcome, id); -- recent refusals / recent changes for the status

-- Refuses any change to allowlist_audit other than INSERT.
CREATE FUNCTION allowlist_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'allowlist_audit is append-only: % is not allowed', TG_OP;
END;
$$;
CREATE TRIGGER allowlist_audit_no_update_delete BEFORE UPDATE OR DELETE ON allowlist_audit
    FOR EACH ROW EXECUTE FUNCTION allowlist_audit_append_only();
CREATE TRIGGER allowlist_audit_no_truncate BEFORE TRUNCATE ON allowlist_audit
    FOR EACH STATEMENT EXECUTE FUNCTION allowlist_audit_append_only();
