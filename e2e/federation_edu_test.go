package e2e

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"chappe/app/apptest"
	"chappe/federation"
)

// EDUs across real servers: typing and read receipts reach the other
// server's clients; a to-device message is delivered once, however often
// its transaction is retried. Spec: server-server-api.md, "EDUs", "Typing
// Notifications", "Receipts", "Send-to-device messaging".
func TestFederationEDUs(t *testing.T) {
	_, hs1, hs2 := fedPair(t)
	alice, bob, roomID := sharedRoom(t, hs1, hs2, "edus")
	ctx := t.Context()

	// Typing: alice on hs1 types, bob on hs2 sees it; then stops.
	if _, err := alice.UserTyping(ctx, roomID, true, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice typing, seen on hs2", 15*time.Second, func() bool {
		return slices.Contains(typingIn(t, bob, roomID), alice.UserID)
	})
	if _, err := alice.UserTyping(ctx, roomID, false, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice no longer typing, seen on hs2", 15*time.Second, func() bool {
		return !slices.Contains(typingIn(t, bob, roomID), alice.UserID)
	})

	// Receipts: bob on hs2 reads alice's message, alice on hs1 sees it.
	msg := sendText(t, alice, roomID, "lu ?")
	waitFor(t, "alice's message on hs2", 15*time.Second, func() bool { return slices.Contains(roomMessages(t, bob, roomID), "lu ?") })
	if err := bob.SendReceipt(ctx, roomID, msg, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's read receipt, seen on hs1", 15*time.Second, func() bool {
		return receiptOf(t, alice, roomID, msg, bob.UserID)
	})

	// To-device: hs1 sends bob one message in a transaction, sends the
	// same transaction again (a retry), then the same message_id in a new
	// transaction: bob's device gets it once.
	who, err := bob.Whoami(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bobDevice := who.DeviceID
	_, since := rawToDeviceSync(t, bob, "", 0)
	edu := map[string]any{"edu_type": "m.direct_to_device", "content": map[string]any{
		"sender": alice.UserID, "type": toDeviceType, "message_id": "once-1",
		"messages": map[id.UserID]map[id.DeviceID]any{bob.UserID: {bobDevice: map[string]any{"n": 1}}},
	}}
	for _, txn := range []string{"edu-txn-1", "edu-txn-1", "edu-txn-2"} {
		sendTransaction(t, hs1.Federation, hs2.Name, hs1.Name, txn, edu)
	}
	evs, next := waitToDevice(t, bob, since, "the to-device message from hs1")
	more, _ := rawToDeviceSync(t, bob, next, 1000)
	if got := pingNumbers(t, "to-device from hs1", append(evs, more...), alice.UserID); !slices.Equal(got, []int{1}) {
		t.Fatalf("bob got the to-device messages %v, want [1] (once, whatever the retries)", got)
	}

	// A client's to-device message to a remote user crosses too.
	_, since = rawToDeviceSync(t, bob, "", 0)
	sendPing(t, alice, "ping-remote", bob.UserID, bobDevice, 7)
	evs, _ = waitToDevice(t, bob, since, "alice's to-device message through hs1's queue")
	if got := pingNumbers(t, "to-device from alice", evs, alice.UserID); !slices.Equal(got, []int{7}) {
		t.Fatalf("bob got %v from alice, want [7]", got)
	}
}

// sendTransaction sends PUT /send/{txnID} from origin to dest with one EDU,
// signed by origin (its own federation client).
func sendTransaction(t *testing.T, c *federation.Client, dest, origin, txnID string, edu any) {
	t.Helper()
	body := map[string]any{"origin": origin, "origin_server_ts": time.Now().UnixMilli(), "pdus": []any{}, "edus": []any{edu}}
	req := federation.Request{Destination: dest, Method: http.MethodPut, Path: "/_matrix/federation/v1/send/" + txnID, Body: body}
	if err := c.Do(t.Context(), req, nil); err != nil {
		t.Fatalf("PUT /send/%s to %s: %v", txnID, dest, err)
	}
}

