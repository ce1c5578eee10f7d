package sqlstore

import "context"

// insertFilterSQL numbers filters per user; the row lock of the max is not
// needed because the primary key refuses a duplicate, which the caller retries.
const insertFilterSQL = `
INSERT INTO sync_filters (user_id, filter_id, filter, created_ts)
SELECT $1, COALESCE(max(filter_id), -1) + 1, $2, $3 FROM sync_filters WHERE user_id = $1
RETURNING filter_id`

// InsertFilter stores a filter and returns its per-user ID.
func (q *Queries) InsertFilter(ctx context.Context, userID string, filter []byte, now int64) (int64, error) {
	var id int64
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		err = q.q.QueryRow(ctx, insertFilterSQL, userID, string(filter), now).Scan(&id)
		if !isUniqueViolation(err) {
			break
		}
	}
	return id, err
}

const selectFilterSQL = `SELECT filter FROM sync_filters WHERE user_id = $1 AND filter_id = $2`

// GetFilter returns a stored filter, ErrNotFound if unknown.
func (q *Queries) GetFilter(ctx context.Context, userID string, filterID int64) ([]byte, error) {
	var f []byte
	err := q.q.QueryRow(ctx, selectFilterSQL, userID, filterID).Scan(&f)
	return f, notFound(err)
}
