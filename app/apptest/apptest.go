// Package apptest starts real Chappe servers for tests: the same app.Open as
// `chappe serve`, on a fresh database of the test PostgreSQL server, listening
// on a loopback port.
package apptest

import (
	"context"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"chappe/app"
	"chappe/config"
	"chappe/sqlstore/sqltest"
)

// Server is a running test homeserver.
type Server struct {
	*app.Server
	// URL is the client API base URL, e.g. http://127.0.0.1:34567.
	URL string
}

// Start runs a homeserver with open registration, rate limiting off, a
// shared secret "test-shared-secret", and its own database and data dir.
// configure may change the configuration before it is verified. The server is
// stopped when the test ends.
func Start(t testing.TB, configure ...func(*config.Config)) *Server {
	t.Helper()
	return StartWithLog(t, nil, configure...)
}

// StartWithLog is Start with the server's log written to logTo (JSON lines,
// debug level), for tests that check what gets logged.
func StartWithLog(t testing.TB, logTo io.Writer, configure ...func(*config.Config)) *Server {
	t.Helper()
	cfg := config.Defaults()
	cfg.ServerName = "localhost"
	cfg.DataDir = t.TempDir()
	cfg.Database.URL = sqltest.NewDatabase(t, "chappe_srv")
	cfg.Database.MaxConns = 5
	cfg.Registration.Mode = config.RegistrationOpen
	cfg.Registration.SharedSecret = "test-shared-secret"
	cfg.RateLimit.Enabled = false
	cfg.Log.Level = "warn"
	for _, f := range configure {
		f(&cfg)
	}
	if err := cfg.Verify(); err != nil {
		t.Fatalf("test configuration: %v", err)
	}
	logOut := zerolog.Nop()
	switch {
	case logTo != nil:
		logOut = app.NewLogger(config.Log{Level: "debug", Format: "json"}, logTo)
	case os.Getenv("CHAPPE_TEST_LOG") != "":
		logOut = app.NewLogger(cfg.Log, os.Stderr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := app.Open(ctx, cfg, logOut)
	if err != nil {
		cancel()
		t.Fatalf("starting server: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatalf("listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Errorf("server did not stop within 15s")
		}
		_ = srv.Close()
	})
	return &Server{Server: srv, URL: "http://" + ln.Addr().String()}
}
