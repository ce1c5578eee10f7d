package push

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// gateway is a real HTTP push gateway recording what it receives.
type gateway struct {
	srv      *httptest.Server
	requests chan map[string]any
	status   atomic.Int32 // answer status; 0 is 200
	reject   atomic.Value // pushkey to reject, or ""
}

func newGateway(t *testing.T) *gateway {
	g := &gateway{requests: make(chan map[string]any, 100)}
	g.reject.Store("")
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != gatewayPath || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("gateway got %s %s (%s)", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		var req map[string]any
		if err := json.Unmarshal(body, &req); err != nil {
			t.Errorf("gateway got %s", body)
		}
		if st := g.status.Load(); st != 0 {
			w.WriteHeader(int(st))
			return
		}
		g.requests <- req
		rejected := []string{}
		if k := g.reject.Load().(string); k != "" {
			rejected = append(rejected, k)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"rejected": rejected})
	}))
	t.Cleanup(g.srv.Close)
	return g
}

// next returns the next notification the gateway received.
func (g *gateway) next(t *testing.T) map[string]any {
	t.Helper()
	select {
	case req := <-g.requests:
		n, _ := req["notification"].(map[string]any)
		return n
	case <-time.After(15 * time.Second):
		t.Fatal("the gateway received nothing")
		return nil
	}
}

func (g *gateway) none(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case req := <-g.requests:
		t.Fatalf("unexpected notification %v", req)
	case <-time.After(within):
	}
}

func setPusher(t *testing.T, e *env, user, pushkey string, data map[string]any) {
	t.Helper()
	d, _ := json.Marshal(data)
	err := e.push.SetPusher(e.ctx, user, "DEV", SetPusherRequest{Kind: json.RawMessage(`"http"`), AppID: strp("fr.gouv.app"), Pushkey: strp(pushkey),
		AppDisplayName: strp("App"), DeviceDisplayName: strp("Phone"), Lang: strp("fr"), Data: d})
	if err != nil {
		t.Fatal(err)
	}
}

// runDelivery runs the delivery loop until the returned stop is called.
func runDelivery(e *env) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.push.Run(ctx, nil, zerolog.Nop()); close(done) }()
	return func() { cancel(); <-done }
}

