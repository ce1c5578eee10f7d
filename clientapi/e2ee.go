package clientapi

// End-to-end encryption endpoints: keys, cross-signing, to-device, key
// backup. The logic lives in package e2ee; this file parses and answers.
// Spec: client-server-api/modules/end_to_end_encryption.md,
// modules/send_to_device.md; data/api/client-server/keys.yaml,
// cross_signing.yaml, to_device.yaml, key_backup.yaml.

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/rs/zerolog"

	"chappe/accounts"
	"chappe/e2ee"
	"chappe/mxerr"
	"chappe/mxhttp"
	"chappe/syncapi"
)

// E2EE is what the client API needs from the end-to-end encryption relay.
type E2EE interface {
	UploadKeys(ctx context.Context, userID, deviceID string, req e2ee.UploadRequest) (map[string]int, error)
	QueryKeys(ctx context.Context, viewer string, req e2ee.QueryRequest) (*e2ee.QueryResponse, error)
	ClaimKeys(ctx context.Context, req e2ee.ClaimRequest) (*e2ee.ClaimResponse, error)
	DeviceListsSince(ctx context.Context, userID string, from, to int64) (changed, left []string, err error)
	UploadCrossSigningKeys(ctx context.Context, userID string, req e2ee.CrossSigningUpload, authenticated bool) error
	UploadSignatures(ctx context.Context, signer string, body map[string]map[string]json.RawMessage) (map[string]map[string]e2ee.SignatureFailure, error)
	SendToDevice(ctx context.Context, sender, senderDevice, evType, txnID string, messages map[string]map[string]json.RawMessage) error
	// DevicesDeleted announces that devices of the user were deleted (it
	// works out which).
	DevicesDeleted(ctx context.Context, userID string) error
	CreateBackup(ctx context.Context, userID, algorithm string, authData json.RawMessage) (string, error)
	GetBackup(ctx context.Context, userID, version string) (*e2ee.BackupInfo, error)
	UpdateBackup(ctx context.Context, userID, version, algorithm string, authData json.RawMessage, bodyVersion *string) error
	DeleteBackup(ctx context.Context, userID, version string) error
	PutBackupKeys(ctx context.Context, userID, version string, rooms map[string]map[string]json.RawMessage) (*e2ee.RoomKeysUpdate, error)
	GetBackupKeys(ctx context.Context, userID, version string, roomID, sessionID *string) (map[string]e2ee.RoomKeyBackup, error)
	DeleteBackupKeys(ctx context.Context, userID, version string, roomID, sessionID *string) (*e2ee.RoomKeysUpdate, error)
}

func (a *API) e2eeRoutes(r routeAdder) {
	if a.e2ee == nil {
		return
	}
	const v3 = "/_matrix/client/v3"
	r.Post(v3+"/keys/upload", handleJSON(a, false, a.keysUpload))
	r.Post(v3+"/keys/query", handleJSON(a, false, a.keysQuery))
	r.Post(v3+"/keys/claim", handleJSON(a, false, a.keysClaim))
	r.Get(v3+"/keys/changes", handle(a.keysChanges))
	r.Post(v3+"/keys/device_signing/upload", a.deviceSigningUpload)
	r.Post(v3+"/keys/signatures/upload", handleJSON(a, false, a.signaturesUpload))
	r.Put(v3+"/sendToDevice/{eventType}/{txnId}", handleJSON(a, false, a.sendToDevice))

	r.Post(v3+"/room_keys/version", handleJSON(a, false, a.createBackup))
	r.Get(v3+"/room_keys/version", handle(a.getBackup))
	r.Get(v3+"/room_keys/version/{version}", handle(a.getBackup))
	r.Put(v3+"/room_keys/version/{version}", handleJSON(a, false, a.updateBackup))
	r.Delete(v3+"/room_keys/version/{version}", handle(a.deleteBackup))
	for _, p := range []string{"/room_keys/keys", "/room_keys/keys/{roomId}", "/room_keys/keys/{roomId}/{sessionId}"} {
		r.Get(v3+p, handle(a.getBackupKeys))
		r.Put(v3+p, a.putBackupKeys)
		r.Delete(v3+p, handle(a.deleteBackupKeys))
	}
}

