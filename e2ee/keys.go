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

// AlgorithmSignedCurve25519 is the one-time and fallback key algorithm of Olm.
const AlgorithmSignedCurve25519 = "signed_curve25519"

// UploadRequest is the body of POST /keys/upload.
type UploadRequest struct {
	DeviceKeys   json.RawMessage            `json:"device_keys"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
}

// deviceKeys is the part of a DeviceKeys object the server checks.
type deviceKeys struct {
	UserID     string            `json:"user_id"`
	DeviceID   string            `json:"device_id"`
	Algorithms []string          `json:"algorithms"`
	Keys       map[string]string `json:"keys"`
}

// checkDeviceKeys validates uploaded device keys for the device: they must
// name the user and the device, carry the device's ed25519 key and be signed
// with it. It returns the keys to store (canonical, without unsigned) and
// the ed25519 key.
func checkDeviceKeys(raw json.RawMessage, userID, deviceID string) ([]byte, string, error) {
	var dk deviceKeys
	if err := json.Unmarshal(raw, &dk); err != nil {
		return nil, "", mxerr.New(mxerr.BadJSON, "device_keys: %v", err)
	}
	if dk.UserID != userID || dk.DeviceID != deviceID {
		return nil, "", mxerr.New(mxerr.InvalidParam, "device_keys must be those of the device making the request (%s, %s)", userID, deviceID)
	}
	if len(dk.Algorithms) == 0 {
		return nil, "", mxerr.New(mxerr.InvalidParam, "device_keys.algorithms must not be empty")
	}
	keyID := "ed25519:" + deviceID
	ed, ok := dk.Keys[keyID]
	pub, valid := decodeKey(ed)
	if !ok || !valid {
		return nil, "", mxerr.New(mxerr.InvalidParam, "device_keys.keys must hold the device's ed25519 key %q", keyID)
	}
	if !verify(raw, userID, keyID, pub) {
		return nil, "", mxerr.New(mxerr.InvalidParam, "device_keys is not signed by the device's ed25519 key")
	}
	stored, err := withoutUnsigned(raw)
	return stored, ed, err
}

// checkOneTimeKeys validates one-time or fallback keys: "<algorithm>:<id>"
// names, signed_curve25519 keys signed by the device's ed25519 key.
func checkOneTimeKeys(what string, keys map[string]json.RawMessage, userID, deviceID, ed string) ([]sqlstore.OneTimeKey, error) {
	var out []sqlstore.OneTimeKey
	pub, havePub := decodeKey(ed)
	for name, raw := range keys {
		alg, id, ok := strings.Cut(name, ":")
		if !ok || alg == "" || id == "" {
			return nil, mxerr.New(mxerr.InvalidParam, "%s: key name %q is not <algorithm>:<key_id>", what, name)
		}
		trimmed := strings.TrimSpace(string(raw))
		switch {
		case strings.HasPrefix(trimmed, "{"):
			if strings.HasPrefix(alg, "signed_") {
				if !havePub {
					return nil, mxerr.New(mxerr.InvalidParam, "%s: upload device_keys before signed keys", what)
				}
				if !verify(raw, userID, "ed25519:"+deviceID, pub) {
					return nil, mxerr.New(mxerr.InvalidParam, "%s: key %q is not signed by the device's ed25519 key", what, name)
				}
			}
		case strings.HasPrefix(trimmed, `"`) && !strings.HasPrefix(alg, "signed_"):
		default:
			return nil, mxerr.New(mxerr.InvalidParam, "%s: key %q must be a signed key object", what, name)
		}
		c, err := canonical(raw)
		if err != nil {
			return nil, err
		}
		out = append(out, sqlstore.OneTimeKey{Algorithm: alg, KeyID: id, KeyJSON: string(c)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].KeyID < out[j].KeyID })
	return out, nil
}

