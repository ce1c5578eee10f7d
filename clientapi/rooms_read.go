package clientapi

import (
	"net/http"
	"strconv"

	"chappe/mxerr"
	"chappe/mxhttp"
	"chappe/roomserver"
)

// getState returns the room state. Spec: GET /rooms/{roomId}/state.
func (a *API) getState(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	return a.rooms.State(r.Context(), viewerOf(r), roomID)
}

// getStateEvent returns one state event's content (or the whole event with
// ?format=event). Spec: GET /rooms/{roomId}/state/{eventType}/{stateKey}.
func (a *API) getStateEvent(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	format := r.URL.Query().Get("format")
	if format != "" && format != "content" && format != "event" {
		return nil, mxerr.New(mxerr.InvalidParam, "format must be content or event")
	}
	ev, err := a.rooms.StateEvent(r.Context(), viewerOf(r), roomID, pathParam(r, "eventType"), pathParam(r, "stateKey"))
	if err != nil || format == "event" {
		return ev, err
	}
	return ev.Content, nil
}

// getEvent returns one event. Spec: GET /rooms/{roomId}/event/{eventId}.
func (a *API) getEvent(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	return a.rooms.GetEvent(r.Context(), viewerOf(r), roomID, pathParam(r, "eventId"))
}

var memberships = map[string]bool{"join": true, "invite": true, "knock": true, "leave": true, "ban": true}

// members lists member events. Spec: GET /rooms/{roomId}/members.
func (a *API) members(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	req := roomserver.MembersRequest{At: q.Get("at"), Membership: q.Get("membership"), NotMembership: q.Get("not_membership")}
	for _, m := range []string{req.Membership, req.NotMembership} {
		if m != "" && !memberships[m] {
			return nil, mxerr.New(mxerr.InvalidParam, "Unknown membership %q", m)
		}
	}
	evs, err := a.rooms.Members(r.Context(), viewerOf(r), roomID, req)
	return map[string]any{"chunk": evs}, err
}

// joinedMembers lists joined members. Spec: GET /rooms/{roomId}/joined_members.
func (a *API) joinedMembers(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	m, err := a.rooms.JoinedMembers(r.Context(), viewerOf(r), roomID)
	return map[string]any{"joined": m}, err
}

// joinedRooms lists the user's joined rooms. Spec: GET /joined_rooms.
func (a *API) joinedRooms(r *http.Request) (any, error) {
	rooms, err := a.rooms.JoinedRooms(r.Context(), session(r).UserID)
	return map[string]any{"joined_rooms": rooms}, err
}

// roomEventFilter is the RoomEventFilter JSON of the filter query parameter.
// Spec: "Filtering", RoomEventFilter.
type roomEventFilter struct {
	Limit                   *int      `json:"limit"`
	Types                   *[]string `json:"types"`
	NotTypes                []string  `json:"not_types"`
	Senders                 *[]string `json:"senders"`
	NotSenders              []string  `json:"not_senders"`
	ContainsURL             *bool     `json:"contains_url"`
	LazyLoadMembers         bool      `json:"lazy_load_members"`
	IncludeRedundantMembers bool      `json:"include_redundant_members"`
}

// parseFilter reads the filter query parameter (inline JSON).
func parseFilter(r *http.Request) (roomEventFilter, roomserver.EventFilter, error) {
	var f roomEventFilter
	raw := r.URL.Query().Get("filter")
	if raw == "" {
		return f, roomserver.EventFilter{}, nil
	}
	if raw[0] != '{' {
		return f, roomserver.EventFilter{}, mxerr.New(mxerr.InvalidParam, "filter must be an inline JSON RoomEventFilter")
	}
	if err := mxhttp.UnmarshalObject([]byte(raw), false, &f); err != nil {
		return f, roomserver.EventFilter{}, mxerr.New(mxerr.InvalidParam, "filter: %s", err.(*mxerr.Error).Message)
	}
	out := roomserver.EventFilter{NotTypes: f.NotTypes, NotSenders: f.NotSenders, ContainsURL: f.ContainsURL}
	if f.Types != nil {
		out.Types = append([]string{}, *f.Types...)
	}
	if f.Senders != nil {
		out.Senders = append([]string{}, *f.Senders...)
	}
	return f, out, nil
}

// direction reads the dir query parameter; def when absent ("" = required).
func direction(r *http.Request, def string) (forwards bool, err error) {
	dir := r.URL.Query().Get("dir")
	if dir == "" {
		dir = def
	}
	if dir != "b" && dir != "f" {
		return false, mxerr.New(mxerr.InvalidParam, "dir must be b or f")
	}
	return dir == "f", nil
}

// messages pages through history. Spec: GET /rooms/{roomId}/messages.
func (a *API) messages(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	forwards, err := direction(r, "")
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	limit, err := queryInt(r, "limit", 10)
	if err != nil {
		return nil, err
	}
	raw, filter, err := parseFilter(r)
	if err != nil {
		return nil, err
	}
	if raw.Limit != nil && q.Get("limit") == "" {
		limit = *raw.Limit
	}
	return a.rooms.Messages(r.Context(), viewerOf(r), roomID, roomserver.MessagesRequest{
		From: q.Get("from"), To: q.Get("to"), Forwards: forwards, Limit: limit, Filter: filter, LazyLoadMembers: raw.LazyLoadMembers,
	})
}

