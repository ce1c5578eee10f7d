package federation

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"

	"chappe/e2ee"
	"chappe/mxerr"
	"chappe/mxhttp"
	"chappe/sqlstore"
)

// This file is end-to-end encryption between servers: the endpoints other
// servers call about our users' keys (KeyEndpoints), and E2EEPeers, through
// which the E2EE relay asks other servers about theirs and queues its EDUs.
// Spec: server-server-api.md, "End-to-End Encryption", "Device Management";
// data/api/server-server/user_devices.yaml, user_keys.yaml.

// LocalKeys is what the key endpoints need of the E2EE relay (e2ee.Service).
type LocalKeys interface {
	UserDevices(ctx context.Context, userID string) (*e2ee.UserDevices, error)
	QueryKeysForServer(ctx context.Context, deviceKeys map[string][]string) (*e2ee.RemoteKeys, error)
	ClaimKeysForServer(ctx context.Context, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
}

// KeyEndpoints serves our users' devices and keys to other servers.
type KeyEndpoints struct {
	keys    LocalKeys
	maxBody int64
}

// NewKeyEndpoints builds the key endpoints.
func NewKeyEndpoints(keys LocalKeys, maxBody int64) *KeyEndpoints {
	return &KeyEndpoints{keys: keys, maxBody: maxBody}
}

// Register mounts the endpoints (inside the authenticated group).
func (e *KeyEndpoints) Register(r chi.Router) {
	const v1 = "/_matrix/federation/v1"
	r.Get(v1+"/user/devices/{userId}", e.userDevices)
	r.Post(v1+"/user/keys/query", e.queryKeys)
	r.Post(v1+"/user/keys/claim", e.claimKeys)
}

// userDevices is GET /user/devices/{userId}: a local user's devices with
// their keys and the stream_id of the list (M_INVALID_PARAM for anyone
// else).
func (e *KeyEndpoints) userDevices(w http.ResponseWriter, r *http.Request) {
	out, err := e.keys.UserDevices(r.Context(), param(r, "userId"))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, out)
}

// queryKeys is POST /user/keys/query: {"device_keys": {user: [devices]}},
// local users only.
func (e *KeyEndpoints) queryKeys(w http.ResponseWriter, r *http.Request) {
	var body struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := mxhttp.DecodeJSON(r, e.maxBody, false, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if body.DeviceKeys == nil {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.MissingParam, "device_keys is required"))
		return
	}
	out, err := e.keys.QueryKeysForServer(r.Context(), body.DeviceKeys)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, out)
}

// claimKeys is POST /user/keys/claim: {"one_time_keys": {user: {device:
// algorithm}}}, local users only.
func (e *KeyEndpoints) claimKeys(w http.ResponseWriter, r *http.Request) {
	var body struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := mxhttp.DecodeJSON(r, e.maxBody, false, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if body.OneTimeKeys == nil {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.MissingParam, "one_time_keys is required"))
		return
	}
	out, err := e.keys.ClaimKeysForServer(r.Context(), body.OneTimeKeys)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"one_time_keys": out})
}

// E2EEPeers is the E2EE relay's and the ephemeral components' view of
// other servers (e2ee.Federation): the gate, the outbox, and the key
// requests, each one Client.Do, so a server outside the allowlist is never
// contacted.
type E2EEPeers struct {
	c      *Client
	outbox *Outbox
	gate   QueueGate
}

var _ e2ee.Federation = (*E2EEPeers)(nil)

// NewE2EEPeers wraps the client and the outbox.
func NewE2EEPeers(c *Client, outbox *Outbox, gate QueueGate) *E2EEPeers {
	return &E2EEPeers{c: c, outbox: outbox, gate: gate}
}

// Bounds of the answers read from other servers about keys.
const maxKeysAnswer = 8 << 20

// Allowed tells whether the allowlist admits server.
func (p *E2EEPeers) Allowed(server string) bool { return p.gate.Allowed(server) }

// QueueEDU queues an EDU of eduType with content (marshalled to JSON) for
// the destinations, in the transaction q (Outbox.QueueEDU).
func (p *E2EEPeers) QueueEDU(ctx context.Context, q *sqlstore.Queries, destinations []string, eduType string, content any) error {
	raw, err := json.Marshal(content)
	if err != nil {
		return err
	}
	return p.outbox.QueueEDU(ctx, q, destinations, EDU{Type: eduType, Content: raw})
}

// UserDevices is GET /_matrix/federation/v1/user/devices/{userId} on the
// user's server.
func (p *E2EEPeers) UserDevices(ctx context.Context, userID string) (e2ee.UserDevices, error) {
	server := serverOfUser(userID)
	var out e2ee.UserDevices
	req := Request{Destination: server, Method: http.MethodGet, Path: fedPath("/_matrix/federation/v1/user/devices", userID), MaxResponseBytes: maxKeysAnswer}
	if err := p.c.Do(ctx, req, &out); err != nil {
		return out, MatrixError(server, err)
	}
	if out.UserID != userID {
		return out, mxerr.New(mxerr.Unknown, "%s answered about %q, not %s", server, out.UserID, userID).WithStatus(http.StatusBadGateway)
	}
	return out, nil
}

// QueryKeys is POST /_matrix/federation/v1/user/keys/query on server.
func (p *E2EEPeers) QueryKeys(ctx context.Context, server string, deviceKeys map[string][]string) (e2ee.RemoteKeys, error) {
	var out e2ee.RemoteKeys
	req := Request{Destination: server, Method: http.MethodPost, Path: "/_matrix/federation/v1/user/keys/query",
		Body: map[string]any{"device_keys": deviceKeys}, MaxResponseBytes: maxKeysAnswer}
	return out, MatrixError(server, p.c.Do(ctx, req, &out))
}

// ClaimKeys is POST /_matrix/federation/v1/user/keys/claim on server.
func (p *E2EEPeers) ClaimKeys(ctx context.Context, server string, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	var out struct {
		OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	}
	req := Request{Destination: server, Method: http.MethodPost, Path: "/_matrix/federation/v1/user/keys/claim",
		Body: map[string]any{"one_time_keys": oneTimeKeys}, MaxResponseBytes: maxKeysAnswer}
	err := MatrixError(server, p.c.Do(ctx, req, &out))
	return out.OneTimeKeys, err
}
