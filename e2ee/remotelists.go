package e2ee

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"chappe/sqlstore"
	"chappe/streams"
)

// This file keeps the cache of remote users' device lists: the EDUs their
// servers send (m.device_list_update, m.signing_key_update) move it
// forward, and a gap makes us fetch the whole list again (a resync).
// Spec: server-server-api.md, "Device Management", "Cross-signing keys".
//
// Only the users a local user shares a room with are followed: an update
// about anyone else is ignored. Each accepted update is a device-list
// change of the remote user at a stream position of ours, so local users
// sharing a room see them in /sync's device_lists.changed and
// /keys/changes, and query their keys again.

// Resync bounds.
const (
	// maxResyncs is how many resyncs run in the background at once; a
	// resync beyond it is skipped (the list stays uncached, so queries go
	// to the user's server, and the next update tries again).
	maxResyncs = 8
	// resyncTimeout bounds one resync.
	resyncTimeout = 30 * time.Second
	// maxResyncRounds is how many times in a row one user's resync runs
	// when updates keep arriving during it (see startResync).
	maxResyncRounds = 3
)

// ReceiveDeviceListUpdate applies an m.device_list_update from origin,
// whose user the caller checked is of origin. The rule for the cached
// stream_id S of the user:
//   - no list cached: the whole list is fetched (a resync);
//   - stream_id < S: an old update, ignored;
//   - stream_id = S, or S among prev_id: applied (stream_id = S is another
//     device of the change already applied);
//   - otherwise we missed an update: the list is dropped and fetched again.
func (s *Service) ReceiveDeviceListUpdate(ctx context.Context, origin string, u DeviceListUpdate) error {
	if followed, err := s.follows(ctx, u.UserID); err != nil || !followed {
		return err
	}
	keys := remoteDeviceKeys(u.Keys, u.UserID, u.DeviceID)
	resync := false
	err := s.inStream(ctx, func(q *sqlstore.Queries, pos int64) (bool, streams.Change, error) {
		held, err := q.LockRemoteDeviceList(ctx, u.UserID)
		switch {
		case errors.Is(err, sqlstore.ErrNotFound):
			resync = true
		case err != nil:
			return false, streams.Change{}, err
		case u.StreamID < held:
			return false, streams.Change{}, nil
		case u.StreamID == held || slices.Contains(u.PrevID, held):
			d := sqlstore.RemoteDevice{UserID: u.UserID, DeviceID: u.DeviceID, KeyJSON: keys, DisplayName: u.DisplayName}
			if err := q.ApplyRemoteDeviceUpdate(ctx, d, u.Deleted, u.StreamID, s.now().UnixMilli()); err != nil {
				return false, streams.Change{}, err
			}
		default:
			zerolog.Ctx(ctx).Info().Str("user_id", u.UserID).Int64("held", held).Ints64("prev_id", u.PrevID).
				Msg("gap in a remote device list: resyncing")
			resync = true
			if err := q.DeleteRemoteDeviceList(ctx, u.UserID); err != nil {
				return false, streams.Change{}, err
			}
		}
		ch, err := markChanged(ctx, q, pos, u.UserID)
		return err == nil, ch, err
	})
	if err == nil && resync {
		s.startResync(ctx, u.UserID)
	}
	return err
}

// ReceiveSigningKeyUpdate applies an m.signing_key_update from origin,
// whose user the caller checked is of origin: the master and self-signing
// keys it holds replace the cached ones.
func (s *Service) ReceiveSigningKeyUpdate(ctx context.Context, origin string, u SigningKeyUpdate) error {
	if followed, err := s.follows(ctx, u.UserID); err != nil || !followed {
		return err
	}
	return s.inStream(ctx, func(q *sqlstore.Queries, pos int64) (bool, streams.Change, error) {
		for typ, raw := range map[string]json.RawMessage{"master": u.MasterKey, "self_signing": u.SelfSigningKey} {
			if key := remoteCrossSigningKey(raw, typ, u.UserID); key != nil {
				if err := q.PutRemoteCrossSigningKey(ctx, u.UserID, typ, *key); err != nil {
					return false, streams.Change{}, err
				}
			}
		}
		ch, err := markChanged(ctx, q, pos, u.UserID)
		return err == nil, ch, err
	})
}

// follows tells whether a local user shares a room with the remote user.
func (s *Service) follows(ctx context.Context, userID string) (bool, error) {
	return s.store.SharesRoomWithServer(ctx, userID, s.cfg.ServerName)
}

// purgeEvery is how often the cached device lists of remote users nobody
// here shares a room with any more are forgotten.
const purgeEvery = time.Hour

