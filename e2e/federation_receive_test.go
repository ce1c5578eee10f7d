package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"chappe/app/apptest"
	"chappe/federation"
)

// forger builds PDUs of a room as server `from` would (with its real
// signing key) and sends them to server `to` in transactions signed as
// `from`: a listed peer that speaks the protocol but need not follow the
// room's rules. It reads what it needs (state, latest event, depth) as a
// member of `to` would.
type forger struct {
	t        *testing.T
	from, to *apptest.FedServer
	reader   *mautrix.Client // a member of the room on `to`
	roomID   id.RoomID
	ver      gomatrixserverlib.IRoomVersion
	txn      int
}

func newForger(t *testing.T, from, to *apptest.FedServer, reader *mautrix.Client, roomID id.RoomID) *forger {
	t.Helper()
	ver, err := gomatrixserverlib.GetRoomVersion("10")
	if err != nil {
		t.Fatal(err)
	}
	return &forger{t: t, from: from, to: to, reader: reader, roomID: roomID, ver: ver}
}

// stateID is the ID of a state event in the room's current state on `to`.
func (f *forger) stateID(evType event.Type, stateKey string) string {
	f.t.Helper()
	var ev *event.Event
	state, err := f.reader.State(f.t.Context(), f.roomID)
	if err == nil {
		ev = state[evType][stateKey]
	}
	if ev == nil {
		f.t.Fatalf("no %s %q in the state of %s: %v", evType.Type, stateKey, f.roomID, err)
	}
	return ev.ID.String()
}

// head is the latest event of the room on `to` and its depth.
func (f *forger) head() (string, int64) {
	f.t.Helper()
	resp, err := f.reader.Messages(f.t.Context(), f.roomID, "", "", mautrix.DirectionBackward, nil, 1)
	if err != nil || len(resp.Chunk) == 0 {
		f.t.Fatalf("latest event of %s: %v", f.roomID, err)
	}
	return resp.Chunk[0].ID.String(), f.depthOf(resp.Chunk[0].ID.String())
}

// depthOf reads an event's depth from `to` over federation.
func (f *forger) depthOf(eventID string) int64 {
	f.t.Helper()
	var txn struct {
		PDUs []struct {
			Depth int64 `json:"depth"`
		} `json:"pdus"`
	}
	err := f.from.Federation.Do(f.t.Context(), federation.Request{Destination: f.to.Name, Method: http.MethodGet,
		Path: "/_matrix/federation/v1/event/" + url.PathEscape(eventID)}, &txn)
	if err != nil || len(txn.PDUs) != 1 {
		f.t.Fatalf("event %s from %s: %v", eventID, f.to.Name, err)
	}
	return txn.PDUs[0].Depth
}

// build makes a signed event of sender on top of prev (at depth+1) with
// the given auth events.
func (f *forger) build(sender, evType string, stateKey *string, content any, prev string, depth int64, auth []string) gomatrixserverlib.PDU {
	f.t.Helper()
	raw, err := json.Marshal(content)
	if err != nil {
		f.t.Fatal(err)
	}
	pe := gomatrixserverlib.ProtoEvent{
		SenderID: sender, RoomID: f.roomID.String(), Type: evType, StateKey: stateKey,
		PrevEvents: []string{prev}, AuthEvents: auth, Depth: depth + 1, Content: raw, Version: f.ver,
	}
	key := f.from.Key
	ev, err := f.ver.NewEventBuilderFromProtoEvent(&pe).Build(time.Now(), spec.ServerName(f.from.Name), key.ID, key.Private)
	if err != nil {
		f.t.Fatal(err)
	}
	return ev
}

