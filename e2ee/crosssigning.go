package e2ee

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"strings"

	"chappe/mxerr"
	"chappe/sqlstore"
	"chappe/streams"
)

// CrossSigningUpload is the body of POST /keys/device_signing/upload
// (without auth, which the client API handles).
type CrossSigningUpload struct {
	MasterKey      json.RawMessage `json:"master_key"`
	SelfSigningKey json.RawMessage `json:"self_signing_key"`
	UserSigningKey json.RawMessage `json:"user_signing_key"`
}

// crossSigningKey is the part of a CrossSigningKey the server checks.
type crossSigningKey struct {
	UserID string            `json:"user_id"`
	Usage  []string          `json:"usage"`
	Keys   map[string]string `json:"keys"`
}

// parsedKey is an uploaded cross-signing key that passed the checks.
type parsedKey struct {
	keyType string
	public  string
	raw     []byte // canonical, without unsigned
}

// checkCrossSigningKey validates one uploaded key of keyType for userID.
func checkCrossSigningKey(raw json.RawMessage, keyType, userID string) (*parsedKey, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	field := keyType + "_key"
	var k crossSigningKey
	if err := json.Unmarshal(raw, &k); err != nil {
		return nil, mxerr.New(mxerr.BadJSON, "%s: %v", field, err)
	}
	if k.UserID != userID {
		return nil, mxerr.New(mxerr.InvalidParam, "%s.user_id must be %s", field, userID)
	}
	if !slices.Contains(k.Usage, keyType) {
		return nil, mxerr.New(mxerr.InvalidParam, "%s.usage must contain %q", field, keyType)
	}
	if len(k.Keys) != 1 {
		return nil, mxerr.New(mxerr.InvalidParam, "%s.keys must hold exactly one key", field)
	}
	var public string
	for id, v := range k.Keys {
		pub, ok := strings.CutPrefix(id, "ed25519:")
		if _, valid := decodeKey(v); !ok || pub != v || !valid {
			return nil, mxerr.New(mxerr.InvalidParam, "%s.keys must be {\"ed25519:<public key>\": \"<public key>\"}", field)
		}
		public = pub
	}
	stored, err := withoutUnsigned(raw)
	if err != nil {
		return nil, err
	}
	return &parsedKey{keyType: keyType, public: public, raw: stored}, nil
}

// UploadCrossSigningKeys stores the user's master, self-signing and
// user-signing keys. The self-signing and user-signing keys must be signed
// by the master key (the one uploaded with them, or else the stored one).
// Spec: POST /keys/device_signing/upload — user-interactive auth is required
// unless the user has no master key yet or the request contains no new key
// (a retried upload): without it (authenticated false) such a request gets
// ErrAuthRequired and stores nothing.
func (s *Service) UploadCrossSigningKeys(ctx context.Context, userID string, req CrossSigningUpload, authenticated bool) error {
	var keys []*parsedKey
	for _, k := range []struct {
		raw json.RawMessage
		typ string
	}{{req.MasterKey, "master"}, {req.SelfSigningKey, "self_signing"}, {req.UserSigningKey, "user_signing"}} {
		p, err := checkCrossSigningKey(k.raw, k.typ, userID)
		if err != nil {
			return err
		}
		if p != nil {
			keys = append(keys, p)
		}
	}
	return s.inStream(ctx, func(q *sqlstore.Queries, pos int64) (bool, streams.Change, error) {
		existing, err := q.LockCrossSigningKeys(ctx, userID)
		if err != nil {
			return false, streams.Change{}, err
		}
		have := map[string]string{} // key type → public key
		for _, k := range existing {
			have[k.KeyType] = k.PublicKey
		}
		var fresh []*parsedKey
		for _, k := range keys {
			if have[k.keyType] != k.public {
				fresh = append(fresh, k)
			}
		}
		if len(fresh) == 0 {
			return false, streams.Change{}, nil // nothing new: idempotent retry
		}
		if have["master"] != "" && !authenticated {
			return false, streams.Change{}, ErrAuthRequired
		}
		master := have["master"]
		for _, k := range keys {
			if k.keyType == "master" {
				master = k.public
			}
		}
		if master == "" {
			return false, streams.Change{}, mxerr.New(mxerr.MissingParam, "No master signing key: upload master_key first or with the other keys")
		}
		masterPub, _ := decodeKey(master)
		for _, k := range fresh {
			if k.keyType != "master" && !verify(k.raw, userID, "ed25519:"+master, masterPub) {
				return false, streams.Change{}, mxerr.New(mxerr.InvalidSignature, "%s_key is not signed by the master key", k.keyType)
			}
			// A key whose public key is one of the user's device IDs would
			// make "ed25519:<id>" ambiguous in signatures.
			if _, err := q.GetDevice(ctx, userID, k.public); err == nil {
				return false, streams.Change{}, mxerr.New(mxerr.Forbidden, "The public key of %s_key is the ID of one of your devices", k.keyType)
			} else if !errors.Is(err, sqlstore.ErrNotFound) {
				return false, streams.Change{}, err
			}
		}
		now := s.now().UnixMilli()
		for _, k := range fresh {
			if err := q.PutCrossSigningKey(ctx, sqlstore.CrossSigningKey{UserID: userID, KeyType: k.keyType, PublicKey: k.public, KeyJSON: string(k.raw)}, now); err != nil {
				return false, streams.Change{}, err
			}
		}
		ch, err := s.markAndAnnounce(ctx, q, pos, userID, announcement{crossSigning: true})
		return err == nil, ch, err
	})
}