// UploadKeys stores the device's identity keys, one-time keys and fallback
// keys and returns its one-time key counts. Spec: POST /keys/upload.
// Re-uploading the same device keys or one-time key is a no-op; a different
// one-time key under an ID already stored is refused (M_INVALID_PARAM).
// New or changed device keys are a device-list change.
func (s *Service) UploadKeys(ctx context.Context, userID, deviceID string, req UploadRequest) (map[string]int, error) {
	defer s.forgetKeyCounts(userID, deviceID)
	var newDevice []byte
	var ed string
	hasDeviceKeys := len(req.DeviceKeys) > 0 && string(req.DeviceKeys) != "null"
	if hasDeviceKeys {
		var err error
		if newDevice, ed, err = checkDeviceKeys(req.DeviceKeys, userID, deviceID); err != nil {
			return nil, err
		}
	}
	// Only new device keys take a stream position: one-time key uploads,
	// the frequent case, do not move the stream.
	stored, err := s.store.GetDeviceKeys(ctx, userID, deviceID)
	if err != nil && !errors.Is(err, sqlstore.ErrNotFound) {
		return nil, err
	}
	if !hasDeviceKeys {
		ed = stored.Ed25519
	}
	otks, err := checkOneTimeKeys("one_time_keys", req.OneTimeKeys, userID, deviceID, ed)
	if err != nil {
		return nil, err
	}
	fallbacks, err := checkOneTimeKeys("fallback_keys", req.FallbackKeys, userID, deviceID, ed)
	if err != nil {
		return nil, err
	}
	storeKeys := func(q *sqlstore.Queries) error {
		if err := s.storeOneTimeKeys(ctx, q, userID, deviceID, otks); err != nil {
			return err
		}
		perAlg := map[string]bool{}
		for _, k := range fallbacks {
			if perAlg[k.Algorithm] {
				return mxerr.New(mxerr.InvalidParam, "fallback_keys: at most one key per algorithm")
			}
			perAlg[k.Algorithm] = true
			if err := q.PutFallbackKey(ctx, userID, deviceID, k); err != nil {
				return err
			}
		}
		return nil
	}
	if !hasDeviceKeys || stored.KeyJSON == string(newDevice) {
		err = s.store.InTx(ctx, storeKeys)
	} else {
		err = s.inStream(ctx, func(q *sqlstore.Queries, pos int64) (bool, streams.Change, error) {
			if err := q.PutDeviceKeys(ctx, userID, deviceID, string(newDevice), ed, s.now().UnixMilli()); err != nil {
				if errors.Is(err, sqlstore.ErrNotFound) {
					return false, streams.Change{}, mxerr.New(mxerr.UnknownToken, "This device no longer exists")
				}
				return false, streams.Change{}, err
			}
			if stored.KeyJSON != "" && signedPart([]byte(stored.KeyJSON)) != signedPart(newDevice) {
				// New identity keys: signatures of the old ones do not hold.
				if err := q.DeleteKeySignaturesOf(ctx, userID, deviceID); err != nil {
					return false, streams.Change{}, err
				}
			}
			if err := storeKeys(q); err != nil {
				return false, streams.Change{}, err
			}
			ch, err := s.markAndAnnounce(ctx, q, pos, userID, announcement{devices: []string{deviceID}})
			return err == nil, ch, err
		})
	}
	if err != nil {
		return nil, err
	}
	counts, err := s.store.OneTimeKeyCounts(ctx, userID, deviceID)
	if err != nil {
		return nil, err
	}
	if _, ok := counts[AlgorithmSignedCurve25519]; !ok {
		counts[AlgorithmSignedCurve25519] = 0
	}
	return counts, nil
}

// storeOneTimeKeys inserts the keys, refusing one whose ID is stored with
// other content.
func (s *Service) storeOneTimeKeys(ctx context.Context, q *sqlstore.Queries, userID, deviceID string, keys []sqlstore.OneTimeKey) error {
	if len(keys) == 0 {
		return nil
	}
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.Algorithm + ":" + k.KeyID
	}
	existing, err := q.OneTimeKeysByID(ctx, userID, deviceID, names)
	if err != nil {
		return err
	}
	have := map[string]string{}
	for _, k := range existing {
		have[k.Algorithm+":"+k.KeyID] = k.KeyJSON
	}
	for _, k := range keys {
		if old, ok := have[k.Algorithm+":"+k.KeyID]; ok && old != k.KeyJSON {
			return mxerr.New(mxerr.InvalidParam, "one_time_keys: %s:%s is already stored with a different key", k.Algorithm, k.KeyID)
		}
	}
	return q.InsertOneTimeKeys(ctx, userID, deviceID, keys)
}

