package e2e

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"chappe/app/apptest"
	"chappe/signingkey"
)

// evilPeer is a listed server written here with gomatrixserverlib: it hosts
// rooms and answers what a Chappe server asks it (make_join, send_join,
// send, event, state_ids, get_missing_events, backfill), and it slips into
// its answers events that a server outside the list signed. Its own key is
// pinned in the list; the outsider's never is.
type evilPeer struct {
	t        *testing.T
	name     string
	key      signingkey.Key
	outsider string
	outKey   signingkey.Key
	ver      gomatrixserverlib.IRoomVersion
	addr     string
	ca       *apptest.TestCA

	mu     sync.Mutex
	rooms  map[string]*evilRoom
	events map[string]gomatrixserverlib.PDU
	// missing is what get_missing_events answers.
	missing []gomatrixserverlib.PDU
}

// evilRoom is a linear room: every event follows the previous one.
type evilRoom struct {
	id    string
	order []gomatrixserverlib.PDU
	state map[[2]string]gomatrixserverlib.PDU // (type, state_key) → event
}

func (r *evilRoom) head() gomatrixserverlib.PDU { return r.order[len(r.order)-1] }

func newEvilPeer(t *testing.T, fed *apptest.Federation, name string) *evilPeer {
	t.Helper()
	key, err := signingkey.LoadOrGenerate(filepath.Join(t.TempDir(), "evil.key"))
	if err != nil {
		t.Fatal(err)
	}
	outKey, err := signingkey.LoadOrGenerate(filepath.Join(t.TempDir(), "outsider.key"))
	if err != nil {
		t.Fatal(err)
	}
	ver, err := gomatrixserverlib.GetRoomVersion("10")
	if err != nil {
		t.Fatal(err)
	}
	p := &evilPeer{t: t, name: name, key: key, outsider: "outsider.chappe.test", outKey: outKey, ver: ver, ca: fed.CA,
		rooms: map[string]*evilRoom{}, events: map[string]gomatrixserverlib.PDU{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	srv := &http.Server{Handler: p.routes(), TLSConfig: &tls.Config{Certificates: []tls.Certificate{fed.CA.Issue(t, name)}}}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	fed.AddExternal(name, p.addr, key)
	return p
}

// user is a user ID of the peer.
func (p *evilPeer) user(local string) string { return "@" + local + ":" + p.name }

// createRoom starts a public room of mal@peer with shared history.
func (p *evilPeer) createRoom() *evilRoom {
	p.t.Helper()
	mal := p.user("mal")
	room := &evilRoom{id: "!" + strings.ReplaceAll(time.Now().Format("150405.000000000"), ".", "") + ":" + p.name,
		state: map[[2]string]gomatrixserverlib.PDU{}}
	p.mu.Lock()
	p.rooms[room.id] = room
	p.mu.Unlock()
	empty := ""
	p.append(room, mal, "m.room.create", &empty, map[string]any{"room_version": "10", "creator": mal}, false)
	p.append(room, mal, "m.room.member", &mal, map[string]any{"membership": "join"}, false)
	p.append(room, mal, "m.room.power_levels", &empty, map[string]any{"users": map[string]int{mal: 100}}, false)
	p.append(room, mal, "m.room.join_rules", &empty, map[string]any{"join_rule": "public"}, false)
	p.append(room, mal, "m.room.history_visibility", &empty, map[string]any{"history_visibility": "shared"}, false)
	return room
}

// build makes an event of sender (a user of the peer or of the outsider,
// signed by that server) on the room's head; alsoOutsider adds the
// outsider's signature to one of the peer's events. It does not add it to
// the room.
func (p *evilPeer) build(room *evilRoom, sender, evType string, stateKey *string, content any, alsoOutsider bool) gomatrixserverlib.PDU {
	p.t.Helper()
	raw, err := json.Marshal(content)
	if err != nil {
		p.t.Fatal(err)
	}
	pe := gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: room.id, Type: evType, StateKey: stateKey, Content: raw, Version: p.ver,
		PrevEvents: []string{}, AuthEvents: []string{}}
	if len(room.order) > 0 {
		pe.PrevEvents, pe.Depth = []string{room.head().EventID()}, room.head().Depth()+1
		pe.AuthEvents = p.authFor(room, sender, evType)
	} else {
		pe.Depth = 1
	}
	server, key := p.name, p.key
	if strings.HasSuffix(sender, ":"+p.outsider) {
		server, key = p.outsider, p.outKey
	}
	ev, err := p.ver.NewEventBuilderFromProtoEvent(&pe).Build(time.Now(), spec.ServerName(server), key.ID, key.Private)
	if err != nil {
		p.t.Fatal(err)
	}
	if alsoOutsider {
		ev = ev.Sign(p.outsider, p.outKey.ID, p.outKey.Private)
	}
	return ev
}

// authFor picks the auth events of an event (spec: "Auth events selection").
func (p *evilPeer) authFor(room *evilRoom, sender, evType string) []string {
	keys := [][2]string{{"m.room.create", ""}, {"m.room.power_levels", ""}, {"m.room.member", sender}}
	if evType == "m.room.member" {
		keys = append(keys, [2]string{"m.room.join_rules", ""})
	}
	var out []string
	for _, k := range keys {
		if ev, ok := room.state[k]; ok {
			out = append(out, ev.EventID())
		}
	}
	return out
}

// append builds an event and adds it to the room.
func (p *evilPeer) append(room *evilRoom, sender, evType string, stateKey *string, content any, alsoOutsider bool) gomatrixserverlib.PDU {
	p.t.Helper()
	ev := p.build(room, sender, evType, stateKey, content, alsoOutsider)
	p.add(room, ev)
	return ev
}

func (p *evilPeer) add(room *evilRoom, ev gomatrixserverlib.PDU) {
	p.mu.Lock()
	defer p.mu.Unlock()
	room.order = append(room.order, ev)
	if ev.StateKey() != nil {
		room.state[[2]string{ev.Type(), *ev.StateKey()}] = ev
	}
	p.events[ev.EventID()] = ev
}

func (p *evilPeer) message(room *evilRoom, body string, alsoOutsider bool) gomatrixserverlib.PDU {
	return p.append(room, p.user("mal"), "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": body}, alsoOutsider)
}

