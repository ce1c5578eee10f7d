package clientapi_test

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"

	"chappe/app/apptest"
	"chappe/config"
)

func TestE2EEKeysUpload(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "alice-password")
	bob := register(t, srv, "bob", "bob-password")
	d := device{user: alice, key: newKeyPair(t)}
	up := func(tok string, body any) response {
		return call(t, "POST", srv.URL+c+"/keys/upload", tok, mustJSON(body))
	}

	// Signed keys are needed before signed one-time keys.
	wantError(t, uploadOTKs(t, srv, d, 0, 1), 400, "M_INVALID_PARAM", "OTK before device keys")

	bad := deviceKeysOf(t, d)
	bad["keys"].(map[string]any)["curve25519:"+d.DeviceID] = "tampered"
	wantError(t, up(alice.Token, map[string]any{"device_keys": bad}), 400, "M_INVALID_PARAM", "bad signature")
	wantError(t, up(bob.Token, map[string]any{"device_keys": deviceKeysOf(t, d)}), 400, "M_INVALID_PARAM", "another user's device keys")
	other := d
	other.DeviceID = "OTHERDEVICE"
	wantError(t, up(alice.Token, map[string]any{"device_keys": deviceKeysOf(t, other)}), 400, "M_INVALID_PARAM", "another device's keys")
	noKey := sign(t, map[string]any{"user_id": alice.ID, "device_id": alice.DeviceID, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
		"keys": map[string]string{"curve25519:" + alice.DeviceID: "x"}}, alice.ID, d.keyID(), d.key)
	wantError(t, up(alice.Token, map[string]any{"device_keys": noKey}), 400, "M_INVALID_PARAM", "no ed25519 key")
	wantError(t, call(t, "POST", srv.URL+c+"/keys/upload", alice.Token, "{nope"), 400, "M_NOT_JSON", "not JSON")
	wantError(t, call(t, "POST", srv.URL+c+"/keys/upload", "", "{}"), 401, "M_MISSING_TOKEN", "no token")

	r := up(alice.Token, map[string]any{"device_keys": deviceKeysOf(t, d)})
	mustStatus(t, r, 200, "good device keys")
	if n := path(r.Body, "one_time_key_counts", "signed_curve25519"); n != float64(0) {
		t.Errorf("counts after device keys: %v", r.Raw)
	}
	// The same keys again (a retry) are fine.
	mustStatus(t, up(alice.Token, map[string]any{"device_keys": deviceKeysOf(t, d)}), 200, "same device keys")

	r = uploadOTKs(t, srv, d, 0, 5)
	mustStatus(t, r, 200, "OTKs")
	if n := path(r.Body, "one_time_key_counts", "signed_curve25519"); n != float64(5) {
		t.Errorf("counts after 5 OTKs: %s", r.Raw)
	}
	// Same IDs, same keys: no-op; same ID, another key: refused.
	r = uploadOTKs(t, srv, d, 3, 4)
	mustStatus(t, r, 200, "overlapping OTKs")
	if n := path(r.Body, "one_time_key_counts", "signed_curve25519"); n != float64(7) {
		t.Errorf("counts after overlapping upload: %s", r.Raw)
	}
	clash := map[string]any{"signed_curve25519:AAA1": otk(t, d, 99, false)}
	wantError(t, up(alice.Token, map[string]any{"one_time_keys": clash}), 400, "M_INVALID_PARAM", "different key for an existing ID")
	forged := otk(t, d, 100, false)
	forged["key"] = "swapped"
	wantError(t, up(alice.Token, map[string]any{"one_time_keys": map[string]any{"signed_curve25519:ZZZ": forged}}), 400, "M_INVALID_PARAM", "OTK bad signature")
	wantError(t, up(alice.Token, map[string]any{"one_time_keys": map[string]any{"nocolon": otk(t, d, 1, false)}}), 400, "M_INVALID_PARAM", "key name")
	wantError(t, up(alice.Token, map[string]any{"one_time_keys": map[string]any{"signed_curve25519:S": "plain"}}), 400, "M_INVALID_PARAM", "signed key as string")

	// Fallback key: listed as unused in sync.
	r = up(alice.Token, map[string]any{"fallback_keys": map[string]any{"signed_curve25519:FB1": otk(t, d, 1000, true)}})
	mustStatus(t, r, 200, "fallback key")
	s := syncOnce(t, srv, alice, url.Values{"timeout": {"0"}})
	if got := strList(s.Body["device_unused_fallback_key_types"]); len(got) != 1 || got[0] != "signed_curve25519" {
		t.Errorf("unused fallback types: %v", got)
	}
	if n := path(s.Body, "device_one_time_keys_count", "signed_curve25519"); n != float64(7) {
		t.Errorf("sync OTK count: %v", s.Body["device_one_time_keys_count"])
	}
	// A device without keys still sees signed_curve25519: 0.
	s = syncOnce(t, srv, bob, url.Values{"timeout": {"0"}})
	if n := path(s.Body, "device_one_time_keys_count", "signed_curve25519"); n != float64(0) {
		t.Errorf("sync OTK count of a device without keys: %v", s.Body["device_one_time_keys_count"])
	}
}

