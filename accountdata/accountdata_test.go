package accountdata_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"chappe/accountdata"
	"chappe/mxerr"
	"chappe/sqlstore/sqltest"
	"chappe/streams"
)

func TestMain(m *testing.M) { sqltest.Main(m) }

var seq atomic.Int64

func newUser() string { return fmt.Sprintf("@u%d:test.gouv.fr", seq.Add(1)) }

func setup(t *testing.T) (*accountdata.Service, *streams.Hub) {
	t.Helper()
	store := sqltest.Store(t)
	last, err := store.MaxStreamPosition(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	hub := streams.NewHub(last)
	return accountdata.New(store, hub), hub
}

// wantErr checks a Matrix error's code and HTTP status.
func wantErr(t *testing.T, err error, code mxerr.Code, status int, what string) {
	t.Helper()
	e, ok := mxerr.As(err)
	if !ok || e.Code != code || e.Status() != status {
		t.Errorf("%s: want %d %s, got %v", what, status, code, err)
	}
}

type event struct {
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

func decodeEvents(t *testing.T, raw []json.RawMessage) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, r := range raw {
		var ev event
		if err := json.Unmarshal(r, &ev); err != nil {
			t.Fatalf("event %s: %v", r, err)
		}
		if _, dup := out[ev.Type]; dup {
			t.Errorf("type %s appears twice", ev.Type)
		}
		out[ev.Type] = string(ev.Content)
	}
	return out
}

func TestPutGetAndRefusals(t *testing.T) {
	ad, _ := setup(t)
	ctx := context.Background()
	u := newUser()
	if err := ad.Put(ctx, u, "", "org.example.cfg", json.RawMessage(` { "a" : 1 } `)); err != nil {
		t.Fatal(err)
	}
	if got, err := ad.Get(ctx, u, "", "org.example.cfg"); err != nil || string(got) != `{"a":1}` {
		t.Errorf("global get: %s %v", got, err)
	}
	if err := ad.Put(ctx, u, "!r:test.gouv.fr", "m.tag", json.RawMessage(`{"tags":{"u.work":{}}}`)); err != nil {
		t.Fatal(err)
	}
	if got, err := ad.Get(ctx, u, "!r:test.gouv.fr", "m.tag"); err != nil || string(got) != `{"tags":{"u.work":{}}}` {
		t.Errorf("room get: %s %v", got, err)
	}
	// Global and room account data do not fall back on each other.
	_, err := ad.Get(ctx, u, "", "m.tag")
	wantErr(t, err, mxerr.NotFound, 404, "room data read as global")
	_, err = ad.Get(ctx, newUser(), "", "org.example.cfg")
	wantErr(t, err, mxerr.NotFound, 404, "another user's data")

	for _, typ := range []string{"m.fully_read", "m.push_rules"} {
		for _, room := range []string{"", "!r:test.gouv.fr"} {
			err := ad.Put(ctx, u, room, typ, json.RawMessage(`{"event_id":"$x"}`))
			wantErr(t, err, mxerr.BadJSON, http.StatusMethodNotAllowed, "setting "+typ+" in room '"+room+"'")
		}
	}
	bad := []struct {
		typ, content string
		code         mxerr.Code
	}{
		{"org.example", `[1]`, mxerr.BadJSON},
		{"org.example", `"s"`, mxerr.BadJSON},
		{"org.example", `null`, mxerr.BadJSON},
		{"org.example", `{nope`, mxerr.NotJSON},
		{"", `{}`, mxerr.InvalidParam},
		{"m.direct", `{"@a:x":"!r:x"}`, mxerr.BadJSON},
		{"m.direct", `{"@a:x":[1]}`, mxerr.BadJSON},
		{"m.direct", `{"@a:x":null}`, mxerr.BadJSON},
		{"m.ignored_user_list", `{}`, mxerr.BadJSON},
		{"m.ignored_user_list", `{"ignored_users":[]}`, mxerr.BadJSON},
		{"m.ignored_user_list", `{"ignored_users":{"bob":{}}}`, mxerr.BadJSON},
		{"m.ignored_user_list", `{"ignored_users":{"@bob:x":true}}`, mxerr.BadJSON},
	}
	for _, b := range bad {
		err := ad.Put(ctx, u, "", b.typ, json.RawMessage(b.content))
		wantErr(t, err, b.code, mxerr.Status(b.code), fmt.Sprintf("PUT %q %s", b.typ, b.content))
	}
	// Valid shapes, including the e-mail keys some clients put in m.direct.
	for typ, content := range map[string]string{
		"m.direct":            `{"@a:x":["!r:x"],"alice@example.gouv.fr":["!s:x"],"@b:x":[]}`,
		"m.ignored_user_list": `{"ignored_users":{}}`,
	} {
		if err := ad.Put(ctx, u, "", typ, json.RawMessage(content)); err != nil {
			t.Errorf("PUT %s %s: %v", typ, content, err)
		}
	}
}

func TestSetFullyRead(t *testing.T) {
	ad, _ := setup(t)
	ctx := context.Background()
	u := newUser()
	if err := ad.SetFullyRead(ctx, u, "!r:x", "$ev1"); err != nil {
		t.Fatal(err)
	}
	got, err := ad.Get(ctx, u, "!r:x", "m.fully_read")
	if err != nil || string(got) != `{"event_id":"$ev1"}` {
		t.Errorf("m.fully_read: %s %v", got, err)
	}
}

func TestIgnoredUsers(t *testing.T) {
	ad, _ := setup(t)
	ctx := context.Background()
	u := newUser()
	got, err := ad.IgnoredUsers(ctx, u)
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("no list: %v %v", got, err)
	}
	content := fmt.Sprintf(`{"ignored_users":{"@spam:x":{},"@troll:y":{},%q:{}}}`, u)
	if err := ad.Put(ctx, u, "", "m.ignored_user_list", json.RawMessage(content)); err != nil {
		t.Fatal(err)
	}
	got, err = ad.IgnoredUsers(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"@spam:x": true, "@troll:y": true}
	if len(got) != len(want) || !got["@spam:x"] || !got["@troll:y"] {
		t.Errorf("ignored = %v, want %v (never oneself)", got, want)
	}
	// Room account data of that type is not the list.
	if err := ad.Put(ctx, u, "!r:x", "m.ignored_user_list", json.RawMessage(`{"ignored_users":{"@other:x":{}}}`)); err != nil {
		t.Fatal(err)
	}
	if got, _ = ad.IgnoredUsers(ctx, u); got["@other:x"] {
		t.Error("room account data counted as the ignore list")
	}
}