// QueryRequest is the body of POST /keys/query.
type QueryRequest struct {
	DeviceKeys map[string][]string `json:"device_keys"`
	Timeout    *int64              `json:"timeout"`
}

// QueryResponse is the answer of POST /keys/query.
type QueryResponse struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	UserSigningKeys map[string]json.RawMessage            `json:"user_signing_keys"`
	Failures        map[string]any                        `json:"failures"`
}

// QueryKeys returns the device keys and cross-signing keys of the users, as
// viewer may see them. Spec: POST /keys/query. Remote users' keys come from
// the cache of their device lists or from their servers (queryRemote);
// servers that could not be asked are listed in failures.
func (s *Service) QueryKeys(ctx context.Context, viewer string, req QueryRequest) (*QueryResponse, error) {
	return s.queryKeys(ctx, viewer, req, true)
}

// queryKeys is QueryKeys; withNames adds the display names of local
// devices (device_display_name in unsigned), which other servers get only
// if Config.ShareDeviceNames.
func (s *Service) queryKeys(ctx context.Context, viewer string, req QueryRequest, withNames bool) (*QueryResponse, error) {
	resp := &QueryResponse{
		DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{}, UserSigningKeys: map[string]json.RawMessage{},
		Failures: map[string]any{},
	}
	var local []string
	remote := map[string]map[string][]string{} // server → user → devices
	for userID, devices := range req.DeviceKeys {
		server, ok := serverOf(userID)
		if !ok {
			return nil, mxerr.New(mxerr.InvalidParam, "device_keys: %q is not a user ID", userID)
		}
		if server != s.cfg.ServerName {
			if remote[server] == nil {
				remote[server] = map[string][]string{}
			}
			remote[server][userID] = devices
			continue
		}
		local = append(local, userID)
		resp.DeviceKeys[userID] = map[string]json.RawMessage{}
	}
	if len(remote) > 0 {
		if err := s.queryRemote(ctx, remote, req.Timeout, resp); err != nil {
			return nil, err
		}
		if err := s.addViewerSignatures(ctx, viewer, resp); err != nil {
			return nil, err
		}
	}
	if len(local) == 0 {
		return resp, nil
	}
	devices, err := s.store.DeviceKeysOf(ctx, local)
	if err != nil {
		return nil, err
	}
	cross, err := s.store.CrossSigningKeysOf(ctx, local)
	if err != nil {
		return nil, err
	}
	sigs, err := s.store.KeySignaturesOf(ctx, local, viewer)
	if err != nil {
		return nil, err
	}
	byKey := map[[2]string][]sqlstore.KeySignature{}
	for _, sg := range sigs {
		k := [2]string{sg.TargetUserID, sg.TargetKeyID}
		byKey[k] = append(byKey[k], sg)
	}
	for _, d := range devices {
		if want := req.DeviceKeys[d.UserID]; len(want) > 0 && !slices.Contains(want, d.DeviceID) {
			continue
		}
		obj := mergeSignatures([]byte(d.KeyJSON), byKey[[2]string{d.UserID, d.DeviceID}])
		if withNames && d.DisplayName != nil {
			obj = withUnsigned(obj, map[string]any{"device_display_name": *d.DisplayName})
		}
		resp.DeviceKeys[d.UserID][d.DeviceID] = obj
	}
	for _, k := range cross {
		obj := mergeSignatures([]byte(k.KeyJSON), byKey[[2]string{k.UserID, k.PublicKey}])
		switch k.KeyType {
		case "master":
			resp.MasterKeys[k.UserID] = obj
		case "self_signing":
			resp.SelfSigningKeys[k.UserID] = obj
		case "user_signing":
			if k.UserID == viewer {
				resp.UserSigningKeys[k.UserID] = obj
			}
		}
	}
	return resp, nil
}

