package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/rs/zerolog"
	"golang.org/x/sync/singleflight"

	"chappe/signingkey"
)

// KeyRingConfig configures the key ring.
type KeyRingConfig struct {
	// ServerName, Key and KeyValidity are ours: our key is answered locally,
	// valid for KeyValidity from now (as our key server publishes it).
	ServerName  string
	Key         signingkey.Key
	KeyValidity time.Duration
	// CacheSize is how many servers' key documents are kept; 0: 1024.
	CacheSize int
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
}

// keyFetcher is how the key ring fetches a key document (*Client).
type keyFetcher interface {
	Do(ctx context.Context, req Request, out any) error
}

// minRefetch is how long a server's key document is not fetched again,
// even when a key is missing from it or it could not be had: servers
// "should limit how frequently they query" (GET /_matrix/key/v2/server).
const minRefetch = 30 * time.Second

// maxKeyDocumentBytes caps a key document.
const maxKeyDocumentBytes = 1 << 20

// KeyRing finds the public keys of servers and checks signatures with them
// (gomatrixserverlib.JSONVerifier, for VerifyEventSignatures, and ServerKey
// for request signatures). Its rules, in order:
//   - our own key is answered locally;
//   - a server the allowlist gate does not allow gets an error, and
//     nothing is fetched;
//   - the verify keys the allowlist pins for a server are its only keys:
//     nothing is fetched;
//   - otherwise GET /_matrix/key/v2/server directly from the server (never
//     through a notary: spec "Querying Keys Through Another Server" is not
//     used), checked (server_name, self-signature by every verify key),
//     kept in memory until valid_until_ts, one fetch per server at a time.
//
// Spec: server-server-api.md, "Retrieving server keys".
type KeyRing struct {
	cfg     KeyRingConfig
	gate    Gate
	fetcher keyFetcher
	log     zerolog.Logger
	now     func() time.Time
	cache   *lru.Cache[string, *keyDocument]
	group   singleflight.Group
	// attempts remembers when each server's document was last fetched
	// (successfully or not), for minRefetch. Guarded by attemptsMu.
	attemptsMu sync.Mutex
	attempts   *lru.Cache[string, time.Time]
}

// keyDocument is a server's checked key document.
type keyDocument struct {
	verify     map[gomatrixserverlib.KeyID]ed25519.PublicKey
	old        map[gomatrixserverlib.KeyID]oldKey
	validUntil spec.Timestamp
	// expires is when the document is fetched again: valid_until_ts, but
	// no more than 7 days after it was fetched.
	expires time.Time
}

type oldKey struct {
	pub     ed25519.PublicKey
	expired spec.Timestamp
}

// keyInfo is one key and when it may be used.
type keyInfo struct {
	pub ed25519.PublicKey
	// always: a key we vouch for whatever the time (ours, or pinned by the
	// officers' list while the list is in force).
	always bool
	// validUntil is the document's valid_until_ts for a current key;
	// expired the expired_ts of an old key (zero for a current key).
	validUntil, expired spec.Timestamp
}

// validAt tells whether the key may check a signature made at atTS.
// An old key is good before its expired_ts; a current key is judged by
// check (StrictValiditySignatureCheck for room versions with strict key
// validity: the key must be valid at the event's origin_server_ts, using
// the lesser of valid_until_ts and 7 days from now; spec: rooms/v5.md,
// "Signing key validity period").
func (k keyInfo) validAt(atTS spec.Timestamp, check gomatrixserverlib.SignatureValidityCheckFunc) bool {
	switch {
	case k.always:
		return true
	case k.expired != 0:
		return atTS < k.expired
	case check == nil:
		return gomatrixserverlib.StrictValiditySignatureCheck(atTS, k.validUntil)
	}
	return check(atTS, k.validUntil)
}

// NewKeyRing builds the key ring; fetcher is the federation client.
func NewKeyRing(cfg KeyRingConfig, gate Gate, fetcher *Client, log zerolog.Logger) *KeyRing {
	return newKeyRing(cfg, gate, fetcher, log)
}

func newKeyRing(cfg KeyRingConfig, gate Gate, fetcher keyFetcher, log zerolog.Logger) *KeyRing {
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 1024
	}
	k := &KeyRing{cfg: cfg, gate: gate, fetcher: fetcher, log: log.With().Str("component", "keyring").Logger(), now: cfg.Now}
	if k.now == nil {
		k.now = time.Now
	}
	k.cache, _ = lru.New[string, *keyDocument](cfg.CacheSize)
	k.attempts, _ = lru.New[string, time.Time](cfg.CacheSize)
	return k
}

var _ gomatrixserverlib.JSONVerifier = (*KeyRing)(nil)

// VerifyJSONs implements gomatrixserverlib.JSONVerifier: each request's
// message must carry a valid signature of its ServerName, by a key valid at
// AtTS according to ValidityCheckingFunc. A server outside the federation
// fails with the gate's *allowlist.NotAllowedError. The error return is
// always nil: every failure belongs to one request.
func (k *KeyRing) VerifyJSONs(ctx context.Context, requests []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	results := make([]gomatrixserverlib.VerifyJSONResult, len(requests))
	for i, r := range requests {
		results[i].Error = k.verifyJSON(ctx, r)
	}
	return results, nil
}

