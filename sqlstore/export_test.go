package sqlstore

import "context"

// SynchronousCommit is the synchronous_commit setting in force for q.
func (q *Queries) SynchronousCommit(ctx context.Context) (string, error) {
	var v string
	err := q.q.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&v)
	return v, err
}
