//go:build goolm

// End-to-end encryption with mautrix-go's OlmMachine and its pure-Go Olm and
// Megolm implementation (goolm), against real Chappe servers: device and
// one-time keys, Olm-encrypted room keys sent to devices, Megolm room
// messages, device-list changes in /sync, cross-signing with
// user-interactive auth, signatures, secret storage, and server-side key
// backup.
//
// mautrix selects goolm with the goolm build tag (without it the crypto
// package links libolm through cgo), so this file only builds with
// `-tags goolm`. `go test ./...` runs it through TestMautrixCryptoGoolm
// (crypto_runner_test.go), which starts `go test -tags goolm` with
// CGO_ENABLED=0 on this package. To run it directly:
//
//	CGO_ENABLED=0 go test -tags goolm -run '^TestMautrixCrypto' -v ./e2e
//
// Set CHAPPE_E2E_CRYPTO_LOG=warn (or debug, trace) to see more of mautrix's
// crypto log than its errors.
//
// Every client here keeps its crypto state in mautrix's in-memory store and
// its room state in mautrix's in-memory state store, both filled from /sync
// the way a client's sync loop fills them: each device calls /sync itself and
// hands the response to mautrix's DefaultSyncer, with the OlmMachine's
// ProcessSyncResponse (to-device events, device_lists, one-time key counts)
// and the state store updater registered on it.
package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/crypto/olm"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"chappe/app/apptest"
)

// cryptoWait is how long a device keeps syncing for something it expects
// (a room key, a device-list change) before the test fails.
const cryptoWait = 20 * time.Second

// cryptoUser is a registered account.
type cryptoUser struct {
	id       id.UserID
	password string
	// first is the access token and device of the registration.
	firstToken  string
	firstDevice id.DeviceID
}

func registerCryptoUser(t *testing.T, base, localpart string) cryptoUser {
	t.Helper()
	password := "correct horse battery " + localpart
	reg, err := newClient(t, base, "", "").RegisterDummy(t.Context(), &mautrix.ReqRegister[any]{
		Username: localpart, Password: password, InitialDeviceDisplayName: localpart + "-1",
	})
	if err != nil {
		t.Fatalf("register %s: %v", localpart, err)
	}
	if reg.AccessToken == "" || reg.DeviceID == "" {
		t.Fatalf("register %s: no access token or device ID in %+v", localpart, reg)
	}
	return cryptoUser{id: reg.UserID, password: password, firstToken: reg.AccessToken, firstDevice: reg.DeviceID}
}

// cryptoDevice is one logged-in device of a user with its own OlmMachine.
type cryptoDevice struct {
	t      *testing.T
	name   string
	user   cryptoUser
	cli    *mautrix.Client
	mach   *crypto.OlmMachine
	state  crypto.StateStore
	syncer *mautrix.DefaultSyncer
	since  string

	// encrypted holds the m.room.encrypted timeline events this device's
	// /sync delivered, by event ID.
	encrypted map[id.EventID]*event.Event
	// changed counts, per user, the /sync responses since the last
	// markDeviceLists whose device_lists.changed listed that user.
	changed map[id.UserID]int
	// otkCounts are the signed_curve25519 counts of each /sync response
	// since the last markOTKCounts (-1 where the field was absent or 0).
	otkCounts []int
	// toDevice counts to-device events received, by type.
	toDevice map[string]int
}

// firstCryptoDevice sets up the device the user registered with.
func firstCryptoDevice(t *testing.T, base string, u cryptoUser, name string) *cryptoDevice {
	t.Helper()
	return newCryptoDevice(t, base, u, u.firstToken, u.firstDevice, name)
}

// loginCryptoDevice logs the user in on a new device and sets it up.
func loginCryptoDevice(t *testing.T, base string, u cryptoUser, name string) *cryptoDevice {
	t.Helper()
	resp := login(t, base, string(u.id), u.password, name, false)
	return newCryptoDevice(t, base, u, resp.AccessToken, resp.DeviceID, name)
}

// newCryptoDevice creates the device's OlmMachine and uploads its identity
// keys and one-time keys, as a client does right after login; it checks the
// server counts the one-time keys.
func newCryptoDevice(t *testing.T, base string, u cryptoUser, token string, deviceID id.DeviceID, name string) *cryptoDevice {
	t.Helper()
	if olm.Driver != "goolm" {
		t.Fatalf("mautrix's Olm driver is %q, want goolm (build with -tags goolm)", olm.Driver)
	}
	cli := newClient(t, base, u.id, token)
	cli.DeviceID = deviceID
	state := mautrix.NewMemoryStateStore()
	cli.StateStore = state
	logger := cryptoLogger(t, name)
	cli.Log = logger
	mach := crypto.NewOlmMachine(cli, &logger, crypto.NewMemoryStore(nil), state.(crypto.StateStore))
	ctx := t.Context()
	if err := mach.Load(ctx); err != nil {
		t.Fatalf("%s: loading the Olm account: %v", name, err)
	}
	t.Cleanup(mach.Destroy)
	d := &cryptoDevice{
		t: t, name: name, user: u, cli: cli, mach: mach, state: state.(crypto.StateStore),
		encrypted: map[id.EventID]*event.Event{},
		changed:   map[id.UserID]int{},
		toDevice:  map[string]int{},
	}
	syncer := mautrix.NewDefaultSyncer()
	// mautrix's default lets unknown event types through; a known type
	// whose content does not parse is the server's fault.
	lenient := syncer.ParseErrorHandler
	syncer.ParseErrorHandler = func(evt *event.Event, err error) bool {
		if lenient(evt, err) {
			return true
		}
		t.Errorf("%s: /sync delivered a %s event (%s) whose content does not parse: %v", name, evt.Type.Type, evt.ID, err)
		return false
	}
	syncer.OnSync(mach.ProcessSyncResponse)
	syncer.OnEvent(cli.StateStoreSyncHandler)
	syncer.OnEventType(event.StateMember, mach.HandleMemberEvent)
	syncer.OnEventType(event.StateHistoryVisibility, mach.HandleHistoryVisibility)
	syncer.OnEventType(event.EventEncrypted, func(_ context.Context, evt *event.Event) {
		d.encrypted[evt.ID] = evt
	})
	d.syncer = syncer

	if err := mach.ShareKeys(ctx, 0); err != nil {
		t.Fatalf("%s: uploading device keys and one-time keys (POST /keys/upload): %v", name, err)
	}
	want := int(mach.GetAccount().Internal.MaxNumberOfOneTimeKeys() / 2)
	counts, err := cli.UploadKeys(ctx, &mautrix.ReqUploadKeys{})
	if err != nil {
		t.Fatalf("%s: POST /keys/upload with no keys (to read the counts): %v", name, err)
	}
	if counts.OneTimeKeyCounts.SignedCurve25519 != want {
		t.Fatalf("%s: after uploading %d signed_curve25519 one-time keys, /keys/upload counts %+v", name, want, counts.OneTimeKeyCounts)
	}
	return d
}

