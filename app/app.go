// Package app assembles one Chappe homeserver from its components: it opens
// the database (the configured one, or the embedded private cluster), loads
// the signing key, builds the components and the HTTP router, and serves.
// cmd/chappe and the test harnesses both start servers through it, so tests
// run exactly what production runs.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"
	"github.com/sirupsen/logrus"

	"chappe/accountdata"
	"chappe/accounts"
	"chappe/allowlist"
	"chappe/clientapi"
	"chappe/config"
	"chappe/e2ee"
	"chappe/ephemeral"
	"chappe/federation"
	"chappe/media"
	"chappe/mxhttp"
	"chappe/push"
	"chappe/roomserver"
	"chappe/signingkey"
	"chappe/sqlstore"
	"chappe/sqlstore/localpg"
	"chappe/streams"
	"chappe/syncapi"
	"chappe/userdir"
	"chappe/voip"
)

// Server is a running homeserver's parts.
type Server struct {
	Config   config.Config
	Log      zerolog.Logger
	Store    *sqlstore.Store
	Accounts *accounts.Service
	Rooms    *roomserver.Roomserver
	Hub      *streams.Hub // the stream positions and the wake-ups of /sync
	Sync     *syncapi.Syncer
	Push     *push.Service // push rules, notification counts, pushers
	Media    *media.Service
	Key      signingkey.Key

	// Per-user and ephemeral data around /sync.
	AccountData *accountdata.Service
	Ephemeral   *ephemeral.Service // typing, receipts, presence
	// E2EE relays device keys, one-time keys, cross-signing, to-device
	// messages and key backups.
	E2EE    *e2ee.Service
	UserDir *userdir.Directory
	TURN    *voip.TURN

	// Allowlist is the federation gate and the signed list in force.
	Allowlist *allowlist.Service
	// Federation is the one client of every outbound federation request;
	// KeyRing finds and checks other servers' signing keys.
	Federation *federation.Client
	KeyRing    *federation.KeyRing
	// Outbox queues events for other servers in the transaction that
	// stores them; Sender delivers them, one worker per destination.
	Outbox *federation.Outbox
	Sender *federation.Sender
	// Peers is the E2EE relay's and the ephemeral components' view of
	// other servers: key requests and EDUs.
	Peers *federation.E2EEPeers

	db      *Database
	handler http.Handler
	// fedHandler and fedTLS serve the federation listener (fedTLS is nil
	// when no certificate is configured).
	fedHandler http.Handler
	fedTLS     *tls.Config
	keyServer  *federation.KeyServer
}

// NewLogger builds the zerolog logger the configuration asks for.
func NewLogger(cfg config.Log, out io.Writer) zerolog.Logger {
	level, err := zerolog.ParseLevel(cfg.Level)
	if err != nil {
		level = zerolog.InfoLevel
	}
	if cfg.Format == "console" {
		out = zerolog.ConsoleWriter{Out: out, TimeFormat: time.RFC3339}
	}
	return zerolog.New(out).Level(level).With().Timestamp().Logger()
}

// Database is the store plus, on the embedded default, the private cluster
// under the data dir that must be stopped at the end.
type Database struct {
	Store   *sqlstore.Store
	cluster *localpg.Cluster
}

// Close closes the pool and stops the private cluster if we started it.
func (d *Database) Close() error {
	d.Store.Close()
	if d.cluster != nil {
		return d.cluster.Stop()
	}
	return nil
}

// OpenDatabase connects to database.url or, when it is empty, starts the
// private PostgreSQL cluster under data_dir/postgres; then applies migrations.
func OpenDatabase(ctx context.Context, cfg config.Config, log zerolog.Logger) (*Database, error) {
	url := cfg.Database.URL
	var cluster *localpg.Cluster
	if url == "" {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("data_dir: %w", err)
		}
		dir := filepath.Join(cfg.DataDir, "postgres")
		log.Info().Str("dir", dir).Msg("no database.url: starting the embedded PostgreSQL cluster")
		var err error
		cluster, err = localpg.Start(ctx, dir)
		if err != nil {
			return nil, fmt.Errorf("embedded PostgreSQL: %w", err)
		}
		if err := cluster.CreateDatabase(ctx, "chappe"); err != nil {
			_ = cluster.Stop()
			return nil, fmt.Errorf("embedded PostgreSQL: %w", err)
		}
		url = cluster.URL("chappe")
	}
	store, err := sqlstore.Open(ctx, url, cfg.Database.MaxConns)
	if err != nil {
		if cluster != nil {
			_ = cluster.Stop()
		}
		return nil, err
	}
	return &Database{Store: store, cluster: cluster}, nil
}