func (k *KeyRing) verifyJSON(ctx context.Context, r gomatrixserverlib.VerifyJSONRequest) error {
	server := string(r.ServerName)
	if err := k.gate.Check(server); err != nil {
		return k.verifyRemoved(server, r, err)
	}
	ids, err := gomatrixserverlib.ListKeyIDs(server, r.Message)
	if err != nil {
		return fmt.Errorf("reading the signatures of %s: %w", server, err)
	}
	var errs []error
	for _, id := range ids {
		if !strings.HasPrefix(string(id), "ed25519:") {
			continue
		}
		key, err := k.lookup(ctx, server, id, r.AtTS)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !key.validAt(r.AtTS, r.ValidityCheckingFunc) {
			errs = append(errs, fmt.Errorf("key %s of %s was not valid at %d", id, server, r.AtTS))
			continue
		}
		if err := gomatrixserverlib.VerifyJSON(server, id, key.pub, r.Message); err != nil {
			errs = append(errs, fmt.Errorf("signature by key %s of %s: %w", id, server, err))
			continue
		}
		return nil
	}
	if len(errs) == 0 {
		return fmt.Errorf("not signed by %s with an ed25519 key", server)
	}
	return errors.Join(errs...)
}

// verifyRemoved checks a signature of a server the gate refuses (refusal):
// only a server the list shows as removed, on something signed before its
// removal, with the keys the removal record carries (Removal.VerifyKeys).
// Nothing is ever fetched from it. Otherwise refusal stands.
func (k *KeyRing) verifyRemoved(server string, r gomatrixserverlib.VerifyJSONRequest, refusal error) error {
	removal, ok := k.gate.Removed(server)
	if !ok || len(removal.VerifyKeys) == 0 || int64(r.AtTS) >= removal.RemovedAt {
		return refusal
	}
	ids, err := gomatrixserverlib.ListKeyIDs(server, r.Message)
	if err != nil {
		return fmt.Errorf("reading the signatures of %s: %w", server, err)
	}
	for _, id := range ids {
		b64, ok := removal.VerifyKeys[string(id)]
		if !ok {
			continue
		}
		pub, err := decodeKey(b64)
		if err != nil {
			return fmt.Errorf("the key %s the removal record of %s carries: %w", id, server, err)
		}
		return gomatrixserverlib.VerifyJSON(server, id, pub, r.Message)
	}
	return fmt.Errorf("%s was removed from the allowlist and its removal record has none of the keys it signed with: %w", server, refusal)
}

// ServerKey is the key keyID of server, for checking a request signature
// made now: ours, one the allowlist pins, or a current verify key (never an
// old one) of the server's own document, valid now.
func (k *KeyRing) ServerKey(ctx context.Context, server, keyID string) (ed25519.PublicKey, error) {
	if err := k.gate.Check(server); err != nil {
		return nil, err
	}
	now := spec.AsTimestamp(k.now())
	key, err := k.lookup(ctx, server, gomatrixserverlib.KeyID(keyID), now)
	if err != nil {
		return nil, err
	}
	if key.expired != 0 {
		return nil, fmt.Errorf("key %s of %s expired at %d: old keys sign events, not requests", keyID, server, key.expired)
	}
	if !key.validAt(now, gomatrixserverlib.StrictValiditySignatureCheck) {
		return nil, fmt.Errorf("key %s of %s is past its valid_until_ts", keyID, server)
	}
	return key.pub, nil
}

// lookup finds key id of server, which must be allowed (checked by the
// callers): ours, pinned, cached or fetched.
func (k *KeyRing) lookup(ctx context.Context, server string, id gomatrixserverlib.KeyID, atTS spec.Timestamp) (keyInfo, error) {
	if server == k.cfg.ServerName {
		if id != k.cfg.Key.ID {
			return keyInfo{}, fmt.Errorf("%s is not our key (ours is %s)", id, k.cfg.Key.ID)
		}
		return keyInfo{pub: k.cfg.Key.Public(), always: true}, nil
	}
	if pinned, ok := k.gate.Pinned(server); ok && len(pinned.VerifyKeys) > 0 {
		b64, ok := pinned.VerifyKeys[string(id)]
		if !ok {
			return keyInfo{}, fmt.Errorf("the allowlist pins the keys of %s, and %s is not one of them", server, id)
		}
		pub, err := decodeKey(b64)
		if err != nil {
			return keyInfo{}, fmt.Errorf("the key %s the allowlist pins for %s: %w", id, server, err)
		}
		return keyInfo{pub: pub, always: true}, nil
	}
	doc, _ := k.cache.Get(server)
	if doc == nil || k.wantsFresher(doc, id, atTS) {
		if fetched, err := k.fetch(ctx, server); err == nil {
			doc = fetched
		} else if doc == nil {
			return keyInfo{}, err
		}
	}
	if pub, ok := doc.verify[id]; ok {
		return keyInfo{pub: pub, validUntil: doc.validUntil}, nil
	}
	if old, ok := doc.old[id]; ok {
		return keyInfo{pub: old.pub, expired: old.expired}, nil
	}
	return keyInfo{}, fmt.Errorf("%s does not publish a key %s", server, id)
}