// routes answers the federation requests a Chappe server makes (their
// signatures are not checked: the peer trusts everyone).
func (p *evilPeer) routes() http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	txn := func(evs []gomatrixserverlib.PDU) any {
		pdus := []json.RawMessage{}
		for _, ev := range evs {
			pdus = append(pdus, ev.JSON())
		}
		return map[string]any{"origin": p.name, "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus}
	}
	mux.HandleFunc("GET /_matrix/federation/v1/make_join/{roomId}/{userId}", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		room := p.rooms[r.PathValue("roomId")]
		user := r.PathValue("userId")
		head := room.head()
		reply(w, map[string]any{"room_version": "10", "event": map[string]any{
			"type": "m.room.member", "state_key": user, "sender": user, "room_id": room.id,
			"content": map[string]string{"membership": "join"}, "prev_events": []string{head.EventID()},
			"auth_events": p.authFor(room, user, "m.room.member"), "depth": head.Depth() + 1, "origin_server_ts": time.Now().UnixMilli(),
		}})
	})
	mux.HandleFunc("PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}", func(w http.ResponseWriter, r *http.Request) {
		var raw json.RawMessage
		_ = json.NewDecoder(r.Body).Decode(&raw)
		join, err := p.ver.NewEventFromTrustedJSON(raw, false)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p.mu.Lock()
		room := p.rooms[r.PathValue("roomId")]
		var state []gomatrixserverlib.PDU
		for _, ev := range room.state {
			state = append(state, ev)
		}
		p.mu.Unlock()
		p.add(room, join)
		stateJSON := []json.RawMessage{}
		for _, ev := range state {
			stateJSON = append(stateJSON, ev.JSON())
		}
		reply(w, map[string]any{"origin": p.name, "state": stateJSON, "auth_chain": stateJSON, "event": join.JSON()})
	})
	mux.HandleFunc("PUT /_matrix/federation/v1/send/{txnId}", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, map[string]any{"pdus": map[string]any{}})
	})
	mux.HandleFunc("GET /_matrix/federation/v1/event/{eventId}", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		ev, ok := p.events[r.PathValue("eventId")]
		p.mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			reply(w, map[string]string{"errcode": "M_NOT_FOUND", "error": "unknown event"})
			return
		}
		reply(w, txn([]gomatrixserverlib.PDU{ev}))
	})
	mux.HandleFunc("GET /_matrix/federation/v1/state_ids/{roomId}", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		ids := []string{}
		for _, ev := range p.rooms[r.PathValue("roomId")].state {
			ids = append(ids, ev.EventID())
		}
		reply(w, map[string]any{"pdu_ids": ids, "auth_chain_ids": ids})
	})
	mux.HandleFunc("POST /_matrix/federation/v1/get_missing_events/{roomId}", func(w http.ResponseWriter, _ *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		evs := []json.RawMessage{}
		for _, ev := range p.missing {
			evs = append(evs, ev.JSON())
		}
		reply(w, map[string]any{"events": evs})
	})
	mux.HandleFunc("GET /_matrix/federation/v1/backfill/{roomId}", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		evs := slices.Clone(p.rooms[r.PathValue("roomId")].order)
		slices.Reverse(evs)
		reply(w, txn(evs))
	})
	return mux
}

