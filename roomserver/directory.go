package roomserver

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// Visibility returns "public" or "private" for the room directory.
// Spec: GET /directory/list/room/{roomId}.
func (r *Roomserver) Visibility(ctx context.Context, roomID string) (string, error) {
	room, err := r.loadRoom(ctx, &r.store.Queries, roomID, false)
	if err != nil {
		return "", err
	}
	if room.Published {
		return "public", nil
	}
	return "private", nil
}

// SetVisibility publishes or unpublishes the room; the user needs the power
// to set the room's canonical alias. Spec: PUT /directory/list/room/{roomId}.
func (r *Roomserver) SetVisibility(ctx context.Context, userID string, isAdmin bool, roomID, visibility string) error {
	if visibility != "public" && visibility != "private" {
		return mxerr.New(mxerr.InvalidParam, "visibility must be public or private, not %q", visibility)
	}
	if _, err := r.loadRoom(ctx, &r.store.Queries, roomID, false); err != nil {
		return err
	}
	if !isAdmin {
		ok, err := r.hasStatePower(ctx, roomID, userID, "m.room.canonical_alias")
		if err != nil {
			return err
		}
		if !ok {
			return mxerr.New(mxerr.Forbidden, "Publishing the room needs the power to set its canonical alias")
		}
	}
	err := r.store.SetRoomPublished(ctx, roomID, visibility == "public")
	if errors.Is(err, sqlstore.ErrNotFound) {
		return notFoundRoom(roomID)
	}
	return err
}

// PublicRoomsChunk is one entry of /publicRooms. Spec: "PublishedRoomsChunk".
type PublicRoomsChunk struct {
	RoomID           string `json:"room_id"`
	NumJoinedMembers int    `json:"num_joined_members"`
	WorldReadable    bool   `json:"world_readable"`
	GuestCanJoin     bool   `json:"guest_can_join"`
	Name             string `json:"name,omitempty"`
	Topic            string `json:"topic,omitempty"`
	CanonicalAlias   string `json:"canonical_alias,omitempty"`
	AvatarURL        string `json:"avatar_url,omitempty"`
	JoinRule         string `json:"join_rule,omitempty"`
	RoomType         string `json:"room_type,omitempty"`
}

// PublicRoomsResponse is /publicRooms' answer.
type PublicRoomsResponse struct {
	Chunk                  []PublicRoomsChunk `json:"chunk"`
	NextBatch              string             `json:"next_batch,omitempty"`
	PrevBatch              string             `json:"prev_batch,omitempty"`
	TotalRoomCountEstimate int                `json:"total_room_count_estimate"`
}

// PublicRoomsRequest is what /publicRooms asks, on the client API and over
// federation alike: the body of POST (GET carries limit and since only).
// Spec: POST /_matrix/client/v3/publicRooms; server-server-api.md,
// POST /_matrix/federation/v1/publicRooms.
type PublicRoomsRequest struct {
	// Limit is the most rooms wanted; 0: the server's default.
	Limit int `json:"limit,omitempty"`
	// Since is a next_batch or prev_batch token of an earlier answer.
	Since  string            `json:"since,omitempty"`
	Filter PublicRoomsFilter `json:"filter"`
}

// Check refuses what no server can answer: a negative limit.
func (q PublicRoomsRequest) Check() error {
	if q.Limit < 0 {
		return mxerr.New(mxerr.InvalidParam, "limit must not be negative")
	}
	return nil
}

// PublicRoomsFilter narrows /publicRooms (spec: POST /publicRooms, filter).
type PublicRoomsFilter struct {
	// Search is matched, case-insensitively, in name, topic and alias.
	Search string `json:"generic_search_term,omitempty"`
	// RoomTypes, when not nil, keeps rooms whose m.room.create type is listed;
	// a nil entry stands for rooms without a type. (Sent to another server,
	// an empty list is left out like a nil one: the spec types it as an
	// array, which null is not.)
	RoomTypes []*string `json:"room_types,omitempty"`
}

func (f PublicRoomsFilter) keeps(c PublicRoomsChunk) bool {
	if f.Search != "" && !strings.Contains(strings.ToLower(c.Name+"\n"+c.Topic+"\n"+c.CanonicalAlias), f.Search) {
		return false
	}
	if f.RoomTypes == nil {
		return true
	}
	for _, t := range f.RoomTypes {
		if (t == nil && c.RoomType == "") || (t != nil && *t == c.RoomType) {
			return true
		}
	}
	return false
}