// cryptoLogger sends mautrix's log for one device to the test log: errors
// only, or more with CHAPPE_E2E_CRYPTO_LOG=warn|debug|trace. Nothing is
// logged once the test has ended (mautrix logs from goroutines of its own).
func cryptoLogger(t *testing.T, name string) zerolog.Logger {
	level := zerolog.ErrorLevel
	if l, err := zerolog.ParseLevel(os.Getenv("CHAPPE_E2E_CRYPTO_LOG")); err == nil && l != zerolog.NoLevel {
		level = l
	}
	w := &testLogWriter{t: t}
	t.Cleanup(w.close)
	return zerolog.New(zerolog.ConsoleWriter{Out: w, NoColor: true, TimeFormat: "15:04:05.000"}).
		Level(level).With().Timestamp().Str("device", name).Logger()
}

type testLogWriter struct {
	mu     sync.Mutex
	t      *testing.T
	closed bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testLogWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// sync makes one /sync call (long-polling up to timeoutMS) and feeds the
// response to mautrix as its sync loop would.
func (d *cryptoDevice) sync(timeoutMS int) *mautrix.RespSync {
	d.t.Helper()
	ctx := d.t.Context()
	resp, err := d.cli.SyncRequest(ctx, timeoutMS, d.since, "", false, "")
	if err != nil {
		d.t.Fatalf("%s: GET /sync?since=%q: %v", d.name, d.since, err)
	}
	for _, u := range resp.DeviceLists.Changed {
		d.changed[u]++
	}
	if n, ok := rawOTKCount(resp); ok {
		d.otkCounts = append(d.otkCounts, n)
	} else {
		d.otkCounts = append(d.otkCounts, -1)
	}
	for _, evt := range resp.ToDevice.Events {
		d.toDevice[evt.Type.Type]++
	}
	if err := d.syncer.ProcessResponse(ctx, resp, d.since); err != nil {
		d.t.Fatalf("%s: processing /sync: %v", d.name, err)
	}
	d.since = resp.NextBatch
	return resp
}

// rawOTKCount is the signed_curve25519 count of the response, and whether
// the field was there at all.
func rawOTKCount(resp *mautrix.RespSync) (int, bool) {
	if resp.DeviceOTKCount.SignedCurve25519 != 0 || resp.DeviceOTKCount.Curve25519 != 0 {
		return resp.DeviceOTKCount.SignedCurve25519, true
	}
	return 0, false
}

// syncUntil syncs until cond holds, failing after cryptoWait with cond's
// explanation of what is missing.
func (d *cryptoDevice) syncUntil(what string, cond func() (bool, string)) {
	d.t.Helper()
	deadline := time.Now().Add(cryptoWait)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s: %s: still not the case after syncing for %v: %s (to-device events received so far: %v)", d.name, what, cryptoWait, why, d.toDevice)
		}
		d.sync(1000)
	}
}

// drain syncs until a response brings nothing new for this device's keys:
// no to-device events and no device-list changes.
func (d *cryptoDevice) drain() {
	d.t.Helper()
	for range 10 {
		resp := d.sync(0)
		if len(resp.ToDevice.Events) == 0 && len(resp.DeviceLists.Changed) == 0 {
			return
		}
	}
}

func (d *cryptoDevice) markDeviceLists() { d.changed = map[id.UserID]int{} }
func (d *cryptoDevice) markOTKCounts()   { d.otkCounts = nil }

// waitDeviceListChange syncs until device_lists.changed has listed user
// since the last markDeviceLists.
func (d *cryptoDevice) waitDeviceListChange(user id.UserID, because string) {
	d.t.Helper()
	d.syncUntil(fmt.Sprintf("device_lists.changed lists %s (%s)", user, because), func() (bool, string) {
		return d.changed[user] > 0, fmt.Sprintf("users in device_lists.changed since then: %v", d.changed)
	})
}

// waitJoined syncs until the device's state store has the room encrypted
// with Megolm and every user joined.
func (d *cryptoDevice) waitJoined(roomID id.RoomID, users ...id.UserID) {
	d.t.Helper()
	ctx := d.t.Context()
	d.syncUntil(fmt.Sprintf("room %s encrypted with %v joined", roomID, users), func() (bool, string) {
		enc, err := d.state.IsEncrypted(ctx, roomID)
		if err != nil || !enc {
			return false, fmt.Sprintf("no m.room.encryption (%s) in the room state from /sync (err %v)", id.AlgorithmMegolmV1, err)
		}
		ss := d.cli.StateStore
		for _, u := range users {
			if !ss.IsMembership(ctx, roomID, u, event.MembershipJoin) {
				return false, fmt.Sprintf("%s is not joined according to /sync", u)
			}
		}
		return true, ""
	})
}