// send sends PDUs to the server in a transaction signed as the peer, and
// returns its per-PDU errors by event ID.
func (p *evilPeer) send(to *apptest.FedServer, evs ...gomatrixserverlib.PDU) map[string]string {
	p.t.Helper()
	var pdus []json.RawMessage
	for _, ev := range evs {
		pdus = append(pdus, ev.JSON())
	}
	body, err := json.Marshal(map[string]any{"origin": p.name, "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus})
	if err != nil {
		p.t.Fatal(err)
	}
	var resp struct {
		PDUs map[string]struct {
			Error string `json:"error"`
		} `json:"pdus"`
	}
	signedPut(p.t, p.ca, p.name, p.key, to, "/_matrix/federation/v1/send/evil-"+time.Now().Format("150405.000000000"), body, &resp)
	out := map[string]string{}
	for id, r := range resp.PDUs {
		out[id] = r.Error
	}
	return out
}

// TestFederationMaliciousListedPeer: a listed peer relays events that an
// unlisted server sent or signed, through every path a Chappe server takes
// events in: /send, get_missing_events, backfill (and /event behind them),
// and a join's state. hs1 refuses each, and none reaches alice.
func TestFederationMaliciousListedPeer(t *testing.T) {
	fed := apptest.NewFederation(t)
	hs1 := fed.Start(t, "hs1.chappe.test", fastRetry)
	evil := newEvilPeer(t, fed, "evil.chappe.test")
	fed.Publish(t)
	alice := registerUser(t, hs1.URL, "alice")

	room := evil.createRoom()
	evil.message(room, "historique propre", false)
	evil.message(room, "historique signé par un inconnu", true)
	evil.message(room, "historique d'après", false)
	if _, err := alice.JoinRoom(t.Context(), room.id, &mautrix.ReqJoinRoom{Via: []string{evil.name}}); err != nil {
		t.Fatalf("alice joins the peer's room: %v", err)
	}
	roomID := id.RoomID(room.id)

	// /send: an outsider's event, and the peer's own event signed by the
	// outsider too.
	fromOutsider := evil.build(room, "@eve:"+evil.outsider, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "envoyé par un inconnu"}, false)
	coSigned := evil.build(room, evil.user("mal"), "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "cosigné par un inconnu"}, true)
	res := evil.send(hs1, fromOutsider, coSigned)
	for _, ev := range []gomatrixserverlib.PDU{fromOutsider, coSigned} {
		if !strings.Contains(res[ev.EventID()], "outside the federation") {
			t.Errorf("/send: %s answered %q, want refused as outside the federation", ev.EventID(), res[ev.EventID()])
		}
	}

	// get_missing_events (and /event for the gap): a clean event whose
	// predecessor is co-signed by the outsider.
	hidden := evil.message(room, "manquant signé par un inconnu", true)
	evil.mu.Lock()
	evil.missing = []gomatrixserverlib.PDU{hidden}
	evil.mu.Unlock()
	after := evil.message(room, "après le manquant", false)
	evil.send(hs1, after)

	// A clean message still gets through: the peer's room works.
	clean := evil.message(room, "message propre", false)
	if res := evil.send(hs1, clean); res[clean.EventID()] != "" {
		t.Fatalf("a clean message of the peer is refused: %q", res[clean.EventID()])
	}

	// backfill: alice pages back through the peer's history.
	var bodies []string
	waitFor(t, "the clean history on hs1", 10*time.Second, func() bool {
		bodies = roomMessages(t, alice, roomID)
		return slices.Contains(bodies, "historique propre") && slices.Contains(bodies, "message propre")
	})
	for _, b := range []string{"historique signé par un inconnu", "envoyé par un inconnu", "cosigné par un inconnu", "manquant signé par un inconnu"} {
		if slices.Contains(bodies, b) {
			t.Errorf("alice sees %q on hs1", b)
		}
	}
	for _, ev := range []gomatrixserverlib.PDU{fromOutsider, coSigned, hidden, room.order[6]} {
		if _, err := alice.GetEvent(t.Context(), roomID, id.EventID(ev.EventID())); err == nil {
			t.Errorf("alice can read %s on hs1", ev.EventID())
		}
	}

	// A join's state: the room's topic is co-signed by the outsider.
	tainted := evil.createRoom()
	empty := ""
	evil.append(tainted, evil.user("mal"), "m.room.topic", &empty, map[string]any{"topic": "sujet signé par un inconnu"}, true)
	_, err := alice.JoinRoom(t.Context(), tainted.id, &mautrix.ReqJoinRoom{Via: []string{evil.name}})
	if err == nil {
		var topic event.TopicEventContent
		if err := alice.StateEvent(t.Context(), id.RoomID(tainted.id), event.StateTopic, "", &topic); err == nil {
			t.Fatalf("alice joined a room whose state an outsider signed, and reads its topic %q", topic.Topic)
		}
	}
}

// signedPut PUTs body to a Chappe server's federation API as server origin,
// signed with key (gomatrixserverlib's request signing), over TLS trusting
// the test CA, and decodes the answer into out.
func signedPut(t *testing.T, ca *apptest.TestCA, origin string, key signingkey.Key, to *apptest.FedServer, path string, body []byte, out any) {
	t.Helper()
	req := fclient.NewFederationRequest(http.MethodPut, spec.ServerName(origin), spec.ServerName(to.Name), path)
	if err := req.SetContent(json.RawMessage(body)); err != nil {
		t.Fatal(err)
	}
	if err := req.Sign(spec.ServerName(origin), key.ID, key.Private); err != nil {
		t.Fatal(err)
	}
	hreq, err := req.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	hreq = hreq.WithContext(t.Context())
	hreq.URL.Scheme, hreq.URL.Host = "https", to.FedAddr
	hreq.Host = to.Name
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: to.Name, MinVersion: tls.VersionTLS12}}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT %s on %s: HTTP %d", path, to.Name, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
}
