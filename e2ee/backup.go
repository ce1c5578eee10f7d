package e2ee

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// Server-side key backups. Spec: end_to_end_encryption.md "Server-side key
// backups", key_backup.yaml. Versions are numbered 1, 2, 3… per user and
// never reused; the current backup is the latest one not deleted. Only the
// current backup accepts keys.

// BackupInfo is a backup version as GET /room_keys/version shows it.
type BackupInfo struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int64           `json:"count"`
	Etag      string          `json:"etag"`
	Version   string          `json:"version"`
}

// KeyBackupData is one backed-up session key.
type KeyBackupData struct {
	FirstMessageIndex int64           `json:"first_message_index"`
	ForwardedCount    int64           `json:"forwarded_count"`
	IsVerified        bool            `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// RoomKeyBackup is the sessions of one room in a backup.
type RoomKeyBackup struct {
	Sessions map[string]KeyBackupData `json:"sessions"`
}

// RoomKeysUpdate is the answer of PUT and DELETE /room_keys/keys…
type RoomKeysUpdate struct {
	Etag  string `json:"etag"`
	Count int64  `json:"count"`
}

func unknownVersion() error { return mxerr.New(mxerr.NotFound, "Unknown backup version") }

// parseVersion reads a version string; ok false if it cannot be one of ours.
func parseVersion(v string) (int64, bool) {
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n > 0 && strconv.FormatInt(n, 10) == v
}

func isObject(raw json.RawMessage) bool {
	return strings.HasPrefix(strings.TrimSpace(string(raw)), "{")
}

// CreateBackup creates a new backup version, which becomes the current one.
// Spec: POST /room_keys/version.
func (s *Service) CreateBackup(ctx context.Context, userID, algorithm string, authData json.RawMessage) (string, error) {
	if algorithm == "" {
		return "", mxerr.New(mxerr.MissingParam, "algorithm is required")
	}
	if !isObject(authData) {
		return "", mxerr.New(mxerr.BadJSON, "auth_data must be a JSON object")
	}
	c, err := canonical(authData)
	if err != nil {
		return "", err
	}
	v, err := s.store.CreateBackupVersion(ctx, userID, algorithm, string(c))
	return strconv.FormatInt(v, 10), err
}

// GetBackup returns a backup version ("" for the current one); 404 if it
// does not exist or was deleted. Spec: GET /room_keys/version[/{version}].
func (s *Service) GetBackup(ctx context.Context, userID, version string) (*BackupInfo, error) {
	var want *int64
	if version != "" {
		v, ok := parseVersion(version)
		if !ok {
			return nil, unknownVersion()
		}
		want = &v
	}
	b, err := s.store.GetBackupVersion(ctx, userID, want)
	if errors.Is(err, sqlstore.ErrNotFound) || (err == nil && b.Deleted) {
		if version == "" {
			return nil, mxerr.New(mxerr.NotFound, "No current backup version")
		}
		return nil, unknownVersion()
	}
	if err != nil {
		return nil, err
	}
	return &BackupInfo{Algorithm: b.Algorithm, AuthData: json.RawMessage(b.AuthData), Count: b.Count,
		Etag: strconv.FormatInt(b.Etag, 10), Version: strconv.FormatInt(b.Version, 10)}, nil
}

// UpdateBackup replaces the auth_data of a backup; the algorithm must stay
// the same, and a version in the body must be the one in the path.
// Spec: PUT /room_keys/version/{version}.
func (s *Service) UpdateBackup(ctx context.Context, userID, version, algorithm string, authData json.RawMessage, bodyVersion *string) error {
	if bodyVersion != nil && *bodyVersion != version {
		return mxerr.New(mxerr.InvalidParam, "The version in the body (%q) is not the version of the path (%q)", *bodyVersion, version)
	}
	if !isObject(authData) {
		return mxerr.New(mxerr.BadJSON, "auth_data must be a JSON object")
	}
	cur, err := s.GetBackup(ctx, userID, version)
	if err != nil {
		return err
	}
	if algorithm != cur.Algorithm {
		return mxerr.New(mxerr.InvalidParam, "Algorithm does not match: the backup uses %q", cur.Algorithm)
	}
	c, err := canonical(authData)
	if err != nil {
		return err
	}
	v, _ := parseVersion(version)
	err = s.store.UpdateBackupAuthData(ctx, userID, v, string(c))
	if errors.Is(err, sqlstore.ErrNotFound) {
		return unknownVersion()
	}
	return err
}

// DeleteBackup deletes a backup version and its keys; deleting it again
// succeeds, an unknown version is 404. Spec: DELETE /room_keys/version/{version}.
func (s *Service) DeleteBackup(ctx context.Context, userID, version string) error {
	v, ok := parseVersion(version)
	if !ok {
		return unknownVersion()
	}
	err := s.store.InTx(ctx, func(q *sqlstore.Queries) error { return q.DeleteBackupVersion(ctx, userID, v) })
	if errors.Is(err, sqlstore.ErrNotFound) {
		return unknownVersion()
	}
	return err
}

// ShouldReplace tells whether a backed-up key candidate replaces existing
// for the same session. Spec: "Server-side key backups": the verified key
// wins; then the lower first_message_index; then the lower forwarded_count.
// On a tie the stored key stays.
func ShouldReplace(existing, candidate KeyBackupData) bool {
	if existing.IsVerified != candidate.IsVerified {
		return candidate.IsVerified
	}
	if existing.FirstMessageIndex != candidate.FirstMessageIndex {
		return candidate.FirstMessageIndex < existing.FirstMessageIndex
	}
	return candidate.ForwardedCount < existing.ForwardedCount
}

// keyData checks an uploaded KeyBackupData.
func keyData(raw json.RawMessage, roomID, sessionID string) (KeyBackupData, error) {
	var k struct {
		FirstMessageIndex *int64          `json:"first_message_index"`
		ForwardedCount    *int64          `json:"forwarded_count"`
		IsVerified        *bool           `json:"is_verified"`
		SessionData       json.RawMessage `json:"session_data"`
	}
	where := roomID + " " + sessionID
	if err := json.Unmarshal(raw, &k); err != nil {
		return KeyBackupData{}, mxerr.New(mxerr.BadJSON, "Key of %s: %v", where, err)
	}
	if k.FirstMessageIndex == nil || k.ForwardedCount == nil || k.IsVerified == nil || len(k.SessionData) == 0 {
		return KeyBackupData{}, mxerr.New(mxerr.BadJSON, "Key of %s: first_message_index, forwarded_count, is_verified and session_data are required", where)
	}
	if *k.FirstMessageIndex < 0 || *k.ForwardedCount < 0 {
		return KeyBackupData{}, mxerr.New(mxerr.InvalidParam, "Key of %s: first_message_index and forwarded_count must not be negative", where)
	}
	if !isObject(k.SessionData) {
		return KeyBackupData{}, mxerr.New(mxerr.BadJSON, "Key of %s: session_data must be a JSON object", where)
	}
	c, err := canonical(k.SessionData)
	if err != nil {
		return KeyBackupData{}, err
	}
	return KeyBackupData{FirstMessageIndex: *k.FirstMessageIndex, ForwardedCount: *k.ForwardedCount, IsVerified: *k.IsVerified, SessionData: c}, nil
}

// PutBackupKeys stores keys (room → session → raw KeyBackupData) in the
// current backup, each replacing the stored one only if ShouldReplace says
// so. version must be the current backup: otherwise 403
// M_WRONG_ROOM_KEYS_VERSION with the current version (404 if there is no
// backup at all). Spec: PUT /room_keys/keys[/{roomId}[/{sessionId}]].
func (s *Service) PutBackupKeys(ctx context.Context, userID, version string, rooms map[string]map[string]json.RawMessage) (*RoomKeysUpdate, error) {
	type item struct {
		room, session string
		data          KeyBackupData
	}
	var items []item
	for _, roomID := range sortedKeys(rooms) {
		for _, sessionID := range sortedKeys(rooms[roomID]) {
			d, err := keyData(rooms[roomID][sessionID], roomID, sessionID)
			if err != nil {
				return nil, err
			}
			items = append(items, item{roomID, sessionID, d})
		}
	}
	var out *RoomKeysUpdate
	err := s.store.InTx(ctx, func(q *sqlstore.Queries) error {
		cur, err := q.LockCurrentBackupVersion(ctx, userID)
		if errors.Is(err, sqlstore.ErrNotFound) {
			return mxerr.New(mxerr.NotFound, "No backup exists; create one with POST /room_keys/version")
		}
		if err != nil {
			return err
		}
		if v, ok := parseVersion(version); !ok || v != cur {
			return &WrongVersionError{Code: mxerr.WrongRoomKeysVersion, Message: "Wrong backup version: " + version + " is not the current backup", CurrentVersion: strconv.FormatInt(cur, 10)}
		}
		roomIDs, sessionIDs := make([]string, len(items)), make([]string, len(items))
		for i, it := range items {
			roomIDs[i], sessionIDs[i] = it.room, it.session
		}
		stored, err := q.BackupKeysByID(ctx, userID, cur, roomIDs, sessionIDs)
		if err != nil {
			return err
		}
		have := map[[2]string]KeyBackupData{}
		for _, k := range stored {
			have[[2]string{k.RoomID, k.SessionID}] = KeyBackupData{FirstMessageIndex: k.FirstMessageIndex, ForwardedCount: k.ForwardedCount, IsVerified: k.IsVerified}
		}
		var write []sqlstore.BackupKey
		for _, it := range items {
			if old, ok := have[[2]string{it.room, it.session}]; ok && !ShouldReplace(old, it.data) {
				continue
			}
			write = append(write, sqlstore.BackupKey{RoomID: it.room, SessionID: it.session, FirstMessageIndex: it.data.FirstMessageIndex,
				ForwardedCount: it.data.ForwardedCount, IsVerified: it.data.IsVerified, SessionData: string(it.data.SessionData)})
		}
		if err := q.PutBackupKeys(ctx, userID, cur, write); err != nil {
			return err
		}
		out, err = backupUpdate(ctx, q, userID, cur)
		return err
	})
	return out, err
}

func backupUpdate(ctx context.Context, q *sqlstore.Queries, userID string, version int64) (*RoomKeysUpdate, error) {
	b, err := q.GetBackupVersion(ctx, userID, &version)
	if err != nil {
		return nil, err
	}
	return &RoomKeysUpdate{Etag: strconv.FormatInt(b.Etag, 10), Count: b.Count}, nil
}

// existingVersion resolves version to a backup that exists and is not deleted.
func (s *Service) existingVersion(ctx context.Context, q *sqlstore.Queries, userID, version string) (int64, error) {
	v, ok := parseVersion(version)
	if !ok {
		return 0, unknownVersion()
	}
	b, err := q.GetBackupVersion(ctx, userID, &v)
	if errors.Is(err, sqlstore.ErrNotFound) || (err == nil && b.Deleted) {
		return 0, unknownVersion()
	}
	return v, err
}

// GetBackupKeys returns the keys of a backup: all of them (roomID nil), of
// one room, or of one session (404 if it is not backed up).
// Spec: GET /room_keys/keys[/{roomId}[/{sessionId}]].
func (s *Service) GetBackupKeys(ctx context.Context, userID, version string, roomID, sessionID *string) (map[string]RoomKeyBackup, error) {
	v, err := s.existingVersion(ctx, &s.store.Queries, userID, version)
	if err != nil {
		return nil, err
	}
	keys, err := s.store.BackupKeys(ctx, userID, v, roomID, sessionID)
	if err != nil {
		return nil, err
	}
	out := map[string]RoomKeyBackup{}
	for _, k := range keys {
		r, ok := out[k.RoomID]
		if !ok {
			r = RoomKeyBackup{Sessions: map[string]KeyBackupData{}}
			out[k.RoomID] = r
		}
		r.Sessions[k.SessionID] = KeyBackupData{FirstMessageIndex: k.FirstMessageIndex, ForwardedCount: k.ForwardedCount,
			IsVerified: k.IsVerified, SessionData: json.RawMessage(k.SessionData)}
	}
	if sessionID != nil && len(out) == 0 {
		return nil, mxerr.New(mxerr.NotFound, "No key for this session in the backup")
	}
	return out, nil
}

// DeleteBackupKeys deletes keys of a backup: all, one room's or one
// session's. Spec: DELETE /room_keys/keys[/{roomId}[/{sessionId}]].
func (s *Service) DeleteBackupKeys(ctx context.Context, userID, version string, roomID, sessionID *string) (*RoomKeysUpdate, error) {
	var out *RoomKeysUpdate
	err := s.store.InTx(ctx, func(q *sqlstore.Queries) error {
		v, err := s.existingVersion(ctx, q, userID, version)
		if err != nil {
			return err
		}
		if err := q.DeleteBackupKeys(ctx, userID, v, roomID, sessionID); err != nil {
			return err
		}
		out, err = backupUpdate(ctx, q, userID, v)
		return err
	})
	return out, err
}
