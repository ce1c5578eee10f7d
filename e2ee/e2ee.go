// Package e2ee is the end-to-end encryption relay: device keys, one-time and
// fallback keys, cross-signing keys and signatures, device-list changes,
// to-device messages and server-side key backups. The server never sees
// plaintext: it checks what it can (who uploads which key, signatures made
// with keys it knows), stores, and relays. The client API uses it now; the
// federation API will use the same service for remote queries, claims,
// to-device EDUs and device-list updates.
//
// Spec: client-server-api/modules/end_to_end_encryption.md,
// modules/send_to_device.md, modules/secrets.md; data/api/client-server/
// keys.yaml, cross_signing.yaml, to_device.yaml, key_backup.yaml.
//
// Every change a client syncs (a to-device message, a device-list change)
// takes a position from the streams Hub inside its transaction.
//
// Device deletion: the keys and pending messages of a device go with its row
// in devices (FOREIGN KEY … ON DELETE CASCADE, migration 008). The accounts
// component, which deletes devices, does not know this package; whoever
// deletes devices (the client API after logout, DELETE /devices,
// deactivation, password change) calls DevicesDeleted afterwards, which
// announces the change to everyone sharing a room. A trigger could not take
// a stream position: only the running process hands them out. Which devices
// are gone is worked out here (announce.go), not told by the caller, and a
// deletion whose DevicesDeleted was forgotten is announced with the user's
// next change.
package e2ee

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/matrix-org/gomatrixserverlib"

	"chappe/mxerr"
	"chappe/sqlstore"
	"chappe/streams"
)

// DefaultMaxPendingToDevice bounds the to-device messages waiting for one
// device (see Config.MaxPendingToDevice).
const DefaultMaxPendingToDevice = 10_000

// Config is the relay's configuration.
type Config struct {
	// ServerName tells local users (whose keys are here) from remote ones.
	ServerName string
	// MaxPendingToDevice is how many to-device messages may wait for one
	// device. Beyond it, the oldest are dropped (and logged): a device that
	// never syncs cannot fill the disk, and one abandoned device never makes
	// its senders' requests fail, which would keep them from sharing keys
	// with everyone else. Zero means DefaultMaxPendingToDevice.
	MaxPendingToDevice int
	// ShareDeviceNames sends the display names of local users' devices to
	// other servers (device_display_name of m.device_list_update, GET
	// /user/devices and POST /user/keys/query). Off, they are left out: a
	// name such as "Phone of the head of the DGSI" tells other ministries
	// more than they need. Local users see the names either way.
	ShareDeviceNames bool
}

// Service is the relay.
type Service struct {
	cfg   Config
	store *sqlstore.Store
	hub   *streams.Hub
	fed   Federation // nil: no federation
	now   func() time.Time

	// resyncs holds the resyncs of remote device lists running in the
	// background, at most maxResyncs at once: user ID → whether to run it
	// again when it ends (an update arrived meanwhile; see startResync).
	resyncMu sync.Mutex
	resyncs  map[string]bool

	// unacked is, per device ("user\x00device"), the highest position of
	// the to-device messages a sync returned and no later since has
	// acknowledged yet: the syncs that must delete. One entry per device
	// with messages in flight; gone on acknowledgement.
	mu      sync.Mutex
	unacked map[string]int64

	// keyCounts caches OneTimeKeyCounts per device; every upload, claim and
	// device deletion in this process drops the device's entry, and a read
	// that overlapped any of them is not cached (keyCountsGen).
	keyCounts    *lru.Cache[string, cachedKeyCounts]
	keyCountsGen atomic.Int64
	keyCountsMu  sync.Mutex // orders "check the generation, then add" against "bump, then drop"
}

type cachedKeyCounts struct {
	at       int64 // stream position when read: a later device-list change of the user invalidates it
	counts   map[string]int
	fallback []string
}

const keyCountsCacheSize = 50_000

