package accounts

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"

	"chappe/mxerr"
)

// maxUserIDLength is the spec's limit on a whole user ID, sigil and domain included.
const maxUserIDLength = 255

// validLocalpart checks a localpart for registration.
// Spec: appendices.md, "User Identifiers": a-z, 0-9, '.', '_', '=', '-', '/', '+'.
func (s *Service) validLocalpart(localpart string) error {
	if localpart == "" {
		return mxerr.New(mxerr.InvalidUsername, "The user name must not be empty")
	}
	for _, c := range localpart {
		ok := (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strings.ContainsRune("._=-/+", c)
		if !ok {
			return mxerr.New(mxerr.InvalidUsername, "User names may only contain a-z, 0-9 and . _ = - / +; %q is not allowed", c)
		}
	}
	if len(s.UserID(localpart)) > maxUserIDLength {
		return mxerr.New(mxerr.InvalidUsername, "The user ID would be longer than %d characters", maxUserIDLength)
	}
	return nil
}

// UserID is the full user ID of a local localpart.
func (s *Service) UserID(localpart string) string {
	return "@" + localpart + ":" + s.cfg.ServerName
}

// LocalpartOf returns the localpart of userID if it is a user of this server.
func (s *Service) LocalpartOf(userID string) (string, bool) {
	if !strings.HasPrefix(userID, "@") {
		return "", false
	}
	local, server, ok := strings.Cut(userID[1:], ":")
	if !ok || server != s.cfg.ServerName || local == "" {
		return "", false
	}
	return local, true
}

const tokenAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

// newDeviceID returns a random device ID of ten capital letters.
func newDeviceID() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = tokenAlphabet[int(b[i])%len(tokenAlphabet)]
	}
	return string(b)
}

// newSecret returns a random token with the given prefix: 32 random bytes,
// URL-safe base64. Only its hash is stored.
func newSecret(prefix string) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// hashToken is what the database keeps of a token.
func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// newGeneratedLocalpart names an account registered without a user name.
func newGeneratedLocalpart() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return fmt.Sprintf("u%x", b)
}