// Run forgets, every purgeEvery until ctx ends, the cached device lists of
// remote users no local user shares a room with any more: the cache follows
// the rooms, and does not grow with every user ever met.
func (s *Service) Run(ctx context.Context, onError func(error)) {
	t := time.NewTicker(purgeEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.PurgeUnfollowedLists(ctx); err != nil && ctx.Err() == nil {
				onError(err)
			}
		}
	}
}

// PurgeUnfollowedLists forgets the cached device lists of remote users no
// local user shares a room with, and says how many (see Run).
func (s *Service) PurgeUnfollowedLists(ctx context.Context) (int64, error) {
	return s.store.PurgeUnfollowedRemoteDeviceLists(ctx, s.cfg.ServerName)
}

// Resync fetches the whole device list of a remote user from their server
// (GET /user/devices/{userId}) and stores it in place of the cached one.
func (s *Service) Resync(ctx context.Context, userID string) error {
	if s.fed == nil {
		return nil
	}
	ud, err := s.fed.UserDevices(ctx, userID)
	if err != nil {
		return err
	}
	list := sqlstore.RemoteDeviceList{UserID: userID, StreamID: ud.StreamID, CrossSigning: map[string]string{}}
	for _, d := range ud.Devices {
		if d.DeviceID == "" {
			continue
		}
		list.Devices = append(list.Devices, sqlstore.RemoteDevice{UserID: userID, DeviceID: d.DeviceID,
			KeyJSON: remoteDeviceKeys(d.Keys, userID, d.DeviceID), DisplayName: d.DisplayName})
	}
	for typ, raw := range map[string]json.RawMessage{"master": ud.MasterKey, "self_signing": ud.SelfSigningKey} {
		if key := remoteCrossSigningKey(raw, typ, userID); key != nil {
			list.CrossSigning[typ] = *key
		}
	}
	return s.inStream(ctx, func(q *sqlstore.Queries, pos int64) (bool, streams.Change, error) {
		stored, err := q.ReplaceRemoteDeviceList(ctx, list, s.now().UnixMilli())
		if err != nil || !stored {
			// Not stored: the cached list is newer than the one fetched
			// (updates applied during the fetch), so nothing changed.
			return false, streams.Change{}, err
		}
		ch, err := markChanged(ctx, q, pos, userID)
		return err == nil, ch, err
	})
}

// startResync runs Resync in the background, unless maxResyncs run. If one
// runs for the user already, it is marked to run again once it ends: what
// it fetched may predate the update that asked for this one (which was not
// applied, the list being uncached). A resync runs at most maxResyncRounds
// times in a row; later updates start it again.
func (s *Service) startResync(ctx context.Context, userID string) {
	if s.fed == nil {
		return
	}
	s.resyncMu.Lock()
	if _, running := s.resyncs[userID]; running {
		s.resyncs[userID] = true // run again after this one
		s.resyncMu.Unlock()
		return
	}
	if len(s.resyncs) >= maxResyncs {
		s.resyncMu.Unlock()
		return
	}
	s.resyncs[userID] = false
	s.resyncMu.Unlock()
	log := zerolog.Ctx(ctx).With().Str("user_id", userID).Logger()
	go func() {
		for round := 1; ; round++ {
			s.resyncOnce(log, userID)
			s.resyncMu.Lock()
			again := s.resyncs[userID] && round < maxResyncRounds
			if !again {
				delete(s.resyncs, userID)
				s.resyncMu.Unlock()
				return
			}
			s.resyncs[userID] = false
			s.resyncMu.Unlock()
		}
	}()
}

// resyncOnce runs one Resync of userID within resyncTimeout, logging its
// failure.
func (s *Service) resyncOnce(log zerolog.Logger, userID string) {
	ctx, cancel := context.WithTimeout(log.WithContext(context.Background()), resyncTimeout)
	defer cancel()
	if err := s.Resync(ctx, userID); err != nil {
		log.Warn().Err(err).Msg("resyncing a remote device list")
	}
}

// remoteDeviceKeys is the device keys object of a remote device if it names
// the user and the device, nil otherwise (keys for someone else are never
// stored under this device).
func remoteDeviceKeys(raw json.RawMessage, userID, deviceID string) *string {
	var dk deviceKeys
	if len(raw) == 0 || json.Unmarshal(raw, &dk) != nil || dk.UserID != userID || dk.DeviceID != deviceID {
		return nil
	}
	k := string(raw)
	return &k
}

// remoteCrossSigningKey is a remote cross-signing key of keyType if it
// names the user and has that usage, nil otherwise.
func remoteCrossSigningKey(raw json.RawMessage, keyType, userID string) *string {
	var k crossSigningKey
	if len(raw) == 0 || json.Unmarshal(raw, &k) != nil || k.UserID != userID || !slices.Contains(k.Usage, keyType) {
		return nil
	}
	key := string(raw)
	return &key
}
