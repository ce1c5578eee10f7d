package sqlstore

import "context"

// OpenIDToken is a row of openid_tokens.
type OpenIDToken struct {
	TokenHash []byte
	UserID    string
	CreatedTS int64
	ExpiresTS int64
}

const purgeOpenIDTokensSQL = `DELETE FROM openid_tokens WHERE expires_ts <= $1`
const insertOpenIDTokenSQL = `
INSERT INTO openid_tokens (token_hash, user_id, created_ts, expires_ts) VALUES ($1, $2, $3, $4)`

// InsertOpenIDToken stores a new OpenID token and purges the tokens expired
// at its issue time, so the table never outgrows the tokens still valid.
func (q *Queries) InsertOpenIDToken(ctx context.Context, t OpenIDToken) error {
	if _, err := q.q.Exec(ctx, purgeOpenIDTokensSQL, t.CreatedTS); err != nil {
		return err
	}
	_, err := q.q.Exec(ctx, insertOpenIDTokenSQL, t.TokenHash, t.UserID, t.CreatedTS, t.ExpiresTS)
	return err
}

const selectOpenIDUserSQL = `
SELECT t.user_id
FROM openid_tokens t
JOIN users u ON u.user_id = t.user_id
WHERE t.token_hash = $1 AND t.expires_ts > $2 AND NOT u.deactivated`

// OpenIDTokenUser is the user an OpenID token hash names at now (ms):
// ErrNotFound for a token never issued, expired, or of a deactivated user.
func (q *Queries) OpenIDTokenUser(ctx context.Context, hash []byte, now int64) (string, error) {
	var userID string
	err := q.q.QueryRow(ctx, selectOpenIDUserSQL, hash, now).Scan(&userID)
	return userID, notFound(err)
}
