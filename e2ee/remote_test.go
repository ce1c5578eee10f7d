package e2ee_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"chappe/e2ee"
	"chappe/sqlstore"
	"chappe/sqlstore/sqltest"
	"chappe/streams"
)

// fakeFederation is the other server: it answers GET /user/devices with
// devices, counts the calls, and fails key queries (so that a query
// answered shows the cache was used).
type fakeFederation struct {
	mu       sync.Mutex
	devices  e2ee.UserDevices
	resyncs  int
	queued   []string // EDU types queued
	contents []any    // their contents
	disallow string   // a server outside the allowlist
	// hold, when set, is waited for by the next GET /user/devices, which
	// answers what devices held when it was called.
	hold chan struct{}
}

func (f *fakeFederation) Allowed(server string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return server != f.disallow
}

func (f *fakeFederation) QueueEDU(_ context.Context, _ *sqlstore.Queries, _ []string, eduType string, content any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queued = append(f.queued, eduType)
	f.contents = append(f.contents, content)
	return nil
}

func (f *fakeFederation) UserDevices(_ context.Context, userID string) (e2ee.UserDevices, error) {
	f.mu.Lock()
	f.resyncs++
	answer, hold := f.devices, f.hold
	f.hold = nil
	f.mu.Unlock()
	if hold != nil {
		<-hold
	}
	return answer, nil
}

func (f *fakeFederation) QueryKeys(context.Context, string, map[string][]string) (e2ee.RemoteKeys, error) {
	return e2ee.RemoteKeys{}, errors.New("the test server does not answer key queries")
}

func (f *fakeFederation) ClaimKeys(context.Context, string, map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	return nil, errors.New("the test server does not answer claims")
}

func (f *fakeFederation) answer(streamID int64, devices ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.devices = e2ee.UserDevices{UserID: remoteUser, StreamID: streamID}
	for _, d := range devices {
		f.devices.Devices = append(f.devices.Devices, e2ee.UserDevice{DeviceID: d, Keys: deviceKeysOf(remoteUser, d)})
	}
}

func (f *fakeFederation) resyncCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.resyncs
}

// Each test has users of its own: the package database is shared.
var (
	remoteUser = "@bob:remote.example"
	localUser  = "@alice:localhost"
)

// useUsers names the test's local and remote users after it.
func useUsers(_ *testing.T, name string) {
	remoteUser, localUser = "@bob-"+name+":remote.example", "@alice-"+name+":localhost"
}

