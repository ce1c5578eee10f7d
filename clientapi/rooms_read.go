package clientapi

import (
	"net/http"
	"strconv"

	"chappe/mxerr"
	"chappe/mxhttp"
	"chappe/roomserver"
)

// getState returns the room state. Spec: GET /rooms/{roomId}/state.
func (a *API) getState(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	evs, err := a.rooms.State(r.Context(), viewerOf(r), roomID)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, evs)
}

// getStateEvent returns one state event's content (or the whole event with
// ?format=event). Spec: GET /rooms/{roomId}/state/{eventType}/{stateKey}.
func (a *API) getStateEvent(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	ev, err := a.rooms.StateEvent(r.Context(), viewerOf(r), roomID, pathParam(r, "eventType"), pathParam(r, "stateKey"))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	switch r.URL.Query().Get("format") {
	case "", "content":
		mxhttp.WriteJSON(w, http.StatusOK, ev.Content)
	case "event":
		mxhttp.WriteJSON(w, http.StatusOK, ev)
	default:
		mxhttp.WriteError(w, r, mxerr.New(mxerr.InvalidParam, "format must be content or event"))
	}
}

// getEvent returns one event. Spec: GET /rooms/{roomId}/event/{eventId}.
func (a *API) getEvent(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	ev, err := a.rooms.GetEvent(r.Context(), viewerOf(r), roomID, pathParam(r, "eventId"))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, ev)
}

var memberships = map[string]bool{"join": true, "invite": true, "knock": true, "leave": true, "ban": true}

// members lists member events. Spec: GET /rooms/{roomId}/members.
func (a *API) members(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	q := r.URL.Query()
	req := roomserver.MembersRequest{At: q.Get("at"), Membership: q.Get("membership"), NotMembership: q.Get("not_membership")}
	for _, m := range []string{req.Membership, req.NotMembership} {
		if m != "" && !memberships[m] {
			mxhttp.WriteError(w, r, mxerr.New(mxerr.InvalidParam, "Unknown membership %q", m))
			return
		}
	}
	evs, err := a.rooms.Members(r.Context(), viewerOf(r), roomID, req)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"chunk": evs})
}

// joinedMembers lists joined members. Spec: GET /rooms/{roomId}/joined_members.
func (a *API) joinedMembers(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	m, err := a.rooms.JoinedMembers(r.Context(), viewerOf(r), roomID)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"joined": m})
}

// joinedRooms lists the user's joined rooms. Spec: GET /joined_rooms.
func (a *API) joinedRooms(w http.ResponseWriter, r *http.Request) {
	rooms, err := a.rooms.JoinedRooms(r.Context(), session(r).UserID)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"joined_rooms": rooms})
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

// messages pages through history. Spec: GET /rooms/{roomId}/messages.
func (a *API) messages(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir != "b" && dir != "f" {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.InvalidParam, "dir must be b or f"))
		return
	}
	limit, err := queryInt(r, "limit", 10)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	raw, filter, err := parseFilter(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if raw.Limit != nil && q.Get("limit") == "" {
		limit = *raw.Limit
	}
	resp, err := a.rooms.Messages(r.Context(), viewerOf(r), roomID, roomserver.MessagesRequest{
		From: q.Get("from"), To: q.Get("to"), Forwards: dir == "f", Limit: limit, Filter: filter, LazyLoadMembers: raw.LazyLoadMembers,
	})
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, resp)
}

// eventContext returns an event and its surroundings.
// Spec: GET /rooms/{roomId}/context/{eventId}.
func (a *API) eventContext(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	limit, err := queryInt(r, "limit", 10)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	_, filter, err := parseFilter(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	resp, err := a.rooms.Context(r.Context(), viewerOf(r), roomID, pathParam(r, "eventId"), limit, filter)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, resp)
}

// timestampToEvent finds the event nearest a time.
// Spec: GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event.
func (a *API) timestampToEvent(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil || ts < 0 {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.InvalidParam, "ts must be a timestamp in milliseconds"))
		return
	}
	dir := q.Get("dir")
	if dir != "f" && dir != "b" {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.InvalidParam, "dir must be f or b"))
		return
	}
	id, ets, err := a.rooms.TimestampToEvent(r.Context(), viewerOf(r), roomID, ts, dir == "f")
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"event_id": id, "origin_server_ts": ets})
}