// trackUsers asks /keys/query for the users' devices, as a client does when
// it starts sharing an encrypted room with them, and checks it gets exactly
// the devices wanted (those that uploaded keys).
func (d *cryptoDevice) trackUsers(want map[id.UserID][]id.DeviceID) {
	d.t.Helper()
	users := make([]id.UserID, 0, len(want))
	for u := range want {
		users = append(users, u)
	}
	got, err := d.mach.FetchKeys(d.t.Context(), users, true)
	if err != nil {
		d.t.Fatalf("%s: POST /keys/query for %v: %v", d.name, users, err)
	}
	for u, devices := range want {
		var have []id.DeviceID
		for dev := range got[u] {
			have = append(have, dev)
		}
		slices.Sort(have)
		devices = slices.Clone(devices)
		slices.Sort(devices)
		if !slices.Equal(have, devices) {
			d.t.Fatalf("%s: /keys/query gives %s's devices with valid keys as %v, want %v", d.name, u, have, devices)
		}
	}
}

// sendEncrypted shares the room's Megolm session with every member's devices
// (claiming one-time keys and sending Olm-encrypted m.room_key to-device
// messages as needed), encrypts a text message and sends it. It returns the
// event ID and the Megolm session ID.
func (d *cryptoDevice) sendEncrypted(roomID id.RoomID, body string) (id.EventID, id.SessionID) {
	d.t.Helper()
	ctx := d.t.Context()
	members, err := d.cli.StateStore.GetRoomJoinedOrInvitedMembers(ctx, roomID)
	if err != nil || len(members) == 0 {
		d.t.Fatalf("%s: members of %s from /sync: %v %v", d.name, roomID, members, err)
	}
	if err := d.mach.ShareGroupSession(ctx, roomID, members); err != nil {
		d.t.Fatalf("%s: sharing the Megolm session of %s with %v (keys/query, keys/claim, sendToDevice): %v", d.name, roomID, members, err)
	}
	content, err := d.mach.EncryptMegolmEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
	if err != nil {
		d.t.Fatalf("%s: encrypting %q: %v", d.name, body, err)
	}
	resp, err := d.cli.SendMessageEvent(ctx, roomID, event.EventEncrypted, content)
	if err != nil {
		d.t.Fatalf("%s: sending m.room.encrypted: %v", d.name, err)
	}
	return resp.EventID, content.SessionID
}

// waitDecrypt syncs until the event has come down this device's /sync and
// its room key has arrived, then checks the plaintext.
func (d *cryptoDevice) waitDecrypt(eventID id.EventID, sender id.UserID, body string) *event.Event {
	d.t.Helper()
	ctx := d.t.Context()
	var dec *event.Event
	d.syncUntil(fmt.Sprintf("decrypt %s from %s", eventID, sender), func() (bool, string) {
		evt, ok := d.encrypted[eventID]
		if !ok {
			return false, "the event has not come down /sync"
		}
		out, err := d.mach.DecryptMegolmEvent(ctx, evt)
		if err != nil {
			return false, "cannot decrypt it: " + err.Error()
		}
		dec = out
		return true, ""
	})
	d.checkPlaintext(dec, eventID, sender, body)
	return dec
}

func (d *cryptoDevice) checkPlaintext(dec *event.Event, eventID id.EventID, sender id.UserID, body string) {
	d.t.Helper()
	if dec.Type != event.EventMessage || dec.Sender != sender || dec.ID != eventID {
		d.t.Fatalf("%s: %s decrypts to a %s from %s (id %s), want an m.room.message from %s", d.name, eventID, dec.Type.Type, dec.Sender, dec.ID, sender)
	}
	if got := dec.Content.AsMessage().Body; got != body {
		d.t.Fatalf("%s: %s decrypts to body %q, want %q", d.name, eventID, got, body)
	}
}

// fetchEncrypted reads an event with GET /rooms/{roomId}/event/{eventId}, as
// a client does for history it did not get from /sync.
func (d *cryptoDevice) fetchEncrypted(roomID id.RoomID, eventID id.EventID) *event.Event {
	d.t.Helper()
	evt, err := d.cli.GetEvent(d.t.Context(), roomID, eventID)
	if err != nil {
		d.t.Fatalf("%s: GET /rooms/%s/event/%s: %v", d.name, roomID, eventID, err)
	}
	evt.RoomID = roomID
	evt.Type.Class = event.MessageEventType
	if err := evt.Content.ParseRaw(evt.Type); err != nil || evt.Type != event.EventEncrypted {
		d.t.Fatalf("%s: %s is a %s that does not parse as m.room.encrypted: %v", d.name, eventID, evt.Type.Type, err)
	}
	return evt
}

// createEncryptedRoom has owner create a private room with m.room.encryption
// (Megolm) in its initial state and the others join it.
func createEncryptedRoom(t *testing.T, owner *cryptoDevice, others ...*cryptoDevice) id.RoomID {
	t.Helper()
	ctx := t.Context()
	var invite []id.UserID
	for _, o := range others {
		invite = append(invite, o.user.id)
	}
	created, err := owner.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "private_chat",
		Name:   "encrypted",
		Invite: invite,
		InitialState: []*event.Event{{
			Type:    event.StateEncryption,
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		}},
	})
	if err != nil {
		t.Fatalf("%s creates an encrypted room: %v", owner.name, err)
	}
	for _, o := range others {
		if _, err := o.cli.JoinRoomByID(ctx, created.RoomID); err != nil {
			t.Fatalf("%s joins %s: %v", o.name, created.RoomID, err)
		}
	}
	return created.RoomID
}

