// Package clientapi is the HTTP side of /_matrix/client/* and
// /_matrix/media/*: routing, request parsing, authentication and the mapping
// of errors to Matrix responses. The Matrix logic lives in the domain
// packages; this package only translates. Spec: client-server-api/_index.md.
package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"

	"github.com/go-chi/chi/v5"

	"chappe/accounts"
	"chappe/mxerr"
	"chappe/mxhttp"
	"chappe/ratelimit"
	"chappe/roomserver"
)

// Accounts is what the client API needs from the accounts component.
type Accounts interface {
	Authenticate(ctx context.Context, accessToken, clientIP string) (accounts.Session, error)
	Authorize(ctx context.Context, op accounts.Operation, auth *accounts.AuthDict) (accounts.UIAResult, error)
	FinishUIA(ctx context.Context, sessionID string) error
	RegistrationFlows() ([]accounts.Flow, error)
	CheckAvailable(ctx context.Context, localpart string) error
	CheckPasswordStrength(password string) error
	RegistrationTokenValid(ctx context.Context, token string) (bool, error)
	Register(ctx context.Context, req accounts.RegisterRequest) (accounts.Tokens, error)
	NewSharedSecretNonce(ctx context.Context) (string, error)
	RegisterWithSharedSecret(ctx context.Context, secret string, req accounts.SharedSecretRequest) (accounts.Tokens, error)
	Login(ctx context.Context, req accounts.LoginRequest) (accounts.Tokens, error)
	Refresh(ctx context.Context, refreshToken string) (accounts.Tokens, error)
	Logout(ctx context.Context, sess accounts.Session) error
	LogoutAll(ctx context.Context, sess accounts.Session) error
	ChangePassword(ctx context.Context, sess accounts.Session, newPassword string, logoutDevices bool) error
	Deactivate(ctx context.Context, userID string, erase bool) error
	ListDevices(ctx context.Context, userID string) ([]accounts.Device, error)
	GetDevice(ctx context.Context, userID, deviceID string) (accounts.Device, error)
	RenameDevice(ctx context.Context, userID, deviceID string, name *string) error
	DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error
	GetProfile(ctx context.Context, userID string) (map[string]json.RawMessage, error)
	GetProfileField(ctx context.Context, userID, key string) (json.RawMessage, error)
	SetProfileField(ctx context.Context, userID, key string, value json.RawMessage) error
	DeleteProfileField(ctx context.Context, userID, key string) error
	LocalpartOf(userID string) (string, bool)
	RequestOpenIDToken(ctx context.Context, userID string) (accounts.OpenIDToken, error)
}

// Remote is what the client API asks other servers, through the one
// outbound federation client (federation.RemoteQueries): a refusal of the
// allowlist comes back as M_FORBIDDEN, the other server's own Matrix errors
// as they are.
type Remote interface {
	// Profile is a user's profile on its own server, or one field (field
	// not ""). Spec: server-server-api.md, GET /query/profile.
	Profile(ctx context.Context, userID, field string) (map[string]json.RawMessage, error)
	// PublicRooms is a page of another server's room directory.
	// Spec: server-server-api.md, GET/POST /publicRooms.
	PublicRooms(ctx context.Context, server string, req roomserver.PublicRoomsRequest) (roomserver.PublicRoomsResponse, error)
}

// Config is what the client API needs from the configuration.
type Config struct {
	ServerName       string
	MaxRequestBytes  int64
	RegistrationMode string
	SharedSecret     string
	WellKnownClient  string // m.homeserver.base_url; empty: 404
	WellKnownServer  string // m.server; empty: 404
	RateLimitEnabled bool
	RatePerSecond    float64
	RateBurst        int
	LoginPerSecond   float64
	LoginBurst       int
	// DefaultRoomVersion is announced in the m.room_versions capability.
	DefaultRoomVersion string
}

// Deps are the components the client API translates requests for.
type Deps struct {
	Accounts Accounts
	Rooms    Rooms
	Media    Media
	Sync     Sync
	// Allowlist serves GET /_chappe/admin/v1/allowlist.
	Allowlist AllowlistStatus
	// Per-user and ephemeral data around /sync (userdata.go).
	AccountData   AccountData
	Receipts      Receipts
	Typing        Typing
	Presence      Presence
	UserDirectory UserDirectory
	TURN          TURN
	// Push rules, notifications and pushers (push.go).
	Push Push
	// End-to-end encryption relay: keys, to-device, key backup (e2ee.go).
	E2EE E2EE
	// Remote asks other servers for profiles and room directories.
	Remote Remote
}

// API holds the client API's dependencies.
type API struct {
	cfg      Config
	accounts Accounts
	rooms    Rooms
	media    Media
	syncer   Sync
	general  *ratelimit.Limiter // every request, per user or address
	login    *ratelimit.Limiter // login, registration, refresh: per address

	// allowlist reports the allowlist's status to administrators.
	allowlist AllowlistStatus

	accountData AccountData
	receipts    Receipts
	typing      Typing
	presence    Presence
	userDir     UserDirectory
	turn        TURN
	push        Push
	e2ee        E2EE
	remote      Remote
}