// TestAccountDataSince: ranges, one entry per type with its latest content,
// global and per room, nothing beyond to, nothing of other users.
func TestAccountDataSince(t *testing.T) {
	ad, hub := setup(t)
	ctx := context.Background()
	u, other := newUser(), newUser()
	put := func(user, room, typ, content string) {
		t.Helper()
		if err := ad.Put(ctx, user, room, typ, json.RawMessage(content)); err != nil {
			t.Fatal(err)
		}
	}
	put(u, "", "a.one", `{"v":1}`)
	put(u, "!r1:x", "m.tag", `{"tags":{}}`)
	put(other, "", "a.one", `{"v":"other"}`)
	mid := hub.Current().Stream
	put(u, "", "a.one", `{"v":2}`)
	put(u, "", "a.two", `{"v":1}`)
	end := hub.Current().Stream

	global, rooms, err := ad.AccountDataSince(ctx, u, 0, end)
	if err != nil {
		t.Fatal(err)
	}
	g := decodeEvents(t, global)
	if len(g) != 2 || g["a.one"] != `{"v":2}` || g["a.two"] != `{"v":1}` {
		t.Errorf("initial global = %v", g)
	}
	if r := decodeEvents(t, rooms["!r1:x"]); len(rooms) != 1 || r["m.tag"] != `{"tags":{}}` {
		t.Errorf("initial rooms = %v", rooms)
	}

	global, rooms, err = ad.AccountDataSince(ctx, u, mid, end)
	if err != nil {
		t.Fatal(err)
	}
	if g := decodeEvents(t, global); len(g) != 2 || len(rooms) != 0 {
		t.Errorf("incremental: global %v rooms %v", g, rooms)
	}
	global, _, _ = ad.AccountDataSince(ctx, u, 0, mid)
	if g := decodeEvents(t, global); len(g) != 0 {
		// a.one changed after mid: it is not shown up to mid (the next
		// sync, from mid, shows it), and a.two did not exist yet.
		t.Errorf("up to mid: %v", g)
	}
	global, rooms, _ = ad.AccountDataSince(ctx, u, end, end)
	if len(global) != 0 || len(rooms) != 0 {
		t.Errorf("empty range gave %v %v", global, rooms)
	}
}

// signalled tells whether sub has a wake-up pending: Wait from the current
// position returns before its deadline only if it was signalled.
func signalled(sub *streams.Subscription, hub *streams.Hub) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	sub.Wait(ctx, hub.Current())
	return ctx.Err() == nil
}

// TestPutWakesOwner: a change wakes the owner's subscription, not others'
// (not even members of the room the data is about).
func TestPutWakesOwner(t *testing.T) {
	ad, hub := setup(t)
	u, other := newUser(), newUser()
	subU := hub.Subscribe(u, nil)
	defer subU.Close()
	subO := hub.Subscribe(other, []string{"!r:x"})
	defer subO.Close()
	since := hub.Current()
	if err := ad.Put(context.Background(), u, "!r:x", "m.tag", json.RawMessage(`{"tags":{}}`)); err != nil {
		t.Fatal(err)
	}
	if !hub.Current().After(since) {
		t.Fatal("the change took no stream position")
	}
	if !signalled(subU, hub) {
		t.Error("owner not woken by their account data change")
	}
	if signalled(subO, hub) {
		t.Error("another user woken")
	}
	// A refused write takes no position.
	before := hub.Current()
	err := ad.Put(context.Background(), u, "", "m.fully_read", json.RawMessage(`{}`))
	if err == nil || hub.Current() != before {
		t.Errorf("refused write: err %v, stream %v → %v", err, before, hub.Current())
	}
	var e *mxerr.Error
	if !errors.As(err, &e) {
		t.Errorf("refusal is not a Matrix error: %v", err)
	}
	if signalled(subU, hub) {
		t.Error("owner woken by a refused write")
	}
}
