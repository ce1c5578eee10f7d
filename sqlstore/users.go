package sqlstore

import (
	"context"
	"encoding/json"
)

// User is a row of users.
type User struct {
	UserID       string
	PasswordHash *string
	IsAdmin      bool
	Deactivated  bool
	CreatedTS    int64
}

const insertUserSQL = `
INSERT INTO users (user_id, password_hash, is_admin, profile, created_ts)
VALUES ($1, $2, $3, $4, $5)`

// CreateUser inserts a new account; ErrConflict if the user ID is taken
// (including by a deactivated account).
func (q *Queries) CreateUser(ctx context.Context, u User, profile map[string]any) error {
	if profile == nil {
		profile = map[string]any{}
	}
	_, err := q.q.Exec(ctx, insertUserSQL, u.UserID, u.PasswordHash, u.IsAdmin, profile, u.CreatedTS)
	if isUniqueViolation(err) {
		return ErrConflict
	}
	return err
}

const selectUserSQL = `
SELECT user_id, password_hash, is_admin, deactivated, created_ts FROM users WHERE user_id = $1`

// GetUser returns the account, ErrNotFound if there is none.
func (q *Queries) GetUser(ctx context.Context, userID string) (User, error) {
	var u User
	err := q.q.QueryRow(ctx, selectUserSQL, userID).Scan(&u.UserID, &u.PasswordHash, &u.IsAdmin, &u.Deactivated, &u.CreatedTS)
	return u, notFound(err)
}

const userExistsSQL = `SELECT EXISTS (SELECT 1 FROM users WHERE user_id = $1)`

// UserExists tells whether the user ID is taken (deactivated accounts count).
func (q *Queries) UserExists(ctx context.Context, userID string) (bool, error) {
	var ok bool
	err := q.q.QueryRow(ctx, userExistsSQL, userID).Scan(&ok)
	return ok, err
}

const setPasswordSQL = `UPDATE users SET password_hash = $2 WHERE user_id = $1 AND NOT deactivated`

// SetPasswordHash replaces the user's password hash.
func (q *Queries) SetPasswordHash(ctx context.Context, userID, hash string) error {
	tag, err := q.q.Exec(ctx, setPasswordSQL, userID, hash)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

const deactivateUserSQL = `
UPDATE users SET deactivated = TRUE, password_hash = NULL,
       profile = CASE WHEN $2 THEN '{}'::jsonb ELSE profile END
WHERE user_id = $1`

// DeactivateUser marks the account deactivated and removes its password; with
// erase, its profile too. The row stays so the user ID is never reused.
func (q *Queries) DeactivateUser(ctx context.Context, userID string, erase bool) error {
	_, err := q.q.Exec(ctx, deactivateUserSQL, userID, erase)
	return err
}

const selectProfileSQL = `SELECT profile FROM users WHERE user_id = $1`

// GetProfile returns the user's profile fields, ErrNotFound for an unknown user.
func (q *Queries) GetProfile(ctx context.Context, userID string) (map[string]json.RawMessage, error) {
	var raw []byte
	if err := q.q.QueryRow(ctx, selectProfileSQL, userID).Scan(&raw); err != nil {
		return nil, notFound(err)
	}
	out := map[string]json.RawMessage{}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// setProfileFieldSQL sets one field only if the resulting profile stays within
// $4 bytes, so the size check and the write are one atomic statement.
const setProfileFieldSQL = `
UPDATE users SET profile = jsonb_set(profile, ARRAY[$2::text], $3::jsonb, true)
WHERE user_id = $1 AND NOT deactivated
  AND octet_length(jsonb_set(profile, ARRAY[$2::text], $3::jsonb, true)::text) <= $4`

// SetProfileField sets key to value. It returns ErrNotFound for an unknown or
// deactivated user and ErrConflict if the profile would exceed maxBytes.
func (q *Queries) SetProfileField(ctx context.Context, userID, key string, value json.RawMessage, maxBytes int) error {
	tag, err := q.q.Exec(ctx, setProfileFieldSQL, userID, key, string(value), maxBytes)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	u, err := q.GetUser(ctx, userID)
	if err != nil {
		return err
	}
	if u.Deactivated {
		return ErrNotFound
	}
	return ErrConflict
}

const deleteProfileFieldSQL = `UPDATE users SET profile = profile - $2::text WHERE user_id = $1 AND NOT deactivated`

// DeleteProfileField removes key from the profile.
func (q *Queries) DeleteProfileField(ctx context.Context, userID, key string) error {
	tag, err := q.q.Exec(ctx, deleteProfileFieldSQL, userID, key)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}
