package sqlstore

import (
	"context"
)

// RegistrationToken is a row of registration_tokens.
type RegistrationToken struct {
	Token       string
	UsesAllowed *int
	Completed   int
	ExpiryTS    *int64
	CreatedTS   int64
}

// Usable tells whether the token may complete one more registration at now (ms).
func (t RegistrationToken) Usable(now int64) bool {
	if t.ExpiryTS != nil && now >= *t.ExpiryTS {
		return false
	}
	return t.UsesAllowed == nil || t.Completed < *t.UsesAllowed
}

const insertRegTokenSQL = `
INSERT INTO registration_tokens (token, uses_allowed, expiry_ts, created_ts) VALUES ($1, $2, $3, $4)`

// CreateRegistrationToken stores a new token; ErrConflict if it exists.
func (q *Queries) CreateRegistrationToken(ctx context.Context, t RegistrationToken) error {
	_, err := q.q.Exec(ctx, insertRegTokenSQL, t.Token, t.UsesAllowed, t.ExpiryTS, t.CreatedTS)
	if isUniqueViolation(err) {
		return ErrConflict
	}
	return err
}

const selectRegTokensSQL = `
SELECT token, uses_allowed, completed, expiry_ts, created_ts FROM registration_tokens ORDER BY created_ts, token`

// ListRegistrationTokens returns every token.
func (q *Queries) ListRegistrationTokens(ctx context.Context) ([]RegistrationToken, error) {
	rows, err := q.q.Query(ctx, selectRegTokensSQL)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []RegistrationToken
	for rows.Next() {
		var t RegistrationToken
		if err := rows.Scan(&t.Token, &t.UsesAllowed, &t.Completed, &t.ExpiryTS, &t.CreatedTS); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

const selectRegTokenSQL = `
SELECT token, uses_allowed, completed, expiry_ts, created_ts FROM registration_tokens WHERE token = $1`

// selectRegTokenForUpdateSQL locks the row so concurrent registrations cannot
// both spend a token's last use.
const selectRegTokenForUpdateSQL = selectRegTokenSQL + ` FOR UPDATE`

// GetRegistrationToken returns the token, ErrNotFound if unknown.
func (q *Queries) GetRegistrationToken(ctx context.Context, token string) (RegistrationToken, error) {
	return q.scanRegToken(ctx, selectRegTokenSQL, token)
}

func (q *Queries) scanRegToken(ctx context.Context, sql, token string) (RegistrationToken, error) {
	var t RegistrationToken
	err := q.q.QueryRow(ctx, sql, token).Scan(&t.Token, &t.UsesAllowed, &t.Completed, &t.ExpiryTS, &t.CreatedTS)
	return t, notFound(err)
}

const spendRegTokenSQL = `UPDATE registration_tokens SET completed = completed + 1 WHERE token = $1`

// SpendRegistrationToken counts one completed registration against the token,
// if it is still usable at now; it returns false otherwise. Run it in the
// transaction that creates the account.
func (q *Queries) SpendRegistrationToken(ctx context.Context, token string, now int64) (bool, error) {
	t, err := q.scanRegToken(ctx, selectRegTokenForUpdateSQL, token)
	if err == ErrNotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !t.Usable(now) {
		return false, nil
	}
	_, err = q.q.Exec(ctx, spendRegTokenSQL, token)
	return err == nil, err
}

const deleteRegTokenSQL = `DELETE FROM registration_tokens WHERE token = $1`

// DeleteRegistrationToken removes a token; ErrNotFound if unknown.
func (q *Queries) DeleteRegistrationToken(ctx context.Context, token string) error {
	tag, err := q.q.Exec(ctx, deleteRegTokenSQL, token)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}