func TestE2EEKeysQueryAndClaim(t *testing.T) {
	srv := apptest.Start(t)
	alice := newDevice(t, srv, register(t, srv, "alice", "alice-password"))
	bob := newDevice(t, srv, register(t, srv, "bob", "bob-password"))
	alice2 := loginDevice(t, srv, alice.user)
	mustStatus(t, call(t, "PUT", srv.URL+c+"/devices/"+alice.DeviceID, alice.Token, `{"display_name":"Alice's phone"}`), 200, "rename")

	r := call(t, "POST", srv.URL+c+"/keys/query", bob.Token, mustJSON(map[string]any{"device_keys": map[string]any{
		alice.ID: []string{}, "@carol:remote.example": []string{}, "@nobody:localhost": []string{},
	}}))
	mustStatus(t, r, 200, "query")
	devs, _ := path(r.Body, "device_keys", alice.ID).(map[string]any)
	if len(devs) != 2 || devs[alice.DeviceID] == nil || devs[alice2.DeviceID] == nil {
		t.Fatalf("alice's devices: %s", r.Raw)
	}
	if path(devs, alice.DeviceID, "keys", alice.keyID()) != alice.key.pub {
		t.Errorf("device keys: %v", devs[alice.DeviceID])
	}
	if path(devs, alice.DeviceID, "unsigned", "device_display_name") != "Alice's phone" {
		t.Errorf("display name missing: %v", devs[alice.DeviceID])
	}
	if path(r.Body, "failures", "remote.example") == nil {
		t.Errorf("the remote server is not in failures: %s", r.Raw)
	}
	if m, _ := path(r.Body, "device_keys", "@nobody:localhost").(map[string]any); len(m) != 0 {
		t.Errorf("unknown user has devices: %s", r.Raw)
	}
	// One device asked for: only that one.
	r = call(t, "POST", srv.URL+c+"/keys/query", bob.Token, mustJSON(map[string]any{"device_keys": map[string]any{alice.ID: []string{alice2.DeviceID}}}))
	if devs, _ := path(r.Body, "device_keys", alice.ID).(map[string]any); len(devs) != 1 || devs[alice2.DeviceID] == nil {
		t.Errorf("query for one device: %s", r.Raw)
	}
	wantError(t, call(t, "POST", srv.URL+c+"/keys/query", bob.Token, `{"device_keys":{"not-a-user":[]}}`), 400, "M_INVALID_PARAM", "bad user ID")
	wantError(t, call(t, "POST", srv.URL+c+"/keys/query", bob.Token, `{"device_keys":{"@a:b":"x"}}`), 400, "M_BAD_JSON", "bad shape")

	// Claim: one-time keys first (oldest first), then the fallback key, reused.
	mustStatus(t, uploadOTKs(t, srv, alice, 0, 2), 200, "OTKs")
	mustStatus(t, call(t, "POST", srv.URL+c+"/keys/upload", alice.Token, mustJSON(map[string]any{
		"fallback_keys": map[string]any{"signed_curve25519:FB": otk(t, alice, 77, true)}})), 200, "fallback")
	claim := func() response {
		r := call(t, "POST", srv.URL+c+"/keys/claim", bob.Token, mustJSON(map[string]any{"one_time_keys": map[string]any{
			alice.ID:                map[string]string{alice.DeviceID: "signed_curve25519", "NOSUCHDEVICE": "signed_curve25519"},
			"@carol:remote.example": map[string]string{"X": "signed_curve25519"},
		}}))
		mustStatus(t, r, 200, "claim")
		return r
	}
	var got []string
	for i := 0; i < 4; i++ {
		r := claim()
		keys, _ := path(r.Body, "one_time_keys", alice.ID, alice.DeviceID).(map[string]any)
		if len(keys) != 1 {
			t.Fatalf("claim %d: %s", i, r.Raw)
		}
		for id, k := range keys {
			got = append(got, id)
			if path(k, "signatures", alice.ID, alice.keyID()) == nil {
				t.Errorf("claimed key without its signature: %v", k)
			}
		}
		if path(r.Body, "one_time_keys", alice.ID, "NOSUCHDEVICE") != nil {
			t.Errorf("a key for an unknown device: %s", r.Raw)
		}
		if path(r.Body, "failures", "remote.example") == nil {
			t.Errorf("remote server not in failures: %s", r.Raw)
		}
	}
	want := []string{"signed_curve25519:AAA0", "signed_curve25519:AAA1", "signed_curve25519:FB", "signed_curve25519:FB"}
	sort.Strings(got)
	if mustJSON(got) != mustJSON(want) {
		t.Errorf("claimed %v, want %v", got, want)
	}
	s := syncOnce(t, srv, alice.user, url.Values{"timeout": {"0"}})
	if got := strList(s.Body["device_unused_fallback_key_types"]); len(got) != 0 {
		t.Errorf("the used fallback key is still listed unused: %v", got)
	}
	// Uploading a new fallback key makes it unused again.
	mustStatus(t, call(t, "POST", srv.URL+c+"/keys/upload", alice.Token, mustJSON(map[string]any{
		"fallback_keys": map[string]any{"signed_curve25519:FB2": otk(t, alice, 78, true)}})), 200, "new fallback")
	s = syncOnce(t, srv, alice.user, url.Values{"timeout": {"0"}})
	if got := strList(s.Body["device_unused_fallback_key_types"]); len(got) != 1 {
		t.Errorf("new fallback key not listed unused: %v", got)
	}
}

// Twenty claims at once of twenty keys: every key goes to exactly one claimer.
func TestE2EEConcurrentClaims(t *testing.T) {
	srv := apptest.Start(t)
	alice := newDevice(t, srv, register(t, srv, "alice", "alice-password"))
	const n = 20
	mustStatus(t, uploadOTKs(t, srv, alice, 0, n), 200, "OTKs")
	var claimers []user
	for i := 0; i < 4; i++ {
		claimers = append(claimers, register(t, srv, fmt.Sprintf("claimer%d", i), "claimer-password"))
	}
	body := mustJSON(map[string]any{"one_time_keys": map[string]any{alice.ID: map[string]string{alice.DeviceID: "signed_curve25519"}}})
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(u user) {
			defer wg.Done()
			<-start
			r := call(t, "POST", srv.URL+c+"/keys/claim", u.Token, body)
			keys, _ := path(r.Body, "one_time_keys", alice.ID, alice.DeviceID).(map[string]any)
			mu.Lock()
			defer mu.Unlock()
			if r.Status != 200 || len(keys) != 1 {
				t.Errorf("claim: %d %s", r.Status, r.Raw)
			}
			for id := range keys {
				got[id]++
			}
		}(claimers[i%len(claimers)])
	}
	close(start)
	wg.Wait()
	if len(got) != n {
		t.Errorf("%d distinct keys handed out, want %d: %v", len(got), n, got)
	}
	for id, times := range got {
		if times != 1 {
			t.Errorf("key %s handed out %d times", id, times)
		}
	}
	// None left, no fallback: nothing more.
	r := call(t, "POST", srv.URL+c+"/keys/claim", claimers[0].Token, body)
	if keys := path(r.Body, "one_time_keys", alice.ID); keys != nil {
		t.Errorf("a key after all were claimed: %s", r.Raw)
	}
}