// PublicRooms pages through the published rooms, largest first, filtered:
// what our clients see, and what other servers see when we serve them.
// Spec: GET/POST /publicRooms, on both APIs.
func (r *Roomserver) PublicRooms(ctx context.Context, req PublicRoomsRequest) (PublicRoomsResponse, error) {
	if err := req.Check(); err != nil {
		return PublicRoomsResponse{}, err
	}
	limit, since, filter := req.Limit, req.Since, req.Filter
	if limit <= 0 || limit > 500 {
		limit = 100
	}
	var cursor *sqlstore.PublicRoom
	if since != "" {
		c, err := parseDirectoryToken(since)
		if err != nil {
			return PublicRoomsResponse{}, err
		}
		cursor = &c
	}
	filter.Search = strings.ToLower(strings.TrimSpace(filter.Search))
	resp := PublicRoomsResponse{Chunk: []PublicRoomsChunk{}}
	var err error
	if resp.TotalRoomCountEstimate, err = r.store.PublicRoomCount(ctx); err != nil {
		return resp, err
	}
	if since != "" {
		resp.PrevBatch = since
	}
	for len(resp.Chunk) < limit {
		page, err := r.store.PublicRooms(ctx, cursor, limit)
		if err != nil {
			return resp, err
		}
		for _, p := range page {
			cursor = &sqlstore.PublicRoom{RoomID: p.RoomID, Members: p.Members}
			chunk, err := r.publicRoomChunk(ctx, p)
			if err != nil {
				return resp, err
			}
			if !filter.keeps(chunk) {
				continue
			}
			resp.Chunk = append(resp.Chunk, chunk)
			if len(resp.Chunk) == limit {
				break
			}
		}
		if len(page) < limit {
			return resp, nil
		}
	}
	resp.NextBatch = directoryToken(*cursor)
	return resp, nil
}

func (r *Roomserver) publicRoomChunk(ctx context.Context, p sqlstore.PublicRoom) (PublicRoomsChunk, error) {
	q := &r.store.Queries
	room, err := r.loadRoom(ctx, q, p.RoomID, false)
	if err != nil {
		return PublicRoomsChunk{}, err
	}
	snap, err := r.loadSnapshot(ctx, q, room.StateSnapshot)
	if err != nil {
		return PublicRoomsChunk{}, err
	}
	c := PublicRoomsChunk{RoomID: p.RoomID, NumJoinedMembers: p.Members}
	get := func(typ, path string) (string, error) {
		ev, err := r.stateEvent(ctx, q, room.RoomVersion, snap, stateKey{typ, ""})
		if err != nil || ev == nil {
			return "", err
		}
		return gjson.GetBytes(ev.Content(), path).String(), nil
	}
	fields := []struct {
		dst       *string
		typ, path string
	}{
		{&c.Name, "m.room.name", "name"}, {&c.Topic, "m.room.topic", "topic"},
		{&c.CanonicalAlias, "m.room.canonical_alias", "alias"}, {&c.AvatarURL, "m.room.avatar", "url"},
		{&c.JoinRule, "m.room.join_rules", "join_rule"}, {&c.RoomType, "m.room.create", "type"},
	}
	for _, f := range fields {
		if *f.dst, err = get(f.typ, f.path); err != nil {
			return c, err
		}
	}
	hv, err := get("m.room.history_visibility", "history_visibility")
	if err != nil {
		return c, err
	}
	guest, err := get("m.room.guest_access", "guest_access")
	if err != nil {
		return c, err
	}
	c.WorldReadable, c.GuestCanJoin = hv == "world_readable", guest == "can_join"
	return c, nil
}

// Directory tokens are "p<members>_<room_id>": the last room of the page.
func directoryToken(p sqlstore.PublicRoom) string {
	return "p" + strconv.Itoa(p.Members) + "_" + p.RoomID
}

func parseDirectoryToken(s string) (sqlstore.PublicRoom, error) {
	bad := mxerr.New(mxerr.InvalidParam, "Invalid directory pagination token %q", s)
	if !strings.HasPrefix(s, "p") {
		return sqlstore.PublicRoom{}, bad
	}
	n, roomID, ok := strings.Cut(s[1:], "_")
	members, err := strconv.Atoi(n)
	if !ok || err != nil || !strings.HasPrefix(roomID, "!") {
		return sqlstore.PublicRoom{}, bad
	}
	return sqlstore.PublicRoom{RoomID: roomID, Members: members}, nil
}