// devicesDeleted announces deleted devices to the users who share a room
// and to their servers. The devices are gone already, so a failure here is
// logged, not answered: the client could not retry (its token may be gone
// with its device); the user's next device-list change announces them.
func (a *API) devicesDeleted(r *http.Request, userID string) {
	if a.e2ee == nil {
		return
	}
	if err := a.e2ee.DevicesDeleted(r.Context(), userID); err != nil {
		zerolog.Ctx(r.Context()).Error().Err(err).Msg("announcing deleted devices")
	}
}

// keysUpload is POST /keys/upload.
func (a *API) keysUpload(r *http.Request, body *e2ee.UploadRequest) (any, error) {
	s := session(r)
	counts, err := a.e2ee.UploadKeys(r.Context(), s.UserID, s.DeviceID, *body)
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_key_counts": counts}, nil
}

// keysQuery is POST /keys/query.
func (a *API) keysQuery(r *http.Request, body *e2ee.QueryRequest) (any, error) {
	return a.e2ee.QueryKeys(r.Context(), session(r).UserID, *body)
}

// keysClaim is POST /keys/claim.
func (a *API) keysClaim(r *http.Request, body *e2ee.ClaimRequest) (any, error) {
	return a.e2ee.ClaimKeys(r.Context(), *body)
}

// keysChanges is GET /keys/changes?from=&to= (sync tokens).
func (a *API) keysChanges(r *http.Request) (any, error) {
	q := r.URL.Query()
	if q.Get("from") == "" || q.Get("to") == "" {
		return nil, mxerr.New(mxerr.MissingParam, "from and to are required")
	}
	from, err := syncapi.ParseToken(q.Get("from"))
	if err != nil {
		return nil, err
	}
	to, err := syncapi.ParseToken(q.Get("to"))
	if err != nil {
		return nil, err
	}
	changed, left, err := a.e2ee.DeviceListsSince(r.Context(), session(r).UserID, from.Stream, to.Stream)
	if err != nil {
		return nil, err
	}
	return map[string][]string{"changed": changed, "left": left}, nil
}

type deviceSigningBody struct {
	e2ee.CrossSigningUpload
	Auth *accounts.AuthDict `json:"auth"`
}

// deviceSigningUpload is POST /keys/device_signing/upload: without auth
// when the user has no master key yet or the request holds no new key,
// behind the password otherwise (spec, v1.11).
func (a *API) deviceSigningUpload(w http.ResponseWriter, r *http.Request) {
	var body deviceSigningBody
	if err := a.decode(r, false, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	s := session(r)
	ctx := r.Context()
	op := accounts.Operation{Name: "POST /keys/device_signing/upload", UserID: s.UserID, Flows: passwordFlows}
	if body.Auth == nil {
		err := a.e2ee.UploadCrossSigningKeys(ctx, s.UserID, body.CrossSigningUpload, false)
		if errors.Is(err, e2ee.ErrAuthRequired) {
			_, err = a.accounts.Authorize(ctx, op, nil) // starts a session: the 401
		}
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		mxhttp.WriteJSON(w, http.StatusOK, empty)
		return
	}
	done, err := a.accounts.Authorize(ctx, op, body.Auth)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if err := a.e2ee.UploadCrossSigningKeys(ctx, s.UserID, body.CrossSigningUpload, true); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	_ = a.accounts.FinishUIA(ctx, done.SessionID)
	mxhttp.WriteJSON(w, http.StatusOK, empty)
}

// signaturesUpload is POST /keys/signatures/upload.
func (a *API) signaturesUpload(r *http.Request, body *map[string]map[string]json.RawMessage) (any, error) {
	failures, err := a.e2ee.UploadSignatures(r.Context(), session(r).UserID, *body)
	if err != nil {
		return nil, err
	}
	return map[string]any{"failures": failures}, nil
}

type sendToDeviceBody struct {
	Messages map[string]map[string]json.RawMessage `json:"messages"`
}

// sendToDevice is PUT /sendToDevice/{eventType}/{txnId}.
func (a *API) sendToDevice(r *http.Request, body *sendToDeviceBody) (any, error) {
	if body.Messages == nil {
		return nil, mxerr.New(mxerr.BadJSON, "messages is required")
	}
	s := session(r)
	err := a.e2ee.SendToDevice(r.Context(), s.UserID, s.DeviceID, pathParam(r, "eventType"), pathParam(r, "txnId"), body.Messages)
	return empty, err
}

type backupVersionBody struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   *string         `json:"version"`
}