func TestE2EECrossSigning(t *testing.T) {
	srv := apptest.Start(t)
	alice := newDevice(t, srv, register(t, srv, "alice", "alice-password"))
	bob := newDevice(t, srv, register(t, srv, "bob", "bob-password"))
	up := func(u user, body any) response {
		return call(t, "POST", srv.URL+c+"/keys/device_signing/upload", u.Token, mustJSON(body))
	}
	m, s := newKeyPair(t), newKeyPair(t)
	// No master key anywhere: the self-signing key cannot be checked.
	wantError(t, up(alice.user, map[string]any{"self_signing_key": csKey(t, alice.ID, "self_signing", s, &m)}), 400, "M_MISSING_PARAM", "no master")
	wantError(t, up(alice.user, map[string]any{"master_key": csKey(t, alice.ID, "master", m, nil),
		"self_signing_key": csKey(t, alice.ID, "self_signing", s, &s)}), 400, "M_INVALID_SIGNATURE", "self-signing key not signed by the master")
	wantError(t, up(alice.user, map[string]any{"master_key": csKey(t, bob.ID, "master", m, nil)}), 400, "M_INVALID_PARAM", "another user's key")
	wantError(t, up(alice.user, map[string]any{"master_key": csKey(t, alice.ID, "self_signing", m, nil)}), 400, "M_INVALID_PARAM", "wrong usage")

	// First upload: no UIA. The same keys again: still none (a retry).
	first := map[string]any{
		"master_key":       csKey(t, alice.ID, "master", m, nil),
		"self_signing_key": csKey(t, alice.ID, "self_signing", s, &m),
	}
	mustStatus(t, up(alice.user, first), 200, "first upload")
	mustStatus(t, up(alice.user, first), 200, "same keys again")
	// A user-signing key is new: UIA.
	u := newKeyPair(t)
	withUser := map[string]any{"user_signing_key": csKey(t, alice.ID, "user_signing", u, &m)}
	r := up(alice.user, withUser)
	if r.Status != 401 || r.Body["session"] == nil || r.Body["flows"] == nil {
		t.Fatalf("new key without UIA: want 401 with flows, got %d %s", r.Status, r.Raw)
	}
	session := r.Body["session"].(string)
	withUser["auth"] = passwordAuth("alice", "wrong-password", session)
	if r := up(alice.user, withUser); r.Status != 401 || r.errcode() != "M_FORBIDDEN" {
		t.Errorf("wrong password: %d %s", r.Status, r.Raw)
	}
	withUser["auth"] = passwordAuth("alice", "alice-password", session)
	mustStatus(t, up(alice.user, withUser), 200, "upload after UIA")

	// What others see: master and self-signing, not the user-signing key.
	r = queryKeys(t, srv, bob.user, alice.ID)
	if path(r.Body, "master_keys", alice.ID, "keys", "ed25519:"+m.pub) != m.pub {
		t.Errorf("master key: %s", r.Raw)
	}
	if path(r.Body, "self_signing_keys", alice.ID, "signatures", alice.ID, "ed25519:"+m.pub) == nil {
		t.Errorf("self-signing key with its signature: %s", r.Raw)
	}
	if path(r.Body, "user_signing_keys", alice.ID) != nil {
		t.Errorf("bob sees alice's user-signing key: %s", r.Raw)
	}
	r = queryKeys(t, srv, alice.user, alice.ID)
	if path(r.Body, "user_signing_keys", alice.ID, "keys", "ed25519:"+u.pub) != u.pub {
		t.Errorf("alice does not see her user-signing key: %s", r.Raw)
	}
	// A key whose public key is a device ID is refused.
	m2 := newKeyPair(t)
	login(t, srv, "alice", "alice-password", map[string]any{"device_id": m2.pub})
	r = up(alice.user, map[string]any{"master_key": csKey(t, alice.ID, "master", m2, nil), "auth": passwordAuth("alice", "alice-password", "")})
	wantError(t, r, 403, "M_FORBIDDEN", "public key equal to a device ID")
}

