package push

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

func BenchmarkTmpInsert(b *testing.B) {
	setupBigRoom(b)
	e := bigRoom.e
	users := bigRoom.members[1:]
	hl := make([]bool, len(users))
	acts := make([]string, len(users))
	for i := range acts {
		acts[i] = `["notify"]`
	}
	pool := e.store.Pool()
	ctx := context.Background()
	pos := int64(2_000_000_000)
	run := func(name string, fn func(pos int64) error) {
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				pos++
				if err := fn(pos); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	run("full", func(pos int64) error {
		_, err := pool.Exec(ctx, `INSERT INTO push_notifications (user_id, room_id, stream_pos, thread_id, highlight, actions, ts)
SELECT u.user_id, $2, $3, $4, u.highlight, u.actions, $5
FROM unnest($1::text[], $6::boolean[], $7::text[]) AS u(user_id, highlight, actions)
WHERE NOT EXISTS (
  SELECT 1 FROM account_data a
  WHERE a.user_id = u.user_id AND a.room_id = '' AND a.type = 'm.ignored_user_list' AND strpos(a.content, $8) > 0)`, users, bigRoom.room, pos, "main", 1, hl, acts, `"@x:y"`)
		return err
	})
	run("noignore", func(pos int64) error {
		_, err := pool.Exec(ctx, `INSERT INTO push_notifications (user_id, room_id, stream_pos, thread_id, highlight, actions, ts)
SELECT u.user_id, $2, $3, $4, u.highlight, u.actions, $5
FROM unnest($1::text[], $6::boolean[], $7::text[]) AS u(user_id, highlight, actions)`, users, bigRoom.room, pos, "main", 1, hl, acts)
		return err
	})
	run("copy", func(pos int64) error {
		rows := make([][]any, len(users))
		for i, u := range users {
			rows[i] = []any{u, bigRoom.room, pos, "main", false, `["notify"]`, int64(1)}
		}
		_, err := pool.CopyFrom(ctx, pgx.Identifier{"push_notifications"}, []string{"user_id", "room_id", "stream_pos", "thread_id", "highlight", "actions", "ts"}, pgx.CopyFromRows(rows))
		return err
	})
}