// forgetKeyCounts drops a device's cached counts ("" drops the user's).
func (s *Service) forgetKeyCounts(userID, deviceID string) {
	s.keyCountsMu.Lock()
	defer s.keyCountsMu.Unlock()
	s.keyCountsGen.Add(1)
	if deviceID != "" {
		s.keyCounts.Remove(userID + "\x00" + deviceID)
		return
	}
	for _, k := range s.keyCounts.Keys() {
		if strings.HasPrefix(k, userID+"\x00") {
			s.keyCounts.Remove(k)
		}
	}
}

// New builds the relay on the store and the Hub; fed is how it reaches
// other servers (nil when federation is off: remote users are then
// reported in failures, and their to-device messages dropped).
func New(cfg Config, store *sqlstore.Store, hub *streams.Hub, fed Federation) *Service {
	if cfg.MaxPendingToDevice <= 0 {
		cfg.MaxPendingToDevice = DefaultMaxPendingToDevice
	}
	keyCounts, _ := lru.New[string, cachedKeyCounts](keyCountsCacheSize)
	return &Service{cfg: cfg, store: store, hub: hub, fed: fed, now: time.Now, unacked: map[string]int64{},
		keyCounts: keyCounts, resyncs: map[string]bool{}}
}

// ErrAuthRequired is returned by UploadCrossSigningKeys when the upload
// replaces existing keys and the caller has not done user-interactive auth.
var ErrAuthRequired = errors.New("e2ee: user-interactive authentication required")

// InvalidSignature is M_INVALID_SIGNATURE (cross-signing), 400.
const InvalidSignature = mxerr.InvalidSignature

// WrongVersionError is the 403 M_WRONG_ROOM_KEYS_VERSION of the key backup
// endpoints, which carries the current version.
type WrongVersionError struct {
	Code           mxerr.Code `json:"errcode"`
	Message        string     `json:"error"`
	CurrentVersion string     `json:"current_version"`
}

func (e *WrongVersionError) Error() string { return string(e.Code) + ": " + e.Message }

// Status is 403.
func (e *WrongVersionError) Status() int { return 403 }

// inStream runs fn in one transaction with a stream position taken inside
// it, and reports the position to the Hub: visible, waking what change
// names, if the transaction committed and fn changed something; abandoned
// otherwise.
func (s *Service) inStream(ctx context.Context, fn func(q *sqlstore.Queries, pos int64) (bool, streams.Change, error)) error {
	var pos int64
	var changed bool
	var change streams.Change
	err := s.store.InTx(ctx, func(q *sqlstore.Queries) error {
		pos = s.hub.Alloc()
		var err error
		changed, change, err = fn(q, pos)
		return err
	})
	if pos != 0 {
		if err == nil && changed {
			s.hub.Commit(pos, change)
		} else {
			s.hub.Abort(pos)
		}
	}
	return err
}

// serverOf is the server name of a user ID; ok false if it is not one.
func serverOf(userID string) (string, bool) {
	if len(userID) < 3 || userID[0] != '@' || len(userID) > 255 {
		return "", false
	}
	_, server, ok := strings.Cut(userID[1:], ":")
	if !ok || server == "" {
		return "", false
	}
	return server, true
}

func (s *Service) isLocal(userID string) bool {
	server, ok := serverOf(userID)
	return ok && server == s.cfg.ServerName
}

// decodeKey reads an unpadded (or padded) base64 ed25519 public key.
func decodeKey(b64 string) (ed25519.PublicKey, bool) {
	raw, err := base64.RawStdEncoding.DecodeString(b64)
	if err != nil {
		raw, err = base64.StdEncoding.DecodeString(b64)
	}
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, false
	}
	return ed25519.PublicKey(raw), true
}

// verify checks signer's signature with keyID ("ed25519:…") on obj.
func verify(obj []byte, signer, keyID string, pub ed25519.PublicKey) bool {
	return gomatrixserverlib.VerifyJSON(signer, gomatrixserverlib.KeyID(keyID), pub, obj) == nil
}

