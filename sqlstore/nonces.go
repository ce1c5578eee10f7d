package sqlstore

import "context"

const insertNonceSQL = `INSERT INTO shared_secret_nonces (nonce, created_ts) VALUES ($1, $2)`
const purgeNoncesSQL = `DELETE FROM shared_secret_nonces WHERE created_ts < $1`

// InsertNonce stores a fresh shared-secret registration nonce and purges the
// ones issued before expiredBefore, so the table stays small.
func (q *Queries) InsertNonce(ctx context.Context, nonce string, now, expiredBefore int64) error {
	if _, err := q.q.Exec(ctx, purgeNoncesSQL, expiredBefore); err != nil {
		return err
	}
	_, err := q.q.Exec(ctx, insertNonceSQL, nonce, now)
	return err
}

const consumeNonceSQL = `DELETE FROM shared_secret_nonces WHERE nonce = $1 AND created_ts >= $2`

// ConsumeNonce deletes the nonce and tells whether it existed and was issued
// at or after notBefore. A nonce can be consumed only once.
func (q *Queries) ConsumeNonce(ctx context.Context, nonce string, notBefore int64) (bool, error) {
	tag, err := q.q.Exec(ctx, consumeNonceSQL, nonce, notBefore)
	return err == nil && tag.RowsAffected() == 1, err
}
