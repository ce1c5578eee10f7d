package sqlstore

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// RemoteMedia is a row of remote_media: what we hold of another server's
// mxc://Origin/MediaID. The content fields are zero until the content is
// fetched (FetchedTS nil).
type RemoteMedia struct {
	Origin      string
	MediaID     string
	ContentType string
	UploadName  string
	SizeBytes   int64
	SHA256      []byte
	CreatedTS   int64
	// AccessedTS is when it was last served or fetched (ms), at the
	// precision media chooses.
	AccessedTS    int64
	FetchedTS     *int64
	QuarantinedTS *int64
	QuarantinedBy string
}

const remoteMediaColumns = `
origin, media_id, COALESCE(content_type, ''), COALESCE(upload_name, ''), COALESCE(size_bytes, 0), sha256,
created_ts, accessed_ts, fetched_ts, quarantined_ts, COALESCE(quarantined_by, '')`

func scanRemoteMedia(row pgx.Row) (RemoteMedia, error) {
	var m RemoteMedia
	err := row.Scan(&m.Origin, &m.MediaID, &m.ContentType, &m.UploadName, &m.SizeBytes, &m.SHA256,
		&m.CreatedTS, &m.AccessedTS, &m.FetchedTS, &m.QuarantinedTS, &m.QuarantinedBy)
	return m, notFound(err)
}

const selectRemoteMediaSQL = `SELECT ` + remoteMediaColumns + ` FROM remote_media WHERE origin = $1 AND media_id = $2`

// GetRemoteMedia returns what we hold of mxc://origin/mediaID, ErrNotFound if nothing.
func (q *Queries) GetRemoteMedia(ctx context.Context, origin, mediaID string) (RemoteMedia, error) {
	return scanRemoteMedia(q.q.QueryRow(ctx, selectRemoteMediaSQL, origin, mediaID))
}

const putRemoteMediaSQL = `
INSERT INTO remote_media (origin, media_id, content_type, upload_name, size_bytes, sha256, created_ts, fetched_ts, accessed_ts)
VALUES ($1, $2, NULLIF($3, ''), NULLIF($4, ''), $5, $6, $7, $7, $7)
ON CONFLICT (origin, media_id) DO UPDATE SET
    content_type = EXCLUDED.content_type, upload_name = EXCLUDED.upload_name, size_bytes = EXCLUDED.size_bytes,
    sha256 = EXCLUDED.sha256, fetched_ts = EXCLUDED.fetched_ts, accessed_ts = EXCLUDED.accessed_ts
RETURNING ` + remoteMediaColumns

// PutRemoteMedia records the fetched content of a remote media (m.FetchedTS
// is the fetch time) and returns the row as it now is: a quarantine made
// meanwhile is kept, and shows in the result.
func (q *Queries) PutRemoteMedia(ctx context.Context, m RemoteMedia) (RemoteMedia, error) {
	return scanRemoteMedia(q.q.QueryRow(ctx, putRemoteMediaSQL, m.Origin, m.MediaID, m.ContentType, m.UploadName,
		m.SizeBytes, m.SHA256, *m.FetchedTS))
}

const ensureRemoteMediaSQL = `
INSERT INTO remote_media (origin, media_id, created_ts, accessed_ts) VALUES ($1, $2, $3, $3)
ON CONFLICT (origin, media_id) DO UPDATE SET accessed_ts = GREATEST(remote_media.accessed_ts, EXCLUDED.accessed_ts)`

// EnsureRemoteMedia makes sure mxc://origin/mediaID has a row (without
// content if it is new), for its thumbnails to hang on, accessed at nowMs.
func (q *Queries) EnsureRemoteMedia(ctx context.Context, origin, mediaID string, nowMs int64) error {
	_, err := q.q.Exec(ctx, ensureRemoteMediaSQL, origin, mediaID, nowMs)
	return err
}

const quarantineRemoteMediaSQL = `
INSERT INTO remote_media (origin, media_id, created_ts, accessed_ts, quarantined_ts, quarantined_by) VALUES ($1, $2, $3, $3, $3, $4)
ON CONFLICT (origin, media_id) DO UPDATE SET
    quarantined_ts = COALESCE(remote_media.quarantined_ts, EXCLUDED.quarantined_ts),
    quarantined_by = COALESCE(remote_media.quarantined_by, EXCLUDED.quarantined_by)`

// QuarantineRemoteMedia marks mxc://origin/mediaID as quarantined, whether
// or not anything of it is cached: a media not fetched yet never will be.
func (q *Queries) QuarantineRemoteMedia(ctx context.Context, origin, mediaID, byUserID string, nowMs int64) error {
	_, err := q.q.Exec(ctx, quarantineRemoteMediaSQL, origin, mediaID, nowMs, byUserID)
	return err
}

const remoteMediaFileHashesSQL = `
SELECT sha256 FROM remote_media WHERE origin = $1 AND media_id = $2 AND sha256 IS NOT NULL
UNION
SELECT sha256 FROM remote_media_thumbnails WHERE origin = $1 AND media_id = $2`

// RemoteMediaFileHashes lists the SHA-256 of every file a remote media
// uses: its content and its thumbnails.
func (q *Queries) RemoteMediaFileHashes(ctx context.Context, origin, mediaID string) ([][]byte, error) {
	rows, err := q.q.Query(ctx, remoteMediaFileHashesSQL, origin, mediaID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[[]byte])
}