func passwordUIA(u cryptoUser, calls *int) mautrix.UIACallback {
	return func(resp *mautrix.RespUserInteractive) interface{} {
		*calls++
		return newPasswordAuth(resp.Session, u.id, u.password)
	}
}

// TestMautrixCryptoMessaging: two users with two devices each share an
// encrypted room; a message from one device is decrypted by the three
// others, a reply the other way too; a device added later gets (through
// device_lists in /sync) the keys of messages sent after it appeared, from
// the other user and from its own user's devices; a deleted device's keys
// are gone from /keys/query, and its deletion is in device_lists.
func TestMautrixCryptoMessaging(t *testing.T) {
	start := time.Now()
	srv := apptest.Start(t)
	alice := registerCryptoUser(t, srv.URL, "alice")
	bob := registerCryptoUser(t, srv.URL, "bob")
	a1 := firstCryptoDevice(t, srv.URL, alice, "alice-1")
	a2 := loginCryptoDevice(t, srv.URL, alice, "alice-2")
	b1 := firstCryptoDevice(t, srv.URL, bob, "bob-1")
	b2 := loginCryptoDevice(t, srv.URL, bob, "bob-2")
	all := []*cryptoDevice{a1, a2, b1, b2}

	roomID := createEncryptedRoom(t, a1, b1)
	for _, d := range all {
		d.waitJoined(roomID, alice.id, bob.id)
		d.trackUsers(map[id.UserID][]id.DeviceID{
			alice.id: {a1.cli.DeviceID, a2.cli.DeviceID},
			bob.id:   {b1.cli.DeviceID, b2.cli.DeviceID},
		})
	}

	// The one-time key count in /sync: 50 uploaded, one claimed by alice-1.
	b1.markOTKCounts()
	b1.sync(0)
	if want := int(b1.mach.GetAccount().Internal.MaxNumberOfOneTimeKeys() / 2); b1.otkCounts[0] != want {
		t.Errorf("bob-1: /sync device_one_time_keys_count.signed_curve25519 is %d (-1: absent or 0), want %d", b1.otkCounts[0], want)
	}

	// 1. alice-1 → alice-2, bob-1, bob-2.
	body1 := "Bonjour, this is alice-1 speaking"
	ev1, sess1 := a1.sendEncrypted(roomID, body1)
	t.Logf("alice-1 sent %s (Megolm session %s)", ev1, sess1)
	b1.markOTKCounts()
	for _, d := range []*cryptoDevice{a2, b1, b2} {
		d.waitDecrypt(ev1, alice.id, body1)
	}
	if !slices.Contains(b1.otkCounts, int(b1.mach.GetAccount().Internal.MaxNumberOfOneTimeKeys()/2)-1) {
		t.Errorf("bob-1: after alice-1 claimed one of its one-time keys, /sync's signed_curve25519 counts were %v (-1: absent or 0), want one of them to be %d",
			b1.otkCounts, int(b1.mach.GetAccount().Internal.MaxNumberOfOneTimeKeys()/2)-1)
	}

	// 2. bob-2 → alice-1, alice-2, bob-1.
	body2 := "Hello alice, bob-2 here"
	ev2, _ := b2.sendEncrypted(roomID, body2)
	for _, d := range []*cryptoDevice{a1, a2, b1} {
		d.waitDecrypt(ev2, bob.id, body2)
	}

	// 3. bob logs in on a third device. Everyone first reads what is
	// pending, so that the change they then wait for comes from bob-3's key
	// upload, not from its login.
	loginResp := login(t, srv.URL, string(bob.id), bob.password, "bob-3", false)
	for _, d := range all {
		d.drain()
		d.markDeviceLists()
	}
	b3 := newCryptoDevice(t, srv.URL, bob, loginResp.AccessToken, loginResp.DeviceID, "bob-3")
	a1.waitDeviceListChange(bob.id, "bob-3 uploaded its device keys")
	b1.waitDeviceListChange(bob.id, "bob-3, a device of bob-1's own user, uploaded its device keys")
	b3.waitJoined(roomID, alice.id, bob.id)

	body3 := "A message for all of bob's devices, new ones included"
	ev3, sess3 := a1.sendEncrypted(roomID, body3)
	if sess3 == sess1 {
		t.Errorf("alice-1 kept Megolm session %s after bob's new device appeared: mautrix rotates it when it sees the device-list change", sess1)
	}
	b3.waitDecrypt(ev3, alice.id, body3)
	b2.waitDecrypt(ev3, alice.id, body3)

	body4 := "bob-1 to everyone, bob-3 included"
	ev4, _ := b1.sendEncrypted(roomID, body4)
	b3.waitDecrypt(ev4, bob.id, body4)
	a2.waitDecrypt(ev4, bob.id, body4)

	// 4. bob deletes bob-2: its keys go with it, and alice hears of it.
	for _, d := range []*cryptoDevice{a1, b1} {
		d.drain()
		d.markDeviceLists()
	}
	deleteURL := b1.cli.BuildClientURL("v3", "devices", b2.cli.DeviceID)
	session := startPasswordUIA(t, b1.cli, http.MethodDelete, deleteURL, map[string]any{})
	if _, err := b1.cli.MakeRequest(t.Context(), http.MethodDelete, deleteURL, map[string]any{"auth": newPasswordAuth(session, bob.id, bob.password)}, nil); err != nil {
		t.Fatalf("bob-1 deletes bob-2 (DELETE /devices/%s with his password): %v", b2.cli.DeviceID, err)
	}
	a1.waitDeviceListChange(bob.id, "bob deleted bob-2")
	b1.waitDeviceListChange(bob.id, "bob deleted bob-2, a device of bob-1's own user")
	a1.trackUsers(map[id.UserID][]id.DeviceID{
		alice.id: {a1.cli.DeviceID, a2.cli.DeviceID},
		bob.id:   {b1.cli.DeviceID, b3.cli.DeviceID},
	})

	t.Logf("messaging scenario took %v", time.Since(start).Round(time.Millisecond))
}