// message is a message from sender, a member of the room, on the room's head.
func (f *forger) message(sender, body string) gomatrixserverlib.PDU {
	f.t.Helper()
	prev, depth := f.head()
	auth := []string{f.stateID(event.StateCreate, ""), f.stateID(event.StatePowerLevels, ""), f.stateID(event.StateMember, sender)}
	return f.build(sender, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": body}, prev, depth, auth)
}

// send puts raw PDUs in one transaction to `to` and returns the per-PDU
// errors it answers ("" for accepted), by event ID.
func (f *forger) send(pdus ...json.RawMessage) map[string]string {
	f.t.Helper()
	f.txn++
	body := map[string]any{"origin": f.from.Name, "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus}
	var resp struct {
		PDUs map[string]struct {
			Error string `json:"error"`
		} `json:"pdus"`
	}
	err := f.from.Federation.Do(f.t.Context(), federation.Request{Destination: f.to.Name, Method: http.MethodPut,
		Path: fmt.Sprintf("/_matrix/federation/v1/send/forged-%d-%d", time.Now().UnixNano(), f.txn), Body: body}, &resp)
	if err != nil {
		f.t.Fatalf("sending a transaction to %s: %v", f.to.Name, err)
	}
	out := map[string]string{}
	for id, r := range resp.PDUs {
		out[id] = r.Error
	}
	return out
}

// editJSON changes a built event's JSON after signing.
func editJSON(t *testing.T, ev gomatrixserverlib.PDU, edit func(map[string]any)) json.RawMessage {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(ev.JSON(), &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestFederationChecksOnReceipt sends hs1 PDUs from hs2 that break each of
// the spec's checks on receipt (server-server-api.md, "Checks performed on
// receipt of a PDU") and checks what hs1 makes of them: a bad signature is
// dropped, a content hash mismatch is redacted, an event its auth events do
// not allow is rejected and never served, and an event the current state
// no longer allows is soft-failed: stored, but not shown.
func TestFederationChecksOnReceipt(t *testing.T) {
	_, hs1, hs2 := fedPair(t)
	alice, bob, roomID := sharedRoom(t, hs1, hs2, "controles")
	f := newForger(t, hs2, hs1, alice, roomID)
	bobID := bob.UserID.String()

	wantVisible := func(what, eventID, body string) {
		t.Helper()
		ev, err := alice.GetEvent(t.Context(), roomID, id.EventID(eventID))
		if err != nil {
			t.Fatalf("%s: alice cannot read %s on hs1: %v", what, eventID, err)
		}
		if got := bodyOf(ev); got != body {
			t.Fatalf("%s: alice reads %q, want %q", what, got, body)
		}
	}
	wantHidden := func(what, eventID string) {
		t.Helper()
		if _, err := alice.GetEvent(t.Context(), roomID, id.EventID(eventID)); err == nil {
			t.Fatalf("%s: alice reads %s on hs1", what, eventID)
		}
		for _, b := range roomMessages(t, alice, roomID) {
			if strings.HasPrefix(b, what) {
				t.Fatalf("%s: alice's timeline on hs1 shows %q", what, b)
			}
		}
	}

	// The forger itself is right: a well-formed message is accepted.
	ok := f.message(bobID, "valide")
	if res := f.send(ok.JSON()); res[ok.EventID()] != "" {
		t.Fatalf("a valid forged message is refused: %v", res)
	}
	wantVisible("valid", ok.EventID(), "valide")

	// 2. Signature: a field under the signature changed after signing.
	badSig := editJSON(t, f.message(bobID, "signature fausse"), func(m map[string]any) { m["origin_server_ts"] = float64(1) })
	res := f.send(badSig)
	if len(res) != 1 {
		t.Fatalf("bad signature: results %v", res)
	}
	for evID, e := range res {
		if !strings.Contains(e, "signature") {
			t.Fatalf("bad signature: result %q", e)
		}
		wantHidden("signature fausse", evID)
	}

	// 3. Hashes: the content changed after signing (the signature covers
	// only the redacted form): accepted, redacted.
	honest := f.message(bobID, "contenu d'origine")
	tampered := editJSON(t, honest, func(m map[string]any) { m["content"].(map[string]any)["body"] = "contenu falsifié" })
	if res := f.send(tampered); res[honest.EventID()] != "" {
		t.Fatalf("hash mismatch: results %v, want the event accepted redacted", res)
	}
	ev, err := alice.GetEvent(t.Context(), roomID, id.EventID(honest.EventID()))
	if err != nil || len(ev.Content.Raw) != 0 {
		t.Fatalf("hash mismatch: alice reads %v (%v), want the event redacted", ev, err)
	}

	// 4. Auth events: mallory@hs2 never joined; her auth events cannot
	// allow a message: rejected, and served neither to clients nor to
	// servers.
	prev, depth := f.head()
	mallory := "@mallory:" + hs2.Name
	intruder := f.build(mallory, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "intrusion"}, prev, depth,
		[]string{f.stateID(event.StateCreate, ""), f.stateID(event.StatePowerLevels, "")})
	if res := f.send(intruder.JSON()); !strings.Contains(res[intruder.EventID()], "rejected") {
		t.Fatalf("not a member: results %v, want the event rejected", res)
	}
	wantHidden("intrusion", intruder.EventID())
	err = hs2.Federation.Do(t.Context(), federation.Request{Destination: hs1.Name, Method: http.MethodGet,
		Path: "/_matrix/federation/v1/event/" + url.PathEscape(intruder.EventID())}, nil)
	if re, isRemote := err.(*federation.RemoteError); !isRemote || re.Status != http.StatusNotFound {
		t.Fatalf("hs1 serves the rejected event over federation: %v", err)
	}

	// 6. Current state: bob's message built before alice bans him (his
	// join among its auth events, on the head from before the ban) passes
	// the checks on its own history but not the room as it is: soft-failed.
	prev, depth = f.head()
	auth := []string{f.stateID(event.StateCreate, ""), f.stateID(event.StatePowerLevels, ""), f.stateID(event.StateMember, bobID)}
	late := f.build(bobID, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "après le bannissement"}, prev, depth, auth)
	if _, err := alice.BanUser(t.Context(), roomID, &mautrix.ReqBanUser{UserID: bob.UserID, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if res := f.send(late.JSON()); res[late.EventID()] != "" {
		t.Fatalf("soft failure: results %v, want no error (soft failure is not reported)", res)
	}
	wantHidden("après le bannissement", late.EventID())
}