// SignatureFailure is one entry of the failures of /keys/signatures/upload.
type SignatureFailure struct {
	Code    mxerr.Code `json:"errcode"`
	Message string     `json:"error"`
}

// UploadSignatures stores the signatures signer made on keys: on their own
// devices (with their self-signing key), on their own master key (with one
// of their devices), or on another user's master key (with their
// user-signing key). Each signed object must be the stored key with the
// signer's signatures added. The failures map user ID → key ID → error
// for the keys refused. Spec: POST /keys/signatures/upload.
func (s *Service) UploadSignatures(ctx context.Context, signer string, body map[string]map[string]json.RawMessage) (map[string]map[string]SignatureFailure, error) {
	failures := map[string]map[string]SignatureFailure{}
	fail := func(user, key string, code mxerr.Code, msg string) {
		if failures[user] == nil {
			failures[user] = map[string]SignatureFailure{}
		}
		failures[user][key] = SignatureFailure{Code: code, Message: msg}
	}
	users := []string{signer}
	for u := range body {
		if _, ok := serverOf(u); !ok {
			return nil, mxerr.New(mxerr.InvalidParam, "%q is not a user ID", u)
		}
		if u != signer && s.isLocal(u) {
			users = append(users, u)
		}
	}
	// Read what the signatures will be checked against.
	cross, err := s.store.CrossSigningKeysOf(ctx, users)
	if err != nil {
		return nil, err
	}
	csk := map[[2]string]sqlstore.CrossSigningKey{} // (user, type) → key
	for _, k := range cross {
		csk[[2]string{k.UserID, k.KeyType}] = k
	}
	remoteMasters := s.remoteMasterKeys(ctx, signer, body)
	devices, err := s.store.DeviceKeysOf(ctx, []string{signer})
	if err != nil {
		return nil, err
	}
	myDevices := map[string]sqlstore.DeviceKeys{}
	for _, d := range devices {
		myDevices[d.DeviceID] = d
	}
	var good []sqlstore.KeySignature
	touched := map[string]bool{}
	var own announcement // the signer's own keys newly signed: other servers see those
	for _, user := range sortedKeys(body) {
		for _, keyID := range sortedKeys(body[user]) {
			obj := body[user][keyID]
			var sigs struct {
				Signatures signatures `json:"signatures"`
			}
			if err := json.Unmarshal(obj, &sigs); err != nil {
				fail(user, keyID, mxerr.BadJSON, "Not a signed JSON object")
				continue
			}
			// What key is signed, with which key of the signer it must be signed.
			var storedJSON, signingKey, signingPub string
			switch {
			case !s.isLocal(user):
				// Another server's user: their master key as their server
				// gives it, signed with the signer's user-signing key. The
				// signature stays here: only the signer sees it (spec: the
				// user-signing key's signatures are private).
				master, ok := remoteMasters[user]
				if !ok || master.public != keyID {
					fail(user, keyID, mxerr.NotFound, "Unknown key: not the master key "+user+"'s server gives")
					continue
				}
				storedJSON = string(master.raw)
				signingPub = csk[[2]string{signer, "user_signing"}].PublicKey
				signingKey = "ed25519:" + signingPub
				if signingPub == "" {
					fail(user, keyID, mxerr.NotFound, "Upload a user-signing key before signing other users")
					continue
				}
			case user == signer && myDevices[keyID].KeyJSON != "":
				storedJSON = myDevices[keyID].KeyJSON
				signingPub = csk[[2]string{signer, "self_signing"}].PublicKey
				signingKey = "ed25519:" + signingPub
				if signingPub == "" {
					fail(user, keyID, mxerr.NotFound, "Upload a self-signing key before signing your devices")
					continue
				}
			case user == signer && csk[[2]string{signer, "master"}].PublicKey == keyID:
				storedJSON = csk[[2]string{signer, "master"}].KeyJSON
				// Signed by one of the signer's devices: whichever signature matches.
				for id := range sigs.Signatures[signer] {
					if d, ok := myDevices[strings.TrimPrefix(id, "ed25519:")]; ok && strings.HasPrefix(id, "ed25519:") {
						signingKey, signingPub = id, d.Ed25519
						break
					}
				}
				if signingKey == "" {
					fail(user, keyID, InvalidSignature, "The master key must be signed by one of your devices")
					continue
				}
			case user != signer && csk[[2]string{user, "master"}].PublicKey == keyID:
				storedJSON = csk[[2]string{user, "master"}].KeyJSON
				signingPub = csk[[2]string{signer, "user_signing"}].PublicKey
				signingKey = "ed25519:" + signingPub
				if signingPub == "" {
					fail(user, keyID, mxerr.NotFound, "Upload a user-signing key before signing other users")
					continue
				}
			default:
				fail(user, keyID, mxerr.NotFound, "Unknown key")
				continue
			}
			if signedPart(obj) != signedPart([]byte(storedJSON)) {
				fail(user, keyID, mxerr.InvalidParam, "The signed object is not the stored key")
				continue
			}
			pub, _ := decodeKey(signingPub)
			sig, ok := sigs.Signatures[signer][signingKey]
			if !ok || !verify(obj, signer, signingKey, pub) {
				fail(user, keyID, InvalidSignature, "Invalid signature")
				continue
			}
			good = append(good, sqlstore.KeySignature{TargetUserID: user, TargetKeyID: keyID, SignerUserID: signer, SignerKeyID: signingKey, Signature: sig})
			touched[user] = true
			if user == signer {
				own.crossSigning = own.crossSigning || keyID == csk[[2]string{signer, "master"}].PublicKey
				if _, ok := myDevices[keyID]; ok {
					own.devices = append(own.devices, keyID)
				}
			}
		}
	}
	if len(good) == 0 {
		return failures, nil
	}
	err = s.inStream(ctx, func(q *sqlstore.Queries, pos int64) (bool, streams.Change, error) {
		now := s.now().UnixMilli()
		for _, g := range good {
			if err := q.PutKeySignature(ctx, g, now); err != nil {
				return false, streams.Change{}, err
			}
		}
		// The signed users' keys changed: their devices' trust for their
		// own signatures, the signer's view for user-signing ones. Only
		// the signer's own signatures are for other servers to see.
		delete(touched, signer)
		ch, err := markChanged(ctx, q, pos, sortedKeys(touched)...)
		if err == nil && (len(own.devices) > 0 || own.crossSigning) {
			var mine streams.Change
			mine, err = s.markAndAnnounce(ctx, q, pos, signer, own)
			ch.Users, ch.Rooms = append(ch.Users, mine.Users...), append(ch.Rooms, mine.Rooms...)
		}
		return err == nil, ch, err
	})
	return failures, err
}

// remoteMasterKeys is the master keys of the other servers' users that
// body signs, as /keys/query gives them to signer (from the cache of
// remote device lists, or from their servers through the gate); a user
// whose key cannot be had is left out.
func (s *Service) remoteMasterKeys(ctx context.Context, signer string, body map[string]map[string]json.RawMessage) map[string]*parsedKey {
	req := QueryRequest{DeviceKeys: map[string][]string{}}
	for u := range body {
		if !s.isLocal(u) {
			req.DeviceKeys[u] = []string{}
		}
	}
	out := map[string]*parsedKey{}
	if len(req.DeviceKeys) == 0 {
		return out
	}
	resp, err := s.QueryKeys(ctx, signer, req)
	if err != nil {
		return out
	}
	for u, raw := range resp.MasterKeys {
		if k, err := checkCrossSigningKey(raw, "master", u); err == nil && k != nil {
			out[u] = k
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