// canonical is obj in canonical JSON; error M_BAD_JSON if it is not JSON.
func canonical(obj []byte) ([]byte, error) {
	c, err := gomatrixserverlib.CanonicalJSON(obj)
	if err != nil {
		return nil, mxerr.New(mxerr.BadJSON, "Invalid JSON: %v", err)
	}
	return c, nil
}

// signedPart is the canonical JSON of obj without signatures and unsigned:
// what a signature covers, to compare two copies of one key.
func signedPart(obj []byte) string {
	var m map[string]json.RawMessage
	if json.Unmarshal(obj, &m) != nil {
		return ""
	}
	delete(m, "signatures")
	delete(m, "unsigned")
	raw, _ := json.Marshal(m)
	c, _ := gomatrixserverlib.CanonicalJSON(raw)
	return string(c)
}

// withoutUnsigned drops the unsigned member of obj (servers add their own).
func withoutUnsigned(obj []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		return nil, mxerr.New(mxerr.BadJSON, "A key must be a JSON object")
	}
	delete(m, "unsigned")
	raw, _ := json.Marshal(m)
	return canonical(raw)
}

// signatures is the signatures member of a signed object.
type signatures map[string]map[string]string

// mergeSignatures adds extra signatures to the signed object obj.
func mergeSignatures(obj []byte, extra []sqlstore.KeySignature) []byte {
	if len(extra) == 0 {
		return obj
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(obj, &m) != nil {
		return obj
	}
	sigs := signatures{}
	if raw, ok := m["signatures"]; ok {
		_ = json.Unmarshal(raw, &sigs)
	}
	for _, s := range extra {
		if sigs[s.SignerUserID] == nil {
			sigs[s.SignerUserID] = map[string]string{}
		}
		sigs[s.SignerUserID][s.SignerKeyID] = s.Signature
	}
	m["signatures"], _ = json.Marshal(sigs)
	out, _ := json.Marshal(m)
	return out
}

// deviceListChange is what to publish for a change of users' device lists:
// the users themselves and the members of their rooms.
func deviceListChange(ctx context.Context, q *sqlstore.Queries, users ...string) (streams.Change, error) {
	ch := streams.Change{Kind: streams.KindDeviceList, Users: users}
	for _, u := range users {
		rooms, err := q.RoomsWithMembership(ctx, u, "join")
		if err != nil {
			return ch, err
		}
		ch.Rooms = append(ch.Rooms, rooms...)
	}
	return ch, nil
}

// markChanged records a device-list change of users at pos and returns what
// to publish.
func markChanged(ctx context.Context, q *sqlstore.Queries, pos int64, users ...string) (streams.Change, error) {
	if err := q.MarkDeviceListChanged(ctx, users, pos); err != nil {
		return streams.Change{}, err
	}
	return deviceListChange(ctx, q, users...)
}

// DevicesDeleted announces that some of userID's devices were deleted
// (their keys went with them by cascade): everyone sharing a room with the
// user sees them in device_lists.changed, and the servers sharing a room
// get an m.device_list_update for each device they may know of that is
// gone (markAndAnnounce works out which). Call it after every deletion of
// devices.
func (s *Service) DevicesDeleted(ctx context.Context, userID string) error {
	defer s.forgetKeyCounts(userID, "")
	// Their messages are gone: forget what awaited acknowledgement.
	devices, err := s.store.ListDevices(ctx, userID)
	if err != nil {
		return err
	}
	alive := map[string]bool{}
	for _, d := range devices {
		alive[userID+"\x00"+d.DeviceID] = true
	}
	s.mu.Lock()
	for key := range s.unacked {
		if strings.HasPrefix(key, userID+"\x00") && !alive[key] {
			delete(s.unacked, key)
		}
	}
	s.mu.Unlock()
	return s.inStream(ctx, func(q *sqlstore.Queries, pos int64) (bool, streams.Change, error) {
		ch, err := s.markAndAnnounce(ctx, q, pos, userID, announcement{})
		return err == nil, ch, err
	})
}
