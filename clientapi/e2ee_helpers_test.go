package clientapi_test

// Helpers of the end-to-end encryption endpoint tests (e2ee_test.go): a
// test device holds a real ed25519 key and signs what it uploads the way a
// client does.

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"chappe/app/apptest"
)

// keyPair is an ed25519 key with its unpadded base64 public part.
type keyPair struct {
	pub  string
	priv ed25519.PrivateKey
}

func newKeyPair(t *testing.T) keyPair {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{pub: base64.RawStdEncoding.EncodeToString(pub), priv: priv}
}

// sign adds signer's signature with keyID ("ed25519:…") to obj.
func sign(t *testing.T, obj any, signer, keyID string, k keyPair) map[string]any {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := gomatrixserverlib.SignJSON(signer, gomatrixserverlib.KeyID(keyID), k.priv, raw)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(signed, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// device is a logged-in device with its identity key.
type device struct {
	user
	key keyPair
}

func (d device) keyID() string { return "ed25519:" + d.DeviceID }

// deviceKeysOf is the signed DeviceKeys object of d.
func deviceKeysOf(t *testing.T, d device) map[string]any {
	t.Helper()
	return sign(t, map[string]any{
		"user_id": d.ID, "device_id": d.DeviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"curve25519:" + d.DeviceID: "curve" + d.DeviceID, d.keyID(): d.key.pub},
	}, d.ID, d.keyID(), d.key)
}

// newDevice gives u's session a key and uploads its device keys.
func newDevice(t *testing.T, srv *apptest.Server, u user) device {
	t.Helper()
	d := device{user: u, key: newKeyPair(t)}
	r := call(t, "POST", srv.URL+c+"/keys/upload", u.Token, mustJSON(map[string]any{"device_keys": deviceKeysOf(t, d)}))
	mustStatus(t, r, 200, "upload device keys")
	return d
}

// loginDevice logs localpart in on a new device with keys.
func loginDevice(t *testing.T, srv *apptest.Server, u user) device {
	t.Helper()
	localpart := strings.TrimPrefix(strings.Split(u.ID, ":")[0], "@")
	r := login(t, srv, localpart, u.Password, nil)
	mustStatus(t, r, 200, "login")
	nu := user{ID: u.ID, Token: r.Body["access_token"].(string), DeviceID: r.Body["device_id"].(string), Password: u.Password}
	return newDevice(t, srv, nu)
}

// otk is a signed one-time key of d (fallback adds "fallback": true).
func otk(t *testing.T, d device, n int, fallback bool) map[string]any {
	t.Helper()
	obj := map[string]any{"key": fmt.Sprintf("curve-%s-%d", d.DeviceID, n)}
	if fallback {
		obj["fallback"] = true
	}
	return sign(t, obj, d.ID, d.keyID(), d.key)
}

// uploadOTKs uploads one-time keys AAA1..AAAn of d.
func uploadOTKs(t *testing.T, srv *apptest.Server, d device, from, n int) response {
	t.Helper()
	keys := map[string]any{}
	for i := from; i < from+n; i++ {
		keys[fmt.Sprintf("signed_curve25519:AAA%d", i)] = otk(t, d, i, false)
	}
	return call(t, "POST", srv.URL+c+"/keys/upload", d.Token, mustJSON(map[string]any{"one_time_keys": keys}))
}

// csKey is a cross-signing key object of user with usage, signed by signer if given.
func csKey(t *testing.T, userID, usage string, k keyPair, signer *keyPair) map[string]any {
	t.Helper()
	obj := map[string]any{"user_id": userID, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + k.pub: k.pub}}
	if signer != nil {
		return sign(t, obj, userID, "ed25519:"+signer.pub, *signer)
	}
	return obj
}

// crossSigning is a user's three cross-signing keys.
type crossSigning struct {
	master, self, user keyPair
}

// bootstrapCrossSigning uploads fresh cross-signing keys for u (first
// upload: no UIA needed).
func bootstrapCrossSigning(t *testing.T, srv *apptest.Server, u user) crossSigning {
	t.Helper()
	cs := crossSigning{master: newKeyPair(t), self: newKeyPair(t), user: newKeyPair(t)}
	r := call(t, "POST", srv.URL+c+"/keys/device_signing/upload", u.Token, mustJSON(map[string]any{
		"master_key":       csKey(t, u.ID, "master", cs.master, nil),
		"self_signing_key": csKey(t, u.ID, "self_signing", cs.self, &cs.master),
		"user_signing_key": csKey(t, u.ID, "user_signing", cs.user, &cs.master),
	}))
	mustStatus(t, r, 200, "bootstrap cross-signing")
	return cs
}

// queryKeys is POST /keys/query for the users (all devices).
func queryKeys(t *testing.T, srv *apptest.Server, as user, users ...string) response {
	t.Helper()
	q := map[string][]string{}
	for _, u := range users {
		q[u] = []string{}
	}
	r := call(t, "POST", srv.URL+c+"/keys/query", as.Token, mustJSON(map[string]any{"device_keys": q}))
	mustStatus(t, r, 200, "keys/query")
	return r
}

// path walks nested JSON objects.
func path(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// sinceSync is an incremental sync with a zero timeout.
func sinceSync(t *testing.T, srv *apptest.Server, u user, since string) response {
	t.Helper()
	return syncOnce(t, srv, u, url.Values{"since": {since}, "timeout": {"0"}})
}

func strList(v any) []string {
	l, _ := v.([]any)
	out := []string{}
	for _, x := range l {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

func toDeviceEvents(r response) []map[string]any {
	return events(path(r.Body, "to_device", "events"))
}
