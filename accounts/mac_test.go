package accounts

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"strings"
)

// macFor computes the shared-secret registration MAC independently of the
// code under test (one NUL-joined string, as the Synapse admin API documents).
func macFor(secret string, r SharedSecretRequest) string {
	admin := "notadmin"
	if r.Admin {
		admin = "admin"
	}
	parts := []string{r.Nonce, r.Username, r.Password, admin}
	if r.UserType != "" {
		parts = append(parts, r.UserType)
	}
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(m.Sum(nil))
}
