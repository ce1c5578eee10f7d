package push

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"chappe/roomserver"
	"chappe/sqlstore"
	"chappe/sqlstore/sqltest"
)

// bigRoom is a room with 1,000 local joined members, built once per run.
var bigRoom struct {
	once    sync.Once
	e       *env
	room    string
	members []string
}

const bigRoomMembers = 1000

func setupBigRoom(b *testing.B) {
	bigRoom.once.Do(func() {
		// Its own pool, open until the process ends: benchmarks run their
		// function several times, and sqltest.Store closes at the first end.
		store, err := sqlstore.Open(context.Background(), sqltest.URL(b), 10)
		if err != nil {
			b.Fatal(err)
		}
		e := newEnvOn(b, store)
		owner := e.user("owner")
		room := e.room(owner)
		members := []string{owner}
		for i := 1; i < bigRoomMembers; i++ {
			u := e.user("member")
			e.join(u, room)
			members = append(members, u)
		}
		bigRoom.e, bigRoom.room, bigRoom.members = e, room, members
	})
	if bigRoom.e == nil {
		b.Fatal("big room setup failed")
	}
}

// BenchmarkPushSend1000Members is one message into a room of 1,000 local
// members, through the roomserver with push evaluation: 999 evaluations and
// 999 notification rows, in the send's transaction.
func BenchmarkPushSend1000Members(b *testing.B) {
	setupBigRoom(b)
	e := bigRoom.e
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.say(bigRoom.members[i%7], bigRoom.room, fmt.Sprintf("message %d", i))
	}
}

// BenchmarkPushSend1000MembersWithoutPush is the same send through a
// roomserver without the push listener: the difference is push's cost.
func BenchmarkPushSend1000MembersWithoutPush(b *testing.B) {
	setupBigRoom(b)
	e := bigRoom.e
	plain := *e
	plain.rs = roomserver.New(roomserver.Config{ServerName: serverName, DefaultVersion: "11"}, e.store, e.key, e.profiles, e.hub)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		plain.say(bigRoom.members[i%7], bigRoom.room, fmt.Sprintf("message %d", i))
	}
}

// BenchmarkPushEvaluate1000Members is the in-memory part alone: the
// default rules of 1,000 users on one message.
func BenchmarkPushEvaluate1000Members(b *testing.B) {
	rules := compileRuleset((&userRules{}).ruleset(userPlaceholder))
	room := fakeRoom{members: bigRoomMembers}
	users := make([]string, bigRoomMembers)
	for i := range users {
		users[i] = fmt.Sprintf("@user%d:%s", i, serverName)
	}
	ev, err := ParseEvent([]byte(`{"type":"m.room.message","sender":"@bob:x","room_id":"!r:x","content":{"msgtype":"m.text","body":"hello","m.mentions":{"user_ids":["@user3:test.gouv.fr"]}}}`), "$e")
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e := &evaluation{ev: ev, room: room}
		for _, u := range users {
			e.userID = u
			if r := rules.match(e); r == nil {
				b.Fatal("no rule matched")
			}
		}
	}
}

// BenchmarkPushUnreadCounts50Rooms is the query /sync runs: the counts of a
// user in 50 rooms with 20 unread messages each.
func BenchmarkPushUnreadCounts50Rooms(b *testing.B) {
	e := newEnv(b)
	alice, bob := e.user("alice"), e.user("bob")
	var rooms []string
	for i := 0; i < 50; i++ {
		room := e.room(bob, alice, e.user("carol"))
		for j := 0; j < 20; j++ {
			e.say(bob, room, "hi")
		}
		rooms = append(rooms, room)
	}
	c, err := e.push.UnreadCounts(e.ctx, alice, rooms)
	if err != nil || c[rooms[49]].Notifications != 20 {
		b.Fatalf("counts %v %v", c[rooms[49]], err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := e.push.UnreadCounts(e.ctx, alice, rooms); err != nil {
			b.Fatal(err)
		}
	}
}
