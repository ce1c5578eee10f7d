package federation

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"

	"chappe/mxhttp"
)

// ServerConfig configures the federation router.
type ServerConfig struct {
	// ServerName is ours: requests must be addressed to it.
	ServerName string
	// Version is what GET /_matrix/federation/v1/version reports.
	Version string
	// MaxRequestBytes caps request bodies (413 M_TOO_LARGE beyond).
	MaxRequestBytes int64
}

// ListServer is the allowlist as the router needs it (allowlist.Service).
type ListServer interface {
	// ServePeer answers a listed peer's GET of our list.
	ServePeer(w http.ResponseWriter, r *http.Request, origin string)
	// Serial is the serial of our list in force.
	Serial() int64
}

// ServerDeps are the federation router's collaborators.
type ServerDeps struct {
	// Keys answers GET /_matrix/key/v2/server (*KeyServer).
	Keys http.Handler
	// KeyRing checks request signatures.
	KeyRing *KeyRing
	// Gate refuses servers outside the federation.
	Gate Gate
	// Lists serves our allowlist to peers and says its serial.
	Lists ListServer
	// Client takes note of the serials peers show (*Client).
	Client *Client
	Log    zerolog.Logger
	// Register, when set, mounts more routes inside the authenticated
	// group (the room endpoints): their handlers read the verified origin
	// with Origin(r.Context()).
	Register func(r chi.Router)
	// RegisterOpen, when set, mounts routes that the spec does not
	// authenticate with X-Matrix (OpenID userinfo, called by third-party
	// services with a token): no origin, no allowlist gate, but the body
	// cap still applies.
	RegisterOpen func(r chi.Router)
}

// Server is the inbound server-server API.
type Server struct {
	cfg  ServerConfig
	deps ServerDeps
	auth *authenticator
}

// NewServer builds the federation router's routes.
func NewServer(cfg ServerConfig, deps ServerDeps) *Server {
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	return &Server{cfg: cfg, deps: deps, auth: &authenticator{
		serverName: cfg.ServerName, gate: deps.Gate, keys: deps.KeyRing, peers: deps.Client, maxBody: cfg.MaxRequestBytes,
	}}
}

// Handler is the whole federation listener: request ids and access log,
// panic guard, refusal of unstorable paths, our allowlist serial on every
// response, the routes, and 404/405 M_UNRECOGNIZED for the rest
// (server-server-api.md, "Unsupported endpoints").
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.NotFound(mxhttp.NotFound)
	r.MethodNotAllowed(mxhttp.MethodNotAllowed)
	r.Use(mxhttp.WithRequestLog(s.deps.Log), mxhttp.Recover, serialHeader(s.deps.Lists.Serial), mxhttp.RefuseUnstorableText)
	s.Routes(r)
	return r
}

// Routes mounts the federation endpoints on r.
func (s *Server) Routes(r chi.Router) {
	r.Method(http.MethodGet, KeyPath, s.deps.Keys)
	r.Get("/_matrix/federation/v1/version", s.version)
	r.Group(func(r chi.Router) {
		r.Use(s.auth.authenticate)
		r.Get(PeerListPath, s.peerList)
		s.extraRoutes(r)
	})
	if s.deps.RegisterOpen != nil {
		r.Group(func(r chi.Router) {
			r.Use(s.auth.limitBody)
			s.deps.RegisterOpen(r)
		})
	}
}

// extraRoutes mounts the routes of ServerDeps.Register.
func (s *Server) extraRoutes(r chi.Router) {
	if s.deps.Register != nil {
		s.deps.Register(r)
	}
}

// version answers GET /_matrix/federation/v1/version (unauthenticated).
// Spec: server-server-api.md, "Server implementation".
func (s *Server) version(w http.ResponseWriter, _ *http.Request) {
	type server struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]server{"server": {Name: "Chappe", Version: s.cfg.Version}})
}

// peerList serves our allowlist to an authenticated listed peer.
func (s *Server) peerList(w http.ResponseWriter, r *http.Request) {
	s.deps.Lists.ServePeer(w, r, Origin(r.Context()))
}
