// Package federation is the server-server API: inbound /_matrix/federation and
// /_matrix/key routes, and (in later issues) the outbound client and the
// per-destination senders, all behind the allowlist gate.
package federation

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"chappe/mxhttp"
	"chappe/signingkey"
)

// KeyServer serves our signing key.
type KeyServer struct {
	serverName string
	key        signingkey.Key
	validity   time.Duration
	now        func() time.Time
}

// NewKeyServer returns the handler of GET /_matrix/key/v2/server.
func NewKeyServer(serverName string, key signingkey.Key, validity time.Duration) *KeyServer {
	return &KeyServer{serverName: serverName, key: key, validity: validity, now: time.Now}
}

// serverKeys is the body of GET /_matrix/key/v2/server.
type serverKeys struct {
	ServerName    string                  `json:"server_name"`
	VerifyKeys    map[string]verifyKey    `json:"verify_keys"`
	OldVerifyKeys map[string]oldVerifyKey `json:"old_verify_keys"`
	ValidUntilTS  int64                   `json:"valid_until_ts"`
}

type verifyKey struct {
	Key string `json:"key"`
}

type oldVerifyKey struct {
	Key       string `json:"key"`
	ExpiredTS int64  `json:"expired_ts"`
}

// ServeHTTP answers with our keys, self-signed, valid for the configured time.
// Spec: server-server-api.md, "Publishing Keys" (GET /_matrix/key/v2/server).
func (k *KeyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body := serverKeys{
		ServerName:    k.serverName,
		VerifyKeys:    map[string]verifyKey{string(k.key.ID): {Key: k.key.PublicBase64()}},
		OldVerifyKeys: map[string]oldVerifyKey{},
		ValidUntilTS:  k.now().Add(k.validity).UnixMilli(),
	}
	unsigned, err := json.Marshal(body)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	signed, err := gomatrixserverlib.SignJSON(k.serverName, k.key.ID, k.key.Private, unsigned)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(signed)
}