// addViewerSignatures adds to the master keys of other servers' users in
// resp the signatures viewer made on them with their user-signing key,
// which only this server holds (see UploadSignatures).
func (s *Service) addViewerSignatures(ctx context.Context, viewer string, resp *QueryResponse) error {
	var users []string
	for u := range resp.MasterKeys {
		if !s.isLocal(u) {
			users = append(users, u)
		}
	}
	if len(users) == 0 {
		return nil
	}
	sigs, err := s.store.KeySignaturesOf(ctx, users, viewer)
	if err != nil {
		return err
	}
	for _, u := range users {
		k, err := checkCrossSigningKey(resp.MasterKeys[u], "master", u)
		if err != nil || k == nil {
			continue
		}
		var mine []sqlstore.KeySignature
		for _, sg := range sigs {
			if sg.TargetUserID == u && sg.TargetKeyID == k.public && sg.SignerUserID == viewer {
				mine = append(mine, sg)
			}
		}
		resp.MasterKeys[u] = mergeSignatures(resp.MasterKeys[u], mine)
	}
	return nil
}

func withUnsigned(obj []byte, unsigned map[string]any) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(obj, &m) != nil {
		return obj
	}
	m["unsigned"], _ = json.Marshal(unsigned)
	out, _ := json.Marshal(m)
	return out
}

// ClaimRequest is the body of POST /keys/claim.
type ClaimRequest struct {
	OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	Timeout     *int64                       `json:"timeout"`
}

// ClaimResponse is the answer of POST /keys/claim.
type ClaimResponse struct {
	OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	Failures    map[string]any                                   `json:"failures"`
}

// maxClaims bounds the keys one request may claim.
const maxClaims = 10_000

// ClaimKeys hands out one key per requested device: the oldest one-time key
// of the algorithm, each to one claimer only (concurrent claims skip the rows
// another claim is taking), or else the device's fallback key, then marked
// used. Devices without either are left out. Spec: POST /keys/claim.
func (s *Service) ClaimKeys(ctx context.Context, req ClaimRequest) (*ClaimResponse, error) {
	resp := &ClaimResponse{OneTimeKeys: map[string]map[string]map[string]json.RawMessage{}, Failures: map[string]any{}}
	remote := map[string]map[string]map[string]string{} // server → user → device → algorithm
	n := 0
	for userID, devices := range req.OneTimeKeys {
		server, ok := serverOf(userID)
		if !ok {
			return nil, mxerr.New(mxerr.InvalidParam, "one_time_keys: %q is not a user ID", userID)
		}
		if n += len(devices); n > maxClaims {
			return nil, mxerr.New(mxerr.InvalidParam, "At most %d keys may be claimed at once", maxClaims)
		}
		if server != s.cfg.ServerName {
			if remote[server] == nil {
				remote[server] = map[string]map[string]string{}
			}
			remote[server][userID] = devices
		}
	}
	if len(remote) > 0 {
		s.claimRemote(ctx, remote, req.Timeout, resp)
	}
	for userID, devices := range req.OneTimeKeys {
		if !s.isLocal(userID) {
			continue
		}
		for deviceID, alg := range devices {
			k, err := s.store.ClaimOneTimeKey(ctx, userID, deviceID, alg)
			s.forgetKeyCounts(userID, deviceID)
			if errors.Is(err, sqlstore.ErrNotFound) {
				k, err = s.store.ClaimFallbackKey(ctx, userID, deviceID, alg)
			}
			if errors.Is(err, sqlstore.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if resp.OneTimeKeys[userID] == nil {
				resp.OneTimeKeys[userID] = map[string]map[string]json.RawMessage{}
			}
			resp.OneTimeKeys[userID][deviceID] = map[string]json.RawMessage{k.Algorithm + ":" + k.KeyID: json.RawMessage(k.KeyJSON)}
		}
	}
	return resp, nil
}

// OneTimeKeyCounts is the device's unclaimed one-time keys by algorithm
// (signed_curve25519 always present, 0 if none: older clients take a missing
// count for "unknown") and the algorithms of its unused fallback keys: the
// /sync fields device_one_time_keys_count and device_unused_fallback_key_types.
func (s *Service) OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, []string, error) {
	key := userID + "\x00" + deviceID
	// An upload with device keys wakes the device's syncs through the Hub
	// before it returns: its device-list change invalidates the entry, so a
	// woken sync never reads counts from before the upload.
	if c, ok := s.keyCounts.Get(key); ok && !s.hub.ChangedSince(streams.KindDeviceList, userID, c.at) {
		return copyCounts(c.counts), append([]string{}, c.fallback...), nil
	}
	gen := s.keyCountsGen.Load()
	at := s.hub.Current().Stream
	counts, fallback, err := s.readKeyCounts(ctx, userID, deviceID)
	if err == nil {
		s.keyCountsMu.Lock()
		if s.keyCountsGen.Load() == gen {
			s.keyCounts.Add(key, cachedKeyCounts{at: at, counts: copyCounts(counts), fallback: append([]string{}, fallback...)})
		}
		s.keyCountsMu.Unlock()
	}
	return counts, fallback, err
}