func TestE2EESignaturesUpload(t *testing.T) {
	srv := apptest.Start(t)
	alice := newDevice(t, srv, register(t, srv, "alice", "alice-password"))
	bob := newDevice(t, srv, register(t, srv, "bob", "bob-password"))
	carol := register(t, srv, "carol", "carol-password")
	acs := bootstrapCrossSigning(t, srv, alice.user)
	bcs := bootstrapCrossSigning(t, srv, bob.user)
	bobMaster := path(queryKeys(t, srv, alice.user, bob.ID).Body, "master_keys", bob.ID).(map[string]any)
	aliceMaster := path(queryKeys(t, srv, alice.user, alice.ID).Body, "master_keys", alice.ID).(map[string]any)
	delete(aliceMaster, "signatures")

	body := map[string]any{
		alice.ID: map[string]any{
			// Alice's device, signed with her self-signing key.
			alice.DeviceID: sign(t, deviceKeysOf(t, alice), alice.ID, "ed25519:"+acs.self.pub, acs.self),
			// Alice's master key, signed by her device.
			acs.master.pub: sign(t, aliceMaster, alice.ID, alice.keyID(), alice.key),
			// A key that does not exist.
			"NOSUCHKEY": sign(t, map[string]any{"x": 1}, alice.ID, alice.keyID(), alice.key),
		},
		// Bob's master key, signed with alice's user-signing key.
		bob.ID: map[string]any{bcs.master.pub: sign(t, bobMaster, alice.ID, "ed25519:"+acs.user.pub, acs.user)},
	}
	r := call(t, "POST", srv.URL+c+"/keys/signatures/upload", alice.Token, mustJSON(body))
	mustStatus(t, r, 200, "signatures upload")
	failures, _ := r.Body["failures"].(map[string]any)
	if path(failures, alice.ID, "NOSUCHKEY", "errcode") == nil || len(failures) != 1 || len(failures[alice.ID].(map[string]any)) != 1 {
		t.Errorf("failures: %s", r.Raw)
	}
	q := queryKeys(t, srv, bob.user, alice.ID, bob.ID)
	if path(q.Body, "device_keys", alice.ID, alice.DeviceID, "signatures", alice.ID, "ed25519:"+acs.self.pub) == nil {
		t.Errorf("the self-signing signature of alice's device is missing: %s", q.Raw)
	}
	if path(q.Body, "master_keys", alice.ID, "signatures", alice.ID, alice.keyID()) == nil {
		t.Errorf("the device signature of alice's master key is missing: %s", q.Raw)
	}
	// Alice's signature of bob's master key: only alice sees it.
	if path(q.Body, "master_keys", bob.ID, "signatures", alice.ID) != nil {
		t.Errorf("bob sees alice's user-signing signature: %s", q.Raw)
	}
	if path(queryKeys(t, srv, carol, bob.ID).Body, "master_keys", bob.ID, "signatures", alice.ID) != nil {
		t.Errorf("carol sees alice's user-signing signature")
	}
	if path(queryKeys(t, srv, alice.user, bob.ID).Body, "master_keys", bob.ID, "signatures", alice.ID, "ed25519:"+acs.user.pub) == nil {
		t.Errorf("alice does not see her signature of bob's master key")
	}

	// Bad signatures and objects that are not the stored key.
	tampered := sign(t, deviceKeysOf(t, alice), alice.ID, "ed25519:"+acs.self.pub, acs.self)
	tampered["signatures"].(map[string]any)[alice.ID].(map[string]any)["ed25519:"+acs.self.pub] = "AAAA" + acs.self.pub[4:]
	otherKeys := deviceKeysOf(t, alice)
	otherKeys["algorithms"] = []string{"something.else"}
	r = call(t, "POST", srv.URL+c+"/keys/signatures/upload", alice.Token, mustJSON(map[string]any{
		alice.ID: map[string]any{alice.DeviceID: tampered},
		bob.ID:   map[string]any{bob.DeviceID: sign(t, deviceKeysOf(t, bob), alice.ID, "ed25519:"+acs.self.pub, acs.self)},
	}))
	mustStatus(t, r, 200, "bad signatures")
	if path(r.Body, "failures", alice.ID, alice.DeviceID, "errcode") != "M_INVALID_SIGNATURE" {
		t.Errorf("bad signature not reported: %s", r.Raw)
	}
	if path(r.Body, "failures", bob.ID, bob.DeviceID, "errcode") == nil {
		t.Errorf("signing another user's device is not refused: %s", r.Raw)
	}
	r = call(t, "POST", srv.URL+c+"/keys/signatures/upload", alice.Token, mustJSON(map[string]any{
		alice.ID: map[string]any{alice.DeviceID: sign(t, otherKeys, alice.ID, "ed25519:"+acs.self.pub, acs.self)}}))
	if path(r.Body, "failures", alice.ID, alice.DeviceID, "errcode") == nil {
		t.Errorf("a signature of other device keys is not refused: %s", r.Raw)
	}
}

func TestE2EEToDevice(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "alice-password")
	bob := register(t, srv, "bob", "bob-password")
	bob2 := loginDevice(t, srv, bob).user
	send := func(u user, evType, txn string, messages any) response {
		return call(t, "PUT", srv.URL+c+"/sendToDevice/"+url.PathEscape(evType)+"/"+txn, u.Token, mustJSON(map[string]any{"messages": messages}))
	}
	b1 := syncOnce(t, srv, bob, url.Values{"timeout": {"0"}})
	b2 := syncOnce(t, srv, bob2, url.Values{"timeout": {"0"}})

	mustStatus(t, send(alice, "m.test", "t1", map[string]any{bob.ID: map[string]any{bob.DeviceID: map[string]any{"n": 1}}}), 200, "send")
	// A retry with the same transaction ID is not delivered again.
	mustStatus(t, send(alice, "m.test", "t1", map[string]any{bob.ID: map[string]any{bob.DeviceID: map[string]any{"n": 1}}}), 200, "retry")
	// "*": every device of bob; a remote user is dropped; an unknown device skipped.
	mustStatus(t, send(alice, "m.test", "t2", map[string]any{
		bob.ID:                  map[string]any{"*": map[string]any{"n": 2}},
		"@carol:remote.example": map[string]any{"X": map[string]any{"n": 3}},
		alice.ID:                map[string]any{"NOSUCHDEVICE": map[string]any{"n": 4}},
	}), 200, "send to *")
	wantError(t, send(alice, "m.test", "t3", map[string]any{bob.ID: map[string]any{bob.DeviceID: "not an object"}}), 400, "M_BAD_JSON", "string content")
	wantError(t, send(alice, "m.test", "t4", map[string]any{"bob": map[string]any{"X": map[string]any{}}}), 400, "M_INVALID_PARAM", "bad user ID")
	wantError(t, call(t, "PUT", srv.URL+c+"/sendToDevice/m.test/t5", alice.Token, `{}`), 400, "M_BAD_JSON", "no messages")

	r := sinceSync(t, srv, bob, b1.Body["next_batch"].(string))
	evs := toDeviceEvents(r)
	if len(evs) != 2 || path(evs[0], "content", "n") != float64(1) || path(evs[1], "content", "n") != float64(2) ||
		evs[0]["sender"] != alice.ID || evs[0]["type"] != "m.test" {
		t.Fatalf("bob's device 1 got %s", mustJSON(evs))
	}
	// Not acknowledged yet: the same since gives them again.
	if evs := toDeviceEvents(sinceSync(t, srv, bob, b1.Body["next_batch"].(string))); len(evs) != 2 {
		t.Errorf("before acknowledgement, a repeated sync got %d messages", len(evs))
	}
	// Acknowledged by the next since: gone, even with an older since afterwards.
	next := r.Body["next_batch"].(string)
	if evs := toDeviceEvents(sinceSync(t, srv, bob, next)); len(evs) != 0 {
		t.Errorf("delivered again after acknowledgement: %s", mustJSON(evs))
	}
	if evs := toDeviceEvents(sinceSync(t, srv, bob, b1.Body["next_batch"].(string))); len(evs) != 0 {
		t.Errorf("deleted messages came back with an old since: %s", mustJSON(evs))
	}
	evs = toDeviceEvents(sinceSync(t, srv, bob2, b2.Body["next_batch"].(string)))
	if len(evs) != 1 || path(evs[0], "content", "n") != float64(2) {
		t.Errorf("bob's device 2 got %s", mustJSON(evs))
	}
	// An initial sync gets what is still pending.
	mustStatus(t, send(alice, "m.test", "t6", map[string]any{bob.ID: map[string]any{bob.DeviceID: map[string]any{"n": 6}}}), 200, "send")
	if evs := toDeviceEvents(syncOnce(t, srv, bob, url.Values{"timeout": {"0"}})); len(evs) != 1 {
		t.Errorf("initial sync got %d pending messages", len(evs))
	}
	// A deleted device's messages go with it.
	mustStatus(t, send(alice, "m.test", "t7", map[string]any{bob.ID: map[string]any{bob2.DeviceID: map[string]any{"n": 7}}}), 200, "send")
	pending := func() int {
		msgs, err := srv.Store.ToDeviceInRange(context.Background(), bob.ID, bob2.DeviceID, 0, 1<<62)
		if err != nil {
			t.Fatal(err)
		}
		return len(msgs)
	}
	if n := pending(); n != 2 { // "*" message not acknowledged, and this one
		t.Fatalf("%d messages pending for bob's device 2, want 2", n)
	}
	mustStatus(t, call(t, "POST", srv.URL+c+"/logout", bob2.Token, ""), 200, "logout")
	if n := pending(); n != 0 {
		t.Errorf("%d messages left for a deleted device", n)
	}
}