// NewAccounts builds the accounts component from the configuration.
func NewAccounts(cfg config.Config, store *sqlstore.Store) *accounts.Service {
	return accounts.New(store, accounts.Config{
		ServerName:         cfg.ServerName,
		RegistrationMode:   cfg.Registration.Mode,
		MinPasswordLength:  cfg.Registration.MinPasswordLength,
		RefreshLifetime:    cfg.Auth.RefreshableAccessTokenLifetime.D(),
		UIASessionLifetime: cfg.Auth.UIASessionLifetime.D(),
	})
}

// NewMedia builds the content repository from the configuration.
// remote fetches other servers' media (nil: only local media is served).
func NewMedia(cfg config.Config, store *sqlstore.Store, remote media.Fetcher) (*media.Service, error) {
	cutoff, _ := cfg.MediaLegacyCutoff() // checked by config.Verify
	var allowed, denied []netip.Prefix
	for _, p := range cfg.Media.URLPreview.AllowedNetworks {
		allowed = append(allowed, netip.MustParsePrefix(p)) // checked by config.Verify
	}
	for _, p := range cfg.Media.URLPreview.DeniedNetworks {
		denied = append(denied, netip.MustParsePrefix(p))
	}
	return media.New(store, media.Config{
		ServerName:        cfg.ServerName,
		Dir:               cfg.MediaPath(),
		MaxUploadBytes:    cfg.Media.MaxUploadBytes,
		UserQuotaBytes:    cfg.Media.UserQuotaBytes,
		MaxImagePixels:    cfg.Media.MaxImagePixels,
		LegacyCutoff:      cutoff,
		PendingLifetime:   cfg.Media.PendingUploadLifetime.D(),
		MaxPendingUploads: cfg.Media.MaxPendingUploads,
		Preview: media.PreviewConfig{
			Enabled:         cfg.Media.URLPreview.Enabled,
			AllowedNetworks: allowed,
			DeniedNetworks:  denied,
			MaxPageBytes:    cfg.Media.URLPreview.MaxPageBytes,
			Timeout:         cfg.Media.URLPreview.Timeout.D(),
		},
	}, remote)
}

// quietLibraryLogs silences logrus, which only gomatrixserverlib uses: its
// messages ("Checking event signatures…") would bypass our structured log;
// what matters of them reaches our log through the errors it returns.
func quietLibraryLogs() { logrus.SetOutput(io.Discard) }

