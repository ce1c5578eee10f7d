package app

import (
	"crypto/tls"
	"fmt"
	"runtime/debug"

	"github.com/go-chi/chi/v5"

	"chappe/config"
	"chappe/e2ee"
	"chappe/ephemeral"
	"chappe/federation"
	"chappe/roomserver"
)

// FederationClientConfig is the outbound client's configuration from ours;
// lists spreads allowlists (nil: not spread, as `chappe federation check`
// wants: a diagnostic must not change the list in force).
func FederationClientConfig(cfg config.Config, lists federation.PeerLists) federation.ClientConfig {
	fc := cfg.Federation
	return federation.ClientConfig{
		ServerName:     cfg.ServerName,
		Enabled:        fc.Enabled,
		RequestTimeout: fc.RequestTimeout.D(),
		BackoffInitial: fc.BackoffInitial.D(),
		BackoffMax:     fc.BackoffMax.D(),
		CAFile:         fc.CAFile,
		Lists:          lists,
	}
}

// newFederation builds the outbound client, the key ring and the federation
// router, and loads the listener's certificate when one is configured.
func (s *Server) newFederationClient() error {
	cfg := s.Config
	fc := cfg.Federation
	client, err := federation.NewClient(FederationClientConfig(cfg, s.Allowlist), s.Allowlist, s.Key, s.Log)
	if err != nil {
		return err
	}
	s.Federation = client
	s.KeyRing = federation.NewKeyRing(federation.KeyRingConfig{
		ServerName: cfg.ServerName, Key: s.Key, KeyValidity: cfg.SigningKey.Validity.D(),
	}, s.Allowlist, client, s.Log)
	s.Sender = federation.NewSender(federation.SenderConfig{InitialBackoff: fc.BackoffInitial.D(), MaxBackoff: fc.BackoffMax.D()},
		s.Store, s.Allowlist, federation.NewRemote(client), s.Log.With().Str("component", "federation_sender").Logger())
	s.Outbox = federation.NewOutbox(cfg.ServerName, s.Allowlist, s.Sender)
	s.Peers = federation.NewE2EEPeers(client, s.Outbox, s.Allowlist)
	return nil
}

// e2eeFederation is how the E2EE relay reaches other servers: nil when
// federation is off.
func (s *Server) e2eeFederation() e2ee.Federation {
	if !s.Config.Federation.Enabled {
		return nil
	}
	return s.Peers
}

// ephemeralFederation is how typing, receipts and presence reach other
// servers: nil when federation is off.
func (s *Server) ephemeralFederation() ephemeral.Federation {
	if !s.Config.Federation.Enabled {
		return nil
	}
	return s.Peers
}

// roomFederation is what the roomserver needs to share rooms with other
// servers: nothing when federation is off.
func (s *Server) roomFederation() roomserver.Federation {
	if !s.Config.Federation.Enabled {
		return roomserver.Federation{}
	}
	return roomserver.Federation{Remote: federation.NewRemote(s.Federation), Keys: s.KeyRing, Gate: s.Allowlist}
}

// newFederationServer builds the inbound server-server API, once the
// components its endpoints call exist.
func (s *Server) newFederationServer() error {
	cfg := s.Config
	fc := cfg.Federation
	client := s.Federation
	rooms := federation.NewRoomEndpoints(cfg.ServerName, s.Rooms, eduReceiver{eph: s.Ephemeral, keys: s.E2EE}, s.Store, fc.MaxRequestBytes)
	keys := federation.NewKeyEndpoints(s.E2EE, fc.MaxRequestBytes)
	queries := federation.NewQueryEndpoints(federation.QueryConfig{
		ServerName: cfg.ServerName, ServePublicRooms: fc.ServePublicRooms, MaxRequestBytes: fc.MaxRequestBytes,
	}, s.Accounts, s.Rooms)
	mediaEndpoints := federation.NewMediaEndpoints(cfg.ServerName, s.Media)
	srv := federation.NewServer(federation.ServerConfig{
		ServerName: cfg.ServerName, Version: buildVersion(), MaxRequestBytes: fc.MaxRequestBytes,
	}, federation.ServerDeps{
		Keys: s.keyServer, KeyRing: s.KeyRing, Gate: s.Allowlist, Lists: s.Allowlist, Client: client, Log: s.Log,
		Register: func(r chi.Router) {
			rooms.Register(r)
			queries.Register(r)
			keys.Register(r)
			mediaEndpoints.Register(r)
		},
		RegisterOpen: queries.RegisterOpen,
	})
	s.fedHandler = srv.Handler()
	if fc.TLSCert != "" && fc.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(fc.TLSCert, fc.TLSKey)
		if err != nil {
			client.Close()
			return fmt.Errorf("federation.tls_cert: %w", err)
		}
		s.fedTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	return nil
}

// buildVersion is the version of the binary, as the Go toolchain recorded
// it (a module version or a VCS revision), "dev" when it recorded none.
func buildVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, kv := range info.Settings {
		if kv.Key == "vcs.revision" && len(kv.Value) >= 12 {
			return kv.Value[:12]
		}
	}
	return "dev"
}
