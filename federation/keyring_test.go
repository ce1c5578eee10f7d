package federation_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"chappe/allowlist"
	"chappe/app/apptest"
	"chappe/config"
	"chappe/federation"
	"chappe/signingkey"
)

// The key ring of a real server: direct fetches, cached; strict validity;
// nothing ever fetched for an unlisted server; pinned keys used without a
// fetch; our own key answered locally.
func TestKeyRingOnRealServers(t *testing.T) {
	fed := apptest.NewFederation(t)
	hs1 := fed.Start(t, "hs1.chappe.test")
	hs2 := fed.Start(t, "hs2.chappe.test", func(c *config.Config) { c.SigningKey.Validity = config.Duration(time.Hour) })
	hs3 := fed.StartUnlisted(t, "hs3.chappe.test")
	fed.Publish(t)
	now := time.Now()
	ring := hs1.KeyRing
	event := signJSON(t, hs2.Name, hs2.Key, map[string]any{"type": "m.room.message", "content": map[string]string{"body": "bonjour"}})

	// First check: hs1 fetches hs2's keys, directly from hs2.
	hs1.Federation.CloseIdleConnections()
	before := hs2.FedAccepts()
	if err := verify(ring, hs2.Name, event, now, gomatrixserverlib.StrictValiditySignatureCheck); err != nil {
		t.Fatalf("event signed by hs2: %v", err)
	}
	if hs2.FedAccepts() == before {
		t.Fatal("hs2's keys were not fetched from hs2")
	}
	// Second check: from the cache, no connection.
	hs1.Federation.CloseIdleConnections()
	before = hs2.FedAccepts()
	if err := verify(ring, hs2.Name, event, now, gomatrixserverlib.StrictValiditySignatureCheck); err != nil {
		t.Fatalf("second check: %v", err)
	}
	if _, err := ring.ServerKey(t.Context(), hs2.Name, string(hs2.Key.ID)); err != nil {
		t.Fatalf("ServerKey: %v", err)
	}
	if n := hs2.FedAccepts() - before; n != 0 {
		t.Errorf("cached keys: hs1 connected to hs2 %d more times", n)
	}

	// hs2 publishes its key valid for an hour: an event two hours ahead is
	// refused where key validity is strict (room versions 5 and later), and
	// accepted where it is not.
	later := now.Add(2 * time.Hour)
	if err := verify(ring, hs2.Name, event, later, gomatrixserverlib.StrictValiditySignatureCheck); err == nil || !strings.Contains(err.Error(), "not valid at") {
		t.Errorf("strict validity, event after valid_until_ts: %v", err)
	}
	if err := verify(ring, hs2.Name, event, later, gomatrixserverlib.NoStrictValidityCheck); err != nil {
		t.Errorf("no strict validity: %v", err)
	}
	var tampered map[string]any
	_ = json.Unmarshal(event, &tampered)
	tampered["type"] = "m.room.other"
	raw, _ := json.Marshal(tampered)
	if err := verify(ring, hs2.Name, raw, now, nil); err == nil {
		t.Error("a tampered event verified")
	}

	// The unlisted hs3: refused, never fetched.
	foreign := signJSON(t, hs3.Name, hs3.Key, map[string]string{"a": "b"})
	var na *allowlist.NotAllowedError
	if err := verify(ring, hs3.Name, foreign, now, nil); !errors.As(err, &na) {
		t.Errorf("event signed by unlisted hs3: %v", err)
	}
	if _, err := ring.ServerKey(t.Context(), hs3.Name, string(hs3.Key.ID)); !errors.As(err, &na) {
		t.Errorf("ServerKey of unlisted hs3: %v", err)
	}
	if n := hs3.FedAccepts(); n != 0 {
		t.Errorf("hs1 connected to hs3 %d times", n)
	}

	// Our own key is answered locally.
	own := signJSON(t, hs1.Name, hs1.Key, map[string]string{"a": "b"})
	if err := verify(ring, hs1.Name, own, later, gomatrixserverlib.StrictValiditySignatureCheck); err != nil {
		t.Errorf("own signature: %v", err)
	}

	// Once the list pins hs2's key, a fresh key ring uses it without
	// fetching anything, at any time the list is in force; a key the list
	// does not pin is refused.
	fed.PinKey(hs2.Name)
	fed.Publish(t)
	fresh := federation.NewKeyRing(federation.KeyRingConfig{ServerName: hs1.Name, Key: hs1.Key, KeyValidity: time.Hour}, hs1.Allowlist, hs1.Federation, nopLog)
	hs1.Federation.CloseIdleConnections()
	before = hs2.FedAccepts()
	if err := verify(fresh, hs2.Name, event, now.Add(30*24*time.Hour), gomatrixserverlib.StrictValiditySignatureCheck); err != nil {
		t.Errorf("pinned key: %v", err)
	}
	impostor := newKey(t)
	forged := signJSON(t, hs2.Name, impostor, map[string]string{"a": "b"})
	if err := verify(fresh, hs2.Name, forged, now, nil); err == nil || !strings.Contains(err.Error(), "pins") {
		t.Errorf("key not pinned: %v", err)
	}
	if n := hs2.FedAccepts() - before; n != 0 {
		t.Errorf("pinned keys: hs1 connected to hs2 %d times", n)
	}
}

