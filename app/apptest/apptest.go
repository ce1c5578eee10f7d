// Package apptest starts real Chappe servers for tests: the same app.Open as
// `chappe serve`, on a fresh database of the test PostgreSQL server, listening
// on a loopback port. Federation tests start several such servers, with real
// TLS and a signed allowlist, through NewFederation (federation.go).
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
	cfg := testConfig(t, "localhost", configure...)
	ln := listen(t, "127.0.0.1:0")
	r := launch(t, cfg, testLogger(cfg, logTo), ln, nil)
	t.Cleanup(func() { r.stop(t) })
	return &Server{Server: r.srv, URL: "http://" + ln.Addr().String()}
}

// testConfig is the configuration of a test server named serverName:
// open registration, rate limiting off, its own database and data dir,
// then configure, then verified.
func testConfig(t testing.TB, serverName string, configure ...func(*config.Config)) config.Config {
	t.Helper()
	cfg := config.Defaults()
	cfg.ServerName = serverName
	cfg.DataDir = t.TempDir()
	cfg.Database.URL = sqltest.NewDatabase(t, "chappe_srv")
	cfg.Database.MaxConns = 5
	cfg.Registration.Mode = config.RegistrationOpen
	cfg.Registration.SharedSecret = "test-shared-secret"
	cfg.RateLimit.Enabled = false
	cfg.Log.Level = "warn"
	// No federation listener unless the test gives one (with a certificate;
	// see Federation): a test never binds the default port 8448.
	cfg.Federation.Listen = ""
	for _, f := range configure {
		f(&cfg)
	}
	if err := cfg.Verify(); err != nil {
		t.Fatalf("test configuration: %v", err)
	}
	return cfg
}

// testLogger writes to logTo (debug, JSON) when given, to stderr when
// CHAPPE_TEST_LOG is set, nowhere otherwise.
func testLogger(cfg config.Config, logTo io.Writer) zerolog.Logger {
	switch {
	case logTo != nil:
		return app.NewLogger(config.Log{Level: "debug", Format: "json"}, logTo)
	case os.Getenv("CHAPPE_TEST_LOG") != "":
		return app.NewLogger(cfg.Log, os.Stderr)
	}
	return zerolog.Nop()
}

func listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	return ln
}

// running is a server serving on its listeners.
type running struct {
	srv    *app.Server
	cancel context.CancelFunc
	done   chan error
}

// launch opens a server and serves the client API on clientLn and, when
// fedLn is not nil, federation on fedLn.
func launch(t testing.TB, cfg config.Config, log zerolog.Logger, clientLn, fedLn net.Listener) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := app.Open(ctx, cfg, log)
	if err != nil {
		cancel()
		_ = clientLn.Close()
		if fedLn != nil {
			_ = fedLn.Close()
		}
		t.Fatalf("starting server %s: %v", cfg.ServerName, err)
	}
	r := &running{srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- srv.ServeListeners(ctx, clientLn, fedLn) }()
	return r
}

// stop shuts the server down and closes it.
func (r *running) stop(t testing.TB) {
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("server %s: %v", r.srv.Config.ServerName, err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("server %s did not stop within 15s", r.srv.Config.ServerName)
	}
	if err := r.srv.Close(); err != nil {
		t.Errorf("closing server %s: %v", r.srv.Config.ServerName, err)
	}
}
