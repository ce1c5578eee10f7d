package sqlstore

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// AllowlistCurrent is the row of allowlist_current: the list in force.
type AllowlistCurrent struct {
	Serial      int64
	ContentHash string
	Document    []byte
	Source      string
	AppliedTS   int64
}

// AllowlistAudit is a row of allowlist_audit.
type AllowlistAudit struct {
	ID             int64
	TS             int64
	Outcome        string // applied or refused
	Reason         string
	Federation     *string
	Serial         *int64
	ContentHash    string
	Signers        []string
	ServersAdded   []string
	ServersRemoved []string
	ServersChanged []string
	Source         string
	Document       []byte
}

const selectAllowlistCurrentSQL = `
SELECT serial, content_hash, document, source, applied_ts FROM allowlist_current`

// AllowlistCurrent returns the list in force, ErrNotFound if none was ever applied.
func (q *Queries) AllowlistCurrent(ctx context.Context) (AllowlistCurrent, error) {
	var c AllowlistCurrent
	err := q.q.QueryRow(ctx, selectAllowlistCurrentSQL).Scan(&c.Serial, &c.ContentHash, &c.Document, &c.Source, &c.AppliedTS)
	return c, notFound(err)
}

// upsertAllowlistCurrentSQL replaces the list in force only with a higher
// serial: the condition is checked by PostgreSQL on the locked row, so two
// processes applying lists at once cannot roll the serial back.
const upsertAllowlistCurrentSQL = `
INSERT INTO allowlist_current (singleton, serial, content_hash, document, source, applied_ts)
VALUES (TRUE, $1, $2, $3, $4, $5)
ON CONFLICT (singleton) DO UPDATE
SET serial = EXCLUDED.serial, content_hash = EXCLUDED.content_hash, document = EXCLUDED.document,
    source = EXCLUDED.source, applied_ts = EXCLUDED.applied_ts
WHERE allowlist_current.serial < EXCLUDED.serial`

// ApplyAllowlist makes c the list in force and appends a to the audit trail,
// in one transaction, if c's serial is above the stored one. It returns
// false, having written nothing, otherwise.
func (s *Store) ApplyAllowlist(ctx context.Context, c AllowlistCurrent, a AllowlistAudit) (bool, error) {
	applied := false
	err := s.InTx(ctx, func(q *Queries) error {
		tag, err := q.q.Exec(ctx, upsertAllowlistCurrentSQL, c.Serial, c.ContentHash, c.Document, c.Source, c.AppliedTS)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		applied = true
		return q.InsertAllowlistAudit(ctx, a)
	})
	if err != nil {
		return false, err
	}
	return applied, nil
}

const insertAllowlistAuditSQL = `
INSERT INTO allowlist_audit (ts, outcome, reason, federation, serial, content_hash, signers,
                             servers_added, servers_removed, servers_changed, source, document)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`

// InsertAllowlistAudit appends a row to the audit trail.
func (q *Queries) InsertAllowlistAudit(ctx context.Context, a AllowlistAudit) error {
	_, err := q.q.Exec(ctx, insertAllowlistAuditSQL, a.TS, a.Outcome, a.Reason, a.Federation, a.Serial, a.ContentHash,
		nonNil(a.Signers), nonNil(a.ServersAdded), nonNil(a.ServersRemoved), nonNil(a.ServersChanged), a.Source, a.Document)
	return err
}

// nonNil turns a nil slice into an empty one: the array columns are NOT NULL.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

const selectAllowlistAuditSQL = `
SELECT id, ts, outcome, reason, federation, serial, content_hash, signers,
       servers_added, servers_removed, servers_changed, source, document
FROM allowlist_audit WHERE ($1::text = '' OR outcome = $1::text) ORDER BY id DESC LIMIT $2`

// RecentAllowlistAudit returns the latest audit rows, newest first; outcome
// "" means both applied and refused.
func (q *Queries) RecentAllowlistAudit(ctx context.Context, outcome string, limit int) ([]AllowlistAudit, error) {
	rows, err := q.q.Query(ctx, selectAllowlistAuditSQL, outcome, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (AllowlistAudit, error) {
		var a AllowlistAudit
		err := row.Scan(&a.ID, &a.TS, &a.Outcome, &a.Reason, &a.Federation, &a.Serial, &a.ContentHash, &a.Signers,
			&a.ServersAdded, &a.ServersRemoved, &a.ServersChanged, &a.Source, &a.Document)
		return a, err
	})
}

const upsertAllowlistRefreshSQL = `
INSERT INTO allowlist_refresh (singleton, refreshed_ts, result) VALUES (TRUE, $1, $2)
ON CONFLICT (singleton) DO UPDATE SET refreshed_ts = EXCLUDED.refreshed_ts, result = EXCLUDED.result`

// SaveAllowlistRefresh records the outcome of the latest refresh (result is JSON).
func (q *Queries) SaveAllowlistRefresh(ctx context.Context, ts int64, result []byte) error {
	_, err := q.q.Exec(ctx, upsertAllowlistRefreshSQL, ts, string(result))
	return err
}

const selectAllowlistRefreshSQL = `SELECT refreshed_ts, result::text FROM allowlist_refresh`

// AllowlistRefresh returns the latest refresh's time and JSON result,
// ErrNotFound if there was none.
func (q *Queries) AllowlistRefresh(ctx context.Context) (int64, []byte, error) {
	var ts int64
	var result string
	err := q.q.QueryRow(ctx, selectAllowlistRefreshSQL).Scan(&ts, &result)
	return ts, []byte(result), notFound(err)
}
