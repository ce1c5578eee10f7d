package sqlstore

import (
	"context"
	"encoding/hex"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Media is a row of media: one local mxc:// URI. The content fields are
// zero while an asynchronous upload is awaited (UploadedTS nil).
type Media struct {
	MediaID         string
	UserID          string
	ContentType     string
	UploadName      string
	SizeBytes       int64
	SHA256          []byte
	CreatedTS       int64
	UploadedTS      *int64
	UnusedExpiresTS *int64
	QuarantinedTS   *int64
	QuarantinedBy   string
}

// Lock names for pg_advisory_xact_lock, so that the locks taken here never
// collide with another component's.
const (
	lockPrefixMediaBlob  = "chappe.media.blob:"
	lockPrefixMediaQuota = "chappe.media.quota:"
)

const advisoryLockSQL = `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`

// LockMediaBlob takes, until the end of the transaction, the lock on the
// media file with this SHA-256. Whoever creates a reference to the file or
// removes the file holds it, so a file is never deleted under a new upload.
// Only meaningful inside InTx.
func (q *Queries) LockMediaBlob(ctx context.Context, sha256 []byte) error {
	_, err := q.q.Exec(ctx, advisoryLockSQL, lockPrefixMediaBlob+hex.EncodeToString(sha256))
	return err
}

// LockMediaQuota takes, until the end of the transaction, the lock on the
// user's media quota, so two concurrent uploads cannot both fit in what is left.
func (q *Queries) LockMediaQuota(ctx context.Context, userID string) error {
	_, err := q.q.Exec(ctx, advisoryLockSQL, lockPrefixMediaQuota+userID)
	return err
}

const userMediaBytesSQL = `
SELECT COALESCE(SUM(size_bytes), 0)::BIGINT FROM media WHERE user_id = $1 AND uploaded_ts IS NOT NULL`

// UserMediaBytes is the total size of what the user has uploaded (quarantined
// media included: it still takes space until an administrator deletes it).
func (q *Queries) UserMediaBytes(ctx context.Context, userID string) (int64, error) {
	var n int64
	err := q.q.QueryRow(ctx, userMediaBytesSQL, userID).Scan(&n)
	return n, err
}

const insertMediaSQL = `
INSERT INTO media (media_id, user_id, content_type, upload_name, size_bytes, sha256, created_ts, uploaded_ts, unused_expires_ts)
VALUES ($1, $2, NULLIF($3, ''), NULLIF($4, ''), $5, $6, $7, $8, $9)`

// InsertMedia adds a media row: an uploaded file, or an awaited one (UploadedTS
// nil, UnusedExpiresTS set). ErrConflict if the media ID exists.
func (q *Queries) InsertMedia(ctx context.Context, m Media) error {
	var size *int64
	if m.UploadedTS != nil {
		size = &m.SizeBytes
	}
	_, err := q.q.Exec(ctx, insertMediaSQL, m.MediaID, m.UserID, m.ContentType, m.UploadName, size, m.SHA256,
		m.CreatedTS, m.UploadedTS, m.UnusedExpiresTS)
	if isUniqueViolation(err) {
		return ErrConflict
	}
	return err
}

const selectMediaSQL = `
SELECT media_id, user_id, COALESCE(content_type, ''), COALESCE(upload_name, ''), COALESCE(size_bytes, 0), sha256,
       created_ts, uploaded_ts, unused_expires_ts, quarantined_ts, COALESCE(quarantined_by, '')
FROM media WHERE media_id = $1`

// GetMedia returns the media row, ErrNotFound if there is none.
func (q *Queries) GetMedia(ctx context.Context, mediaID string) (Media, error) {
	return scanMedia(q.q.QueryRow(ctx, selectMediaSQL, mediaID))
}

const selectMediaForUpdateSQL = selectMediaSQL + ` FOR UPDATE`

// GetMediaForUpdate is GetMedia locking the row until the end of the transaction.
func (q *Queries) GetMediaForUpdate(ctx context.Context, mediaID string) (Media, error) {
	return scanMedia(q.q.QueryRow(ctx, selectMediaForUpdateSQL, mediaID))
}

func scanMedia(row pgx.Row) (Media, error) {
	var m Media
	err := row.Scan(&m.MediaID, &m.UserID, &m.ContentType, &m.UploadName, &m.SizeBytes, &m.SHA256,
		&m.CreatedTS, &m.UploadedTS, &m.UnusedExpiresTS, &m.QuarantinedTS, &m.QuarantinedBy)
	return m, notFound(err)
}

const completeMediaSQL = `
UPDATE media SET content_type = NULLIF($2, ''), upload_name = NULLIF($3, ''), size_bytes = $4, sha256 = $5,
       uploaded_ts = $6, unused_expires_ts = NULL
WHERE media_id = $1 AND uploaded_ts IS NULL`

// CompleteMedia fills an awaited upload with its content. ErrConflict if the
// media already has content.
func (q *Queries) CompleteMedia(ctx context.Context, m Media) error {
	tag, err := q.q.Exec(ctx, completeMediaSQL, m.MediaID, m.ContentType, m.UploadName, m.SizeBytes, m.SHA256, m.UploadedTS)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrConflict
	}
	return err
}