// keysQueryRaw is a POST /keys/query answer, decoded only down to the JSON
// of each key, so that signatures are checked over exactly what the
// server returned.
type keysQueryRaw struct {
	Failures        map[string]json.RawMessage                    `json:"failures"`
	DeviceKeys      map[id.UserID]map[id.DeviceID]json.RawMessage `json:"device_keys"`
	MasterKeys      map[id.UserID]json.RawMessage                 `json:"master_keys"`
	SelfSigningKeys map[id.UserID]json.RawMessage                 `json:"self_signing_keys"`
	UserSigningKeys map[id.UserID]json.RawMessage                 `json:"user_signing_keys"`
}

func queryKeysRaw(t *testing.T, d *cryptoDevice, users ...id.UserID) keysQueryRaw {
	t.Helper()
	req := map[string]any{}
	for _, u := range users {
		req[string(u)] = []string{}
	}
	var out keysQueryRaw
	_, err := d.cli.MakeRequest(t.Context(), http.MethodPost, d.cli.BuildClientURL("v3", "keys", "query"), map[string]any{"device_keys": req}, &out)
	if err != nil {
		t.Fatalf("%s: POST /keys/query %v: %v", d.name, users, err)
	}
	return out
}

// signatureOn reports whether raw (a key object) carries a signature by
// signer's key keyName, and whether it verifies with key.
func signatureOn(t *testing.T, raw json.RawMessage, signer id.UserID, keyName string, key id.Ed25519) (present, valid bool) {
	t.Helper()
	var obj struct {
		Signatures map[id.UserID]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		t.Fatalf("key object %s: %v", raw, err)
	}
	if _, ok := obj.Signatures[signer]["ed25519:"+keyName]; !ok {
		return false, false
	}
	ok, err := signatures.VerifySignatureJSON(raw, signer, keyName, key)
	return true, ok && err == nil
}

