-- Accounts, devices, tokens and the state of user-interactive authentication.
-- Spec: client-server-api/_index.md, "Client Authentication", "Account registration
-- and management", "Device Management", "Profiles".

-- One row per local account. Rows are never deleted: a deactivated user ID stays
-- taken for ever, so nobody can register it again and impersonate its history.
CREATE TABLE users (
    user_id       TEXT PRIMARY KEY,                    -- full Matrix user ID, @localpart:server_name
    password_hash TEXT,                                -- argon2id PHC string; NULL = password login impossible
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,      -- server administrator (admin API, shared-secret flag)
    deactivated   BOOLEAN NOT NULL DEFAULT FALSE,      -- deactivated: cannot log in, has no devices, name still taken
    profile       JSONB   NOT NULL DEFAULT '{}'::jsonb, -- profile fields: displayname, avatar_url, m.tz and custom keys
    created_ts    BIGINT  NOT NULL                     -- creation time, ms since the Unix epoch
);

-- One row per logged-in device. Deleting the row logs the device out: its tokens go with it.
CREATE TABLE devices (
    user_id      TEXT   NOT NULL REFERENCES users (user_id), -- owner
    device_id    TEXT   NOT NULL,                            -- client-chosen or generated device ID
    display_name TEXT,                                       -- human-readable name, NULL if none
    created_ts   BIGINT NOT NULL,                            -- login time, ms since epoch
    last_seen_ts BIGINT,                                     -- last authenticated request, ms (updated at most once a minute)
    last_seen_ip TEXT,                                       -- client address of that request
    PRIMARY KEY (user_id, device_id)
);

-- Access tokens, each with its optional refresh token. Only SHA-256 hashes are
-- stored: a copy of the database does not let anyone act as a user.
CREATE TABLE access_tokens (
    id                 BIGSERIAL PRIMARY KEY,  -- internal id, referenced by replaces_id
    token_hash         BYTEA  NOT NULL UNIQUE, -- SHA-256 of the access token
    refresh_token_hash BYTEA  UNIQUE,          -- SHA-256 of the refresh token, NULL if the client did not ask for one
    user_id            TEXT   NOT NULL,        -- owner
    device_id          TEXT   NOT NULL,        -- device the token belongs to
    expires_ts         BIGINT,                 -- expiry of the access token, ms; NULL = never
    used               BOOLEAN NOT NULL DEFAULT FALSE, -- the access or refresh token has been used at least once
    replaces_id        BIGINT REFERENCES access_tokens (id) ON DELETE SET NULL, -- the pair this one was refreshed from,
                                               -- kept valid until this pair is first used (spec: /refresh)
    created_ts         BIGINT NOT NULL,        -- issue time, ms
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

-- User-interactive authentication sessions (spec: "User-Interactive Authentication API").
CREATE TABLE uia_sessions (
    session_id         TEXT   PRIMARY KEY,           -- opaque random session ID given to the client
    operation          TEXT   NOT NULL,              -- what the session authorises ("register", "DELETE /devices"...); a session is never valid for another
    user_id            TEXT,                         -- the user authenticating; NULL during registration
    completed          TEXT[] NOT NULL DEFAULT '{}', -- stages completed so far
    registration_token TEXT,                         -- token validated by m.login.registration_token, spent when registration completes
    created_ts         BIGINT NOT NULL               -- start time, ms; sessions expire after auth.uia_session_lifetime
);
CREATE INDEX uia_sessions_created ON uia_sessions (created_ts); -- purge of expired sessions

-- Registration tokens for registration.mode = token, managed with `chappe registration-token`.
CREATE TABLE registration_tokens (
    token        TEXT    PRIMARY KEY,       -- the token itself (a shared secret handed to new staff)
    uses_allowed INTEGER,                   -- registrations it may complete; NULL = unlimited
    completed    INTEGER NOT NULL DEFAULT 0, -- registrations completed with it
    expiry_ts    BIGINT,                    -- ms after which it is refused; NULL = never
    created_ts   BIGINT  NOT NULL           -- creation time, ms
);

-- Nonces of the Synapse-compatible shared-secret registration, each usable once.
CREATE TABLE shared_secret_nonces (
    nonce      TEXT   PRIMARY KEY, -- random nonce handed out by GET /_synapse/admin/v1/register
    created_ts BIGINT NOT NULL     -- issue time, ms; nonces older than a minute are refused and purged
);
