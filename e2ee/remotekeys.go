package e2ee

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// This file answers our clients' key queries and claims about remote users
// (over federation, or from the cache of device lists), and other servers'
// queries about our users. Spec: client-server-api/modules/
// end_to_end_encryption.md, POST /keys/query and /keys/claim ("timeout",
// "failures"); server-server-api.md, "End-to-End Encryption", "Device
// Management"; data/api/server-server/user_keys.yaml, user_devices.yaml.

// defaultRemoteTimeout is the time given to other servers when the client
// gives none (the spec's default for /keys/query and /keys/claim).
const defaultRemoteTimeout = 10 * time.Second

// queryRemote fills resp with the keys of remote users (server → user →
// device IDs, none meaning all): from the cache for the users whose device
// list we hold, from their servers for the others, each server asked once
// and all at the same time within the timeout. A server that fails (down,
// slow) is in failures. So is a server the allowlist does not admit (never
// listed, or removed since): it is not contacted, its users' cached lists
// are neither served nor kept (refused). Spec: POST /keys/query,
// "failures".
func (s *Service) queryRemote(ctx context.Context, remote map[string]map[string][]string, timeoutMs *int64, resp *QueryResponse) error {
	var users, refused []string
	for server, byUser := range remote {
		if !s.allowed(server) {
			resp.Failures[server] = notAllowed(server)
			for u := range byUser {
				refused = append(refused, u)
			}
			delete(remote, server)
			continue
		}
		for u := range byUser {
			users = append(users, u)
		}
	}
	if len(refused) > 0 && s.fed != nil {
		if err := s.store.DeleteRemoteDeviceLists(ctx, refused); err != nil {
			return err
		}
	}
	cached, err := s.store.RemoteDeviceLists(ctx, users)
	if err != nil {
		return err
	}
	ask := map[string]map[string][]string{}
	for server, byUser := range remote {
		for user, devices := range byUser {
			if l, ok := cached[user]; ok {
				fillFromCache(resp, l, devices)
				continue
			}
			if ask[server] == nil {
				ask[server] = map[string][]string{}
			}
			ask[server][user] = devices
		}
	}
	servers := sortedKeys(ask)
	answers := make([]RemoteKeys, len(servers))
	errs := s.askServers(ctx, servers, timeoutMs, func(ctx context.Context, i int) error {
		var err error
		answers[i], err = s.fed.QueryKeys(ctx, servers[i], ask[servers[i]])
		return err
	})
	for i, server := range servers {
		if errs[i] != nil {
			resp.Failures[server] = failure(errs[i])
			continue
		}
		for user := range ask[server] {
			mergeRemoteKeys(resp, answers[i], user)
			if followed, err := s.follows(ctx, user); err == nil && followed {
				s.startResync(ctx, user) // keep the list from now on
			}
		}
	}
	return nil
}

// fillFromCache adds a cached remote user's keys to resp.
func fillFromCache(resp *QueryResponse, l *sqlstore.RemoteDeviceList, devices []string) {
	out := map[string]json.RawMessage{}
	for _, d := range l.Devices {
		if d.KeyJSON == nil || (len(devices) > 0 && !slices.Contains(devices, d.DeviceID)) {
			continue
		}
		obj := json.RawMessage(*d.KeyJSON)
		if d.DisplayName != nil {
			obj = withUnsigned(obj, map[string]any{"device_display_name": *d.DisplayName})
		}
		out[d.DeviceID] = obj
	}
	resp.DeviceKeys[l.UserID] = out
	if k, ok := l.CrossSigning["master"]; ok {
		resp.MasterKeys[l.UserID] = json.RawMessage(k)
	}
	if k, ok := l.CrossSigning["self_signing"]; ok {
		resp.SelfSigningKeys[l.UserID] = json.RawMessage(k)
	}
}

// mergeRemoteKeys adds to resp what a server answered about user (one of
// its own users we asked about: anything else in the answer is ignored).
// Device keys that name another user or device are left out.
func mergeRemoteKeys(resp *QueryResponse, a RemoteKeys, user string) {
	out := map[string]json.RawMessage{}
	for id, raw := range a.DeviceKeys[user] {
		if remoteDeviceKeys(raw, user, id) != nil {
			out[id] = raw
		}
	}
	resp.DeviceKeys[user] = out
	if k := remoteCrossSigningKey(a.MasterKeys[user], "master", user); k != nil {
		resp.MasterKeys[user] = json.RawMessage(*k)
	}
	if k := remoteCrossSigningKey(a.SelfSigningKeys[user], "self_signing", user); k != nil {
		resp.SelfSigningKeys[user] = json.RawMessage(*k)
	}
}

// claimRemote claims one-time keys of remote users (server → user → device
// → algorithm) from their servers, all at the same time within the
// timeout; a server that fails, or that the allowlist does not admit (not
// contacted), is in failures. Nothing is cached: a one-time key is handed
// out once, by its own server.
func (s *Service) claimRemote(ctx context.Context, remote map[string]map[string]map[string]string, timeoutMs *int64, resp *ClaimResponse) {
	for server := range remote {
		if !s.allowed(server) {
			resp.Failures[server] = notAllowed(server)
			delete(remote, server)
		}
	}
	servers := sortedKeys(remote)
	answers := make([]map[string]map[string]map[string]json.RawMessage, len(servers))
	errs := s.askServers(ctx, servers, timeoutMs, func(ctx context.Context, i int) error {
		var err error
		answers[i], err = s.fed.ClaimKeys(ctx, servers[i], remote[servers[i]])
		return err
	})
	for i, server := range servers {
		if errs[i] != nil {
			resp.Failures[server] = failure(errs[i])
			continue
		}
		for user, devices := range answers[i] {
			asked := remote[server][user]
			for device, keys := range devices {
				if _, ok := asked[device]; !ok || len(keys) != 1 {
					continue
				}
				if resp.OneTimeKeys[user] == nil {
					resp.OneTimeKeys[user] = map[string]map[string]json.RawMessage{}
				}
				resp.OneTimeKeys[user][device] = keys
			}
		}
	}
}