// TestMautrixCryptoCrossSigning: both users bootstrap cross-signing (keys in
// secret storage, the public keys uploaded with user-interactive auth where
// the spec requires it), sign their devices with their self-signing keys;
// alice verifies bob by signing his master key with her user-signing key;
// /keys/query shows the signatures to those allowed to see them, and
// alice's other device, which gets her private cross-signing keys from
// secret storage, trusts bob's devices through them.
func TestMautrixCryptoCrossSigning(t *testing.T) {
	start := time.Now()
	ctx := t.Context()
	srv := apptest.Start(t)
	alice := registerCryptoUser(t, srv.URL, "alice")
	bob := registerCryptoUser(t, srv.URL, "bob")
	a1 := firstCryptoDevice(t, srv.URL, alice, "alice-1")
	a2 := loginCryptoDevice(t, srv.URL, alice, "alice-2")
	b1 := firstCryptoDevice(t, srv.URL, bob, "bob-1")
	b2 := loginCryptoDevice(t, srv.URL, bob, "bob-2")
	all := []*cryptoDevice{a1, a2, b1, b2}
	roomID := createEncryptedRoom(t, a1, b1)
	for _, d := range all {
		d.waitJoined(roomID, alice.id, bob.id)
		d.drain()
		d.markDeviceLists()
	}

	// alice bootstraps: secret storage key, cross-signing keys stored in
	// it, public keys uploaded (the first upload: UIA allowed, not needed).
	aliceUIA := 0
	recoveryKey, aliceKeys, err := a1.mach.GenerateAndUploadCrossSigningKeys(ctx, passwordUIA(alice, &aliceUIA), "")
	if err != nil {
		t.Fatalf("alice-1 bootstraps cross-signing (account data, POST /keys/device_signing/upload): %v", err)
	}
	t.Logf("alice's first cross-signing upload asked for user-interactive auth %d time(s)", aliceUIA)
	if err := a1.mach.SignOwnDevice(ctx, a1.mach.OwnIdentity()); err != nil {
		t.Fatalf("alice-1 signs its device with the self-signing key (POST /keys/signatures/upload): %v", err)
	}
	if err := a1.mach.SignOwnMasterKey(ctx); err != nil {
		t.Fatalf("alice-1 signs the master key with its device key (POST /keys/signatures/upload): %v", err)
	}
	// Uploading the same keys again needs no auth (spec: the request
	// contains no new keys).
	if err := a1.mach.PublishCrossSigningKeys(ctx, aliceKeys, nil); err != nil {
		t.Errorf("alice-1 re-uploads the same cross-signing keys without auth: %v, want success (no new keys, so no UIA)", err)
	}
	b2.waitDeviceListChange(alice.id, "alice uploaded cross-signing keys")

	// bob bootstraps, then replaces his keys: a new master key needs UIA.
	bobUIA := 0
	_, _, err = b1.mach.GenerateAndUploadCrossSigningKeys(ctx, passwordUIA(bob, &bobUIA), "")
	if err != nil {
		t.Fatalf("bob-1 bootstraps cross-signing: %v", err)
	}
	bobKeys, err := b1.mach.GenerateCrossSigningKeys()
	if err != nil {
		t.Fatalf("generating bob's new cross-signing keys: %v", err)
	}
	err = b1.mach.PublishCrossSigningKeys(ctx, bobKeys, nil)
	var he mautrix.HTTPError
	if !errors.As(err, &he) || !he.IsStatus(http.StatusUnauthorized) {
		t.Fatalf("bob-1 replaces his cross-signing keys without auth: got %v, want 401 with a user-interactive auth challenge", err)
	}
	bobUIA = 0
	var flows []mautrix.UIAFlow
	err = b1.mach.PublishCrossSigningKeys(ctx, bobKeys, func(resp *mautrix.RespUserInteractive) interface{} {
		flows = resp.Flows
		return passwordUIA(bob, &bobUIA)(resp)
	})
	if err != nil {
		t.Fatalf("bob-1 replaces his cross-signing keys with his password: %v (flows offered: %+v)", err, flows)
	}
	if bobUIA != 1 {
		t.Fatalf("bob-1 replaced his cross-signing keys with %d auth rounds, want 1 (password)", bobUIA)
	}
	if err := b1.mach.SignOwnMasterKey(ctx); err != nil {
		t.Fatalf("bob-1 signs his master key: %v", err)
	}
	for _, dev := range []id.DeviceID{b1.cli.DeviceID, b2.cli.DeviceID} {
		device, err := b1.mach.GetOrFetchDevice(ctx, bob.id, dev)
		if err != nil {
			t.Fatalf("bob-1 looks up %s: %v", dev, err)
		}
		if err := b1.mach.SignOwnDevice(ctx, device); err != nil {
			t.Fatalf("bob-1 signs %s with his self-signing key: %v", dev, err)
		}
	}
	a2.waitDeviceListChange(bob.id, "bob uploaded cross-signing keys and signed his devices")

	// alice-1 verifies bob: she signs his (new) master key.
	if _, err := a1.mach.FetchKeys(ctx, []id.UserID{bob.id}, true); err != nil {
		t.Fatalf("alice-1 queries bob's keys: %v", err)
	}
	bobPub, err := a1.mach.GetCrossSigningPublicKeys(ctx, bob.id)
	if err != nil || bobPub == nil {
		t.Fatalf("alice-1 has no cross-signing keys for bob after /keys/query: %v", err)
	}
	if bobPub.MasterKey != bobKeys.MasterKey.PublicKey() {
		t.Fatalf("/keys/query gives bob's master key as %s, want the replacement %s", bobPub.MasterKey, bobKeys.MasterKey.PublicKey())
	}
	if err := a1.mach.SignUser(ctx, bob.id, bobPub.MasterKey); err != nil {
		t.Fatalf("alice-1 signs bob's master key with her user-signing key (POST /keys/signatures/upload): %v", err)
	}

	aliceUSK := aliceKeys.UserSigningKey.PublicKey()
	bobMSK := bobKeys.MasterKey.PublicKey()
	bobSSK := bobKeys.SelfSigningKey.PublicKey()
	// What alice sees.
	q := queryKeysRaw(t, a1, alice.id, bob.id)
	if q.MasterKeys[bob.id] == nil || q.SelfSigningKeys[bob.id] == nil {
		t.Fatalf("alice's /keys/query has no master or self-signing key for bob: %+v", q)
	}
	if present, valid := signatureOn(t, q.MasterKeys[bob.id], alice.id, string(aliceUSK), aliceUSK); !present || !valid {
		t.Errorf("alice's /keys/query: bob's master key %s carries alice's user-signing signature: present %v, valid %v; want both", q.MasterKeys[bob.id], present, valid)
	}
	if present, valid := signatureOn(t, q.SelfSigningKeys[bob.id], bob.id, string(bobMSK), bobMSK); !present || !valid {
		t.Errorf("alice's /keys/query: bob's self-signing key %s signed by his master key: present %v, valid %v", q.SelfSigningKeys[bob.id], present, valid)
	}
	for _, dev := range []id.DeviceID{b1.cli.DeviceID, b2.cli.DeviceID} {
		raw := q.DeviceKeys[bob.id][dev]
		if raw == nil {
			t.Fatalf("alice's /keys/query has no device keys for bob's %s", dev)
		}
		if present, valid := signatureOn(t, raw, bob.id, string(bobSSK), bobSSK); !present || !valid {
			t.Errorf("alice's /keys/query: bob's device %s carries his self-signing signature: present %v, valid %v; device keys %s", dev, present, valid, raw)
		}
	}
	if q.UserSigningKeys[bob.id] != nil {
		t.Errorf("alice's /keys/query returns bob's user-signing key; the spec returns it only to its owner")
	}
	if q.UserSigningKeys[alice.id] == nil {
		t.Errorf("alice's /keys/query of herself has no user_signing_keys for her")
	}
	// What bob sees: not alice's signature of his master key (spec: users
	// do not see signatures made by other users' user-signing keys).
	qb := queryKeysRaw(t, b1, bob.id)
	if present, _ := signatureOn(t, qb.MasterKeys[bob.id], alice.id, string(aliceUSK), aliceUSK); present {
		t.Errorf("bob's /keys/query of himself shows alice's user-signing signature on his master key: %s", qb.MasterKeys[bob.id])
	}

	// alice-2 unlocks secret storage with the recovery key, takes the
	// private cross-signing keys, signs itself, and trusts bob's devices
	// through alice's signature of bob's master key, from the server.
	b1.drain()
	b1.markDeviceLists()
	if err := a2.mach.VerifyWithRecoveryKey(ctx, recoveryKey); err != nil {
		t.Fatalf("alice-2 verifies itself with the recovery key (secret storage in account data, signatures upload): %v", err)
	}
	if _, err := a2.mach.FetchKeys(ctx, []id.UserID{alice.id, bob.id}, true); err != nil {
		t.Fatalf("alice-2 queries keys: %v", err)
	}
	for _, dev := range []id.DeviceID{b1.cli.DeviceID, b2.cli.DeviceID} {
		device, err := a2.mach.GetOrFetchDevice(ctx, bob.id, dev)
		if err != nil {
			t.Fatalf("alice-2 looks up bob's %s: %v", dev, err)
		}
		if trust, err := a2.mach.ResolveTrustContext(ctx, device); trust != id.TrustStateCrossSignedVerified {
			t.Errorf("alice-2 sees bob's %s as %s (%v), want %s", dev, trust, err, id.TrustStateCrossSignedVerified)
		}
	}
	// bob sees alice-2 signed by alice's self-signing key (trusted on first
	// use: bob has not verified alice).
	b1.waitDeviceListChange(alice.id, "alice-2 signed itself with alice's self-signing key")
	if _, err := b1.mach.FetchKeys(ctx, []id.UserID{alice.id}, true); err != nil {
		t.Fatalf("bob-1 queries alice's keys: %v", err)
	}
	device, err := b1.mach.GetOrFetchDevice(ctx, alice.id, a2.cli.DeviceID)
	if err != nil {
		t.Fatalf("bob-1 looks up alice-2: %v", err)
	}
	if trust, err := b1.mach.ResolveTrustContext(ctx, device); trust != id.TrustStateCrossSignedTOFU {
		t.Errorf("bob-1 sees alice-2 as %s (%v), want %s", trust, err, id.TrustStateCrossSignedTOFU)
	}

	// A message from bob-2 decrypted by alice-2 is from a verified device.
	body := "signed, sealed, delivered"
	ev, _ := b2.sendEncrypted(roomID, body)
	dec := a2.waitDecrypt(ev, bob.id, body)
	if dec.Mautrix.TrustState != id.TrustStateCrossSignedVerified {
		t.Errorf("alice-2 decrypts bob-2's message with trust %s, want %s", dec.Mautrix.TrustState, id.TrustStateCrossSignedVerified)
	}
	t.Logf("cross-signing scenario took %v", time.Since(start).Round(time.Millisecond))
}