// A key document with old_verify_keys, served over TLS: old keys check
// events from before their expired_ts, never after, and never requests.
// Bad documents are refused, and concurrent checks fetch once.
func TestKeyRingDocuments(t *testing.T) {
	ca := apptest.NewTestCA(t)
	current, old := newKey(t), newKey(t)
	expired := time.Now().Add(-24 * time.Hour)
	var fetches atomic.Int64
	document := func(server string) []byte {
		doc := map[string]any{
			"server_name":     server,
			"verify_keys":     map[string]any{string(current.ID): map[string]string{"key": current.PublicBase64()}},
			"old_verify_keys": map[string]any{string(old.ID): map[string]any{"key": old.PublicBase64(), "expired_ts": expired.UnixMilli()}},
			"valid_until_ts":  time.Now().Add(24 * time.Hour).UnixMilli(),
		}
		switch server {
		case "liar.chappe.test": // a document for another server
			doc["server_name"] = "keys.chappe.test"
		case "unsigned.chappe.test":
			raw, _ := json.Marshal(doc)
			return raw
		}
		return signJSON(t, doc["server_name"].(string), current, doc)
	}
	addr := tlsServer(t, ca.Issue(t, "keys.chappe.test", "liar.chappe.test", "unsigned.chappe.test"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != federation.KeyPath || r.Header.Get("Authorization") != "" {
			http.Error(w, "unexpected request", http.StatusBadRequest)
			return
		}
		fetches.Add(1)
		time.Sleep(50 * time.Millisecond) // let concurrent checks pile up on one fetch
		_, _ = w.Write(document(r.Host))
	}))
	gate := fakeGate{servers: map[string]allowlist.Server{
		"keys.chappe.test": {Endpoint: addr}, "liar.chappe.test": {Endpoint: addr}, "unsigned.chappe.test": {Endpoint: addr},
	}}
	us := newKey(t)
	client := newClient(t, federation.ClientConfig{Enabled: true, CAFile: ca.File}, gate, us)
	ring := federation.NewKeyRing(federation.KeyRingConfig{ServerName: "us.chappe.test", Key: us, KeyValidity: time.Hour}, gate, client, nopLog)

	oldEvent := signJSON(t, "keys.chappe.test", old, map[string]string{"a": "b"})
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = verify(ring, "keys.chappe.test", oldEvent, expired.Add(-time.Hour), gomatrixserverlib.StrictValiditySignatureCheck)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Errorf("event signed with an old key before it expired: %v", err)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("concurrent checks fetched the document %d times, want once", n)
	}
	if err := verify(ring, "keys.chappe.test", oldEvent, expired.Add(time.Hour), gomatrixserverlib.NoStrictValidityCheck); err == nil {
		t.Error("event signed with an old key after it expired: accepted")
	}
	if _, err := ring.ServerKey(t.Context(), "keys.chappe.test", string(old.ID)); err == nil {
		t.Error("an old key was accepted for a request signature")
	}
	if _, err := ring.ServerKey(t.Context(), "keys.chappe.test", string(current.ID)); err != nil {
		t.Errorf("current key: %v", err)
	}
	for _, server := range []string{"liar.chappe.test", "unsigned.chappe.test"} {
		ev := signJSON(t, server, current, map[string]string{"a": "b"})
		if err := verify(ring, server, ev, time.Now(), nil); err == nil {
			t.Errorf("%s: a bad key document was accepted", server)
		}
	}
}

// TestKeyRingRemovedServers: a server the list shows as removed is never
// asked for its keys; its signatures check only with the keys its removal
// record carries, and only on what it signed before its removal.
func TestKeyRingRemovedServers(t *testing.T) {
	removedAt := time.Now().Add(-time.Hour)
	kept, unknown := newKey(t), newKey(t)
	gate := fakeGate{servers: map[string]allowlist.Server{}, removed: map[string]allowlist.Removal{
		"removed.chappe.test": {RemovedAt: removedAt.UnixMilli(), Reason: "test", VerifyKeys: map[string]string{string(kept.ID): kept.PublicBase64()}},
		"keyless.chappe.test": {RemovedAt: removedAt.UnixMilli(), Reason: "test"},
	}}
	us := newKey(t)
	ring := federation.NewKeyRing(federation.KeyRingConfig{ServerName: "us.chappe.test", Key: us, KeyValidity: time.Hour}, gate,
		newClient(t, federation.ClientConfig{Enabled: true}, gate, us), nopLog)
	before, after := removedAt.Add(-time.Minute), removedAt.Add(time.Minute)
	cases := []struct {
		name   string
		server string
		key    signingkey.Key
		at     time.Time
		ok     bool
	}{
		{"signed before the removal with a kept key", "removed.chappe.test", kept, before, true},
		{"signed after the removal", "removed.chappe.test", kept, after, false},
		{"signed with a key the record lacks", "removed.chappe.test", unknown, before, false},
		{"removed without keys", "keyless.chappe.test", kept, before, false},
		{"never listed", "stranger.chappe.test", kept, before, false},
	}
	for _, tc := range cases {
		msg := signJSON(t, tc.server, tc.key, map[string]string{"a": "b"})
		err := verify(ring, tc.server, msg, tc.at, nil)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	if _, err := ring.ServerKey(t.Context(), "removed.chappe.test", string(kept.ID)); err == nil {
		t.Error("a removed server's key was accepted for a request signature")
	}
}