func deviceKeysOf(user, device string) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"user_id":%q,"device_id":%q,"algorithms":["m.olm.v1.curve25519-aes-sha2"],"keys":{}}`, user, device))
}

// fedFixture is a relay for local user alice (devices A and B) with fed as
// the other servers, alice sharing a room with remoteUser when shared.
func fedFixture(t *testing.T, fed e2ee.Federation, shared bool) (*e2ee.Service, *streams.Hub) {
	t.Helper()
	return fedFixtureWith(t, e2ee.Config{}, fed, shared)
}

// fedFixtureWith is fedFixture with the relay's configuration cfg.
func fedFixtureWith(t *testing.T, cfg e2ee.Config, fed e2ee.Federation, shared bool) (*e2ee.Service, *streams.Hub) {
	t.Helper()
	ctx := context.Background()
	_, hub := fixture(t, e2ee.Config{}, localUser, "A", "B")
	store := sqltest.Store(t)
	if shared {
		const joinSQL = `INSERT INTO current_state (room_id, type, state_key, event_nid, membership) VALUES ($1, 'm.room.member', $2, 1, 'join')`
		for _, u := range []string{localUser, remoteUser} {
			if _, err := store.Pool().Exec(ctx, joinSQL, "!shared-"+localUser, u); err != nil {
				t.Fatal(err)
			}
		}
	}
	cfg.ServerName = "localhost"
	return e2ee.New(cfg, store, hub, fed), hub
}

// cachedDevices waits for a key query about remoteUser to be answered from
// the cache (the fake server refuses queries) with the devices want.
func cachedDevices(t *testing.T, svc *e2ee.Service, want ...string) {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		resp, err := svc.QueryKeys(context.Background(), localUser, e2ee.QueryRequest{DeviceKeys: map[string][]string{remoteUser: nil}})
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for d := range resp.DeviceKeys[remoteUser] {
			got = append(got, d)
		}
		slices.Sort(got)
		if _, failed := resp.Failures["remote.example"]; !failed && slices.Equal(got, want) {
			return
		}
	}
	t.Fatalf("cached devices of %s: %v, want %v", remoteUser, got, want)
}

// The rule of m.device_list_update: no list → resync; prev_id naming the
// stream_id held → applied; an older stream_id → ignored; the same
// stream_id → applied (another device of one change); a gap → resync.
func TestDeviceListUpdatesFollowTheirServer(t *testing.T) {
	useUsers(t, "follow")
	ctx := context.Background()
	fed := &fakeFederation{}
	fed.answer(5, "D1")
	svc, hub := fedFixture(t, fed, true)
	before := hub.Current().Stream
	update := func(u e2ee.DeviceListUpdate) {
		t.Helper()
		u.UserID = remoteUser
		if u.Keys == nil && !u.Deleted {
			u.Keys = deviceKeysOf(remoteUser, u.DeviceID)
		}
		if err := svc.ReceiveDeviceListUpdate(ctx, "remote.example", u); err != nil {
			t.Fatal(err)
		}
	}

	update(e2ee.DeviceListUpdate{DeviceID: "D1", StreamID: 5})
	cachedDevices(t, svc, "D1")
	if n := fed.resyncCount(); n != 1 {
		t.Fatalf("%d resyncs for an uncached user, want 1", n)
	}
	changed, _, err := svc.DeviceListsSince(ctx, localUser, before, hub.Current().Stream)
	if err != nil || !slices.Contains(changed, remoteUser) {
		t.Fatalf("device_lists.changed = %v (%v), want %s in it", changed, err, remoteUser)
	}

	update(e2ee.DeviceListUpdate{DeviceID: "D2", StreamID: 6, PrevID: []int64{5}})
	update(e2ee.DeviceListUpdate{DeviceID: "D3", StreamID: 6, PrevID: []int64{5}})
	update(e2ee.DeviceListUpdate{DeviceID: "D1", StreamID: 4, Deleted: true})
	cachedDevices(t, svc, "D1", "D2", "D3")
	if n := fed.resyncCount(); n != 1 {
		t.Fatalf("%d resyncs after updates without a gap, want 1", n)
	}

	update(e2ee.DeviceListUpdate{DeviceID: "D3", StreamID: 7, PrevID: []int64{6}, Deleted: true})
	cachedDevices(t, svc, "D1", "D2")

	fed.answer(9, "D1")
	update(e2ee.DeviceListUpdate{DeviceID: "D4", StreamID: 9, PrevID: []int64{8}})
	cachedDevices(t, svc, "D1")
	if n := fed.resyncCount(); n != 2 {
		t.Fatalf("%d resyncs after a gap, want 2", n)
	}
}

// Updates about a user no local user shares a room with are ignored.
func TestDeviceListUpdateOfStrangerIgnored(t *testing.T) {
	useUsers(t, "stranger")
	fed := &fakeFederation{}
	fed.answer(5, "D1")
	svc, _ := fedFixture(t, fed, false)
	u := e2ee.DeviceListUpdate{UserID: remoteUser, DeviceID: "D1", StreamID: 5, Keys: deviceKeysOf(remoteUser, "D1")}
	if err := svc.ReceiveDeviceListUpdate(context.Background(), "remote.example", u); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if n := fed.resyncCount(); n != 0 {
		t.Fatalf("%d resyncs for a user nobody here shares a room with, want 0", n)
	}
}

// A received to-device message is delivered once per message_id, however
// often it arrives; "*" reaches every device.
func TestReceivedToDeviceDeliveredOnce(t *testing.T) {
	useUsers(t, "once")
	ctx := context.Background()
	svc, hub := fedFixture(t, &fakeFederation{}, true)
	msg := func(id string) e2ee.DirectToDevice {
		return e2ee.DirectToDevice{Sender: remoteUser, Type: "m.room.encrypted", MessageID: id,
			Messages: map[string]map[string]json.RawMessage{
				localUser:              {"*": json.RawMessage(`{"n":1}`)},
				"@carol:other.example": {"X": json.RawMessage(`{"n":2}`)},
			}}
	}
	for _, id := range []string{"m1", "m1", "m2", "m1"} {
		if err := svc.ReceiveToDevice(ctx, "remote.example", msg(id)); err != nil {
			t.Fatal(err)
		}
	}
	for _, device := range []string{"A", "B"} {
		got, err := svc.ToDeviceSince(ctx, localUser, device, 0, hub.Current().Stream)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 {
			t.Errorf("device %s got %d messages, want 2 (m1 and m2 once each): %s", device, len(got), got)
		}
	}
}

// Messages for remote users are queued one EDU per server, and never for a
// server outside the allowlist.
func TestToDeviceForRemoteUsersQueuedPerServer(t *testing.T) {
	useUsers(t, "queued")
	fed := &fakeFederation{disallow: "unlisted.example"}
	svc, _ := fedFixture(t, fed, true)
	msgs := map[string]map[string]json.RawMessage{
		remoteUser:               {"D1": json.RawMessage(`{}`)},
		"@dave:remote.example":   {"*": json.RawMessage(`{}`)},
		"@eve:unlisted.example":  {"E": json.RawMessage(`{}`)},
		"@frank:another.example": {"F": json.RawMessage(`{}`)},
	}
	if err := svc.SendToDevice(context.Background(), localUser, "A", "m.test", "t1", msgs); err != nil {
		t.Fatal(err)
	}
	if want := []string{e2ee.EDUDirectToDevice, e2ee.EDUDirectToDevice}; !slices.Equal(fed.queued, want) {
		t.Errorf("queued %v, want one m.direct_to_device for remote.example and another.example", fed.queued)
	}
}

// The cache of remote device lists follows the rooms: once nobody here
// shares a room with the remote user, the purge forgets their list.
func TestUnfollowedRemoteListsPurged(t *testing.T) {
	useUsers(t, "purge")
	ctx := context.Background()
	fed := &fakeFederation{}
	fed.answer(5, "D1")
	svc, _ := fedFixture(t, fed, true)
	if err := svc.ReceiveDeviceListUpdate(ctx, "remote.example", e2ee.DeviceListUpdate{UserID: remoteUser, DeviceID: "D1", StreamID: 5, Keys: deviceKeysOf(remoteUser, "D1")}); err != nil {
		t.Fatal(err)
	}
	cachedDevices(t, svc, "D1")
	if _, err := svc.PurgeUnfollowedLists(ctx); err != nil {
		t.Fatal(err)
	}
	cachedDevices(t, svc, "D1") // still followed: kept
	// alice leaves the shared room.
	if _, err := sqltest.Store(t).Pool().Exec(ctx, `DELETE FROM current_state WHERE room_id = $1`, "!shared-"+localUser); err != nil {
		t.Fatal(err)
	}
	if n, err := svc.PurgeUnfollowedLists(ctx); err != nil || n < 1 {
		t.Fatalf("purge after the room is left: %d lists, %v; want %s's", n, err, remoteUser)
	}
	if left, err := sqltest.Store(t).RemoteDeviceLists(ctx, []string{remoteUser}); err != nil || len(left) != 0 {
		t.Fatalf("after the purge, the cache still holds %v (%v)", left, err)
	}
}

// cachedFixture is fedFixture for the test's users (useUsers(name)), with
// remoteUser's list cached at stream_id 5 with device D1.
func cachedFixture(t *testing.T, name string) (*e2ee.Service, *fakeFederation) {
	t.Helper()
	useUsers(t, name)
	fed := &fakeFederation{}
	fed.answer(5, "D1")
	svc, _ := fedFixture(t, fed, true)
	update := e2ee.DeviceListUpdate{UserID: remoteUser, DeviceID: "D1", StreamID: 5, Keys: deviceKeysOf(remoteUser, "D1")}
	if err := svc.ReceiveDeviceListUpdate(context.Background(), "remote.example", update); err != nil {
		t.Fatal(err)
	}
	cachedDevices(t, svc, "D1")
	return svc, fed
}

// A resync that fetched a list older than the cached one (updates applied
// meanwhile) does not overwrite it.
func TestResyncKeepsNewerCachedList(t *testing.T) {
	svc, _ := cachedFixture(t, "newer")
	ctx := context.Background()
	update := e2ee.DeviceListUpdate{UserID: remoteUser, DeviceID: "D2", StreamID: 6, PrevID: []int64{5}, Keys: deviceKeysOf(remoteUser, "D2")}
	if err := svc.ReceiveDeviceListUpdate(ctx, "remote.example", update); err != nil {
		t.Fatal(err)
	}
	cachedDevices(t, svc, "D1", "D2")
	if err := svc.Resync(ctx, remoteUser); err != nil { // fetches stream_id 5: older
		t.Fatal(err)
	}
	cachedDevices(t, svc, "D1", "D2")
}

// An update arriving while the user's resync runs (so not applied: nothing
// cached yet) makes the resync run again once it ends.
func TestUpdateDuringResyncResyncsAgain(t *testing.T) {
	useUsers(t, "during")
	ctx := context.Background()
	fed := &fakeFederation{}
	fed.answer(5, "D1")
	release := make(chan struct{})
	fed.hold = release
	svc, _ := fedFixture(t, fed, true)
	update := e2ee.DeviceListUpdate{UserID: remoteUser, DeviceID: "D1", StreamID: 5, Keys: deviceKeysOf(remoteUser, "D1")}
	if err := svc.ReceiveDeviceListUpdate(ctx, "remote.example", update); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); fed.resyncCount() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no resync started")
		}
	}
	// The first resync holds the answer of stream_id 5; D2 comes with 6.
	fed.answer(6, "D1", "D2")
	update = e2ee.DeviceListUpdate{UserID: remoteUser, DeviceID: "D2", StreamID: 6, PrevID: []int64{5}, Keys: deviceKeysOf(remoteUser, "D2")}
	if err := svc.ReceiveDeviceListUpdate(ctx, "remote.example", update); err != nil {
		t.Fatal(err)
	}
	close(release)
	cachedDevices(t, svc, "D1", "D2")
	if n := fed.resyncCount(); n != 2 {
		t.Fatalf("%d resyncs, want 2", n)
	}
}

// Once a server is off the allowlist, its users' cached keys are neither
// served nor kept: the server is in failures.
func TestCachedKeysOfRemovedServerNotServed(t *testing.T) {
	svc, fed := cachedFixture(t, "removed")
	ctx := context.Background()
	fed.mu.Lock()
	fed.disallow = "remote.example"
	fed.mu.Unlock()
	resp, err := svc.QueryKeys(ctx, localUser, e2ee.QueryRequest{DeviceKeys: map[string][]string{remoteUser: nil}})
	if err != nil {
		t.Fatal(err)
	}
	if _, failed := resp.Failures["remote.example"]; !failed || len(resp.DeviceKeys[remoteUser]) > 0 {
		t.Fatalf("keys of a removed server: failures %v, device_keys %v; want only a failure", resp.Failures, resp.DeviceKeys)
	}
	if left, err := sqltest.Store(t).RemoteDeviceLists(ctx, []string{remoteUser}); err != nil || len(left) != 0 {
		t.Fatalf("the cache still holds %v (%v)", left, err)
	}
	claim, err := svc.ClaimKeys(ctx, e2ee.ClaimRequest{OneTimeKeys: map[string]map[string]string{remoteUser: {"D1": "signed_curve25519"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, failed := claim.Failures["remote.example"]; !failed {
		t.Fatalf("claim from a removed server: failures %v", claim.Failures)
	}
}