// A long-poll wakes up for a to-device message.
func TestE2EEToDeviceWakesLongPoll(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "alice-password")
	bob := register(t, srv, "bob", "bob-password")
	since := syncOnce(t, srv, bob, url.Values{"timeout": {"0"}}).Body["next_batch"].(string)
	done := make(chan response, 1)
	go func() { done <- syncOnce(t, srv, bob, url.Values{"since": {since}, "timeout": {"20000"}}) }()
	mustStatus(t, call(t, "PUT", srv.URL+c+"/sendToDevice/m.test/w1", alice.Token,
		mustJSON(map[string]any{"messages": map[string]any{bob.ID: map[string]any{"*": map[string]any{"hello": true}}}})), 200, "send")
	r := <-done
	if evs := toDeviceEvents(r); len(evs) != 1 {
		t.Errorf("long-poll got %s", r.Raw)
	}
}

// A to-device message not yet fetched survives a restart; one delivered and
// acknowledged does not come back, and the since token stays valid.
func TestE2EEToDeviceSurvivesRestart(t *testing.T) {
	dataDir := t.TempDir()
	var dbURL string
	var bob user
	var acked string
	t.Run("first server", func(t *testing.T) {
		srv := apptest.Start(t, func(cfg *config.Config) { cfg.DataDir = dataDir })
		dbURL = srv.Config.Database.URL
		alice := register(t, srv, "alice", "alice-password")
		bob = register(t, srv, "bob", "bob-password")
		send := func(txn string, n int) {
			mustStatus(t, call(t, "PUT", srv.URL+c+"/sendToDevice/m.test/"+txn, alice.Token,
				mustJSON(map[string]any{"messages": map[string]any{bob.ID: map[string]any{bob.DeviceID: map[string]any{"n": n}}}})), 200, "send")
		}
		send("r1", 1)
		r := syncOnce(t, srv, bob, url.Values{"timeout": {"0"}})
		if evs := toDeviceEvents(r); len(evs) != 1 {
			t.Fatalf("first message: %s", r.Raw)
		}
		acked = r.Body["next_batch"].(string)
		// Acknowledge it: deleted. The stream may now have no row at its top.
		if evs := toDeviceEvents(sinceSync(t, srv, bob, acked)); len(evs) != 0 {
			t.Fatalf("redelivered: %s", mustJSON(evs))
		}
		send("r2", 2)
	})
	srv := apptest.Start(t, func(cfg *config.Config) { cfg.DataDir = dataDir; cfg.Database.URL = dbURL })
	r := call(t, "GET", srv.URL+c+"/sync?timeout=0&since="+url.QueryEscape(acked), bob.Token, "")
	mustStatus(t, r, 200, "sync after restart with the acknowledged since")
	evs := toDeviceEvents(r)
	if len(evs) != 1 || path(evs[0], "content", "n") != float64(2) {
		t.Fatalf("after restart: %s", mustJSON(evs))
	}
	if evs := toDeviceEvents(sinceSync(t, srv, bob, r.Body["next_batch"].(string))); len(evs) != 0 {
		t.Errorf("delivered twice after restart: %s", mustJSON(evs))
	}
}

