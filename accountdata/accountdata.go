// Package accountdata stores each user's account data, global and per room,
// and gives /sync what changed. Only the owner ever sees it.
//
// Spec: client-server-api/_index.md, "Client Config" (modules/account_data.md:
// GET/PUT /user/{userId}/account_data/{type} and
// /user/{userId}/rooms/{roomId}/account_data/{type}; the server refuses
// setting the types it manages, m.fully_read and m.push_rules, with 405
// M_BAD_JSON), "Read and unread markers" (m.fully_read, written only through
// the read markers API: SetFullyRead), "Direct Messaging" (m.direct) and
// "Ignoring Users" (m.ignored_user_list, read by /sync through IgnoredUsers).
package accountdata

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"unicode/utf8"

	"chappe/mxerr"
	"chappe/sqlstore"
	"chappe/streams"
)

// Account data types with rules of their own.
const (
	TypeFullyRead   = "m.fully_read"
	TypePushRules   = "m.push_rules"
	TypeDirect      = "m.direct"
	TypeIgnoredList = "m.ignored_user_list"
)

// maxTypeLength bounds the event type, like any event type in a room.
const maxTypeLength = 255

// Event is an account data event as /sync shows it.
type Event struct {
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// Service is the account data component.
type Service struct {
	store *sqlstore.Store
	hub   *streams.Hub
}

// New returns the component. Each change takes a stream position from hub
// and wakes the owner's /sync.
func New(store *sqlstore.Store, hub *streams.Hub) *Service {
	return &Service{store: store, hub: hub}
}

// Get returns one piece of the user's account data; roomID "" is global.
// 404 M_NOT_FOUND if it was never set.
func (s *Service) Get(ctx context.Context, userID, roomID, evType string) (json.RawMessage, error) {
	if err := checkType(evType); err != nil {
		return nil, err
	}
	content, err := s.store.GetAccountData(ctx, userID, roomID, evType)
	if errors.Is(err, sqlstore.ErrNotFound) {
		return nil, mxerr.New(mxerr.NotFound, "No account data of type %s has been set", evType)
	}
	if err != nil {
		return nil, err
	}
	return json.RawMessage(content), nil
}

// Put sets one piece of the user's account data (roomID "" for global) as a
// client asks: content must be a JSON object, the types the server manages
// are refused, and m.direct and m.ignored_user_list must have their shape.
func (s *Service) Put(ctx context.Context, userID, roomID, evType string, content json.RawMessage) error {
	if err := checkType(evType); err != nil {
		return err
	}
	switch evType {
	case TypeFullyRead:
		return serverManaged("Cannot set m.fully_read through this API; use /rooms/{roomId}/read_markers")
	case TypePushRules:
		return serverManaged("Cannot set m.push_rules through this API; use /pushrules")
	}
	compact, err := checkContent(evType, content)
	if err != nil {
		return err
	}
	return s.write(ctx, userID, roomID, evType, compact)
}

// SetFullyRead moves the user's fully read marker in the room to eventID
// (room account data m.fully_read). The caller (the read markers API) has
// checked that the user is in the room and that the event is one of its.
func (s *Service) SetFullyRead(ctx context.Context, userID, roomID, eventID string) error {
	content, err := json.Marshal(map[string]string{"event_id": eventID})
	if err != nil {
		return err
	}
	return s.write(ctx, userID, roomID, TypeFullyRead, content)
}

// write stores the content at a new stream position and wakes the owner.
func (s *Service) write(ctx context.Context, userID, roomID, evType string, content []byte) error {
	var pos int64
	err := s.store.InTx(ctx, func(q *sqlstore.Queries) error {
		pos = s.hub.Alloc()
		return q.PutAccountData(ctx, userID, roomID, evType, string(content), pos)
	})
	if pos != 0 {
		if err == nil {
			s.hub.Commit(pos, streams.Change{Users: []string{userID}, Kind: streams.KindAccountData})
		} else {
			s.hub.Abort(pos)
		}
	}
	return err
}

// AccountDataSince is what /sync shows of the user's account data: the
// events ({"type", "content"}) changed at stream positions in (from, to],
// global ones and per room (from = 0: everything current up to to). Each
// piece appears once, with its current content, in stream order.
func (s *Service) AccountDataSince(ctx context.Context, userID string, from, to int64) (global []json.RawMessage, rooms map[string][]json.RawMessage, err error) {
	rooms = map[string][]json.RawMessage{}
	if to <= from {
		return nil, rooms, nil
	}
	rows, err := s.store.AccountDataSince(ctx, userID, from, to)
	if err != nil {
		return nil, nil, err
	}
	for _, r := range rows {
		ev, err := json.Marshal(Event{Type: r.Type, Content: json.RawMessage(r.Content)})
		if err != nil {
			return nil, nil, err
		}
		if r.RoomID == "" {
			global = append(global, ev)
		} else {
			rooms[r.RoomID] = append(rooms[r.RoomID], ev)
		}
	}
	return global, rooms, nil
}

// IgnoredUsers is the set of users the user ignores (their global
// m.ignored_user_list), for /sync to hide their events and invites. Empty if
// none; the user never ignores themselves.
func (s *Service) IgnoredUsers(ctx context.Context, userID string) (map[string]bool, error) {
	content, err := s.store.GetAccountData(ctx, userID, "", TypeIgnoredList)
	if errors.Is(err, sqlstore.ErrNotFound) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, err
	}
	var c struct {
		IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
	}
	out := map[string]bool{}
	if json.Unmarshal([]byte(content), &c) != nil {
		return out, nil // validated when set; nothing to hide if unreadable
	}
	for u := range c.IgnoredUsers {
		if u != userID {
			out[u] = true
		}
	}
	return out, nil
}

