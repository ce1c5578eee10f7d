// Package sqlstore is the only package with SQL: the pgx pool, the migrations
// embedded in the binary, and every query, each as a named constant next to
// the function that runs it.
package sqlstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// ErrNotFound is returned when a row that was asked for does not exist.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when a row that must be unique already exists.
var ErrConflict = errors.New("already exists")

// querier is what both the pool and a transaction offer.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Queries runs queries on the pool or inside a transaction.
type Queries struct {
	q querier
	// afterCommit holds the functions to run once the transaction commits;
	// nil outside a transaction.
	afterCommit *[]func()
}

// AfterCommit runs fn once what q wrote is committed: after the commit of
// q's transaction (never if it rolls back), or at once for queries on the
// pool, which commit as they run. It is how an in-transaction writer wakes
// a worker that must not read the rows before they are visible. fn runs on
// the goroutine that called InTx and must not block.
func (q *Queries) AfterCommit(fn func()) {
	if q.afterCommit == nil {
		fn()
		return
	}
	*q.afterCommit = append(*q.afterCommit, fn)
}

// Store is the database: a pool plus the queries run on it.
type Store struct {
	Queries
	pool *pgxpool.Pool
}

// Open connects to url, applies the pending migrations and returns the store.
func Open(ctx context.Context, url string, maxConns int) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = int32(maxConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	if err := migrateUp(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	return &Store{Queries: Queries{q: pool}, pool: pool}, nil
}

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Pool exposes the pool to the few places that need a raw connection (LISTEN).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// InTx runs fn in one transaction, committed if fn returns nil; then it runs
// the functions given to AfterCommit, in order. Under FlushLater, the
// commit does not wait for the disk, and the hooks wait for the flush.
func (s *Store) InTx(ctx context.Context, fn func(q *Queries) error) error {
	var hooks []func()
	later, _ := ctx.Value(flushLaterKey{}).(*flushLater)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if later != nil {
			if _, err := tx.Exec(ctx, asyncCommitSQL); err != nil {
				return err
			}
		}
		return fn(&Queries{q: tx, afterCommit: &hooks})
	})
	if err != nil {
		return err
	}
	for _, h := range hooks {
		WhenDurable(ctx, h)
	}
	return nil
}

type flushLaterKey struct{}

// flushLater collects what transactions under FlushLater left for the
// flush.
type flushLater struct {
	mu    sync.Mutex
	hooks []func()
}

// WhenDurable runs fn once what the transactions of ctx committed is on
// disk: at once, or, under FlushLater, at the flush. The roomserver makes
// new stream positions visible this way, so that no client is shown an
// event that a crash could still take back.
func WhenDurable(ctx context.Context, fn func()) {
	later, _ := ctx.Value(flushLaterKey{}).(*flushLater)
	if later == nil {
		fn()
		return
	}
	later.mu.Lock()
	later.hooks = append(later.hooks, fn)
	later.mu.Unlock()
}

const asyncCommitSQL = `SET LOCAL synchronous_commit = off`

// FlushLater marks the transactions run with the returned context as made
// durable by a later one: they commit without waiting for the write-ahead
// log to reach the disk, and the caller must run a normal (synchronous)
// write, then call flush, before it acknowledges anything. PostgreSQL
// flushes the log in order, so that write's commit makes every earlier
// commit durable too. flush runs what those transactions left for then
// (their AfterCommit hooks, WhenDurable work), in order; it must be called
// whatever happened, once. Were the server to crash before the synchronous
// write, what was committed since may be lost, but nothing of it was
// acknowledged nor shown: the sender sends it again.
//
// It is for the PDUs of one received federation transaction, whose
// acknowledgement is the transaction's record (one disk flush per
// transaction instead of one per PDU).
func FlushLater(ctx context.Context) (context.Context, func()) {
	later := &flushLater{}
	flush := func() {
		later.mu.Lock()
		hooks := later.hooks
		later.hooks = nil
		later.mu.Unlock()
		for _, h := range hooks {
			h()
		}
	}
	return context.WithValue(ctx, flushLaterKey{}, later), flush
}

// migrateUp applies the embedded migrations, under tern's advisory lock so that
// several processes starting at once do not race.
func migrateUp(ctx context.Context, pool *pgxpool.Pool) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	defer conn.Release()
	m, err := migrate.NewMigrator(ctx, conn.Conn(), "schema_version")
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return err
	}
	if err := m.LoadMigrations(sub); err != nil {
		return fmt.Errorf("loading migrations: %w", err)
	}
	if err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("applying migrations: %w", err)
	}
	return nil
}

// isUniqueViolation tells whether err is PostgreSQL's unique_violation.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

func notFound(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	return err
}
