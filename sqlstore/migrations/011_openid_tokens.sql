-- OpenID tokens: what a user hands a third-party service so that it can ask
-- this server, through GET /_matrix/federation/v1/openid/userinfo, who the
-- user is. A token proves nothing else: it opens no client API endpoint.
-- Spec: client-server-api/_index.md, "OpenID" (POST
-- /_matrix/client/v3/user/{userId}/openid/request_token) and
-- server-server-api.md, "OpenID".
--
-- Only SHA-256 hashes are stored, as for access tokens: a copy of the
-- database does not let anyone pass for a user. Tokens live an hour; each
-- new one purges the expired ones, so the table holds at most an hour of
-- requests.
CREATE TABLE openid_tokens (
    token_hash BYTEA  PRIMARY KEY,                         -- SHA-256 of the token
    user_id    TEXT   NOT NULL REFERENCES users (user_id), -- the user it names (a local account)
    created_ts BIGINT NOT NULL,                            -- issue time, ms since the Unix epoch
    expires_ts BIGINT NOT NULL                             -- ms after which it is refused and purged
);
CREATE INDEX openid_tokens_expires ON openid_tokens (expires_ts); -- purge of expired tokens
