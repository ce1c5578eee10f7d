-- The cache of other servers' media: what our users downloaded through
-- GET /_matrix/client/v1/media/download|thumbnail/{serverName}/{mediaId}
-- for a serverName that is not ours, fetched once over federation
-- (GET /_matrix/federation/v1/media/download|thumbnail/{mediaId}) and then
-- served from here. The bytes live with the local media's, under the media
-- directory, named by their SHA-256, so a file is stored once whoever
-- uploaded it. Remote media belongs to no local user: it counts in no quota.
-- Spec: server-server-api.md, "Content Repository";
-- client-server-api/modules/content_repo.md.

-- One row per remote mxc:// URI we hold something of: its content, some of
-- its thumbnails, or only an administrator's quarantine (which then stops
-- it from ever being fetched).
CREATE TABLE remote_media (
    origin         TEXT   NOT NULL, -- the server name of mxc://origin/media_id: the server that has the media
    media_id       TEXT   NOT NULL, -- the media ID of mxc://origin/media_id (A-Z a-z 0-9 _ -)
    content_type   TEXT,            -- Content-Type of the content part the origin sent, normalised; NULL until fetched
    upload_name    TEXT,            -- filename of that part's Content-Disposition; NULL if none (or not fetched)
    size_bytes     BIGINT,          -- length of the content; NULL until fetched
    sha256         BYTEA,           -- SHA-256 of the content, which names its file; NULL until fetched
    created_ts     BIGINT NOT NULL, -- when the row was made, ms since the Unix epoch
    fetched_ts     BIGINT,          -- when the content was fetched (the cache was populated), ms; NULL = not fetched
    quarantined_ts BIGINT,          -- set by an administrator's quarantine: no longer served nor fetched; NULL = served
    quarantined_by TEXT,            -- user ID of the administrator who quarantined it
    PRIMARY KEY (origin, media_id)
);
CREATE INDEX remote_media_sha256 ON remote_media (sha256); -- is a file still referenced?

-- Thumbnails of remote media, fetched from the origin on first request for a
-- box and method, then kept. A row is removed with its media.
CREATE TABLE remote_media_thumbnails (
    origin       TEXT    NOT NULL, -- as remote_media.origin
    media_id     TEXT    NOT NULL, -- as remote_media.media_id
    width        INTEGER NOT NULL, -- requested box (rounded up to a standard size) asked of the origin, pixels
    height       INTEGER NOT NULL, -- idem, pixels
    method       TEXT    NOT NULL, -- crop or scale
    content_type TEXT    NOT NULL, -- Content-Type of the thumbnail the origin sent, normalised
    size_bytes   BIGINT  NOT NULL, -- length of the thumbnail file
    sha256       BYTEA   NOT NULL, -- SHA-256 of the thumbnail, which names its file
    created_ts   BIGINT  NOT NULL, -- fetch time, ms since the Unix epoch
    PRIMARY KEY (origin, media_id, width, height, method),
    FOREIGN KEY (origin, media_id) REFERENCES remote_media (origin, media_id) ON DELETE CASCADE
);
CREATE INDEX remote_media_thumbnails_sha256 ON remote_media_thumbnails (sha256); -- is a file still referenced?