// relations lists the events relating to one.
// Spec: GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]].
func (a *API) relations(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir == "" {
		dir = "b"
	}
	if dir != "f" && dir != "b" {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.InvalidParam, "dir must be f or b"))
		return
	}
	limit, err := queryInt(r, "limit", 0)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	req := roomserver.RelationsRequest{From: q.Get("from"), To: q.Get("to"), Forwards: dir == "f", Limit: limit}
	if v := pathParam(r, "relType"); v != "" {
		req.RelType = &v
	}
	if v := pathParam(r, "eventType"); v != "" {
		req.EventType = &v
	}
	resp, err := a.rooms.Relations(r.Context(), viewerOf(r), roomID, pathParam(r, "eventId"), req)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, resp)
}

type aliasBody struct {
	RoomID *string `json:"room_id"`
}

// putAlias creates an alias. Spec: PUT /directory/room/{roomAlias}.
func (a *API) putAlias(w http.ResponseWriter, r *http.Request) {
	var body aliasBody
	if err := a.decode(r, false, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if body.RoomID == nil {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.BadJSON, "room_id is required"))
		return
	}
	if err := a.rooms.SetAlias(r.Context(), session(r).UserID, pathParam(r, "roomAlias"), *body.RoomID); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}

// getAlias resolves an alias. Spec: GET /directory/room/{roomAlias}.
func (a *API) getAlias(w http.ResponseWriter, r *http.Request) {
	t, err := a.rooms.GetAlias(r.Context(), pathParam(r, "roomAlias"))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, t)
}

// deleteAlias removes an alias. Spec: DELETE /directory/room/{roomAlias}.
func (a *API) deleteAlias(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	if err := a.rooms.DeleteAlias(r.Context(), s.UserID, s.IsAdmin, pathParam(r, "roomAlias")); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}

// roomAliases lists a room's aliases. Spec: GET /rooms/{roomId}/aliases.
func (a *API) roomAliases(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	aliases, err := a.rooms.RoomAliases(r.Context(), session(r).UserID, roomID)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"aliases": aliases})
}

// publicRoomsGet lists published rooms. Spec: GET /publicRooms.
func (a *API) publicRoomsGet(w http.ResponseWriter, r *http.Request) {
	if server := r.URL.Query().Get("server"); server != "" && server != a.cfg.ServerName {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.Forbidden, "Other servers' directories need federation, not available yet"))
		return
	}
	limit, err := queryInt(r, "limit", 0)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	resp, err := a.rooms.PublicRooms(r.Context(), limit, r.URL.Query().Get("since"), roomserver.PublicRoomsFilter{})
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, resp)
}

type publicRoomsBody struct {
	Limit  int    `json:"limit"`
	Since  string `json:"since"`
	Filter struct {
		GenericSearchTerm string     `json:"generic_search_term"`
		RoomTypes         *[]*string `json:"room_types"`
	} `json:"filter"`
}

// publicRoomsPost searches published rooms. Spec: POST /publicRooms.
func (a *API) publicRoomsPost(w http.ResponseWriter, r *http.Request) {
	if server := r.URL.Query().Get("server"); server != "" && server != a.cfg.ServerName {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.Forbidden, "Other servers' directories need federation, not available yet"))
		return
	}
	var body publicRoomsBody
	if err := a.decode(r, true, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if body.Limit < 0 {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.InvalidParam, "limit must not be negative"))
		return
	}
	filter := roomserver.PublicRoomsFilter{Search: body.Filter.GenericSearchTerm}
	if body.Filter.RoomTypes != nil {
		filter.RoomTypes = append([]*string{}, *body.Filter.RoomTypes...)
	}
	resp, err := a.rooms.PublicRooms(r.Context(), body.Limit, body.Since, filter)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, resp)
}

// getVisibility says whether a room is published. Spec: GET /directory/list/room/{roomId}.
func (a *API) getVisibility(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	v, err := a.rooms.Visibility(r.Context(), roomID)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"visibility": v})
}

type visibilityBody struct {
	Visibility *string `json:"visibility"`
}

// putVisibility publishes or unpublishes a room. Spec: PUT /directory/list/room/{roomId}.
func (a *API) putVisibility(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	var body visibilityBody
	if err := a.decode(r, false, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if body.Visibility == nil {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.BadJSON, "visibility is required"))
		return
	}
	s := session(r)
	if err := a.rooms.SetVisibility(r.Context(), s.UserID, s.IsAdmin, roomID, *body.Visibility); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}

type upgradeBody struct {
	NewVersion *string `json:"new_version"`
}

// upgradeRoom replaces a room by a new version. Spec: POST /rooms/{roomId}/upgrade.
func (a *API) upgradeRoom(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	var body upgradeBody
	if err := a.decode(r, false, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if body.NewVersion == nil {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.BadJSON, "new_version is required"))
		return
	}
	newRoom, err := a.rooms.UpgradeRoom(r.Context(), session(r).UserID, roomID, *body.NewVersion)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"replacement_room": newRoom})
}
