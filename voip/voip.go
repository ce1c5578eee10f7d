// Package voip hands clients the TURN server credentials they need to place
// calls through NAT.
//
// Spec: client-server-api/_index.md, "Voice over IP" (GET /voip/turnServer).
// Credentials follow the TURN REST API convention that coturn implements
// (use-auth-secret): the username is "<expiry unix time>:<user ID>" and the
// password is base64(HMAC-SHA1(shared secret, username)), so the TURN server
// checks them with the shared secret alone, until the expiry.
package voip

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"strconv"
	"time"
)

// Config is the TURN configuration.
type Config struct {
	URIs         []string      // turn: and turns: URIs; empty: no TURN server
	SharedSecret string        // the TURN server's static-auth-secret
	TTL          time.Duration // how long credentials stay valid
}

// TURN is the TURN credentials component.
type TURN struct {
	cfg Config
	now func() time.Time
}

// New returns the component; now nil is the system clock.
func New(cfg Config, now func() time.Time) *TURN {
	if now == nil {
		now = time.Now
	}
	return &TURN{cfg: cfg, now: now}
}

// Credentials is the answer of GET /voip/turnServer.
type Credentials struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	URIs     []string `json:"uris"`
	TTL      int64    `json:"ttl"` // seconds
}

// ForUser returns fresh credentials for userID, or ok false when no TURN
// server is configured (the endpoint then answers {}, as clients expect:
// calls fall back to direct and STUN connections).
func (t *TURN) ForUser(userID string) (creds Credentials, ok bool) {
	if len(t.cfg.URIs) == 0 || t.cfg.SharedSecret == "" {
		return Credentials{}, false
	}
	ttl := int64(t.cfg.TTL / time.Second)
	username := strconv.FormatInt(t.now().Unix()+ttl, 10) + ":" + userID
	mac := hmac.New(sha1.New, []byte(t.cfg.SharedSecret))
	mac.Write([]byte(username))
	return Credentials{
		Username: username,
		Password: base64.StdEncoding.EncodeToString(mac.Sum(nil)),
		URIs:     append([]string(nil), t.cfg.URIs...),
		TTL:      ttl,
	}, true
}
