package e2ee_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"chappe/e2ee"
	"chappe/sqlstore"
	"chappe/sqlstore/sqltest"
)

// uploadDeviceKeys uploads new signed device keys for the user's device.
func uploadDeviceKeys(t *testing.T, svc *e2ee.Service, userID, deviceID string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	unsigned := fmt.Sprintf(`{"user_id":%q,"device_id":%q,"algorithms":["m.olm.v1.curve25519-aes-sha2"],"keys":{"ed25519:%s":%q}}`,
		userID, deviceID, deviceID, base64.RawStdEncoding.EncodeToString(pub))
	signed, err := gomatrixserverlib.SignJSON(userID, gomatrixserverlib.KeyID("ed25519:"+deviceID), priv, []byte(unsigned))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.UploadKeys(context.Background(), userID, deviceID, e2ee.UploadRequest{DeviceKeys: signed}); err != nil {
		t.Fatalf("uploading the keys of %s: %v", deviceID, err)
	}
}

// deviceListUpdates are the m.device_list_update EDUs fed queued.
func deviceListUpdates(fed *fakeFederation) []e2ee.DeviceListUpdate {
	fed.mu.Lock()
	defer fed.mu.Unlock()
	var out []e2ee.DeviceListUpdate
	for _, c := range fed.contents {
		if u, ok := c.(e2ee.DeviceListUpdate); ok {
			out = append(out, u)
		}
	}
	return out
}

// checkChained fails unless the updates, in stream_id order, have stream_ids
// of their own, each naming the previous one in prev_id, and the user's
// GET /user/devices gives the last one.
func checkChained(t *testing.T, svc *e2ee.Service, updates []e2ee.DeviceListUpdate) {
	t.Helper()
	slices.SortFunc(updates, func(a, b e2ee.DeviceListUpdate) int { return int(a.StreamID - b.StreamID) })
	for i, u := range updates {
		if i > 0 && (u.StreamID == updates[i-1].StreamID || !slices.Equal(u.PrevID, []int64{updates[i-1].StreamID})) {
			t.Fatalf("update %d (%s, deleted %v): stream_id %d, prev_id %v; the previous update's stream_id is %d",
				i, u.DeviceID, u.Deleted, u.StreamID, u.PrevID, updates[i-1].StreamID)
		}
	}
	ud, err := svc.UserDevices(context.Background(), localUser)
	if err != nil {
		t.Fatal(err)
	}
	if last := updates[len(updates)-1].StreamID; ud.StreamID != last {
		t.Fatalf("GET /user/devices: stream_id %d, want the last update's, %d", ud.StreamID, last)
	}
}

// Every m.device_list_update of a user has a stream_id of its own, the
// previous one's in prev_id, also when one change sends several (devices
// deleted at once); and the deleted devices are found by the relay itself,
// not told by the caller. Spec: server-server-api.md, "Device Management".
func TestDeviceListUpdatesChainedAndDeletionsFound(t *testing.T) {
	useUsers(t, "chained")
	ctx := context.Background()
	fed := &fakeFederation{}
	svc, _ := fedFixture(t, fed, true)
	uploadDeviceKeys(t, svc, localUser, "A")
	uploadDeviceKeys(t, svc, localUser, "B")
	if err := sqltest.Store(t).DeleteDevices(ctx, localUser, []string{"A", "B"}); err != nil {
		t.Fatal(err)
	}
	if err := svc.DevicesDeleted(ctx, localUser); err != nil {
		t.Fatal(err)
	}
	updates := deviceListUpdates(fed)
	var deleted []string
	for _, u := range updates {
		if u.Deleted {
			deleted = append(deleted, u.DeviceID)
		}
	}
	slices.Sort(deleted)
	if len(updates) != 4 || !slices.Equal(deleted, []string{"A", "B"}) {
		var got []string
		for _, u := range updates {
			got = append(got, fmt.Sprintf("%s(deleted %v)", u.DeviceID, u.Deleted))
		}
		t.Fatalf("updates %v; want A and B announced, then both deleted", got)
	}
	checkChained(t, svc, updates)
}

// Concurrent changes of one user's devices are numbered in the order they
// commit: no update names in prev_id one that comes after it.
func TestConcurrentDeviceListChangesChained(t *testing.T) {
	useUsers(t, "concurrent")
	ctx := context.Background()
	fed := &fakeFederation{}
	svc, _ := fedFixture(t, fed, true)
	devices := []string{"A", "B", "C", "D", "E", "F", "G", "H"}
	for _, d := range devices[2:] {
		if err := sqltest.Store(t).UpsertDevice(ctx, sqlstore.Device{UserID: localUser, DeviceID: d, CreatedTS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for round := 0; round < 3; round++ {
		var wg sync.WaitGroup
		for _, d := range devices {
			wg.Add(1)
			go func() {
				defer wg.Done()
				uploadDeviceKeys(t, svc, localUser, d)
			}()
		}
		wg.Wait()
	}
	updates := deviceListUpdates(fed)
	if len(updates) != 3*len(devices) {
		t.Fatalf("%d updates, want %d", len(updates), 3*len(devices))
	}
	checkChained(t, svc, updates)
}

// Device names stay on this server unless share_device_names is on; local
// users see them either way.
func TestDeviceNamesNotSharedByDefault(t *testing.T) {
	for _, share := range []bool{false, true} {
		t.Run(fmt.Sprint("share=", share), func(t *testing.T) {
			useUsers(t, fmt.Sprint("names-", share))
			ctx := context.Background()
			fed := &fakeFederation{}
			svc, _ := fedFixtureWith(t, e2ee.Config{ShareDeviceNames: share}, fed, true)
			name := "Phone of the director"
			if err := sqltest.Store(t).SetDeviceDisplayName(ctx, localUser, "A", &name); err != nil {
				t.Fatal(err)
			}
			uploadDeviceKeys(t, svc, localUser, "A")

			var sent []string
			updates := deviceListUpdates(fed)
			if len(updates) != 1 {
				t.Fatalf("updates %+v, want one", updates)
			}
			raw, _ := json.Marshal(updates[0])
			sent = append(sent, "m.device_list_update "+string(raw))
			ud, err := svc.UserDevices(ctx, localUser)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ = json.Marshal(ud)
			sent = append(sent, "GET /user/devices "+string(raw))
			keys, err := svc.QueryKeysForServer(ctx, map[string][]string{localUser: nil})
			if err != nil {
				t.Fatal(err)
			}
			raw, _ = json.Marshal(keys)
			sent = append(sent, "POST /user/keys/query "+string(raw))
			for _, s := range sent {
				if strings.Contains(s, name) != share {
					t.Errorf("share_device_names %v, name sent %v: %s", share, !share, s)
				}
			}

			local, err := svc.QueryKeys(ctx, localUser, e2ee.QueryRequest{DeviceKeys: map[string][]string{localUser: nil}})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(local.DeviceKeys[localUser]["A"]), name) {
				t.Errorf("the user's own /keys/query lacks the device name: %s", local.DeviceKeys[localUser]["A"])
			}
		})
	}
}
