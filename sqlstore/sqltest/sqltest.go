// Package sqltest gives each test package its own real PostgreSQL database.
//
// The server is CHAPPE_TEST_DATABASE_URL when set (a URL to a database on a
// server where the role may CREATE DATABASE, e.g. the one .ci/run starts);
// otherwise a private cluster is started for the test process with localpg,
// exactly as `chappe serve` does by default. Use Main in TestMain so the
// database is dropped and the cluster stopped when the package's tests end.
package sqltest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"chappe/sqlstore"
	"chappe/sqlstore/localpg"
)

var (
	once     sync.Once
	dbURL    string
	adminURL string
	dbName   string
	cluster  *localpg.Cluster
	tmpDir   string
	setupErr error
)

// Main runs the package's tests, then drops the package database and stops
// the private cluster if one was started.
func Main(m *testing.M) {
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// URL returns the connection URL of this package's database, creating it (and
// the server, if needed) on first use.
func URL(t testing.TB) string {
	t.Helper()
	once.Do(setup)
	if setupErr != nil {
		t.Fatalf("test database: %v", setupErr)
	}
	return dbURL
}

// AdminURL returns a URL to the server's maintenance database, for tests that
// create databases of their own (several servers, each with its own database).
func AdminURL(t testing.TB) string {
	URL(t)
	return adminURL
}

// NewDatabase creates an extra empty database on the test server and returns
// its URL; it is dropped when the package's tests end.
func NewDatabase(t testing.TB, prefix string) string {
	t.Helper()
	URL(t)
	name := prefix + "_" + randomSuffix()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := localpg.CreateDatabase(ctx, adminURL, name); err != nil {
		t.Fatalf("creating database %s: %v", name, err)
	}
	extraDBs.Lock()
	extraDBs.names = append(extraDBs.names, name)
	extraDBs.Unlock()
	return withDatabase(adminURL, name)
}

var extraDBs struct {
	sync.Mutex
	names []string
}

// Store opens the package database with migrations applied; closed at test end.
func Store(t testing.TB) *sqlstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := sqlstore.Open(ctx, URL(t), 10)
	if err != nil {
		t.Fatalf("opening store: %v", err)
	}
	t.Cleanup(st.Close)
	return st
}

func setup() {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if u := os.Getenv("CHAPPE_TEST_DATABASE_URL"); u != "" {
		adminURL = u
	} else {
		var err error
		tmpDir, err = os.MkdirTemp("", "chappe-test-pg-")
		if err != nil {
			setupErr = err
			return
		}
		cluster, err = localpg.Start(ctx, filepath.Join(tmpDir, "pg"))
		if err != nil {
			setupErr = err
			return
		}
		adminURL = cluster.URL("postgres")
	}
	dbName = "chappe_test_" + packageName() + "_" + randomSuffix()
	if err := localpg.CreateDatabase(ctx, adminURL, dbName); err != nil {
		setupErr = fmt.Errorf("creating %s: %w", dbName, err)
		return
	}
	dbURL = withDatabase(adminURL, dbName)
}

func cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if dbName != "" {
		names := append([]string{dbName}, extraDBs.names...)
		if conn, err := pgx.Connect(ctx, adminURL); err == nil {
			for _, n := range names {
				_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{n}.Sanitize()+" WITH (FORCE)")
			}
			_ = conn.Close(ctx)
		}
	}
	if cluster != nil {
		_ = cluster.Stop()
	}
	if tmpDir != "" {
		_ = os.RemoveAll(tmpDir)
	}
}

// withDatabase replaces the database name in a postgres URL.
func withDatabase(raw, db string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	u.Path = "/" + db
	return u.String()
}

var nonWord = regexp.MustCompile(`[^a-z0-9]+`)

func packageName() string {
	wd, _ := os.Getwd()
	return strings.Trim(nonWord.ReplaceAllString(strings.ToLower(filepath.Base(wd)), "_"), "_")
}

func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