// createBackup is POST /room_keys/version.
func (a *API) createBackup(r *http.Request, body *backupVersionBody) (any, error) {
	v, err := a.e2ee.CreateBackup(r.Context(), session(r).UserID, body.Algorithm, body.AuthData)
	if err != nil {
		return nil, err
	}
	return map[string]string{"version": v}, nil
}

// getBackup is GET /room_keys/version[/{version}].
func (a *API) getBackup(r *http.Request) (any, error) {
	return a.e2ee.GetBackup(r.Context(), session(r).UserID, pathParam(r, "version"))
}

// updateBackup is PUT /room_keys/version/{version}.
func (a *API) updateBackup(r *http.Request, body *backupVersionBody) (any, error) {
	return empty, a.e2ee.UpdateBackup(r.Context(), session(r).UserID, pathParam(r, "version"), body.Algorithm, body.AuthData, body.Version)
}

// deleteBackup is DELETE /room_keys/version/{version}.
func (a *API) deleteBackup(r *http.Request) (any, error) {
	return empty, a.e2ee.DeleteBackup(r.Context(), session(r).UserID, pathParam(r, "version"))
}

// backupTarget reads the version query parameter and the optional room and
// session of a /room_keys/keys path.
func backupTarget(r *http.Request) (version string, roomID, sessionID *string, err error) {
	version = r.URL.Query().Get("version")
	if version == "" {
		return "", nil, nil, mxerr.New(mxerr.MissingParam, "The version query parameter is required")
	}
	if v := pathParam(r, "roomId"); v != "" {
		roomID = &v
	}
	if v := pathParam(r, "sessionId"); v != "" {
		sessionID = &v
	}
	return version, roomID, sessionID, nil
}

// getBackupKeys is GET /room_keys/keys[/{roomId}[/{sessionId}]].
func (a *API) getBackupKeys(r *http.Request) (any, error) {
	version, roomID, sessionID, err := backupTarget(r)
	if err != nil {
		return nil, err
	}
	rooms, err := a.e2ee.GetBackupKeys(r.Context(), session(r).UserID, version, roomID, sessionID)
	if err != nil {
		return nil, err
	}
	switch {
	case sessionID != nil:
		return rooms[*roomID].Sessions[*sessionID], nil
	case roomID != nil:
		room, ok := rooms[*roomID]
		if !ok {
			room = e2ee.RoomKeyBackup{Sessions: map[string]e2ee.KeyBackupData{}}
		}
		return room, nil
	}
	return map[string]any{"rooms": rooms}, nil
}

// putBackupKeys is PUT /room_keys/keys[/{roomId}[/{sessionId}]]; the body is
// {"rooms": …}, {"sessions": …} or one KeyBackupData by level.
func (a *API) putBackupKeys(w http.ResponseWriter, r *http.Request) {
	version, roomID, sessionID, err := backupTarget(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	rooms := map[string]map[string]json.RawMessage{}
	switch {
	case sessionID != nil:
		var body json.RawMessage
		if err = a.decode(r, false, &body); err == nil {
			rooms[*roomID] = map[string]json.RawMessage{*sessionID: body}
		}
	case roomID != nil:
		var body struct {
			Sessions map[string]json.RawMessage `json:"sessions"`
		}
		if err = a.decode(r, false, &body); err == nil {
			rooms[*roomID] = body.Sessions
		}
	default:
		var body struct {
			Rooms map[string]struct {
				Sessions map[string]json.RawMessage `json:"sessions"`
			} `json:"rooms"`
		}
		if err = a.decode(r, false, &body); err == nil {
			for id, room := range body.Rooms {
				rooms[id] = room.Sessions
			}
		}
	}
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	answer(w, r, func() (any, error) { return a.e2ee.PutBackupKeys(r.Context(), session(r).UserID, version, rooms) })
}

// deleteBackupKeys is DELETE /room_keys/keys[/{roomId}[/{sessionId}]].
func (a *API) deleteBackupKeys(r *http.Request) (any, error) {
	version, roomID, sessionID, err := backupTarget(r)
	if err != nil {
		return nil, err
	}
	return a.e2ee.DeleteBackupKeys(r.Context(), session(r).UserID, version, roomID, sessionID)
}
