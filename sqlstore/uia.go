package sqlstore

import (
	"context"
)

// UIASession is a row of uia_sessions.
type UIASession struct {
	SessionID         string
	Operation         string
	UserID            *string
	Completed         []string
	RegistrationToken *string
	CreatedTS         int64
}

const insertUIASessionSQL = `
INSERT INTO uia_sessions (session_id, operation, user_id, created_ts) VALUES ($1, $2, $3, $4)`

// CreateUIASession stores a new session with no stage completed.
func (q *Queries) CreateUIASession(ctx context.Context, s UIASession) error {
	_, err := q.q.Exec(ctx, insertUIASessionSQL, s.SessionID, s.Operation, s.UserID, s.CreatedTS)
	return err
}

const selectUIASessionSQL = `
SELECT session_id, operation, user_id, completed, registration_token, created_ts
FROM uia_sessions WHERE session_id = $1`

// GetUIASession returns the session, ErrNotFound if unknown.
func (q *Queries) GetUIASession(ctx context.Context, id string) (UIASession, error) {
	var s UIASession
	err := q.q.QueryRow(ctx, selectUIASessionSQL, id).Scan(&s.SessionID, &s.Operation, &s.UserID, &s.Completed, &s.RegistrationToken, &s.CreatedTS)
	return s, notFound(err)
}

const completeUIAStageSQL = `
UPDATE uia_sessions
SET completed = CASE WHEN $2 = ANY(completed) THEN completed ELSE array_append(completed, $2) END,
    registration_token = COALESCE($3, registration_token)
WHERE session_id = $1`

// CompleteUIAStage records a completed stage (and the registration token it
// validated, if any).
func (q *Queries) CompleteUIAStage(ctx context.Context, id, stage string, regToken *string) error {
	_, err := q.q.Exec(ctx, completeUIAStageSQL, id, stage, regToken)
	return err
}

const deleteUIASessionSQL = `DELETE FROM uia_sessions WHERE session_id = $1 OR created_ts < $2`

// DeleteUIASession removes a finished session and every session started before
// expiredBefore.
func (q *Queries) DeleteUIASession(ctx context.Context, id string, expiredBefore int64) error {
	_, err := q.q.Exec(ctx, deleteUIASessionSQL, id, expiredBefore)
	return err
}