// deleteRemoteMediaSQL drops the thumbnails, and the row unless it is
// quarantined; a quarantined row loses its content but stays, so that the
// media is never fetched again. It counts the rows dropped or emptied.
const deleteRemoteMediaSQL = `
WITH thumbnails AS (
    DELETE FROM remote_media_thumbnails WHERE origin = $1 AND media_id = $2
), emptied AS (
    UPDATE remote_media SET content_type = NULL, upload_name = NULL, size_bytes = NULL, sha256 = NULL, fetched_ts = NULL
    WHERE origin = $1 AND media_id = $2 AND quarantined_ts IS NOT NULL RETURNING 1
), dropped AS (
    DELETE FROM remote_media WHERE origin = $1 AND media_id = $2 AND quarantined_ts IS NULL RETURNING 1
)
SELECT (SELECT COUNT(*) FROM emptied) + (SELECT COUNT(*) FROM dropped)`

// DeleteRemoteMedia drops what the cache holds of a remote media, its
// thumbnails included; its quarantine, if any, stays. ErrNotFound if
// nothing of it was held.
func (q *Queries) DeleteRemoteMedia(ctx context.Context, origin, mediaID string) error {
	var n int
	if err := q.q.QueryRow(ctx, deleteRemoteMediaSQL, origin, mediaID).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// RemoteThumbnail is a row of remote_media_thumbnails: a Thumbnail of
// another server's media.
type RemoteThumbnail struct {
	Origin string
	Thumbnail
}

const selectRemoteThumbnailSQL = `
SELECT origin, media_id, width, height, method, content_type, size_bytes, sha256, created_ts
FROM remote_media_thumbnails WHERE origin = $1 AND media_id = $2 AND width = $3 AND height = $4 AND method = $5`

// GetRemoteThumbnail returns the cached thumbnail of mxc://origin/mediaID
// for this box and method, ErrNotFound if none.
func (q *Queries) GetRemoteThumbnail(ctx context.Context, origin, mediaID string, width, height int, method string) (RemoteThumbnail, error) {
	var t RemoteThumbnail
	err := q.q.QueryRow(ctx, selectRemoteThumbnailSQL, origin, mediaID, width, height, method).Scan(
		&t.Origin, &t.MediaID, &t.Width, &t.Height, &t.Method, &t.ContentType, &t.SizeBytes, &t.SHA256, &t.CreatedTS)
	return t, notFound(err)
}

const insertRemoteThumbnailSQL = `
INSERT INTO remote_media_thumbnails (origin, media_id, width, height, method, content_type, size_bytes, sha256, created_ts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (origin, media_id, width, height, method) DO NOTHING`

// InsertRemoteThumbnail records a fetched thumbnail; its media's row must
// exist (EnsureRemoteMedia). A concurrent insert of the same one wins silently.
func (q *Queries) InsertRemoteThumbnail(ctx context.Context, t RemoteThumbnail) error {
	_, err := q.q.Exec(ctx, insertRemoteThumbnailSQL, t.Origin, t.MediaID, t.Width, t.Height, t.Method,
		t.ContentType, t.SizeBytes, t.SHA256, t.CreatedTS)
	return err
}

const touchRemoteMediaSQL = `UPDATE remote_media SET accessed_ts = $3 WHERE origin = $1 AND media_id = $2 AND accessed_ts < $3`

// TouchRemoteMedia records that mxc://origin/mediaID was served at nowMs.
func (q *Queries) TouchRemoteMedia(ctx context.Context, origin, mediaID string, nowMs int64) error {
	_, err := q.q.Exec(ctx, touchRemoteMediaSQL, origin, mediaID, nowMs)
	return err
}

// unusedRemoteMediaSQL uses the partial index remote_media_accessed
// (migration 016).
const unusedRemoteMediaSQL = `
SELECT origin, media_id FROM remote_media
WHERE accessed_ts < $1 AND quarantined_ts IS NULL
ORDER BY accessed_ts LIMIT $2`

// UnusedRemoteMedia lists at most limit remote media, not quarantined, last
// served before beforeMs, the least recently served first: each is
// [origin, media ID].
func (q *Queries) UnusedRemoteMedia(ctx context.Context, beforeMs int64, limit int) ([][2]string, error) {
	rows, err := q.q.Query(ctx, unusedRemoteMediaSQL, beforeMs, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) ([2]string, error) {
		var m [2]string
		err := row.Scan(&m[0], &m[1])
		return m, err
	})
}

// deleteUnusedRemoteMediaSQL drops the row (and, by cascade, its
// thumbnails) only if it is still unused: it may have been served since
// it was listed.
const deleteUnusedRemoteMediaSQL = `
DELETE FROM remote_media WHERE origin = $1 AND media_id = $2 AND accessed_ts < $3 AND quarantined_ts IS NULL`

// DeleteUnusedRemoteMedia drops mxc://origin/mediaID from the cache, its
// thumbnails included, if it was last served before beforeMs and is not
// quarantined; ErrNotFound otherwise.
func (q *Queries) DeleteUnusedRemoteMedia(ctx context.Context, origin, mediaID string, beforeMs int64) error {
	tag, err := q.q.Exec(ctx, deleteUnusedRemoteMediaSQL, origin, mediaID, beforeMs)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}
