package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"chappe/app/apptest"
	"chappe/config"
	"chappe/sqlstore/sqltest"
)

// toDeviceType is the event type of the test's to-device messages: one no
// client understands, so nothing but the relay is exercised.
const toDeviceType = "org.chappe.test.ping"

// toDeviceEvent is a to-device event as /sync returns it.
type toDeviceEvent struct {
	Type    string         `json:"type"`
	Sender  id.UserID      `json:"sender"`
	Content map[string]any `json:"content"`
}

// rawToDeviceSync is GET /sync?since=…&timeout=… for the client's device,
// decoded down to the to-device events only.
func rawToDeviceSync(t *testing.T, cli *mautrix.Client, since string, timeoutMS int) ([]toDeviceEvent, string) {
	t.Helper()
	q := map[string]string{"timeout": strconv.Itoa(timeoutMS)}
	if since != "" {
		q["since"] = since
	}
	u := cli.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, q)
	var resp struct {
		NextBatch string `json:"next_batch"`
		ToDevice  struct {
			Events []toDeviceEvent `json:"events"`
		} `json:"to_device"`
	}
	if _, err := cli.MakeRequest(t.Context(), http.MethodGet, u, nil, &resp); err != nil {
		t.Fatalf("%s: GET /sync since %q: %v", cli.UserID, since, err)
	}
	if resp.NextBatch == "" {
		t.Fatalf("%s: /sync since %q has no next_batch", cli.UserID, since)
	}
	return resp.ToDevice.Events, resp.NextBatch
}

// sendPing sends one to-device message {"n": n} from cli to one device.
func sendPing(t *testing.T, cli *mautrix.Client, txnID string, to id.UserID, device id.DeviceID, n int) {
	t.Helper()
	u := cli.BuildClientURL("v3", "sendToDevice", toDeviceType, txnID)
	body := map[string]any{"messages": map[id.UserID]map[id.DeviceID]any{to: {device: map[string]any{"n": n}}}}
	if _, err := cli.MakeRequest(t.Context(), http.MethodPut, u, body, nil); err != nil {
		t.Fatalf("%s: PUT /sendToDevice/%s/%s to %s %s: %v", cli.UserID, toDeviceType, txnID, to, device, err)
	}
}

// pingNumbers lists the n of each event, failing on anything that is not
// one of the test's pings from sender.
func pingNumbers(t *testing.T, what string, evs []toDeviceEvent, sender id.UserID) []int {
	t.Helper()
	var ns []int
	for _, ev := range evs {
		n, ok := ev.Content["n"].(float64)
		if ev.Type != toDeviceType || ev.Sender != sender || !ok {
			t.Fatalf("%s: unexpected to-device event %+v, want type %s from %s with content {\"n\": …}", what, ev, toDeviceType, sender)
		}
		ns = append(ns, int(n))
	}
	return ns
}

// waitToDevice long-polls /sync from since (without moving since, as a
// client whose responses carried nothing) until to-device events come.
func waitToDevice(t *testing.T, cli *mautrix.Client, since, what string) ([]toDeviceEvent, string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		evs, next := rawToDeviceSync(t, cli, since, 2000)
		if len(evs) > 0 {
			return evs, next
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no to_device events in /sync since %q after 15s", what, since)
		}
	}
}