const countPendingMediaSQL = `
SELECT COUNT(*) FROM media WHERE user_id = $1 AND uploaded_ts IS NULL AND unused_expires_ts > $2`

// CountPendingMedia is the number of the user's awaited uploads not yet expired at nowMs.
func (q *Queries) CountPendingMedia(ctx context.Context, userID string, nowMs int64) (int, error) {
	var n int
	err := q.q.QueryRow(ctx, countPendingMediaSQL, userID, nowMs).Scan(&n)
	return n, err
}

const purgeExpiredMediaSQL = `DELETE FROM media WHERE uploaded_ts IS NULL AND unused_expires_ts <= $1`

// PurgeExpiredPendingMedia deletes the awaited uploads that expired at or
// before nowMs. They have no file, so nothing else needs cleaning.
func (q *Queries) PurgeExpiredPendingMedia(ctx context.Context, nowMs int64) error {
	_, err := q.q.Exec(ctx, purgeExpiredMediaSQL, nowMs)
	return err
}

const quarantineMediaSQL = `
UPDATE media SET quarantined_ts = COALESCE(quarantined_ts, $2), quarantined_by = COALESCE(quarantined_by, $3)
WHERE media_id = $1`

// QuarantineMedia marks the media as quarantined; ErrNotFound if it does not exist.
func (q *Queries) QuarantineMedia(ctx context.Context, mediaID, byUserID string, nowMs int64) error {
	tag, err := q.q.Exec(ctx, quarantineMediaSQL, mediaID, nowMs, byUserID)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

const mediaFileHashesSQL = `
SELECT sha256 FROM media WHERE media_id = $1 AND sha256 IS NOT NULL
UNION
SELECT sha256 FROM media_thumbnails WHERE media_id = $1`

// MediaFileHashes lists the SHA-256 of every file the media uses: its
// content and its thumbnails.
func (q *Queries) MediaFileHashes(ctx context.Context, mediaID string) ([][]byte, error) {
	rows, err := q.q.Query(ctx, mediaFileHashesSQL, mediaID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[[]byte])
}

const deleteMediaSQL = `DELETE FROM media WHERE media_id = $1`

// DeleteMedia deletes the media row and, by cascade, its thumbnails.
// ErrNotFound if it did not exist.
func (q *Queries) DeleteMedia(ctx context.Context, mediaID string) error {
	tag, err := q.q.Exec(ctx, deleteMediaSQL, mediaID)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

const mediaBlobReferencedSQL = `
SELECT EXISTS (SELECT 1 FROM media WHERE sha256 = $1) OR EXISTS (SELECT 1 FROM media_thumbnails WHERE sha256 = $1)
    OR EXISTS (SELECT 1 FROM remote_media WHERE sha256 = $1) OR EXISTS (SELECT 1 FROM remote_media_thumbnails WHERE sha256 = $1)`

// MediaBlobReferenced tells whether any media or thumbnail, local or cached
// from another server, still uses the file.
func (q *Queries) MediaBlobReferenced(ctx context.Context, sha256 []byte) (bool, error) {
	var ok bool
	err := q.q.QueryRow(ctx, mediaBlobReferencedSQL, sha256).Scan(&ok)
	return ok, err
}

// Thumbnail is a row of media_thumbnails.
type Thumbnail struct {
	MediaID     string
	Width       int
	Height      int
	Method      string
	ContentType string
	SizeBytes   int64
	SHA256      []byte
	CreatedTS   int64
}

const selectThumbnailSQL = `
SELECT media_id, width, height, method, content_type, size_bytes, sha256, created_ts
FROM media_thumbnails WHERE media_id = $1 AND width = $2 AND height = $3 AND method = $4`

// GetThumbnail returns the stored thumbnail for this box and method, ErrNotFound if none.
func (q *Queries) GetThumbnail(ctx context.Context, mediaID string, width, height int, method string) (Thumbnail, error) {
	var t Thumbnail
	err := q.q.QueryRow(ctx, selectThumbnailSQL, mediaID, width, height, method).Scan(
		&t.MediaID, &t.Width, &t.Height, &t.Method, &t.ContentType, &t.SizeBytes, &t.SHA256, &t.CreatedTS)
	return t, notFound(err)
}

const insertThumbnailSQL = `
INSERT INTO media_thumbnails (media_id, width, height, method, content_type, size_bytes, sha256, created_ts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (media_id, width, height, method) DO NOTHING`

// InsertThumbnail records a generated thumbnail. A concurrent insert of the
// same thumbnail wins silently. ErrNotFound if the media was deleted meanwhile.
func (q *Queries) InsertThumbnail(ctx context.Context, t Thumbnail) error {
	_, err := q.q.Exec(ctx, insertThumbnailSQL, t.MediaID, t.Width, t.Height, t.Method, t.ContentType, t.SizeBytes, t.SHA256, t.CreatedTS)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23503" { // foreign_key_violation
		return ErrNotFound
	}
	return err
}
