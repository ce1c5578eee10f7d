// Package accounts owns local accounts: registration, login and tokens,
// devices, passwords, deactivation, profiles and user-interactive
// authentication. Spec: client-server-api/_index.md, "Client Authentication",
// "Account registration and management", "Device Management", "Profiles".
package accounts

import (
	"context"
	"errors"
	lru "github.com/hashicorp/golang-lru/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// Config is what accounts needs from the configuration.
type Config struct {
	ServerName         string
	RegistrationMode   string // open, token or closed
	MinPasswordLength  int
	RefreshLifetime    time.Duration // access token lifetime when a refresh token is issued
	UIASessionLifetime time.Duration
}

// Service is the accounts component.
type Service struct {
	store *sqlstore.Store
	cfg   Config
	now   func() time.Time
	// hashSlots bounds concurrent argon2id computations: each takes 19 MiB,
	// so a burst of logins must queue rather than exhaust memory.
	hashSlots chan struct{}
	// sessions caches recent token lookups (see Authenticate).
	sessions *lru.Cache[string, cachedSession]
	// revocations counts token revocations in this process: a lookup that
	// overlapped one is not cached, so a revoked token never re-enters the
	// cache from a read that started before the revocation.
	revocations atomic.Int64
	sessionsMu  sync.Mutex // orders "check revocations, then add" against "count, then purge"
}

// cachedSession is a token lookup kept in memory for at most
// sessionCacheTTL. Every path in this process that revokes tokens purges the
// user's entries at once; the TTL bounds how long a revocation made by
// another process (an admin command) can go unnoticed.
type cachedSession struct {
	row      sqlstore.Session
	cachedAt time.Time
}

const (
	sessionCacheSize = 10_000
	sessionCacheTTL  = 30 * time.Second
)

// New returns the accounts component on store.
func New(store *sqlstore.Store, cfg Config) *Service {
	sessions, _ := lru.New[string, cachedSession](sessionCacheSize)
	return &Service{store: store, cfg: cfg, now: time.Now, hashSlots: make(chan struct{}, 2*runtime.NumCPU()), sessions: sessions}
}

// Session is an authenticated request's identity.
type Session struct {
	UserID   string
	DeviceID string
	IsAdmin  bool
	tokenID  int64
}

// touchInterval is how stale a device's last-seen time may get before an
// authenticated request rewrites it: at most one write per device a minute.
const touchInterval = time.Minute

// Authenticate checks an access token. Unknown tokens (never issued, logged
// out, device deleted, user deactivated) get M_UNKNOWN_TOKEN; an expired
// refreshable token gets M_UNKNOWN_TOKEN with soft_logout, so the client
// refreshes it. Spec: "Using access tokens", "Soft logout".
func (s *Service) Authenticate(ctx context.Context, accessToken, clientIP string) (Session, error) {
	now := s.now()
	key := string(hashToken(accessToken))
	gen := s.revocations.Load()
	row, cached, err := s.lookupSession(ctx, key, now)
	if errors.Is(err, sqlstore.ErrNotFound) {
		return Session{}, mxerr.New(mxerr.UnknownToken, "Unknown access token")
	}
	if err != nil {
		return Session{}, err
	}
	if row.Deactivated {
		return Session{}, mxerr.New(mxerr.UnknownToken, "This account has been deactivated")
	}
	if row.ExpiresTS != nil && now.UnixMilli() >= *row.ExpiresTS {
		e := mxerr.New(mxerr.UnknownToken, "The access token has expired; use the refresh token")
		e.SoftLogout = true
		return Session{}, e
	}
	if !row.Used || row.ReplacesID != nil {
		// First use of a refreshed pair: the pair it replaced dies now.
		if err := s.store.MarkTokenUsed(ctx, row.ID, row.ReplacesID); err != nil {
			return Session{}, err
		}
		s.forgetSessions(row.UserID)
		row.Used, row.ReplacesID = true, nil
		cached = false
	}
	if row.LastSeenTS == nil || now.Sub(time.UnixMilli(*row.LastSeenTS)) > touchInterval {
		if err := s.store.TouchDevice(ctx, row.UserID, row.DeviceID, now.UnixMilli(), clientIP); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("recording device last-seen time")
		}
		ts := now.UnixMilli()
		row.LastSeenTS = &ts
		cached = false
	}
	if !cached {
		s.sessionsMu.Lock()
		if s.revocations.Load() == gen {
			s.sessions.Add(key, cachedSession{row: row, cachedAt: now})
		}
		s.sessionsMu.Unlock()
	}
	return Session{UserID: row.UserID, DeviceID: row.DeviceID, IsAdmin: row.IsAdmin, tokenID: row.ID}, nil
}