// TestToDeviceDeliveredOnceSurvivesRestart: a to-device message is in
// /sync until the client acknowledges it by syncing from the next_batch
// that carried it (a response lost in transit must not lose it), then
// never again; messages not yet fetched survive a server restart, in the
// order they were sent. Spec: client-server-api/modules/send_to_device.md,
// "Server behaviour".
func TestToDeviceDeliveredOnceSurvivesRestart(t *testing.T) {
	start := time.Now()
	dbURL := sqltest.NewDatabase(t, "chappe_srv")
	dataDir := t.TempDir()
	sameStore := func(c *config.Config) {
		c.Database.URL = dbURL
		c.DataDir = dataDir
	}

	var alice, bob *mautrix.Client
	var acked string // a since that acknowledges everything delivered so far
	ok := t.Run("before restart", func(t *testing.T) {
		srv := apptest.Start(t, sameStore)
		a := registerCryptoAccount(t, srv.URL, "alice")
		b := registerCryptoAccount(t, srv.URL, "bob")
		_, s0 := rawToDeviceSync(t, b, "", 0)

		sendPing(t, a, "ping-1", b.UserID, b.DeviceID, 1)
		// A retried request (same transaction ID) is not a second message.
		sendPing(t, a, "ping-1", b.UserID, b.DeviceID, 1)

		evs, _ := waitToDevice(t, b, s0, "bob waits for ping 1")
		if got := pingNumbers(t, "first delivery", evs, a.UserID); fmt.Sprint(got) != "[1]" {
			t.Fatalf("bob's /sync since %q delivers pings %v, want [1] once (the retried transaction is the same message)", s0, got)
		}
		// The response was lost: the same since again still has it.
		evs, s1 := rawToDeviceSync(t, b, s0, 0)
		if got := pingNumbers(t, "repeated since", evs, a.UserID); fmt.Sprint(got) != "[1]" {
			t.Fatalf("bob's /sync repeated with since %q (its response lost, so not acknowledged) delivers pings %v, want [1] again", s0, got)
		}
		// Syncing from the response's next_batch acknowledges it.
		evs, s2 := rawToDeviceSync(t, b, s1, 0)
		if len(evs) != 0 {
			t.Fatalf("bob's /sync since %q (acknowledging ping 1) delivers %+v, want nothing: ping 1 was delivered already", s1, evs)
		}
		evs, s2 = rawToDeviceSync(t, b, s2, 1000)
		if len(evs) != 0 {
			t.Fatalf("bob's next /sync delivers %+v, want nothing", evs)
		}
		// Two messages bob has not fetched when the server stops.
		sendPing(t, a, "ping-2", b.UserID, b.DeviceID, 2)
		sendPing(t, a, "ping-3", b.UserID, b.DeviceID, 3)
		alice, bob, acked = a, b, s2
	})
	if !ok {
		return
	}

	srv := apptest.Start(t, sameStore)
	alice.HomeserverURL, _ = url.Parse(srv.URL)
	bob.HomeserverURL, _ = url.Parse(srv.URL)
	evs, s3 := waitToDevice(t, bob, acked, "after the restart, bob waits for pings 2 and 3")
	if got := pingNumbers(t, "after restart", evs, alice.UserID); fmt.Sprint(got) != "[2 3]" {
		t.Fatalf("after the restart, bob's /sync since %q delivers pings %v, want [2 3] (sent before the restart, not yet fetched, in order; ping 1 was acknowledged)", acked, got)
	}
	evs, s4 := rawToDeviceSync(t, bob, s3, 0)
	if len(evs) != 0 {
		t.Fatalf("after the restart, bob's /sync since %q delivers %+v again, want nothing", s3, evs)
	}
	if evs, _ = rawToDeviceSync(t, bob, s4, 1000); len(evs) != 0 {
		t.Fatalf("after the restart, bob's next /sync delivers %+v, want nothing", evs)
	}
	t.Logf("to-device delivery and restart took %v", time.Since(start).Round(time.Millisecond))
}

// registerCryptoAccount registers localpart and returns a client with its
// access token and device ID.
func registerCryptoAccount(t *testing.T, base, localpart string) *mautrix.Client {
	t.Helper()
	reg, err := newClient(t, base, "", "").RegisterDummy(t.Context(), &mautrix.ReqRegister[any]{
		Username: localpart, Password: "correct horse battery " + localpart,
	})
	if err != nil {
		t.Fatalf("register %s: %v", localpart, err)
	}
	if reg.AccessToken == "" || reg.DeviceID == "" {
		t.Fatalf("register %s: no access token or device ID in %+v", localpart, reg)
	}
	cli := newClient(t, base, reg.UserID, reg.AccessToken)
	cli.DeviceID = reg.DeviceID
	return cli
}
