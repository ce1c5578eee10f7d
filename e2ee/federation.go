package e2ee

import (
	"context"
	"encoding/json"

	"chappe/sqlstore"
)

// This file declares what the relay needs of other servers and the shapes
// of what it exchanges with them. Spec: server-server-api.md, "Device
// Management", "End-to-End Encryption", "Send-to-device messaging";
// data/api/server-server/user_devices.yaml, user_keys.yaml.

// Federation is the relay's view of other servers (federation.E2EEPeers):
// the allowlist gate, the outbox for EDUs, and the three key requests.
// Every request goes through the federation client, which refuses a server
// outside the list without contacting it.
type Federation interface {
	// Allowed tells whether the allowlist admits server.
	Allowed(server string) bool
	// QueueEDU queues an EDU for the destinations in the transaction q
	// (ourselves and unlisted servers are left out).
	QueueEDU(ctx context.Context, q *sqlstore.Queries, destinations []string, eduType string, content any) error
	// UserDevices is GET /_matrix/federation/v1/user/devices/{userId} on
	// the user's server.
	UserDevices(ctx context.Context, userID string) (UserDevices, error)
	// QueryKeys is POST /_matrix/federation/v1/user/keys/query on server.
	QueryKeys(ctx context.Context, server string, deviceKeys map[string][]string) (RemoteKeys, error)
	// ClaimKeys is POST /_matrix/federation/v1/user/keys/claim on server.
	ClaimKeys(ctx context.Context, server string, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
}

// EDU types of the relay.
const (
	EDUDeviceListUpdate = "m.device_list_update"
	EDUSigningKeyUpdate = "m.signing_key_update"
	EDUDirectToDevice   = "m.direct_to_device"
)

// DeviceListUpdate is the content of an m.device_list_update EDU.
// Spec: server-server-api.md, "Device Management".
type DeviceListUpdate struct {
	UserID      string          `json:"user_id"`
	DeviceID    string          `json:"device_id"`
	DisplayName *string         `json:"device_display_name,omitempty"`
	StreamID    int64           `json:"stream_id"`
	PrevID      []int64         `json:"prev_id,omitempty"`
	Deleted     bool            `json:"deleted,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}

// SigningKeyUpdate is the content of an m.signing_key_update EDU.
// Spec: server-server-api.md, "Cross-signing keys".
type SigningKeyUpdate struct {
	UserID         string          `json:"user_id"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// DirectToDevice is the content of an m.direct_to_device EDU.
// Spec: server-server-api.md, "Send-to-device messaging".
type DirectToDevice struct {
	Sender    string                                `json:"sender"`
	Type      string                                `json:"type"`
	MessageID string                                `json:"message_id"`
	Messages  map[string]map[string]json.RawMessage `json:"messages"`
}

// UserDevices is the answer of GET /user/devices/{userId}.
type UserDevices struct {
	UserID         string          `json:"user_id"`
	StreamID       int64           `json:"stream_id"`
	Devices        []UserDevice    `json:"devices"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// UserDevice is one device in UserDevices.
type UserDevice struct {
	DeviceID    string          `json:"device_id"`
	DisplayName *string         `json:"device_display_name,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}

// RemoteKeys is the answer of POST /user/keys/query.
type RemoteKeys struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys,omitempty"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys,omitempty"`
}