func copyCounts(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (s *Service) readKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, []string, error) {
	counts, err := s.store.OneTimeKeyCounts(ctx, userID, deviceID)
	if err != nil {
		return nil, nil, err
	}
	if _, ok := counts[AlgorithmSignedCurve25519]; !ok {
		counts[AlgorithmSignedCurve25519] = 0
	}
	fallback, err := s.store.UnusedFallbackKeyTypes(ctx, userID, deviceID)
	if fallback == nil {
		fallback = []string{}
	}
	return counts, fallback, err
}

// DeviceListsSince returns the device_lists of /sync for the stream range
// (from, to]: changed are the users sharing a joined room with userID (and
// userID itself) whose devices or keys changed, plus the users userID newly
// shares a room with; left are the users userID no longer shares any room
// with. Also the answer of GET /keys/changes.
func (s *Service) DeviceListsSince(ctx context.Context, userID string, from, to int64) (changed, left []string, err error) {
	changed, left = []string{}, []string{}
	if to <= from {
		return changed, left, nil
	}
	changedSet := map[string]bool{}
	keyChanges, err := s.store.DeviceListChangesSharing(ctx, userID, from, to)
	if err != nil {
		return nil, nil, err
	}
	for _, u := range keyChanges {
		changedSet[u] = true
	}
	events, err := s.store.MemberEventsAround(ctx, userID, from, to)
	if err != nil {
		return nil, nil, err
	}
	joinCandidates, leftCandidates := map[string]bool{}, map[string]bool{}
	var myJoins, myLeaves []string
	for _, ev := range events {
		joined := ev.Membership == "join"
		gone := ev.Membership == "leave" || ev.Membership == "ban"
		switch {
		case ev.UserID == userID && joined:
			myJoins = append(myJoins, ev.RoomID)
		case ev.UserID == userID && gone:
			myLeaves = append(myLeaves, ev.RoomID)
		case joined:
			joinCandidates[ev.UserID] = true
		case gone:
			leftCandidates[ev.UserID] = true
		}
	}
	if len(myJoins) > 0 {
		members, err := s.store.JoinedMembersOf(ctx, myJoins)
		if err != nil {
			return nil, nil, err
		}
		for _, m := range members {
			joinCandidates[m] = true
		}
	}
	if len(myLeaves) > 0 {
		members, err := s.store.JoinedMembersOf(ctx, myLeaves)
		if err != nil {
			return nil, nil, err
		}
		for _, m := range members {
			leftCandidates[m] = true
		}
	}
	delete(joinCandidates, userID)
	delete(leftCandidates, userID)
	var candidates []string
	for u := range joinCandidates {
		candidates = append(candidates, u)
	}
	for u := range leftCandidates {
		if !joinCandidates[u] {
			candidates = append(candidates, u)
		}
	}
	sharing := map[string]bool{}
	if len(candidates) > 0 {
		share, err := s.store.SharingAmong(ctx, userID, candidates)
		if err != nil {
			return nil, nil, err
		}
		for _, u := range share {
			sharing[u] = true
		}
	}
	for u := range joinCandidates {
		if sharing[u] {
			changedSet[u] = true
		}
	}
	for u := range leftCandidates {
		if !sharing[u] {
			left = append(left, u)
			delete(changedSet, u)
		}
	}
	for u := range changedSet {
		changed = append(changed, u)
	}
	sort.Strings(changed)
	sort.Strings(left)
	return changed, left, nil
}