func TestPushGatewayDelivery(t *testing.T) {
	e := newEnv(t)
	g := newGateway(t)
	alice, bob := e.user("alice"), e.user("bob")
	room := e.room(alice, bob, e.user("carol"))
	e.say(bob, room, "before the pusher") // never pushed
	setPusher(t, e, alice, "key-full", map[string]any{"url": g.srv.URL + gatewayPath, "custom": "x"})
	stop := runDelivery(e)

	id := e.send(bob, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "ping", "m.mentions": map[string]any{"user_ids": []string{alice}}})
	n := g.next(t)
	dev := n["devices"].([]any)[0].(map[string]any)
	data := dev["data"].(map[string]any)
	tweaks := dev["tweaks"].(map[string]any)
	counts := n["counts"].(map[string]any)
	if n["event_id"] != id || n["room_id"] != room || n["type"] != "m.room.message" || n["sender"] != bob ||
		n["content"].(map[string]any)["body"] != "ping" || n["prio"] != "high" {
		t.Errorf("notification %v", n)
	}
	if dev["app_id"] != "fr.gouv.app" || dev["pushkey"] != "key-full" || data["custom"] != "x" || data["url"] != nil {
		t.Errorf("device %v: data is forwarded without url", dev)
	}
	if tweaks["highlight"] != true || tweaks["sound"] != "default" || counts["unread"] != float64(2) {
		t.Errorf("tweaks %v, counts %v", tweaks, counts)
	}

	// event_id_only: no event content.
	setPusher(t, e, alice, "key-ids", map[string]any{"url": g.srv.URL + gatewayPath, "format": "event_id_only"})
	id = e.say(bob, room, "secret")
	got := map[string]map[string]any{}
	for i := 0; i < 2; i++ {
		n := g.next(t)
		got[n["devices"].([]any)[0].(map[string]any)["pushkey"].(string)] = n
	}
	if n := got["key-ids"]; n == nil || n["event_id"] != id || n["content"] != nil || n["sender"] != nil {
		t.Errorf("event_id_only notification %v", n)
	}
	if n := got["key-full"]; n == nil || n["content"] == nil {
		t.Errorf("full notification %v", n)
	}

	// A failing gateway is retried; nothing is lost meanwhile.
	g.status.Store(http.StatusServiceUnavailable)
	id = e.say(bob, room, "while down")
	time.Sleep(300 * time.Millisecond)
	g.status.Store(0)
	seen := map[string]bool{}
	for i := 0; i < 2; i++ {
		n := g.next(t)
		seen[n["event_id"].(string)] = true
	}
	if !seen[id] || len(seen) != 1 {
		t.Errorf("after the gateway came back: %v", seen)
	}

	// A restart resumes after what was delivered (once the gateway's
	// answers were recorded: a notification whose answer was lost is sent
	// again, and gateways suppress duplicates by event_id).
	ev, err := e.store.EventByID(e.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, e, alice, ev.StreamPos)
	stop()
	id = e.say(bob, room, "while stopped")
	e.start()
	stop = runDelivery(e)
	defer func() { stop() }()
	for i := 0; i < 2; i++ {
		if n := g.next(t); n["event_id"] != id {
			t.Errorf("after a restart, got %v, want only %s", n, id)
		}
	}
	g.none(t, 300*time.Millisecond)

	// A rejected pushkey removes its pusher.
	g.reject.Store("key-ids")
	e.say(bob, room, "rejected")
	g.next(t)
	g.next(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		pushers, err := e.push.Pushers(e.ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		if len(pushers) == 1 && pushers[0].Pushkey == "key-full" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pushers after a rejection: %+v", pushers)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitDelivered waits until every pusher of user has delivered up to pos.
func waitDelivered(t *testing.T, e *env, user string, pos int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ps, err := e.store.Pushers(e.ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		done := true
		for _, p := range ps {
			done = done && p.LastStreamPos >= pos
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pushers did not record their delivery: %+v", ps)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPushPushersValidation(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice"), e.user("bob")
	good := func() SetPusherRequest {
		return SetPusherRequest{Kind: json.RawMessage(`"http"`), AppID: strp("fr.gouv.app"), Pushkey: strp("k"),
			AppDisplayName: strp("App"), DeviceDisplayName: strp("Phone"), Lang: strp("fr"),
			Data: json.RawMessage(`{"url": "https://push.gouv.fr/_matrix/push/v1/notify"}`)}
	}
	bad := map[string]func(r *SetPusherRequest){
		"no kind":         func(r *SetPusherRequest) { r.Kind = nil },
		"no app_id":       func(r *SetPusherRequest) { r.AppID = nil },
		"no lang":         func(r *SetPusherRequest) { r.Lang = nil },
		"no data":         func(r *SetPusherRequest) { r.Data = nil },
		"email":           func(r *SetPusherRequest) { r.Kind = json.RawMessage(`"email"`) },
		"unknown kind":    func(r *SetPusherRequest) { r.Kind = json.RawMessage(`"carrier-pigeon"`) },
		"kind not string": func(r *SetPusherRequest) { r.Kind = json.RawMessage(`3`) },
		"long app_id":     func(r *SetPusherRequest) { r.AppID = strp(string(make([]byte, 65))) },
		"long pushkey":    func(r *SetPusherRequest) { r.Pushkey = strp(string(make([]byte, 513))) },
		"no url":          func(r *SetPusherRequest) { r.Data = json.RawMessage(`{}`) },
		"wrong path":      func(r *SetPusherRequest) { r.Data = json.RawMessage(`{"url": "https://push.gouv.fr/notify"}`) },
		"not a URL":       func(r *SetPusherRequest) { r.Data = json.RawMessage(`{"url": "push.gouv.fr"}`) },
		"ftp": func(r *SetPusherRequest) {
			r.Data = json.RawMessage(`{"url": "ftp://push.gouv.fr/_matrix/push/v1/notify"}`)
		},
		"bad format": func(r *SetPusherRequest) {
			r.Data = json.RawMessage(`{"url": "https://p/_matrix/push/v1/notify", "format": "full"}`)
		},
		"data not object": func(r *SetPusherRequest) { r.Data = json.RawMessage(`[1]`) },
		"empty pushkey":   func(r *SetPusherRequest) { r.Pushkey = strp("") },
		"app_id 65 runes": func(r *SetPusherRequest) {
			r.AppID = strp(string([]rune("ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé")))
		},
		"missing all keys": func(r *SetPusherRequest) { *r = SetPusherRequest{} },
	}
	for name, mutate := range bad {
		req := good()
		mutate(&req)
		if err := e.push.SetPusher(e.ctx, alice, "DEV", req); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := e.push.SetPusher(e.ctx, alice, "DEV", good()); err != nil {
		t.Fatal(err)
	}
	upd := good()
	upd.Lang = strp("en")
	upd.ProfileTag = strp("tag")
	if err := e.push.SetPusher(e.ctx, alice, "DEV", upd); err != nil {
		t.Fatal(err)
	}
	ps, _ := e.push.Pushers(e.ctx, alice)
	if len(ps) != 1 || ps[0].Lang != "en" || ps[0].ProfileTag != "tag" || ps[0].Kind != "http" {
		t.Fatalf("updated pusher: %+v", ps)
	}
	// Same app_id and pushkey for bob: without append, alice's goes.
	appendReq := good()
	appendReq.Append = true
	if err := e.push.SetPusher(e.ctx, bob, "DEV", appendReq); err != nil {
		t.Fatal(err)
	}
	if ps, _ := e.push.Pushers(e.ctx, alice); len(ps) != 1 {
		t.Errorf("append kept other users' pushers: %+v", ps)
	}
	if err := e.push.SetPusher(e.ctx, bob, "DEV", good()); err != nil {
		t.Fatal(err)
	}
	if ps, _ := e.push.Pushers(e.ctx, alice); len(ps) != 0 {
		t.Errorf("without append, alice's pusher with the same key remains: %+v", ps)
	}
	// kind null deletes, needing only app_id and pushkey.
	del := SetPusherRequest{Kind: json.RawMessage(`null`), AppID: strp("fr.gouv.app"), Pushkey: strp("k")}
	if err := e.push.SetPusher(e.ctx, bob, "DEV", del); err != nil {
		t.Fatal(err)
	}
	if ps, _ := e.push.Pushers(e.ctx, bob); len(ps) != 0 {
		t.Errorf("kind null did not delete: %+v", ps)
	}
}