func TestE2EEDeviceListsInSync(t *testing.T) {
	srv := apptest.Start(t)
	alice := newDevice(t, srv, register(t, srv, "alice", "alice-password"))
	bob := register(t, srv, "bob", "bob-password")
	carol := register(t, srv, "carol", "carol-password")
	dave := newDevice(t, srv, register(t, srv, "dave", "dave-password")) // shares no room with bob
	room := createRoom(t, srv, alice.user, map[string]any{"preset": "public_chat"})
	joinRoom(t, srv, bob, room)
	since := syncOnce(t, srv, bob, url.Values{"timeout": {"0"}}).Body["next_batch"].(string)
	lists := func(since string) ([]string, []string, string) {
		r := sinceSync(t, srv, bob, since)
		return strList(path(r.Body, "device_lists", "changed")), strList(path(r.Body, "device_lists", "left")), r.Body["next_batch"].(string)
	}
	changes := func(from, to string) ([]string, []string) {
		r := call(t, "GET", srv.URL+c+"/keys/changes?from="+url.QueryEscape(from)+"&to="+url.QueryEscape(to), bob.Token, "")
		mustStatus(t, r, 200, "keys/changes")
		return strList(r.Body["changed"]), strList(r.Body["left"])
	}

	// A new device of alice with keys; dave's new device is not bob's business.
	alice2 := loginDevice(t, srv, alice.user)
	loginDevice(t, srv, dave.user)
	changed, left, next := lists(since)
	if mustJSON(changed) != mustJSON([]string{alice.ID}) || len(left) != 0 {
		t.Errorf("after alice's new device: changed %v left %v", changed, left)
	}
	if ch, _ := changes(since, next); mustJSON(ch) != mustJSON([]string{alice.ID}) {
		t.Errorf("keys/changes: %v", ch)
	}
	if changed, _, _ := lists(next); len(changed) != 0 {
		t.Errorf("the change is reported again: %v", changed)
	}
	// Carol joins: bob now shares a room with her.
	since = next
	joinRoom(t, srv, carol, room)
	changed, left, next = lists(since)
	if mustJSON(changed) != mustJSON([]string{carol.ID}) || len(left) != 0 {
		t.Errorf("after carol joined: changed %v left %v", changed, left)
	}
	// Carol leaves: left.
	since = next
	leaveRoom(t, srv, carol, room)
	changed, left, next = lists(since)
	if len(changed) != 0 || mustJSON(left) != mustJSON([]string{carol.ID}) {
		t.Errorf("after carol left: changed %v left %v", changed, left)
	}
	// Alice deletes her second device: changed, and its keys are gone.
	since = next
	r := call(t, "POST", srv.URL+c+"/delete_devices", alice.Token, mustJSON(map[string]any{
		"devices": []string{alice2.DeviceID}, "auth": passwordAuth("alice", "alice-password", "")}))
	mustStatus(t, r, 200, "delete device")
	changed, _, next = lists(since)
	if mustJSON(changed) != mustJSON([]string{alice.ID}) {
		t.Errorf("after alice deleted a device: changed %v", changed)
	}
	if devs, _ := path(queryKeys(t, srv, bob, alice.ID).Body, "device_keys", alice.ID).(map[string]any); len(devs) != 1 || devs[alice2.DeviceID] != nil {
		t.Errorf("deleted device still has keys: %v", devs)
	}
	// Cross-signing keys are a change too.
	since = next
	bootstrapCrossSigning(t, srv, alice.user)
	if changed, _, _ := lists(since); mustJSON(changed) != mustJSON([]string{alice.ID}) {
		t.Errorf("after alice's cross-signing keys: changed %v", changed)
	}
	// Logging a device out is a change.
	since = next
	alice3 := loginDevice(t, srv, alice.user)
	_, _, next = lists(since)
	since = next
	mustStatus(t, call(t, "POST", srv.URL+c+"/logout", alice3.Token, ""), 200, "logout")
	changed, _, next = lists(since)
	if mustJSON(changed) != mustJSON([]string{alice.ID}) {
		t.Errorf("after alice logged a device out: changed %v", changed)
	}
	// Bob joins a room of dave's: dave is new to him.
	since = next
	room2 := createRoom(t, srv, dave.user, map[string]any{"preset": "public_chat"})
	joinRoom(t, srv, bob, room2)
	changed, _, next = lists(since)
	if !containsStr(changed, dave.ID) {
		t.Errorf("after bob joined dave's room: changed %v", changed)
	}
	// Bob leaves it: dave is gone from his view.
	since = next
	leaveRoom(t, srv, bob, room2)
	if _, left, _ := lists(since); mustJSON(left) != mustJSON([]string{dave.ID}) {
		t.Errorf("after bob left dave's room: left %v", left)
	}
	wantError(t, call(t, "GET", srv.URL+c+"/keys/changes?from=x&to=y", bob.Token, ""), 400, "M_INVALID_PARAM", "bad tokens")
	wantError(t, call(t, "GET", srv.URL+c+"/keys/changes", bob.Token, ""), 400, "M_MISSING_PARAM", "no tokens")
}