// lookupSession finds a token's session in the cache or the database.
func (s *Service) lookupSession(ctx context.Context, key string, now time.Time) (sqlstore.Session, bool, error) {
	if c, ok := s.sessions.Get(key); ok && now.Sub(c.cachedAt) < sessionCacheTTL {
		return c.row, true, nil
	}
	row, err := s.store.SessionByAccessToken(ctx, []byte(key))
	return row, false, err
}

// forgetSessions drops the user's cached sessions; every path that revokes
// a token, deletes a device or deactivates an account calls it.
func (s *Service) forgetSessions(userID string) {
	s.sessionsMu.Lock()
	defer s.sessionsMu.Unlock()
	s.revocations.Add(1)
	for _, k := range s.sessions.Keys() {
		if c, ok := s.sessions.Peek(k); ok && c.row.UserID == userID {
			s.sessions.Remove(k)
		}
	}
}

// Tokens is what a login, a registration or a refresh hands to the client.
type Tokens struct {
	UserID       string `json:"user_id"`
	DeviceID     string `json:"device_id,omitempty"`
	AccessToken  string `json:"access_token,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	ExpiresInMs  int64  `json:"expires_in_ms,omitempty"`
}

// issueTokens creates an access token (and a refresh token if wanted) for a
// device that already exists, inside the caller's transaction.
func (s *Service) issueTokens(ctx context.Context, q *sqlstore.Queries, userID, deviceID string, wantRefresh bool, replaces *int64) (Tokens, error) {
	now := s.now()
	t := Tokens{UserID: userID, DeviceID: deviceID, AccessToken: newSecret("chp_")}
	row := sqlstore.Token{TokenHash: hashToken(t.AccessToken), UserID: userID, DeviceID: deviceID, ReplacesID: replaces, CreatedTS: now.UnixMilli()}
	if wantRefresh {
		t.RefreshToken = newSecret("chr_")
		row.RefreshTokenHash = hashToken(t.RefreshToken)
		exp := now.Add(s.cfg.RefreshLifetime).UnixMilli()
		row.ExpiresTS = &exp
		t.ExpiresInMs = s.cfg.RefreshLifetime.Milliseconds()
	}
	if _, err := q.InsertToken(ctx, row); err != nil {
		return Tokens{}, err
	}
	return t, nil
}

// Refresh exchanges a refresh token for a new access and refresh token. The
// old pair stays valid until the new one is first used.
// Spec: POST /_matrix/client/v3/refresh, "Refreshing access tokens".
func (s *Service) Refresh(ctx context.Context, refreshToken string) (Tokens, error) {
	var out Tokens
	err := s.store.InTx(ctx, func(q *sqlstore.Queries) error {
		row, err := q.SessionByRefreshToken(ctx, hashToken(refreshToken))
		if errors.Is(err, sqlstore.ErrNotFound) || (err == nil && row.Deactivated) {
			return mxerr.New(mxerr.UnknownToken, "Unknown refresh token")
		}
		if err != nil {
			return err
		}
		// Using this pair's refresh token revokes the pair it replaced.
		if err := q.MarkTokenUsed(ctx, row.ID, row.ReplacesID); err != nil {
			return err
		}
		s.forgetSessions(row.UserID)
		id := row.ID
		out, err = s.issueTokens(ctx, q, row.UserID, row.DeviceID, true, &id)
		return err
	})
	if err != nil {
		return Tokens{}, err
	}
	out.UserID, out.DeviceID = "", ""
	return out, nil
}

// Logout deletes the session's device, which revokes its tokens.
// Spec: POST /logout ("the device associated with the access token is deleted").
func (s *Service) Logout(ctx context.Context, sess Session) error {
	defer s.forgetSessions(sess.UserID)
	return s.store.DeleteDevices(ctx, sess.UserID, []string{sess.DeviceID})
}

// LogoutAll deletes every device of the user.
func (s *Service) LogoutAll(ctx context.Context, sess Session) error {
	defer s.forgetSessions(sess.UserID)
	return s.store.DeleteAllDevices(ctx, sess.UserID, "")
}