// askServers runs ask for each server at the same time, within the
// client's timeout (milliseconds; nil: defaultRemoteTimeout), and returns
// each one's error. Without federation every server fails.
func (s *Service) askServers(ctx context.Context, servers []string, timeoutMs *int64, ask func(ctx context.Context, i int) error) []error {
	errs := make([]error, len(servers))
	if s.fed == nil {
		for i, server := range servers {
			errs[i] = mxerr.New(mxerr.Forbidden, "%s is another server and federation is switched off on this server", server)
		}
		return errs
	}
	timeout := defaultRemoteTimeout
	if timeoutMs != nil && *timeoutMs >= 0 {
		timeout = time.Duration(*timeoutMs) * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	for i := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = ask(ctx, i)
		}()
	}
	wg.Wait()
	return errs
}

// allowed tells whether server may be asked about its users' keys, or its
// cached answers used: federation is on and the allowlist admits it now.
func (s *Service) allowed(server string) bool {
	return s.fed != nil && s.fed.Allowed(server)
}

// notAllowed is the failures entry of a server not allowed.
func notAllowed(server string) *mxerr.Error {
	return mxerr.New(mxerr.Forbidden, "%s is not a server this one may exchange with (federation off, or not on the allowlist)", server)
}

// failure is a server's entry in failures: the Matrix error, or a timeout.
func failure(err error) *mxerr.Error {
	if errors.Is(err, context.DeadlineExceeded) {
		return mxerr.New(mxerr.Unknown, "The server did not answer in time")
	}
	if e, ok := mxerr.As(err); ok {
		return e
	}
	return mxerr.New(mxerr.Unknown, "%v", err)
}

// UserDevices is what another server may know of a local user's devices:
// GET /_matrix/federation/v1/user/devices/{userId}. stream_id is the
// stream_id of the user's latest m.device_list_update (announce.go), so
// that the next one follows it; the devices listed join those other
// servers may know of, whose deletion will be announced. Device names are
// left out unless Config.ShareDeviceNames. Spec: server-server-api.md,
// "Device Management"; data/api/server-server/user_devices.yaml.
func (s *Service) UserDevices(ctx context.Context, userID string) (*UserDevices, error) {
	if err := s.checkLocalUser(userID); err != nil {
		return nil, err
	}
	out := &UserDevices{UserID: userID, Devices: []UserDevice{}}
	err := s.store.InTx(ctx, func(q *sqlstore.Queries) error {
		st, err := q.LockDeviceListStream(ctx, userID)
		if errors.Is(err, sqlstore.ErrNotFound) {
			return nil // no such account: no devices
		} else if err != nil {
			return err
		}
		out.StreamID = st.StreamID
		devices, err := q.ListDevices(ctx, userID)
		if err != nil {
			return err
		}
		keys, master, selfSigning, err := s.publicKeys(ctx, q, userID)
		if err != nil {
			return err
		}
		told := len(st.Told)
		for _, d := range devices {
			ud := UserDevice{DeviceID: d.DeviceID, Keys: keys[d.DeviceID].Keys}
			if s.cfg.ShareDeviceNames {
				ud.DisplayName = d.DisplayName
			}
			out.Devices = append(out.Devices, ud)
			if !slices.Contains(st.Told, d.DeviceID) {
				st.Told = append(st.Told, d.DeviceID)
			}
		}
		out.MasterKey, out.SelfSigningKey = master, selfSigning
		if len(st.Told) == told {
			return nil
		}
		return q.SetDeviceListStream(ctx, userID, st)
	})
	return out, err
}

// QueryKeysForServer answers another server's POST /user/keys/query: the
// keys of local users only, as anyone may see them (no user-signing key,
// no other user's signatures), device names only if
// Config.ShareDeviceNames. Spec: server-server-api.md, "End-to-End
// Encryption"; data/api/server-server/user_keys.yaml.
func (s *Service) QueryKeysForServer(ctx context.Context, deviceKeys map[string][]string) (*RemoteKeys, error) {
	for userID := range deviceKeys {
		if err := s.checkLocalUser(userID); err != nil {
			return nil, err
		}
	}
	resp, err := s.queryKeys(ctx, "", QueryRequest{DeviceKeys: deviceKeys}, s.cfg.ShareDeviceNames)
	if err != nil {
		return nil, err
	}
	return &RemoteKeys{DeviceKeys: resp.DeviceKeys, MasterKeys: resp.MasterKeys, SelfSigningKeys: resp.SelfSigningKeys}, nil
}

// ClaimKeysForServer answers another server's POST /user/keys/claim: keys
// of local users only.
func (s *Service) ClaimKeysForServer(ctx context.Context, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	for userID := range oneTimeKeys {
		if err := s.checkLocalUser(userID); err != nil {
			return nil, err
		}
	}
	resp, err := s.ClaimKeys(ctx, ClaimRequest{OneTimeKeys: oneTimeKeys})
	if err != nil {
		return nil, err
	}
	return resp.OneTimeKeys, nil
}

// checkLocalUser refuses what is not a user ID of this server.
func (s *Service) checkLocalUser(userID string) error {
	server, ok := serverOf(userID)
	switch {
	case !ok:
		return mxerr.New(mxerr.InvalidParam, "%q is not a user ID", userID)
	case server != s.cfg.ServerName:
		return mxerr.New(mxerr.InvalidParam, "%s is not a user of %s; ask its own server", userID, s.cfg.ServerName)
	}
	return nil
}