// serverManaged is the spec's answer to setting a type the server manages.
func serverManaged(msg string) error {
	e := mxerr.New(mxerr.BadJSON, "%s", msg)
	e.HTTPStatus = http.StatusMethodNotAllowed
	return e
}

func checkType(evType string) error {
	if evType == "" || len(evType) > maxTypeLength || !utf8.ValidString(evType) {
		return mxerr.New(mxerr.InvalidParam, "The account data type must be 1 to %d bytes of UTF-8", maxTypeLength)
	}
	return nil
}

// checkContent checks that content is a JSON object with the shape its type
// requires, and returns it compacted.
func checkContent(evType string, content json.RawMessage) ([]byte, error) {
	trimmed := bytes.TrimSpace(content)
	if !json.Valid(trimmed) {
		return nil, mxerr.New(mxerr.NotJSON, "Content must be a JSON object")
	}
	var obj map[string]json.RawMessage
	if len(trimmed) == 0 || trimmed[0] != '{' || json.Unmarshal(trimmed, &obj) != nil {
		return nil, mxerr.New(mxerr.BadJSON, "Content must be a JSON object")
	}
	switch evType {
	case TypeDirect:
		// Keys are user IDs, or the e-mail addresses of third-party invites
		// some clients record; values are lists of room IDs.
		for k, v := range obj {
			var roomIDs []string
			if json.Unmarshal(v, &roomIDs) != nil || roomIDs == nil {
				return nil, mxerr.New(mxerr.BadJSON, "m.direct: the value for %q must be an array of room IDs", k)
			}
		}
	case TypeIgnoredList:
		var users map[string]json.RawMessage
		raw, ok := obj["ignored_users"]
		if !ok || json.Unmarshal(raw, &users) != nil || users == nil {
			return nil, mxerr.New(mxerr.BadJSON, "m.ignored_user_list: ignored_users must be an object mapping user IDs to {}")
		}
		for u, v := range users {
			if !validUserID(u) {
				return nil, mxerr.New(mxerr.BadJSON, "m.ignored_user_list: %q is not a user ID", u)
			}
			var inner map[string]json.RawMessage
			if json.Unmarshal(v, &inner) != nil || inner == nil {
				return nil, mxerr.New(mxerr.BadJSON, "m.ignored_user_list: the value for %s must be an object", u)
			}
		}
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, trimmed); err != nil {
		return nil, mxerr.New(mxerr.BadJSON, "Content must be a JSON object")
	}
	return buf.Bytes(), nil
}

// validUserID is the shape of a user ID: @localpart:server.
func validUserID(u string) bool {
	local, server, ok := strings.Cut(u, ":")
	return ok && strings.HasPrefix(local, "@") && len(local) > 1 && server != "" && len(u) <= 255
}
