// Package syncapi is /sync: it gathers, for one user, everything that
// changed in a range of the server's stream (rooms, account data,
// ephemeral events, presence, and the E2EE sections) and long-polls the
// streams Hub when nothing has. It also keeps the users' stored filters.
// Spec: client-server-api/_index.md "Syncing" and "Filtering".
package syncapi

import (
	"encoding/json"
	"slices"
	"strings"

	"chappe/mxerr"
	"chappe/mxhttp"
	"chappe/roomserver"
)

// EventFilter is the spec's EventFilter.
type EventFilter struct {
	Limit      *int      `json:"limit,omitempty"`
	NotSenders []string  `json:"not_senders,omitempty"`
	NotTypes   []string  `json:"not_types,omitempty"`
	Senders    *[]string `json:"senders,omitempty"`
	Types      *[]string `json:"types,omitempty"`
}

// RoomEventFilter is the spec's RoomEventFilter (also used for state).
type RoomEventFilter struct {
	EventFilter
	ContainsURL               *bool     `json:"contains_url,omitempty"`
	IncludeRedundantMembers   bool      `json:"include_redundant_members,omitempty"`
	LazyLoadMembers           bool      `json:"lazy_load_members,omitempty"`
	NotRooms                  []string  `json:"not_rooms,omitempty"`
	Rooms                     *[]string `json:"rooms,omitempty"`
	UnreadThreadNotifications bool      `json:"unread_thread_notifications,omitempty"`
}

// RoomFilter is the "room" section of a filter.
type RoomFilter struct {
	AccountData  RoomEventFilter `json:"account_data"`
	Ephemeral    RoomEventFilter `json:"ephemeral"`
	IncludeLeave bool            `json:"include_leave,omitempty"`
	NotRooms     []string        `json:"not_rooms,omitempty"`
	Rooms        *[]string       `json:"rooms,omitempty"`
	State        RoomEventFilter `json:"state"`
	Timeline     RoomEventFilter `json:"timeline"`
}

// Filter is a whole sync filter. Spec: POST /user/{userId}/filter.
type Filter struct {
	AccountData EventFilter `json:"account_data"`
	EventFields []string    `json:"event_fields,omitempty"`
	EventFormat string      `json:"event_format,omitempty"`
	Presence    EventFilter `json:"presence"`
	Room        RoomFilter  `json:"room"`
}

// maxFilterBytes bounds a stored filter.
const maxFilterBytes = 64 * 1024

// ParseFilter decodes and validates a filter; errors are 400 M_BAD_JSON
// (M_NOT_JSON for text that is not JSON).
func ParseFilter(raw []byte) (Filter, error) {
	var f Filter
	if len(raw) > maxFilterBytes {
		return f, mxerr.New(mxerr.TooLarge, "Filters are limited to %d bytes", maxFilterBytes)
	}
	if err := mxhttp.UnmarshalObject(raw, false, &f); err != nil {
		return f, err
	}
	return f, f.validate()
}

func (f Filter) validate() error {
	switch f.EventFormat {
	case "", "client", "federation":
	default:
		return mxerr.New(mxerr.BadJSON, "event_format must be client or federation, not %q", f.EventFormat)
	}
	for _, field := range f.EventFields {
		if field == "" {
			return mxerr.New(mxerr.BadJSON, "event_fields may not contain an empty field")
		}
	}
	limits := []*int{f.AccountData.Limit, f.Presence.Limit, f.Room.AccountData.Limit, f.Room.Ephemeral.Limit, f.Room.State.Limit, f.Room.Timeline.Limit}
	for _, l := range limits {
		if l != nil && *l < 0 {
			return mxerr.New(mxerr.BadJSON, "Filter limits must not be negative")
		}
	}
	for _, id := range append(append([]string{}, f.Room.NotRooms...), ptrList(f.Room.Rooms)...) {
		if !strings.HasPrefix(id, "!") {
			return mxerr.New(mxerr.BadJSON, "%q in rooms/not_rooms is not a room ID", id)
		}
	}
	return nil
}

func ptrList(p *[]string) []string {
	if p == nil {
		return nil
	}
	return *p
}

// keepsRoom applies rooms / not_rooms.
func (f RoomFilter) keepsRoom(roomID string) bool {
	if f.Rooms != nil && !slices.Contains(*f.Rooms, roomID) {
		return false
	}
	return !slices.Contains(f.NotRooms, roomID)
}

// keepsRoom applies a RoomEventFilter's rooms / not_rooms.
func (f RoomEventFilter) keepsRoom(roomID string) bool {
	if f.Rooms != nil && !slices.Contains(*f.Rooms, roomID) {
		return false
	}
	return !slices.Contains(f.NotRooms, roomID)
}

// keeps applies an EventFilter to an event's type and sender.
func (f EventFilter) keeps(evType, sender string) bool {
	if f.Types != nil && !roomserver.TypeMatches(evType, *f.Types) {
		return false
	}
	if roomserver.TypeMatches(evType, f.NotTypes) {
		return false
	}
	if f.Senders != nil && sender != "" && !slices.Contains(*f.Senders, sender) {
		return false
	}
	return sender == "" || !slices.Contains(f.NotSenders, sender)
}

func (f EventFilter) limit(def int) int {
	if f.Limit == nil {
		return def
	}
	return *f.Limit
}

// eventFilter is the roomserver's form of a RoomEventFilter.
func (f RoomEventFilter) eventFilter() roomserver.EventFilter {
	out := roomserver.EventFilter{NotTypes: f.NotTypes, NotSenders: f.NotSenders, ContainsURL: f.ContainsURL}
	if f.Types != nil {
		out.Types = append([]string{}, *f.Types...)
	}
	if f.Senders != nil {
		out.Senders = append([]string{}, *f.Senders...)
	}
	return out
}

// project keeps only the listed fields of an event (spec: event_fields;
// dots separate levels, "\." is a literal dot).
func project(event json.RawMessage, fields []string) json.RawMessage {
	if len(fields) == 0 {
		return event
	}
	var full map[string]any
	if err := json.Unmarshal(event, &full); err != nil {
		return event
	}
	out := map[string]any{}
	for _, field := range fields {
		path := splitField(field)
		copyPath(full, out, path)
	}
	b, _ := json.Marshal(out)
	return b
}

func splitField(field string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(field); i++ {
		switch {
		case field[i] == '\\' && i+1 < len(field) && field[i+1] == '.':
			cur.WriteByte('.')
			i++
		case field[i] == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(field[i])
		}
	}
	return append(parts, cur.String())
}

func copyPath(from, to map[string]any, path []string) {
	v, ok := from[path[0]]
	if !ok {
		return
	}
	if len(path) == 1 {
		to[path[0]] = v
		return
	}
	sub, ok := v.(map[string]any)
	if !ok {
		return
	}
	dst, ok := to[path[0]].(map[string]any)
	if !ok {
		dst = map[string]any{}
		to[path[0]] = dst
	}
	copyPath(sub, dst, path[1:])
}