// Open builds a server from a verified configuration.
func Open(ctx context.Context, cfg config.Config, log zerolog.Logger) (*Server, error) {
	quietLibraryLogs()
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	key, err := signingkey.LoadOrGenerate(cfg.SigningKeyPath())
	if err != nil {
		return nil, err
	}
	db, err := OpenDatabase(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	s := &Server{Config: cfg, Log: log, Store: db.Store, Key: key, db: db}
	s.Accounts = NewAccounts(cfg, db.Store)
	if s.Allowlist, err = NewAllowlist(cfg, db.Store, log); err == nil {
		err = s.Allowlist.Start(ctx)
	}
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	last, err := db.Store.MaxStreamPosition(ctx)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	s.keyServer = federation.NewKeyServer(cfg.ServerName, s.Key, cfg.SigningKey.Validity.D())
	if err := s.newFederationClient(); err != nil {
		_ = db.Close()
		return nil, err
	}
	s.Hub = streams.NewHub(last)
	s.Push = push.New(push.Config{ServerName: cfg.ServerName}, db.Store, s.Hub)
	s.Rooms = roomserver.New(roomserver.Config{ServerName: cfg.ServerName, DefaultVersion: cfg.Rooms.DefaultVersion,
		EncryptPrivateByDefault: cfg.Rooms.EncryptPrivateByDefault, RefusePlaintextInEncrypted: cfg.Rooms.RefusePlaintextInEncrypted,
		Federation: s.roomFederation()}, db.Store, key, s.Accounts, s.Hub, s.Push, s.Outbox)
	s.newUserData()
	s.E2EE = e2ee.New(e2ee.Config{ServerName: cfg.ServerName, ShareDeviceNames: cfg.Federation.ShareDeviceNames}, db.Store, s.Hub, s.e2eeFederation())
	s.Sync = syncapi.New(syncapi.Deps{Store: db.Store, Hub: s.Hub, Rooms: s.Rooms, AccountData: s.AccountData, Ephemeral: s.Ephemeral, Push: syncPush{s.Push}, E2EE: s.E2EE})
	if s.Media, err = NewMedia(cfg, db.Store, federation.NewRemoteMedia(s.Federation, cfg.Media.MaxUploadBytes)); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := s.newFederationServer(); err != nil {
		_ = db.Close()
		return nil, err
	}
	s.handler = s.router()
	return s, nil
}

// newUserData builds the per-user and ephemeral components around /sync.
func (s *Server) newUserData() {
	cfg, store := s.Config, s.Store
	s.AccountData = accountdata.New(store, s.Hub)
	s.Ephemeral = ephemeral.New(store, s.Hub, s.AccountData, ephemeral.PresenceConfig{Enabled: cfg.Presence.Enabled, ServerName: cfg.ServerName}, s.ephemeralFederation(), nil)
	s.UserDir = userdir.New(store)
	s.TURN = voip.New(voip.Config{URIs: cfg.TURN.URIs, SharedSecret: cfg.TURN.SharedSecret, TTL: cfg.TURN.TTL.D()}, nil)
}

// router is the whole HTTP surface: middleware, client API, key server.
func (s *Server) router() http.Handler {
	cfg := s.Config
	r := chi.NewRouter()
	r.NotFound(mxhttp.NotFound)
	r.MethodNotAllowed(mxhttp.MethodNotAllowed)
	var proxies []netip.Prefix
	for _, p := range cfg.ClientAPI.TrustedProxies {
		proxies = append(proxies, netip.MustParsePrefix(p)) // checked by config.Verify
	}
	r.Use(mxhttp.RealClientAddr(proxies), mxhttp.WithRequestLog(s.Log), mxhttp.Recover, mxhttp.CORS, mxhttp.RefuseUnstorableText)

	api := clientapi.New(clientapi.Config{
		ServerName:         cfg.ServerName,
		MaxRequestBytes:    cfg.ClientAPI.MaxRequestBytes,
		RegistrationMode:   cfg.Registration.Mode,
		SharedSecret:       cfg.Registration.SharedSecret,
		WellKnownClient:    cfg.WellKnown.ClientBaseURL,
		WellKnownServer:    cfg.WellKnown.Server,
		RateLimitEnabled:   cfg.RateLimit.Enabled,
		RatePerSecond:      cfg.RateLimit.PerSecond,
		RateBurst:          cfg.RateLimit.Burst,
		LoginPerSecond:     cfg.RateLimit.LoginPerSecond,
		LoginBurst:         cfg.RateLimit.LoginBurst,
		DefaultRoomVersion: cfg.Rooms.DefaultVersion,
	}, clientapi.Deps{Accounts: s.Accounts, Rooms: s.Rooms, Media: s.Media, Sync: s.Sync, Allowlist: s.Allowlist,
		AccountData: s.AccountData, Receipts: s.Ephemeral.Receipts, Typing: s.Ephemeral.Typing, Presence: s.Ephemeral.Presence,
		UserDirectory: s.UserDir, TURN: s.TURN, Push: s.Push, E2EE: s.E2EE, Remote: federation.NewRemoteQueries(s.Federation)})
	api.Routes(r)
	// The key document is also on the client port (harmless, and handy
	// behind a reverse proxy); the federation listener serves it too.
	r.Method(http.MethodGet, federation.KeyPath, s.keyServer)
	return r
}

// Handler is the server's HTTP handler (for tests that bring their own listener).
func (s *Server) Handler() http.Handler { return s.handler }

// Serve listens on client_api.listen (and federation.listen) until ctx is
// cancelled, then shuts down gracefully (in-flight requests get up to 10
// seconds).
func (s *Server) Serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.Config.ClientAPI.Listen)
	if err != nil {
		return fmt.Errorf("client_api.listen: %w", err)
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener serves the client API on ln, and the federation API on
// federation.listen when the configuration asks for it, until ctx is
// cancelled.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	var fedLn net.Listener
	if s.Config.FederationListens() {
		var err error
		if fedLn, err = net.Listen("tcp", s.Config.Federation.Listen); err != nil {
			_ = ln.Close()
			return fmt.Errorf("federation.listen: %w", err)
		}
	}
	return s.ServeListeners(ctx, ln, fedLn)
}