func TestE2EEKeyBackup(t *testing.T) {
	srv := apptest.Start(t)
	alice := register(t, srv, "alice", "alice-password")
	bob := register(t, srv, "bob", "bob-password")
	const alg = "m.megolm_backup.v1.curve25519-aes-sha2"
	kv := func(rest string) string { return srv.URL + c + "/room_keys/" + rest }

	wantError(t, call(t, "GET", kv("version"), alice.Token, ""), 404, "M_NOT_FOUND", "no backup yet")
	wantError(t, call(t, "PUT", kv("keys?version=1"), alice.Token, `{"rooms":{}}`), 404, "M_NOT_FOUND", "keys without backup")
	wantError(t, call(t, "POST", kv("version"), alice.Token, `{"algorithm":"`+alg+`","auth_data":"x"}`), 400, "M_BAD_JSON", "auth_data not an object")
	r := call(t, "POST", kv("version"), alice.Token, mustJSON(map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "abc"}}))
	mustStatus(t, r, 200, "create backup")
	v1 := r.Body["version"].(string)
	r = call(t, "GET", kv("version"), alice.Token, "")
	mustStatus(t, r, 200, "current backup")
	if r.Body["version"] != v1 || r.Body["algorithm"] != alg || r.Body["count"] != float64(0) || path(r.Body, "auth_data", "public_key") != "abc" {
		t.Errorf("backup info: %s", r.Raw)
	}
	etag0 := r.Body["etag"]
	wantError(t, call(t, "GET", kv("version/"+v1), bob.Token, ""), 404, "M_NOT_FOUND", "another user's backup")

	key := func(fmi, fwd int, verified bool, tag string) map[string]any {
		return map[string]any{"first_message_index": fmi, "forwarded_count": fwd, "is_verified": verified, "session_data": map[string]any{"tag": tag}}
	}
	r = call(t, "PUT", kv("keys?version="+v1), alice.Token, mustJSON(map[string]any{"rooms": map[string]any{
		"!r1:localhost": map[string]any{"sessions": map[string]any{"s1": key(5, 1, false, "a"), "s2": key(0, 0, false, "b")}},
	}}))
	mustStatus(t, r, 200, "put keys")
	if r.Body["count"] != float64(2) || r.Body["etag"] == etag0 {
		t.Errorf("after put: %s", r.Raw)
	}
	etag1 := r.Body["etag"]
	// Replacement rule at the session level.
	put := func(k map[string]any) response {
		return call(t, "PUT", kv("keys/"+url.PathEscape("!r1:localhost")+"/s1?version="+v1), alice.Token, mustJSON(k))
	}
	stored := func() string {
		r := call(t, "GET", kv("keys/"+url.PathEscape("!r1:localhost")+"/s1?version="+v1), alice.Token, "")
		mustStatus(t, r, 200, "get session key")
		return fmt.Sprint(path(r.Body, "session_data", "tag"))
	}
	steps := []struct {
		k    map[string]any
		want string
	}{
		{key(9, 0, false, "worse index"), "a"},
		{key(5, 2, false, "more forwards"), "a"},
		{key(5, 1, false, "tie"), "a"},
		{key(5, 0, false, "fewer forwards"), "fewer forwards"},
		{key(2, 9, false, "lower index"), "lower index"},
		{key(9, 9, true, "verified"), "verified"},
		{key(0, 0, false, "unverified best"), "verified"},
	}
	for _, st := range steps {
		mustStatus(t, put(st.k), 200, "put session key")
		if got := stored(); got != st.want {
			t.Errorf("after %v: stored %q, want %q", st.k["session_data"], got, st.want)
		}
	}
	wantError(t, put(map[string]any{"first_message_index": 1}), 400, "M_BAD_JSON", "incomplete key")
	wantError(t, call(t, "GET", kv("keys/"+url.PathEscape("!r1:localhost")+"/nope?version="+v1), alice.Token, ""), 404, "M_NOT_FOUND", "unknown session")
	wantError(t, call(t, "GET", kv("keys"), alice.Token, ""), 400, "M_MISSING_PARAM", "no version")

	r = call(t, "GET", kv("keys?version="+v1), alice.Token, "")
	if len(path(r.Body, "rooms", "!r1:localhost", "sessions").(map[string]any)) != 2 {
		t.Errorf("all keys: %s", r.Raw)
	}
	// Room level: PUT and DELETE.
	r = call(t, "PUT", kv("keys/"+url.PathEscape("!r2:localhost")+"?version="+v1), alice.Token, mustJSON(map[string]any{
		"sessions": map[string]any{"x1": key(0, 0, true, "x1"), "x2": key(0, 0, true, "x2")}}))
	if r.Status != 200 || r.Body["count"] != float64(4) {
		t.Errorf("put room keys: %d %s", r.Status, r.Raw)
	}
	r = call(t, "GET", kv("keys/"+url.PathEscape("!r2:localhost")+"?version="+v1), alice.Token, "")
	if len(path(r.Body, "sessions").(map[string]any)) != 2 {
		t.Errorf("room keys: %s", r.Raw)
	}
	r = call(t, "DELETE", kv("keys/"+url.PathEscape("!r2:localhost")+"?version="+v1), alice.Token, "")
	if r.Status != 200 || r.Body["count"] != float64(2) {
		t.Errorf("delete room keys: %d %s", r.Status, r.Raw)
	}
	r = call(t, "GET", kv("keys/"+url.PathEscape("!empty:localhost")+"?version="+v1), alice.Token, "")
	if r.Status != 200 || len(r.Body["sessions"].(map[string]any)) != 0 {
		t.Errorf("room without keys: %d %s", r.Status, r.Raw)
	}

	// A new version: the old one no longer takes keys.
	r = call(t, "POST", kv("version"), alice.Token, mustJSON(map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "def"}}))
	v2 := r.Body["version"].(string)
	r = call(t, "PUT", kv("keys?version="+v1), alice.Token, `{"rooms":{}}`)
	if r.Status != 403 || r.errcode() != "M_WRONG_ROOM_KEYS_VERSION" || r.Body["current_version"] != v2 {
		t.Errorf("old version: %d %s", r.Status, r.Raw)
	}
	if r := call(t, "GET", kv("version/"+v1), alice.Token, ""); r.Body["count"] != float64(2) || r.Body["etag"] == etag1 {
		t.Errorf("old version info: %s", r.Raw)
	}
	// Update auth_data: algorithm must match, body version must match.
	wantError(t, call(t, "PUT", kv("version/"+v2), alice.Token, mustJSON(map[string]any{"algorithm": "other", "auth_data": map[string]any{}})), 400, "M_INVALID_PARAM", "algorithm changed")
	wantError(t, call(t, "PUT", kv("version/"+v2), alice.Token, mustJSON(map[string]any{"algorithm": alg, "auth_data": map[string]any{}, "version": v1})), 400, "M_INVALID_PARAM", "version mismatch")
	mustStatus(t, call(t, "PUT", kv("version/"+v2), alice.Token, mustJSON(map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "ghi"}, "version": v2})), 200, "update")
	if r := call(t, "GET", kv("version/"+v2), alice.Token, ""); path(r.Body, "auth_data", "public_key") != "ghi" {
		t.Errorf("updated auth_data: %s", r.Raw)
	}
	wantError(t, call(t, "PUT", kv("version/99"), alice.Token, mustJSON(map[string]any{"algorithm": alg, "auth_data": map[string]any{}})), 404, "M_NOT_FOUND", "update unknown")

	// Delete keys at each level.
	r = call(t, "DELETE", kv("keys/"+url.PathEscape("!r1:localhost")+"/s2?version="+v1), alice.Token, "")
	if r.Status != 200 || r.Body["count"] != float64(1) {
		t.Errorf("delete one session: %d %s", r.Status, r.Raw)
	}
	r = call(t, "DELETE", kv("keys?version="+v1), alice.Token, "")
	if r.Status != 200 || r.Body["count"] != float64(0) {
		t.Errorf("delete all: %d %s", r.Status, r.Raw)
	}
	// Delete the current version: the previous one becomes current; again is fine.
	mustStatus(t, call(t, "DELETE", kv("version/"+v2), alice.Token, ""), 200, "delete version")
	mustStatus(t, call(t, "DELETE", kv("version/"+v2), alice.Token, ""), 200, "delete version again")
	wantError(t, call(t, "GET", kv("version/"+v2), alice.Token, ""), 404, "M_NOT_FOUND", "deleted version")
	wantError(t, call(t, "DELETE", kv("version/42"), alice.Token, ""), 404, "M_NOT_FOUND", "delete unknown")
	if r := call(t, "GET", kv("version"), alice.Token, ""); r.Body["version"] != v1 {
		t.Errorf("current after deleting v2: %s", r.Raw)
	}
	mustStatus(t, call(t, "DELETE", kv("version/"+v1), alice.Token, ""), 200, "delete v1")
	wantError(t, call(t, "GET", kv("version"), alice.Token, ""), 404, "M_NOT_FOUND", "no backup after deletes")
	// Versions are never reused.
	r = call(t, "POST", kv("version"), alice.Token, mustJSON(map[string]any{"algorithm": alg, "auth_data": map[string]any{}}))
	if r.Body["version"] == v1 || r.Body["version"] == v2 {
		t.Errorf("version reused: %s", r.Raw)
	}
}