// TestMautrixCryptoKeyBackup: alice-1 creates a server-side key backup
// (m.megolm_backup.v1.curve25519-aes-sha2) with its private key in secret
// storage, uploads the room keys it has, and a brand-new device of alice,
// which never received those keys, restores them with the recovery key and
// decrypts the old messages.
func TestMautrixCryptoKeyBackup(t *testing.T) {
	start := time.Now()
	ctx := t.Context()
	srv := apptest.Start(t)
	alice := registerCryptoUser(t, srv.URL, "alice")
	bob := registerCryptoUser(t, srv.URL, "bob")
	a1 := firstCryptoDevice(t, srv.URL, alice, "alice-1")
	b1 := firstCryptoDevice(t, srv.URL, bob, "bob-1")
	roomID := createEncryptedRoom(t, a1, b1)
	for _, d := range []*cryptoDevice{a1, b1} {
		d.waitJoined(roomID, alice.id, bob.id)
	}
	bodyA := "an old message from alice-1"
	evA, _ := a1.sendEncrypted(roomID, bodyA)
	bodyB := "an old message from bob-1"
	evB, _ := b1.sendEncrypted(roomID, bodyB)
	a1.waitDecrypt(evB, bob.id, bodyB)

	// No backup yet.
	_, err := a1.cli.GetKeyBackupLatestVersion(ctx)
	wantMatrixError(t, "GET /room_keys/version before any backup", err, http.StatusNotFound, "M_NOT_FOUND")

	// Secret storage with a recovery key, the backup key stored in it.
	ssssKey, err := a1.mach.SSSS.GenerateAndUploadKey(ctx, "")
	if err != nil {
		t.Fatalf("alice-1 creates a secret storage key (account data): %v", err)
	}
	if err := a1.mach.SSSS.SetDefaultKeyID(ctx, ssssKey.ID); err != nil {
		t.Fatalf("alice-1 sets the default secret storage key: %v", err)
	}
	backupKey, err := backup.NewMegolmBackupKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := a1.mach.SSSS.SetEncryptedAccountData(ctx, event.AccountDataMegolmBackupKey, backupKey.Bytes(), ssssKey); err != nil {
		t.Fatalf("alice-1 stores the backup key in secret storage: %v", err)
	}

	// The backup version, its auth_data signed by alice-1's device key.
	authData := backup.MegolmAuthData{PublicKey: id.Ed25519(base64.RawStdEncoding.EncodeToString(backupKey.PublicKey().Bytes()))}
	sig, err := a1.mach.GetAccount().SignJSON(authData)
	if err != nil {
		t.Fatal(err)
	}
	authData.Signatures = signatures.NewSingleSignature(alice.id, id.KeyAlgorithmEd25519, a1.cli.DeviceID.String(), sig)
	created, err := a1.cli.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
		Algorithm: id.KeyBackupAlgorithmMegolmBackupV1, AuthData: authData,
	})
	if err != nil {
		t.Fatalf("alice-1 creates a key backup (POST /room_keys/version): %v", err)
	}
	if created.Version == "" {
		t.Fatalf("POST /room_keys/version returned no version")
	}
	info, err := a1.cli.GetKeyBackupLatestVersion(ctx)
	if err != nil {
		t.Fatalf("GET /room_keys/version: %v", err)
	}
	if info.Version != created.Version || info.Algorithm != id.KeyBackupAlgorithmMegolmBackupV1 || info.AuthData.PublicKey != authData.PublicKey || info.Count != 0 || info.ETag == "" {
		t.Fatalf("GET /room_keys/version after creating %s: %+v, want that version, %s, public key %s, count 0 and an etag",
			created.Version, info, id.KeyBackupAlgorithmMegolmBackupV1, authData.PublicKey)
	}

	// Upload every room key alice-1 has for the room: its own outbound
	// session's and the one bob-1 sent it.
	sessions, err := a1.mach.CryptoStore.GetGroupSessionsForRoom(ctx, roomID).AsList()
	if err != nil {
		t.Fatal(err)
	}
	if len(sessions) != 2 {
		t.Fatalf("alice-1 has %d Megolm sessions for the room, want 2 (hers and bob-1's)", len(sessions))
	}
	req := &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{roomID: {Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{}}}}
	for _, s := range sessions {
		first := s.Internal.FirstKnownIndex()
		key, err := s.Internal.Export(first)
		if err != nil {
			t.Fatalf("exporting session %s: %v", s.ID(), err)
		}
		enc, err := backup.EncryptSessionData(backupKey, backup.MegolmSessionData{
			Algorithm:          id.AlgorithmMegolmV1,
			ForwardingKeyChain: []string{},
			SenderClaimedKeys:  backup.SenderClaimedKeys{Ed25519: s.SigningKey},
			SenderKey:          s.SenderKey,
			SessionKey:         string(key),
		})
		if err != nil {
			t.Fatalf("encrypting session %s for the backup: %v", s.ID(), err)
		}
		raw, err := json.Marshal(enc)
		if err != nil {
			t.Fatal(err)
		}
		req.Rooms[roomID].Sessions[s.ID()] = mautrix.ReqKeyBackupData{
			FirstMessageIndex: int(first), ForwardedCount: 0, IsVerified: true, SessionData: raw,
		}
	}
	put, err := a1.cli.PutKeysInBackup(ctx, created.Version, req)
	if err != nil {
		t.Fatalf("alice-1 uploads %d room keys (PUT /room_keys/keys?version=%s): %v", len(sessions), created.Version, err)
	}
	if put.Count != len(sessions) || put.ETag == "" || put.ETag == info.ETag {
		t.Fatalf("PUT /room_keys/keys answered count %d etag %q, want count %d and an etag other than the empty backup's %q", put.Count, put.ETag, len(sessions), info.ETag)
	}
	if err := a1.mach.SetKeyBackupVersion(ctx, created.Version); err != nil {
		t.Fatal(err)
	}

	// A brand-new device: it cannot read the old messages...
	a3 := loginCryptoDevice(t, srv.URL, alice, "alice-restored")
	a3.waitJoined(roomID, alice.id, bob.id)
	oldA := a3.fetchEncrypted(roomID, evA)
	oldB := a3.fetchEncrypted(roomID, evB)
	for _, old := range []*event.Event{oldA, oldB} {
		if _, err := a3.mach.DecryptMegolmEvent(ctx, old); err == nil {
			t.Fatalf("alice-restored decrypts %s before restoring the backup: it should not have its key", old.ID)
		}
	}
	// ...until it restores the backup with the recovery key.
	keyID, keyData, err := a3.mach.SSSS.GetDefaultKeyData(ctx)
	if err != nil {
		t.Fatalf("alice-restored reads the default secret storage key (account data): %v", err)
	}
	unlocked, err := keyData.VerifyRecoveryKey(keyID, ssssKey.RecoveryKey())
	if err != nil {
		t.Fatalf("alice-restored unlocks secret storage with the recovery key: %v", err)
	}
	rawBackupKey, err := a3.mach.SSSS.GetDecryptedAccountData(ctx, event.AccountDataMegolmBackupKey, unlocked)
	if err != nil {
		t.Fatalf("alice-restored reads the backup key from secret storage: %v", err)
	}
	restoredKey, err := backup.MegolmBackupKeyFromBytes(rawBackupKey)
	if err != nil {
		t.Fatal(err)
	}
	version, err := a3.mach.DownloadAndStoreLatestKeyBackup(ctx, restoredKey)
	if err != nil {
		t.Fatalf("alice-restored downloads the key backup (GET /room_keys/version, GET /room_keys/keys): %v", err)
	}
	if version != created.Version {
		t.Fatalf("alice-restored restored backup version %q, want %q", version, created.Version)
	}
	for _, s := range sessions {
		if got, err := a3.mach.CryptoStore.GetGroupSession(ctx, roomID, s.ID()); err != nil || got == nil {
			t.Fatalf("alice-restored has no session %s after restoring the backup (%v): GET /room_keys/keys did not give it back intact", s.ID(), err)
		}
	}
	for _, c := range []struct {
		evt    *event.Event
		sender id.UserID
		body   string
	}{{oldA, alice.id, bodyA}, {oldB, bob.id, bodyB}} {
		dec, err := a3.mach.DecryptMegolmEvent(ctx, c.evt)
		if err != nil {
			t.Fatalf("alice-restored decrypts old message %s after restoring the backup: %v", c.evt.ID, err)
		}
		a3.checkPlaintext(dec, c.evt.ID, c.sender, c.body)
		if dec.Mautrix.TrustState != id.TrustStateBackup {
			t.Errorf("alice-restored decrypts %s with trust %s, want %s (key from backup)", c.evt.ID, dec.Mautrix.TrustState, id.TrustStateBackup)
		}
	}

	// The backup's count and etag as the server now reports them.
	after, err := a3.cli.GetKeyBackupLatestVersion(ctx)
	if err != nil {
		t.Fatalf("GET /room_keys/version: %v", err)
	}
	if after.Count != len(sessions) || after.ETag != put.ETag {
		t.Errorf("GET /room_keys/version after the upload: count %d etag %q, want %d and %q (the upload's)", after.Count, after.ETag, len(sessions), put.ETag)
	}
	t.Logf("key backup scenario took %v", time.Since(start).Round(time.Millisecond))
}
