package federation

import (
	"context"
	"encoding/json"

	"github.com/go-chi/chi/v5"

	"chappe/roomserver"
)

// This file holds the query endpoints of the server-server API, the ones
// that read rather than change: profiles (profile.go), the published room
// directory (publicrooms.go) and OpenID (openid.go); and RemoteQueries,
// through which our clients ask the same of other servers.
// Spec: server-server-api.md, "Querying for information", "Public Room
// Directory", "OpenID".

// QueryAccounts is what the query endpoints need of the accounts component
// (accounts.Service).
type QueryAccounts interface {
	// LocalpartOf says whether userID is a user of this server.
	LocalpartOf(userID string) (string, bool)
	// GetProfile is a local user's whole profile, M_NOT_FOUND if unknown.
	GetProfile(ctx context.Context, userID string) (map[string]json.RawMessage, error)
	// OpenIDUser is the user an OpenID token names, M_UNKNOWN_TOKEN if none.
	OpenIDUser(ctx context.Context, token string) (string, error)
}

// PublicDirectory is our published room directory (roomserver.Roomserver).
type PublicDirectory interface {
	PublicRooms(ctx context.Context, req roomserver.PublicRoomsRequest) (roomserver.PublicRoomsResponse, error)
}

// QueryConfig configures the query endpoints.
type QueryConfig struct {
	// ServerName is ours.
	ServerName string
	// ServePublicRooms answers other servers' /publicRooms (else 403).
	ServePublicRooms bool
	// MaxRequestBytes caps request bodies.
	MaxRequestBytes int64
}

// QueryEndpoints serves the query endpoints.
type QueryEndpoints struct {
	cfg       QueryConfig
	accounts  QueryAccounts
	directory PublicDirectory
}

// NewQueryEndpoints builds the query endpoints.
func NewQueryEndpoints(cfg QueryConfig, accounts QueryAccounts, directory PublicDirectory) *QueryEndpoints {
	return &QueryEndpoints{cfg: cfg, accounts: accounts, directory: directory}
}

// Register mounts the endpoints that other servers call, signed (inside
// the authenticated group: ServerDeps.Register).
func (e *QueryEndpoints) Register(r chi.Router) {
	const v1 = "/_matrix/federation/v1"
	r.Get(v1+"/query/profile", e.queryProfile)
	r.With(e.directoryServed).Get(v1+"/publicRooms", e.publicRoomsGet)
	r.With(e.directoryServed).Post(v1+"/publicRooms", e.publicRoomsPost)
}

// RegisterOpen mounts the endpoint that third-party services call with an
// OpenID token rather than a server signature (ServerDeps.RegisterOpen).
func (e *QueryEndpoints) RegisterOpen(r chi.Router) {
	r.Get("/_matrix/federation/v1/openid/userinfo", e.openIDUserInfo)
}

// RemoteQueries is what our clients ask other servers (the client API's
// view of federation): each method is one Client.Do, so every request
// passes the allowlist gate (an unlisted server is never even resolved),
// the backoff, discovery and signing; failures come back as Matrix errors
// (MatrixError).
type RemoteQueries struct {
	c *Client
}

// NewRemoteQueries wraps the client for the client API.
func NewRemoteQueries(c *Client) *RemoteQueries { return &RemoteQueries{c: c} }

// Bounds of the answers read from other servers.
const (
	// maxProfileAnswer: a profile is at most 64 KiB (spec: PUT /profile).
	maxProfileAnswer = 128 << 10
	// maxDirectoryAnswer: one page of a room directory.
	maxDirectoryAnswer = 4 << 20
)