func TestE2EEEncryptedByDefault(t *testing.T) {
	srv := apptest.Start(t, func(cfg *config.Config) { cfg.Rooms.RefusePlaintextInEncrypted = true })
	alice := register(t, srv, "alice", "alice-password")
	enc := func(room string) bool { return stateIDs(t, srv, alice, room)["m.room.encryption|"] != "" }
	private := createRoom(t, srv, alice, map[string]any{"preset": "private_chat"})
	if !enc(private) {
		t.Errorf("private room not encrypted")
	}
	if alg := stateContent(t, srv, alice, private, "m.room.encryption", "")["algorithm"]; alg != "m.megolm.v1.aes-sha2" {
		t.Errorf("algorithm %v", alg)
	}
	if !enc(createRoom(t, srv, alice, map[string]any{"preset": "trusted_private_chat"})) {
		t.Errorf("trusted private room not encrypted")
	}
	if !enc(createRoom(t, srv, alice, map[string]any{"preset": "public_chat", "is_direct": true})) {
		t.Errorf("direct room not encrypted")
	}
	public := createRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	if enc(public) {
		t.Errorf("public room encrypted")
	}
	custom := createRoom(t, srv, alice, map[string]any{"preset": "private_chat", "initial_state": []any{
		map[string]any{"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "org.example.other"}}}})
	if alg := stateContent(t, srv, alice, custom, "m.room.encryption", "")["algorithm"]; alg != "org.example.other" {
		t.Errorf("initial_state did not override: %v", alg)
	}
	// Plaintext refused in encrypted rooms only.
	r := call(t, "PUT", rurl(srv, private, "/send/m.room.message/"+nextTxn()), alice.Token, `{"msgtype":"m.text","body":"secret"}`)
	if wantError(t, r, 400, "M_BAD_JSON", "plaintext in an encrypted room") && !strings.Contains(errMessage(r), "encrypted") {
		t.Errorf("message: %s", errMessage(r))
	}
	sendEvent(t, srv, alice, private, "m.room.encrypted", map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x"})
	sendText(t, srv, alice, public, "fine in public")

	off := apptest.Start(t, func(cfg *config.Config) { cfg.Rooms.EncryptPrivateByDefault = false })
	bob := register(t, off, "bob", "bob-password")
	room := createRoom(t, off, bob, map[string]any{"preset": "private_chat"})
	if stateIDs(t, off, bob, room)["m.room.encryption|"] != "" {
		t.Errorf("encrypted with the switch off")
	}
	// Refusal off by default.
	putState(t, off, bob, room, "m.room.encryption", "", map[string]any{"algorithm": "m.megolm.v1.aes-sha2"})
	sendText(t, off, bob, room, "allowed by default")
}

// Every to-device message delivered and deleted: the stream must not restart
// below the positions clients have seen.
func TestE2EEToDeviceAckedStreamSurvivesRestart(t *testing.T) {
	dataDir := t.TempDir()
	quiet := func(cfg *config.Config) { cfg.DataDir = dataDir; cfg.Presence.Enabled = false }
	var dbURL, token string
	var bob user
	t.Run("first server", func(t *testing.T) {
		srv := apptest.Start(t, quiet)
		dbURL = srv.Config.Database.URL
		alice := register(t, srv, "alice", "alice-password")
		bob = register(t, srv, "bob", "bob-password")
		mustStatus(t, call(t, "PUT", srv.URL+c+"/sendToDevice/m.test/a1", alice.Token,
			mustJSON(map[string]any{"messages": map[string]any{bob.ID: map[string]any{bob.DeviceID: map[string]any{"n": 1}}}})), 200, "send")
		r := syncOnce(t, srv, bob, url.Values{"timeout": {"0"}})
		if len(toDeviceEvents(r)) != 1 {
			t.Fatalf("message not delivered: %s", r.Raw)
		}
		r = sinceSync(t, srv, bob, r.Body["next_batch"].(string))
		token = r.Body["next_batch"].(string)
	})
	srv := apptest.Start(t, quiet, func(cfg *config.Config) { cfg.Database.URL = dbURL })
	r := call(t, "GET", srv.URL+c+"/sync?timeout=0&since="+url.QueryEscape(token), bob.Token, "")
	mustStatus(t, r, 200, "sync after restart with a token past the deleted messages")
	if evs := toDeviceEvents(r); len(evs) != 0 {
		t.Errorf("acknowledged message came back: %s", mustJSON(evs))
	}
}