// eventContext returns an event and its surroundings.
// Spec: GET /rooms/{roomId}/context/{eventId}.
func (a *API) eventContext(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	limit, err := queryInt(r, "limit", 10)
	if err != nil {
		return nil, err
	}
	_, filter, err := parseFilter(r)
	if err != nil {
		return nil, err
	}
	return a.rooms.Context(r.Context(), viewerOf(r), roomID, pathParam(r, "eventId"), limit, filter)
}

// timestampToEvent finds the event nearest a time.
// Spec: GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event.
func (a *API) timestampToEvent(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	ts, err := strconv.ParseInt(r.URL.Query().Get("ts"), 10, 64)
	if err != nil || ts < 0 {
		return nil, mxerr.New(mxerr.InvalidParam, "ts must be a timestamp in milliseconds")
	}
	forwards, err := direction(r, "")
	if err != nil {
		return nil, err
	}
	id, ets, err := a.rooms.TimestampToEvent(r.Context(), viewerOf(r), roomID, ts, forwards)
	return map[string]any{"event_id": id, "origin_server_ts": ets}, err
}

// relations lists the events relating to one.
// Spec: GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]].
func (a *API) relations(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	forwards, err := direction(r, "b")
	if err != nil {
		return nil, err
	}
	limit, err := queryInt(r, "limit", 0)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	req := roomserver.RelationsRequest{From: q.Get("from"), To: q.Get("to"), Forwards: forwards, Limit: limit}
	if v := pathParam(r, "relType"); v != "" {
		req.RelType = &v
	}
	if v := pathParam(r, "eventType"); v != "" {
		req.EventType = &v
	}
	return a.rooms.Relations(r.Context(), viewerOf(r), roomID, pathParam(r, "eventId"), req)
}

type aliasBody struct {
	RoomID *string `json:"room_id"`
}

// putAlias creates an alias. Spec: PUT /directory/room/{roomAlias}.
func (a *API) putAlias(r *http.Request, body *aliasBody) (any, error) {
	if body.RoomID == nil {
		return nil, mxerr.New(mxerr.BadJSON, "room_id is required")
	}
	return empty, a.rooms.SetAlias(r.Context(), session(r).UserID, pathParam(r, "roomAlias"), *body.RoomID)
}

// getAlias resolves an alias. Spec: GET /directory/room/{roomAlias}.
func (a *API) getAlias(r *http.Request) (any, error) {
	return a.rooms.GetAlias(r.Context(), pathParam(r, "roomAlias"))
}

// deleteAlias removes an alias. Spec: DELETE /directory/room/{roomAlias}.
func (a *API) deleteAlias(r *http.Request) (any, error) {
	s := session(r)
	return empty, a.rooms.DeleteAlias(r.Context(), s.UserID, s.IsAdmin, pathParam(r, "roomAlias"))
}

// roomAliases lists a room's aliases. Spec: GET /rooms/{roomId}/aliases.
func (a *API) roomAliases(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	aliases, err := a.rooms.RoomAliases(r.Context(), session(r).UserID, roomID)
	return map[string]any{"aliases": aliases}, err
}

// publicRoomsGet lists published rooms. Spec: GET /publicRooms.
func (a *API) publicRoomsGet(r *http.Request) (any, error) {
	limit, err := queryInt(r, "limit", 0)
	if err != nil {
		return nil, err
	}
	return a.publicRooms(r, roomserver.PublicRoomsRequest{Limit: limit, Since: r.URL.Query().Get("since")})
}

// publicRoomsPost searches published rooms. Spec: POST /publicRooms.
func (a *API) publicRoomsPost(r *http.Request, body *roomserver.PublicRoomsRequest) (any, error) {
	return a.publicRooms(r, *body)
}

// publicRooms is the directory of the server the request names with
// ?server=: ours when it names none, another server's over federation
// (which refuses a server outside the federation with M_FORBIDDEN).
// Spec: GET/POST /publicRooms, the server parameter.
func (a *API) publicRooms(r *http.Request, req roomserver.PublicRoomsRequest) (any, error) {
	if server := r.URL.Query().Get("server"); server != "" && server != a.cfg.ServerName {
		return a.remote.PublicRooms(r.Context(), server, req)
	}
	return a.rooms.PublicRooms(r.Context(), req)
}

// getVisibility says whether a room is published. Spec: GET /directory/list/room/{roomId}.
func (a *API) getVisibility(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	v, err := a.rooms.Visibility(r.Context(), roomID)
	return map[string]string{"visibility": v}, err
}

type visibilityBody struct {
	Visibility *string `json:"visibility"`
}

// putVisibility publishes or unpublishes a room. Spec: PUT /directory/list/room/{roomId}.
func (a *API) putVisibility(r *http.Request, body *visibilityBody) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	if body.Visibility == nil {
		return nil, mxerr.New(mxerr.BadJSON, "visibility is required")
	}
	s := session(r)
	return empty, a.rooms.SetVisibility(r.Context(), s.UserID, s.IsAdmin, roomID, *body.Visibility)
}

type upgradeBody struct {
	NewVersion *string `json:"new_version"`
}

// upgradeRoom replaces a room by a new version. Spec: POST /rooms/{roomId}/upgrade.
func (a *API) upgradeRoom(r *http.Request, body *upgradeBody) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	if body.NewVersion == nil {
		return nil, mxerr.New(mxerr.BadJSON, "new_version is required")
	}
	newRoom, err := a.rooms.UpgradeRoom(r.Context(), session(r).UserID, roomID, *body.NewVersion)
	return map[string]string{"replacement_room": newRoom}, err
}
