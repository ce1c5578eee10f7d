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

// BenchmarkPushEvaluate1000Members is the in-memory part alone: the rules
// of 1,000 users with the server defaults on one message; "mention" names
// some users in m.mentions, which makes every evaluation personal.
func BenchmarkPushEvaluate1000Members(b *testing.B) {
	defaults := compileRuleset((&userRules{}).ruleset(userPlaceholder))
	room := fakeRoom{members: bigRoomMembers}
	users := make([]string, bigRoomMembers)
	rules := map[string]*Rules{}
	for i := range users {
		users[i] = fmt.Sprintf("@user%d:%s", i, serverName)
		rules[users[i]] = defaults
	}
	for name, content := range map[string]string{
		"plain":   `{"msgtype":"m.text","body":"hello"}`,
		"mention": `{"msgtype":"m.text","body":"hello","m.mentions":{"user_ids":["@user3:test.gouv.fr"]}}`,
	} {
		ev, err := ParseEvent([]byte(`{"type":"m.room.message","sender":"@bob:x","room_id":"!r:x","content":`+content+`}`), "$e")
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				res := outcomes(rules, users, &evaluation{ev: ev, room: room})
				if !res[3].notify || res[3].highlight != (name == "mention") {
					b.Fatalf("user3: %+v", res[3])
				}
			}
		})
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
