//go:build goolm

package e2e

import (
	"net/http"

	"maunium.net/go/mautrix/crypto"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

// TestMautrixCryptoFederation: mautrix-go (goolm) users on hs1 and hs2 in
// an encrypted room. Messages are decrypted across servers both ways; a
// device added on hs2 gets the keys of later messages from hs1 (its
// m.device_list_update reaches hs1); a device deleted on hs1 disappears
// from hs2's answer, so it gets no more keys; hs2's user sees hs1's user's
// cross-signing keys and their signatures, and they verify.
// Spec: server-server-api.md, "End-to-End Encryption", "Device Management".
func TestMautrixCryptoFederation(t *testing.T) {
	start := time.Now()
	ctx := t.Context()
	_, hs1, hs2 := fedPair(t)
	alice := registerCryptoUser(t, hs1.URL, "alice")
	bob := registerCryptoUser(t, hs2.URL, "bob")
	a1 := firstCryptoDevice(t, hs1.URL, alice, "alice-1")
	a2 := loginCryptoDevice(t, hs1.URL, alice, "alice-2")
	b1 := firstCryptoDevice(t, hs2.URL, bob, "bob-1")
	roomID := createEncryptedRoom(t, a1, b1)
	for _, d := range []*cryptoDevice{a1, a2, b1} {
		d.waitJoined(roomID, alice.id, bob.id)
		d.trackUsers(map[id.UserID][]id.DeviceID{
			alice.id: {a1.cli.DeviceID, a2.cli.DeviceID},
			bob.id:   {b1.cli.DeviceID},
		})
	}

	// 1. Both ways.
	body1 := "Bonjour de hs1"
	ev1, _ := a1.sendEncrypted(roomID, body1)
	b1.waitDecrypt(ev1, alice.id, body1)
	a2.waitDecrypt(ev1, alice.id, body1)
	body2 := "Réponse de hs2"
	ev2, _ := b1.sendEncrypted(roomID, body2)
	a1.waitDecrypt(ev2, bob.id, body2)
	a2.waitDecrypt(ev2, bob.id, body2)

	// 2. bob adds a device on hs2: alice hears of it through federation
	// and shares later keys with it.
	loginResp := login(t, hs2.URL, string(bob.id), bob.password, "bob-2", false)
	a1.drain()
	a1.markDeviceLists()
	b2 := newCryptoDevice(t, hs2.URL, bob, loginResp.AccessToken, loginResp.DeviceID, "bob-2")
	a1.waitDeviceListChange(bob.id, "bob-2 on hs2 uploaded its device keys")
	// bob-2's initial sync on hs2 has the room's state (encryption, members).
	b2.waitJoined(roomID, alice.id, bob.id)
	a1.trackUsers(map[id.UserID][]id.DeviceID{bob.id: {b1.cli.DeviceID, b2.cli.DeviceID}})
	body3 := "Pour tous les appareils de bob"
	ev3, _ := a1.sendEncrypted(roomID, body3)
	b2.waitDecrypt(ev3, alice.id, body3)
	b1.waitDecrypt(ev3, alice.id, body3)

	// 3. alice deletes alice-2 on hs1: bob hears of it and stops sharing
	// keys with it.
	b1.drain()
	b1.markDeviceLists()
	deleteURL := a1.cli.BuildClientURL("v3", "devices", a2.cli.DeviceID)
	session := startPasswordUIA(t, a1.cli, http.MethodDelete, deleteURL, map[string]any{})
	if _, err := a1.cli.MakeRequest(ctx, http.MethodDelete, deleteURL, map[string]any{"auth": newPasswordAuth(session, alice.id, alice.password)}, nil); err != nil {
		t.Fatalf("alice-1 deletes alice-2: %v", err)
	}
	b1.waitDeviceListChange(alice.id, "alice deleted alice-2 on hs1")
	b1.trackUsers(map[id.UserID][]id.DeviceID{alice.id: {a1.cli.DeviceID}})
	body4 := "Seulement pour alice-1"
	ev4, _ := b1.sendEncrypted(roomID, body4)
	a1.waitDecrypt(ev4, bob.id, body4)

	// 4. Cross-signing: alice bootstraps on hs1 and signs her device; bob
	// on hs2 sees her master and self-signing keys and the signatures.
	b1.drain()
	b1.markDeviceLists()
	aliceKeys := bootstrapCrossSigning(t, a1, alice)
	msk, ssk := aliceKeys.MasterKey.PublicKey(), aliceKeys.SelfSigningKey.PublicKey()
	waitFor(t, "alice's signed cross-signing keys in bob's /keys/query on hs2", 20*time.Second, func() bool {
		q := queryKeysRaw(t, b1, alice.id)
		if q.MasterKeys[alice.id] == nil || q.SelfSigningKeys[alice.id] == nil || q.DeviceKeys[alice.id][a1.cli.DeviceID] == nil {
			return false
		}
		_, sskByMaster := signatureOn(t, q.SelfSigningKeys[alice.id], alice.id, string(msk), msk)
		_, deviceBySSK := signatureOn(t, q.DeviceKeys[alice.id][a1.cli.DeviceID], alice.id, string(ssk), ssk)
		return sskByMaster && deviceBySSK
	})
	if _, err := b1.mach.FetchKeys(ctx, []id.UserID{alice.id}, true); err != nil {
		t.Fatalf("bob-1 fetches alice's keys: %v", err)
	}
	pub, err := b1.mach.GetCrossSigningPublicKeys(ctx, alice.id)
	if err != nil || pub == nil || pub.MasterKey != msk || pub.SelfSigningKey != ssk {
		t.Fatalf("bob-1's machine has alice's cross-signing keys %+v (%v), want master %s and self-signing %s", pub, err, msk, ssk)
	}

	// 5. bob verifies alice across servers: he bootstraps cross-signing on
	// hs2 and signs her master key with his user-signing key. hs2 keeps
	// the signature and shows it to bob's devices only.
	bobKeys := bootstrapCrossSigning(t, b1, bob)
	if err := b1.mach.SignUser(ctx, alice.id, msk); err != nil {
		t.Fatalf("bob-1 signs alice's master key: %v", err)
	}
	usk := bobKeys.UserSigningKey.PublicKey()
	waitFor(t, "bob's signature on alice's master key, seen by bob-2 on hs2", 10*time.Second, func() bool {
		_, ok := signatureOn(t, queryKeysRaw(t, b2, alice.id).MasterKeys[alice.id], bob.id, string(usk), usk)
		return ok
	})
	if present, _ := signatureOn(t, queryKeysRaw(t, a1, alice.id).MasterKeys[alice.id], bob.id, string(usk), usk); present {
		t.Fatal("alice's server shows bob's user-signing signature: it must stay with bob")
	}
	t.Logf("cross-server E2EE scenario took %v", time.Since(start).Round(time.Millisecond))
}

// bootstrapCrossSigning makes and uploads the device's user's cross-signing
// keys, and signs the device with them.
func bootstrapCrossSigning(t *testing.T, d *cryptoDevice, u cryptoUser) *crypto.CrossSigningKeysCache {
	t.Helper()
	uia := 0
	_, keys, err := d.mach.GenerateAndUploadCrossSigningKeys(t.Context(), passwordUIA(u, &uia), "")
	if err != nil {
		t.Fatalf("%s bootstraps cross-signing: %v", d.name, err)
	}
	if err := d.mach.SignOwnDevice(t.Context(), d.mach.OwnIdentity()); err != nil {
		t.Fatalf("%s signs its device: %v", d.name, err)
	}
	return keys
}
