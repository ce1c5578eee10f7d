-- The content repository: metadata of the files users upload and of the
-- thumbnails made from them. The bytes live under the media directory
-- (media.path, by default data_dir/media), named by their SHA-256, so that
-- identical uploads are stored once.
-- Spec: client-server-api/modules/content_repo.md.

-- One row per local mxc:// URI, created by POST /_matrix/media/v3/upload, or
-- by POST /_matrix/media/v1/create and filled later by PUT /upload/{server}/{id}.
CREATE TABLE media (
    media_id          TEXT    PRIMARY KEY,  -- the media ID of mxc://server_name/media_id: 32 random base64url characters
    user_id           TEXT    NOT NULL,     -- the uploader (or creator, for an asynchronous upload not yet filled)
    content_type      TEXT,                 -- Content-Type given at upload, checked and normalised; NULL until uploaded
    upload_name       TEXT,                 -- the filename query parameter of the upload; NULL if none was given
    size_bytes        BIGINT,               -- length of the content; NULL until uploaded
    sha256            BYTEA,                -- SHA-256 of the content, which names its file; NULL until uploaded
    created_ts        BIGINT  NOT NULL,     -- when the media ID was handed out, ms since the Unix epoch
    uploaded_ts       BIGINT,               -- when the content arrived, ms; NULL = created by /create, content still awaited
    unused_expires_ts BIGINT,               -- for an awaited upload: ms after which the media ID is dead and purged; NULL once uploaded
    quarantined_ts    BIGINT,               -- set by an administrator's quarantine: the media is no longer served; NULL = served
    quarantined_by    TEXT                  -- user ID of the administrator who quarantined it
);
CREATE INDEX media_user ON media (user_id);                                        -- quota: sum of a user's uploads
CREATE INDEX media_sha256 ON media (sha256);                                       -- is a file still referenced?
CREATE INDEX media_pending ON media (unused_expires_ts) WHERE uploaded_ts IS NULL; -- pending uploads: count and purge

-- Thumbnails, generated on first request and kept. A row is removed with its media.
CREATE TABLE media_thumbnails (
    media_id     TEXT    NOT NULL REFERENCES media (media_id) ON DELETE CASCADE, -- the image thumbnailed
    width        INTEGER NOT NULL, -- requested box the thumbnail was made for (after rounding up to a standard size), pixels
    height       INTEGER NOT NULL, -- idem, pixels
    method       TEXT    NOT NULL, -- crop or scale
    content_type TEXT    NOT NULL, -- image/png or image/jpeg
    size_bytes   BIGINT  NOT NULL, -- length of the thumbnail file
    sha256       BYTEA   NOT NULL, -- SHA-256 of the thumbnail, which names its file
    created_ts   BIGINT  NOT NULL, -- generation time, ms since the Unix epoch
    PRIMARY KEY (media_id, width, height, method)
);
CREATE INDEX media_thumbnails_sha256 ON media_thumbnails (sha256); -- is a file still referenced?