// ServeListeners serves the client API on clientLn and, when fedLn is not
// nil, the federation API over TLS on fedLn, until ctx is cancelled; then
// both shut down gracefully (in-flight requests get up to 10 seconds).
func (s *Server) ServeListeners(ctx context.Context, clientLn, fedLn net.Listener) error {
	if fedLn != nil && s.fedTLS == nil {
		_ = clientLn.Close()
		_ = fedLn.Close()
		return errors.New("federation listener: federation.tls_cert and tls_key are not set")
	}
	servers := []*http.Server{newHTTPServer(s.handler)}
	errc := make(chan error, 2)
	s.Log.Info().Str("listen", clientLn.Addr().String()).Str("server_name", s.Config.ServerName).Msg("client API listening")
	go func() { errc <- servers[0].Serve(clientLn) }()
	if fedLn != nil {
		fed := newHTTPServer(s.fedHandler)
		fed.TLSConfig = s.fedTLS
		servers = append(servers, fed)
		s.Log.Info().Str("listen", fedLn.Addr().String()).Msg("federation API listening (TLS)")
		go func() { errc <- fed.ServeTLS(fedLn, "", "") }()
	}
	defer s.runBackground(ctx)()
	var firstErr error
	received := 0
	select {
	case firstErr = <-errc:
		received++
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, srv := range servers {
		if err := srv.Shutdown(shutdownCtx); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	for ; received < len(servers); received++ {
		if err := <-errc; firstErr == nil || errors.Is(firstErr, http.ErrServerClosed) {
			firstErr = err
		}
	}
	if errors.Is(firstErr, http.ErrServerClosed) {
		return nil
	}
	return firstErr
}

func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 20 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}

// runBackground starts the loops that run while the server serves: the
// allowlist refresh, the remote media cache's purge, the federation
// senders, the typing and presence sweeps, push delivery. The
// function it returns stops them and waits, so Close never pulls the
// database from under them.
func (s *Server) runBackground(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(6)
	go func() { defer wg.Done(); s.Allowlist.Run(ctx) }()
	go func() {
		defer wg.Done()
		s.Media.Run(ctx, func(err error) { s.Log.Error().Err(err).Msg("purging the remote media cache") })
	}()
	go func() {
		defer wg.Done()
		s.E2EE.Run(ctx, func(err error) { s.Log.Error().Err(err).Msg("purging remote device lists") })
	}()
	go func() { defer wg.Done(); s.Sender.Run(ctx) }()
	go func() {
		defer wg.Done()
		s.Ephemeral.Run(ctx, func(err error) { s.Log.Error().Err(err).Msg("presence sweep") })
	}()
	pushDone := s.runPushDelivery(ctx)
	go func() { defer wg.Done(); <-pushDone }()
	return func() { cancel(); wg.Wait() }
}

// Close stops the federation client's background work, then releases the
// database and stops the embedded cluster if we started it.
func (s *Server) Close() error {
	s.Federation.Close()
	return s.db.Close()
}
