package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"chappe/e2ee"
	"chappe/ephemeral"
	"chappe/mxerr"
	"chappe/sqlstore"
	"chappe/sqlstore/sqltest"
)

// recordingReceiver notes what reaches the components.
type recordingReceiver struct {
	got []string
}

func (r *recordingReceiver) note(s string) error { r.got = append(r.got, s); return nil }

func (r *recordingReceiver) ReceiveTyping(_ context.Context, roomID, userID string, typing bool) error {
	if userID == "@fail:a.example" {
		return errors.New("internal failure")
	}
	return r.note("typing " + roomID + " " + userID)
}
func (r *recordingReceiver) ReceiveReceipt(_ context.Context, roomID, userID, typ, eventID, _ string, _ int64) error {
	return r.note("receipt " + roomID + " " + userID + " " + typ + " " + eventID)
}
func (r *recordingReceiver) ReceivePresence(_ context.Context, u ephemeral.PresenceUpdate) error {
	return r.note("presence " + u.UserID)
}
func (r *recordingReceiver) ReceiveToDevice(_ context.Context, origin string, m e2ee.DirectToDevice) error {
	return r.note("to_device " + m.Sender + " " + m.MessageID)
}
func (r *recordingReceiver) ReceiveDeviceListUpdate(_ context.Context, origin string, u e2ee.DeviceListUpdate) error {
	return r.note("device_list " + u.UserID)
}
func (r *recordingReceiver) ReceiveSigningKeyUpdate(_ context.Context, origin string, u e2ee.SigningKeyUpdate) error {
	if u.UserID == "@refused:a.example" {
		return mxerr.New(mxerr.BadJSON, "refused by the component")
	}
	return r.note("signing_key " + u.UserID)
}

// Each EDU reaches its component, unless it is malformed or speaks for a
// user of another server than the origin; no EDU stops the others.
func TestReceiveEDUsBorderAndDispatch(t *testing.T) {
	edus := []string{
		`{"edu_type":"m.typing","content":{"room_id":"!r:b.example","user_id":"@u:a.example","typing":true}}`,
		`{"edu_type":"m.typing","content":{"room_id":"!r:b.example","user_id":"@u:evil.example","typing":true}}`,
		`{"edu_type":"m.typing","content":"not an object"}`,
		`{"edu_type":"m.receipt","content":{"!r:b.example":{"m.read":{"@u:a.example":{"event_ids":["$e1"],"data":{"ts":1}}}}}}`,
		`{"edu_type":"m.receipt","content":{"!r:b.example":{"m.read":{"@u:a.example":{"event_ids":["$e2"]},"@x:evil.example":{"event_ids":["$e3"]}}}}}`,
		`{"edu_type":"m.presence","content":{"push":[{"user_id":"@u:a.example","presence":"online","last_active_ago":1}]}}`,
		`{"edu_type":"m.presence","content":{"push":[{"user_id":"@x:a.example.evil","presence":"online"}]}}`,
		`{"edu_type":"m.direct_to_device","content":{"sender":"@u:a.example","type":"m.room.encrypted","message_id":"m1","messages":{}}}`,
		`{"edu_type":"m.direct_to_device","content":{"sender":"@u:evil.example","type":"m.room.encrypted","message_id":"m2","messages":{}}}`,
		`{"edu_type":"m.direct_to_device","content":{"sender":"@u:a.example","type":"m.room.encrypted","messages":{}}}`,
		`{"edu_type":"m.device_list_update","content":{"user_id":"@u:a.example","device_id":"D","stream_id":2}}`,
		`{"edu_type":"m.device_list_update","content":{"user_id":"@u:evil.example","device_id":"D","stream_id":2}}`,
		`{"edu_type":"m.typing","content":{"room_id":"!r:b.example","user_id":"@fail:a.example","typing":true}}`,
		`{"edu_type":"m.signing_key_update","content":{"user_id":"@refused:a.example"}}`,
		`{"edu_type":"m.signing_key_update","content":{"user_id":"@u:a.example"}}`,
		`{"edu_type":"org.example.unknown","content":{}}`,
		`[1, 2]`,
	}
	raws := make([]json.RawMessage, len(edus))
	for i, e := range edus {
		raws[i] = json.RawMessage(e)
	}
	recv := &recordingReceiver{}
	if err := receiveEDUs(context.Background(), recv, "a.example", raws); err != nil {
		t.Fatalf("no EDU there must fail its transaction: %v", err)
	}
	want := []string{
		"typing !r:b.example @u:a.example",
		"receipt !r:b.example @u:a.example m.read $e1",
		"presence @u:a.example",
		"to_device @u:a.example m1",
		"device_list @u:a.example",
		"signing_key @u:a.example",
	}
	if !slices.Equal(recv.got, want) {
		t.Errorf("received\n%q\nwant\n%q", recv.got, want)
	}
}

// failingToDevice fails to-device messages while fail is set, as a
// database that is briefly down would.
type failingToDevice struct {
	recordingReceiver
	fail bool
}

func (r *failingToDevice) ReceiveToDevice(ctx context.Context, origin string, m e2ee.DirectToDevice) error {
	if r.fail {
		return errors.New("database unavailable")
	}
	return r.recordingReceiver.ReceiveToDevice(ctx, origin, m)
}

// An internal failure on a to-device message fails the transaction (500,
// not recorded) so that the sender retries it, and the retry delivers it;
// a malformed one is still dropped with a 200.
func TestSendRetriesToDeviceOnInternalFailure(t *testing.T) {
	store := sqltest.Store(t)
	recv := &failingToDevice{fail: true}
	e := NewRoomEndpoints(ours, nil, recv, store, 1<<20)
	put := func(txnID, edu string) int {
		body := `{"origin":"a.example","origin_server_ts":1,"pdus":[],"edus":[` + edu + `]}`
		req := httptest.NewRequest(http.MethodPut, "/_matrix/federation/v1/send/"+txnID, strings.NewReader(body))
		req = req.WithContext(context.WithValue(req.Context(), originKey{}, "a.example"))
		w := httptest.NewRecorder()
		r := chi.NewRouter()
		e.Register(r)
		r.ServeHTTP(w, req)
		return w.Code
	}
	// Transaction IDs unique to this run: the package database outlives it.
	t1, t2 := fmt.Sprintf("t1-%d", time.Now().UnixNano()), fmt.Sprintf("t2-%d", time.Now().UnixNano())
	toDevice := `{"edu_type":"m.direct_to_device","content":{"sender":"@u:a.example","type":"m.room_key","message_id":"k1","messages":{}}}`

	if code := put(t1, toDevice); code != http.StatusInternalServerError {
		t.Fatalf("to-device failing internally: %d, want 500", code)
	}
	if _, err := store.FederationTxnResponse(context.Background(), "a.example", t1); !errors.Is(err, sqlstore.ErrNotFound) {
		t.Fatalf("the failed transaction was recorded: %v", err)
	}
	recv.fail = false
	if code := put(t1, toDevice); code != http.StatusOK {
		t.Fatalf("retry: %d", code)
	}
	if want := []string{"to_device @u:a.example k1"}; !slices.Equal(recv.got, want) {
		t.Fatalf("delivered %q, want %q", recv.got, want)
	}

	recv.fail = true
	malformed := `{"edu_type":"m.direct_to_device","content":{"sender":"@u:a.example","type":"m.room_key","messages":{}}}`
	if code := put(t2, malformed); code != http.StatusOK {
		t.Fatalf("malformed to-device: %d, want 200 (dropped)", code)
	}
}