// typingIn is who cli's /sync says is typing in the room now.
func typingIn(t *testing.T, cli *mautrix.Client, roomID id.RoomID) []id.UserID {
	t.Helper()
	resp, err := cli.SyncRequest(t.Context(), 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	room, ok := resp.Rooms.Join[roomID]
	if !ok {
		return nil
	}
	for _, ev := range room.Ephemeral.Events {
		if ev.Type == event.EphemeralEventTyping {
			var c struct {
				UserIDs []id.UserID `json:"user_ids"`
			}
			_ = json.Unmarshal(ev.Content.VeryRaw, &c)
			return c.UserIDs
		}
	}
	return nil
}

// receiptOf tells whether cli's /sync shows user's m.read receipt on eventID.
func receiptOf(t *testing.T, cli *mautrix.Client, roomID id.RoomID, eventID id.EventID, user id.UserID) bool {
	t.Helper()
	resp, err := cli.SyncRequest(t.Context(), 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range resp.Rooms.Join[roomID].Ephemeral.Events {
		if ev.Type != event.EphemeralEventReceipt {
			continue
		}
		var c map[id.EventID]map[string]map[id.UserID]any
		_ = json.Unmarshal(ev.Content.VeryRaw, &c)
		if _, ok := c[eventID]["m.read"][user]; ok {
			return true
		}
	}
	return false
}

// A key query or claim naming a user of an unlisted server reports that
// server in failures, and the server is never contacted; the listed
// server's users are answered in the same request.
func TestFederationKeysQueryUnlistedServer(t *testing.T) {
	fed := apptest.NewFederation(t)
	hs1 := fed.Start(t, "hs1.chappe.test", fastRetry)
	hs2 := fed.Start(t, "hs2.chappe.test", fastRetry)
	rogue := fed.StartUnlisted(t, "hs3.chappe.test")
	fed.Publish(t)
	alice := registerUser(t, hs1.URL, "alice")
	bob := registerUser(t, hs2.URL, "bob")
	_ = registerUser(t, rogue.URL, "carol")

	var q struct {
		Failures   map[string]json.RawMessage   `json:"failures"`
		DeviceKeys map[id.UserID]map[string]any `json:"device_keys"`
	}
	body := map[string]any{"device_keys": map[string][]string{"@carol:hs3.chappe.test": {}, string(bob.UserID): {}}}
	if _, err := alice.MakeRequest(t.Context(), http.MethodPost, alice.BuildClientURL("v3", "keys", "query"), body, &q); err != nil {
		t.Fatal(err)
	}
	if _, ok := q.Failures["hs3.chappe.test"]; !ok {
		t.Errorf("/keys/query naming a user of the unlisted hs3: failures %v, want hs3.chappe.test in them", q.Failures)
	}
	if _, ok := q.Failures["hs2.chappe.test"]; ok {
		t.Errorf("/keys/query: the listed hs2 is in failures: %s", q.Failures["hs2.chappe.test"])
	}
	if _, ok := q.DeviceKeys[bob.UserID]; !ok {
		t.Errorf("/keys/query: no device_keys entry for %s of the listed hs2: %+v", bob.UserID, q.DeviceKeys)
	}
	var c struct {
		Failures map[string]json.RawMessage `json:"failures"`
	}
	claim := map[string]any{"one_time_keys": map[string]map[string]string{"@carol:hs3.chappe.test": {"DEV": "signed_curve25519"}}}
	if _, err := alice.MakeRequest(t.Context(), http.MethodPost, alice.BuildClientURL("v3", "keys", "claim"), claim, &c); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Failures["hs3.chappe.test"]; !ok {
		t.Errorf("/keys/claim naming a user of the unlisted hs3: failures %v, want hs3.chappe.test in them", c.Failures)
	}
	sendPing(t, alice, "to-rogue", "@carol:hs3.chappe.test", "DEV", 1)
	time.Sleep(500 * time.Millisecond)
	if n := rogue.FedAccepts(); n != 0 {
		t.Fatalf("hs1 connected %d times to the unlisted server", n)
	}
}