// wantsFresher tells whether a cached document should be fetched again for
// key id at atTS: it expired, lacks the key, or its valid_until_ts falls
// before atTS (the server may have published a later one since).
func (k *KeyRing) wantsFresher(doc *keyDocument, id gomatrixserverlib.KeyID, atTS spec.Timestamp) bool {
	if !k.now().Before(doc.expires) {
		return true
	}
	if _, ok := doc.verify[id]; ok {
		return doc.validUntil < atTS
	}
	_, ok := doc.old[id]
	return !ok
}

// fetch gets server's key document, once for all concurrent callers and
// no more than once per minRefetch.
func (k *KeyRing) fetch(ctx context.Context, server string) (*keyDocument, error) {
	v, err, _ := k.group.Do(server, func() (any, error) {
		k.attemptsMu.Lock()
		last, tried := k.attempts.Get(server)
		if tried && k.now().Sub(last) < minRefetch {
			k.attemptsMu.Unlock()
			return nil, fmt.Errorf("the keys of %s were fetched less than %s ago", server, minRefetch)
		}
		k.attempts.Add(server, k.now())
		k.attemptsMu.Unlock()
		var raw json.RawMessage
		err := k.fetcher.Do(ctx, Request{
			Destination: server, Method: http.MethodGet, Path: KeyPath, Unsigned: true, MaxResponseBytes: maxKeyDocumentBytes,
		}, &raw)
		if err != nil {
			return nil, fmt.Errorf("fetching the keys of %s: %w", server, err)
		}
		doc, err := parseKeyDocument(server, raw, k.now())
		if err != nil {
			k.log.Warn().Str("server", server).Err(err).Msg("refusing a server's key document")
			return nil, err
		}
		k.cache.Add(server, doc)
		return doc, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*keyDocument), nil
}

// maxKeyCacheTime caps how long a key document is kept (the spec's 7 days).
const maxKeyCacheTime = 7 * 24 * time.Hour

// parseKeyDocument checks the answer of GET /_matrix/key/v2/server from
// server: its server_name is server, and every ed25519 verify key signed it.
// Spec: server-server-api.md, "Publishing Keys".
func parseKeyDocument(server string, raw []byte, now time.Time) (*keyDocument, error) {
	var body struct {
		ServerName string `json:"server_name"`
		VerifyKeys map[gomatrixserverlib.KeyID]struct {
			Key string `json:"key"`
		} `json:"verify_keys"`
		OldVerifyKeys map[gomatrixserverlib.KeyID]struct {
			Key       string         `json:"key"`
			ExpiredTS spec.Timestamp `json:"expired_ts"`
		} `json:"old_verify_keys"`
		ValidUntilTS spec.Timestamp `json:"valid_until_ts"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, fmt.Errorf("the key document of %s is not valid: %w", server, err)
	}
	if body.ServerName != server {
		return nil, fmt.Errorf("the key document of %s is for %q", server, body.ServerName)
	}
	doc := &keyDocument{
		verify: map[gomatrixserverlib.KeyID]ed25519.PublicKey{}, old: map[gomatrixserverlib.KeyID]oldKey{},
		validUntil: body.ValidUntilTS,
		expires:    body.ValidUntilTS.Time(),
	}
	if limit := now.Add(maxKeyCacheTime); doc.expires.After(limit) {
		doc.expires = limit
	}
	for id, vk := range body.VerifyKeys {
		if !strings.HasPrefix(string(id), "ed25519:") {
			continue
		}
		pub, err := decodeKey(vk.Key)
		if err != nil {
			return nil, fmt.Errorf("key %s of %s: %w", id, server, err)
		}
		if err := gomatrixserverlib.VerifyJSON(server, id, pub, raw); err != nil {
			return nil, fmt.Errorf("the key document of %s is not signed by its key %s: %w", server, id, err)
		}
		doc.verify[id] = pub
	}
	if len(doc.verify) == 0 {
		return nil, fmt.Errorf("the key document of %s has no ed25519 verify key", server)
	}
	for id, ok := range body.OldVerifyKeys {
		if !strings.HasPrefix(string(id), "ed25519:") || ok.ExpiredTS <= 0 {
			continue
		}
		pub, err := decodeKey(ok.Key)
		if err != nil {
			return nil, fmt.Errorf("old key %s of %s: %w", id, server, err)
		}
		doc.old[id] = oldKey{pub: pub, expired: ok.ExpiredTS}
	}
	return doc, nil
}

// decodeKey reads an unpadded (or padded) base64 ed25519 public key.
func decodeKey(b64 string) (ed25519.PublicKey, error) {
	raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(b64, "="))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, errors.New("not a base64 ed25519 public key")
	}
	return ed25519.PublicKey(raw), nil
}