// New builds the client API.
func New(cfg Config, deps Deps) *API {
	a := &API{cfg: cfg, accounts: deps.Accounts, rooms: deps.Rooms, media: deps.Media, syncer: deps.Sync, allowlist: deps.Allowlist}
	a.accountData, a.receipts, a.typing = deps.AccountData, deps.Receipts, deps.Typing
	a.presence, a.userDir, a.turn = deps.Presence, deps.UserDirectory, deps.TURN
	a.push = deps.Push
	a.e2ee = deps.E2EE
	a.remote = deps.Remote
	if cfg.RateLimitEnabled {
		a.general = ratelimit.New(cfg.RatePerSecond, cfg.RateBurst, 0)
		a.login = ratelimit.New(cfg.LoginPerSecond, cfg.LoginBurst, 0)
	}
	return a
}

// Routes adds the client API to r.
func (a *API) Routes(r chi.Router) {
	r.Get("/.well-known/matrix/client", a.wellKnownClient)
	r.Get("/.well-known/matrix/server", a.wellKnownServer)

	// Unauthenticated, limited per address.
	r.Group(func(r chi.Router) {
		r.Use(a.limitByAddress(a.general))
		r.Get("/_matrix/client/versions", a.versions)
		r.Get("/_matrix/client/v3/login", a.loginFlows)
		a.legacyMediaRoutes(r)
	})

	// Open to anonymous clients by the spec; a token, if given, must be valid.
	r.Group(func(r chi.Router) {
		r.Use(a.limitByAddress(a.general))
		r.Use(a.authenticateIfToken)
		a.openDirectoryRoutes(r)
	})

	// Credential-bearing endpoints: the stricter login limiter.
	r.Group(func(r chi.Router) {
		r.Use(a.limitByAddress(a.login))
		r.Post("/_matrix/client/v3/register", a.register)
		r.Get("/_matrix/client/v3/register/available", a.registerAvailable)
		r.Get("/_matrix/client/v1/register/m.login.registration_token/validity", a.registrationTokenValidity)
		r.Post("/_matrix/client/v3/login", a.loginPassword)
		r.Post("/_matrix/client/v3/refresh", a.refresh)
		r.Get("/_synapse/admin/v1/register", a.sharedSecretNonce)
		r.Post("/_synapse/admin/v1/register", a.sharedSecretRegister)
	})

	// Authenticated, limited per user.
	r.Group(func(r chi.Router) {
		r.Use(a.authenticate)
		r.Use(a.limitByUser(a.general))
		r.Get("/_matrix/client/v3/capabilities", a.capabilities)
		r.Get("/_matrix/client/v3/account/whoami", a.whoami)
		r.Post("/_matrix/client/v3/logout", a.logout)
		r.Post("/_matrix/client/v3/logout/all", a.logoutAll)
		r.Post("/_matrix/client/v3/account/password", a.changePassword)
		r.Post("/_matrix/client/v3/account/deactivate", a.deactivate)
		r.Get("/_matrix/client/v3/devices", a.listDevices)
		r.Get("/_matrix/client/v3/devices/{deviceId}", a.getDevice)
		r.Put("/_matrix/client/v3/devices/{deviceId}", a.putDevice)
		r.Delete("/_matrix/client/v3/devices/{deviceId}", a.deleteDevice)
		r.Post("/_matrix/client/v3/delete_devices", a.deleteDevices)
		r.Get("/_matrix/client/v3/profile/{userId}", handle(a.getProfile))
		r.Get("/_matrix/client/v3/profile/{userId}/{keyName}", handle(a.getProfileField))
		r.Put("/_matrix/client/v3/profile/{userId}/{keyName}", a.putProfileField)
		r.Delete("/_matrix/client/v3/profile/{userId}/{keyName}", a.deleteProfileField)
		r.Post("/_matrix/client/v3/user/{userId}/openid/request_token", handleJSON(a, true, a.requestOpenIDToken))
		a.roomRoutes(r)
		a.userDataRoutes(r)
		a.pushRoutes(r)
		a.syncRoutes(r)
		a.e2eeRoutes(r)
		a.mediaRoutes(r)
		r.Get("/_chappe/admin/v1/allowlist", a.adminAllowlist)
	})
}

// decode reads a JSON object body into dst with the configured size cap.
func (a *API) decode(r *http.Request, allowEmpty bool, dst any) error {
	return mxhttp.DecodeJSON(r, a.cfg.MaxRequestBytes, allowEmpty, dst)
}

// limitByAddress refuses requests beyond the limiter's rate per client address.
func (a *API) limitByAddress(l *ratelimit.Limiter) func(http.Handler) http.Handler {
	return limit(l, func(r *http.Request) string { return "ip:" + mxhttp.ClientIP(r) })
}

// limitByUser refuses requests beyond the limiter's rate per authenticated user.
func (a *API) limitByUser(l *ratelimit.Limiter) func(http.Handler) http.Handler {
	return limit(l, func(r *http.Request) string { return "user:" + session(r).UserID })
}

func limit(l *ratelimit.Limiter, key func(*http.Request) string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if l == nil {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ok, wait := l.Allow(key(r)); !ok {
				e := mxerr.New(mxerr.LimitExceeded, "Too many requests; retry in %s", wait.Round(time.Millisecond))
				e.RetryAfterMs = wait.Milliseconds() + 1
				mxhttp.WriteError(w, r, e)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// pathParam is a route parameter, percent-decoded. chi matches on the raw
// (still encoded) path so that an encoded "/" inside a user or device ID does
// not split it; the value must then be decoded here.
func pathParam(r *http.Request, name string) string {
	raw := chi.URLParam(r, name)
	if v, err := url.PathUnescape(raw); err == nil {
		return v
	}
	return raw
}
