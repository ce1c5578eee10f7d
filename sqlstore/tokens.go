package sqlstore

import (
	"context"
)

// Token is a row of access_tokens.
type Token struct {
	ID               int64
	TokenHash        []byte
	RefreshTokenHash []byte // nil when the client did not ask for a refresh token
	UserID           string
	DeviceID         string
	ExpiresTS        *int64
	Used             bool
	ReplacesID       *int64
	CreatedTS        int64
}

const insertTokenSQL = `
INSERT INTO access_tokens (token_hash, refresh_token_hash, user_id, device_id, expires_ts, replaces_id, created_ts)
VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`

// InsertToken stores a new access (and refresh) token pair.
func (q *Queries) InsertToken(ctx context.Context, t Token) (int64, error) {
	var id int64
	err := q.q.QueryRow(ctx, insertTokenSQL, t.TokenHash, t.RefreshTokenHash, t.UserID, t.DeviceID, t.ExpiresTS, t.ReplacesID, t.CreatedTS).Scan(&id)
	return id, err
}

// Session is what an access token proves: a token row joined with its user
// and device.
type Session struct {
	Token
	IsAdmin     bool
	Deactivated bool
	LastSeenTS  *int64
}

// selectSessionSQL joins a token with its user and device; the WHERE clause
// says which of the two token hashes is looked up.
const selectSessionSQL = `
SELECT t.id, t.user_id, t.device_id, t.expires_ts, t.used, t.replaces_id, t.created_ts,
       u.is_admin, u.deactivated, d.last_seen_ts
FROM access_tokens t
JOIN users u ON u.user_id = t.user_id
JOIN devices d ON d.user_id = t.user_id AND d.device_id = t.device_id`

const selectSessionByAccessSQL = selectSessionSQL + ` WHERE t.token_hash = $1`

// SessionByAccessToken finds the session of an access token hash, ErrNotFound
// if no such token exists (never issued, logged out, or its device deleted).
func (q *Queries) SessionByAccessToken(ctx context.Context, hash []byte) (Session, error) {
	return q.scanSession(ctx, selectSessionByAccessSQL, hash)
}

const selectSessionByRefreshSQL = selectSessionSQL + ` WHERE t.refresh_token_hash = $1`

// SessionByRefreshToken finds the session of a refresh token hash.
func (q *Queries) SessionByRefreshToken(ctx context.Context, hash []byte) (Session, error) {
	return q.scanSession(ctx, selectSessionByRefreshSQL, hash)
}

func (q *Queries) scanSession(ctx context.Context, sql string, hash []byte) (Session, error) {
	var s Session
	err := q.q.QueryRow(ctx, sql, hash).Scan(&s.ID, &s.UserID, &s.DeviceID, &s.ExpiresTS, &s.Used, &s.ReplacesID, &s.CreatedTS,
		&s.IsAdmin, &s.Deactivated, &s.LastSeenTS)
	return s, notFound(err)
}

const markTokenUsedSQL = `UPDATE access_tokens SET used = TRUE, replaces_id = NULL WHERE id = $1`
const deleteTokenByIDSQL = `DELETE FROM access_tokens WHERE id = $1`

// MarkTokenUsed records the first use of a token pair and revokes the pair it
// was refreshed from (spec: "The old refresh token remains valid until the new
// access token or refresh token is used").
func (q *Queries) MarkTokenUsed(ctx context.Context, id int64, replacesID *int64) error {
	if _, err := q.q.Exec(ctx, markTokenUsedSQL, id); err != nil {
		return err
	}
	if replacesID != nil {
		_, err := q.q.Exec(ctx, deleteTokenByIDSQL, *replacesID)
		return err
	}
	return nil
}

// DeleteToken revokes one token pair.
func (q *Queries) DeleteToken(ctx context.Context, id int64) error {
	_, err := q.q.Exec(ctx, deleteTokenByIDSQL, id)
	return err
}
