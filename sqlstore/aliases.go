package sqlstore

import "context"

const insertAliasSQL = `INSERT INTO room_aliases (alias, room_id, creator, created_ts) VALUES ($1, $2, $3, $4)`

// InsertAlias creates a room alias; ErrConflict if the alias exists.
func (q *Queries) InsertAlias(ctx context.Context, alias, roomID, creator string, now int64) error {
	_, err := q.q.Exec(ctx, insertAliasSQL, alias, roomID, creator, now)
	if isUniqueViolation(err) {
		return ErrConflict
	}
	return err
}

const selectAliasSQL = `SELECT room_id, creator FROM room_aliases WHERE alias = $1`

// ResolveAlias returns the room and creator of an alias, ErrNotFound if unknown.
func (q *Queries) ResolveAlias(ctx context.Context, alias string) (roomID, creator string, err error) {
	err = q.q.QueryRow(ctx, selectAliasSQL, alias).Scan(&roomID, &creator)
	return roomID, creator, notFound(err)
}

const deleteAliasSQL = `DELETE FROM room_aliases WHERE alias = $1`

// DeleteAlias removes an alias; ErrNotFound if unknown.
func (q *Queries) DeleteAlias(ctx context.Context, alias string) error {
	tag, err := q.q.Exec(ctx, deleteAliasSQL, alias)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

const selectAliasesOfRoomSQL = `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`

// AliasesOfRoom lists the local aliases pointing at the room.
func (q *Queries) AliasesOfRoom(ctx context.Context, roomID string) ([]string, error) {
	rows, err := q.q.Query(ctx, selectAliasesOfRoomSQL, roomID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// PublicRoom is a published room with its joined member count.
type PublicRoom struct {
	RoomID  string
	Members int
}

// publicRoomsSQL lists published rooms, biggest first, after the exclusive
// cursor ($1 members, $2 room ID); $3 the limit.
const publicRoomsSQL = `
SELECT r.room_id, count(cs.state_key) AS members
FROM rooms r
LEFT JOIN current_state cs ON cs.room_id = r.room_id AND cs.type = 'm.room.member' AND cs.membership = 'join'
WHERE r.published
GROUP BY r.room_id
HAVING ($1::bigint IS NULL OR count(cs.state_key) < $1::bigint OR (count(cs.state_key) = $1::bigint AND r.room_id < $2::text))
ORDER BY members DESC, r.room_id DESC
LIMIT $3`

// PublicRooms pages through the directory; after is the cursor of the last
// room of the previous page (nil for the first page).
func (q *Queries) PublicRooms(ctx context.Context, after *PublicRoom, limit int) ([]PublicRoom, error) {
	var members *int64
	var roomID string
	if after != nil {
		m := int64(after.Members)
		members, roomID = &m, after.RoomID
	}
	rows, err := q.q.Query(ctx, publicRoomsSQL, members, roomID, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []PublicRoom
	for rows.Next() {
		var p PublicRoom
		if err := rows.Scan(&p.RoomID, &p.Members); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

const countPublicRoomsSQL = `SELECT count(*) FROM rooms WHERE published`

// PublicRoomCount counts published rooms.
func (q *Queries) PublicRoomCount(ctx context.Context) (int, error) {
	var n int
	err := q.q.QueryRow(ctx, countPublicRoomsSQL).Scan(&n)
	return n, err
}

const insertForgottenSQL = `INSERT INTO forgotten_rooms (user_id, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`

// ForgetRoom records that the user forgot the room.
func (q *Queries) ForgetRoom(ctx context.Context, userID, roomID string) error {
	_, err := q.q.Exec(ctx, insertForgottenSQL, userID, roomID)
	return err
}

const deleteForgottenSQL = `DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2`

// UnforgetRoom clears the forgotten mark (the user joined or was invited again).
func (q *Queries) UnforgetRoom(ctx context.Context, userID, roomID string) error {
	_, err := q.q.Exec(ctx, deleteForgottenSQL, userID, roomID)
	return err
}

const selectForgottenSQL = `SELECT EXISTS (SELECT 1 FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2)`

// RoomForgotten tells whether the user forgot the room.
func (q *Queries) RoomForgotten(ctx context.Context, userID, roomID string) (bool, error) {
	var ok bool
	err := q.q.QueryRow(ctx, selectForgottenSQL, userID, roomID).Scan(&ok)
	return ok, err
}
