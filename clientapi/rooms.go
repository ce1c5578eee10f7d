package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"chappe/mxerr"
	"chappe/mxhttp"
	"chappe/roomserver"
)

// Rooms is what the client API needs from the roomserver.
type Rooms interface {
	CreateRoom(ctx context.Context, creator string, req roomserver.CreateRoomRequest) (string, error)
	Join(ctx context.Context, req roomserver.MembershipRequest) (string, error)
	Knock(ctx context.Context, req roomserver.MembershipRequest) (string, error)
	Leave(ctx context.Context, req roomserver.MembershipRequest) error
	Invite(ctx context.Context, req roomserver.MembershipRequest) error
	Kick(ctx context.Context, req roomserver.MembershipRequest) error
	Ban(ctx context.Context, req roomserver.MembershipRequest) error
	Unban(ctx context.Context, req roomserver.MembershipRequest) error
	Forget(ctx context.Context, userID, roomID string) error
	Send(ctx context.Context, req roomserver.SendRequest) (string, error)
	Redact(ctx context.Context, req roomserver.RedactRequest) (string, error)
	GetEvent(ctx context.Context, viewer roomserver.Viewer, roomID, eventID string) (roomserver.ClientEvent, error)
	State(ctx context.Context, viewer roomserver.Viewer, roomID string) ([]roomserver.ClientEvent, error)
	StateEvent(ctx context.Context, viewer roomserver.Viewer, roomID, evType, key string) (roomserver.ClientEvent, error)
	Members(ctx context.Context, viewer roomserver.Viewer, roomID string, req roomserver.MembersRequest) ([]roomserver.ClientEvent, error)
	JoinedMembers(ctx context.Context, viewer roomserver.Viewer, roomID string) (map[string]roomserver.JoinedMember, error)
	JoinedRooms(ctx context.Context, userID string) ([]string, error)
	Messages(ctx context.Context, viewer roomserver.Viewer, roomID string, req roomserver.MessagesRequest) (roomserver.MessagesResponse, error)
	Context(ctx context.Context, viewer roomserver.Viewer, roomID, eventID string, limit int, filter roomserver.EventFilter) (roomserver.ContextResponse, error)
	TimestampToEvent(ctx context.Context, viewer roomserver.Viewer, roomID string, ts int64, forwards bool) (string, int64, error)
	Relations(ctx context.Context, viewer roomserver.Viewer, roomID, parentID string, req roomserver.RelationsRequest) (roomserver.RelationsResponse, error)
	SetAlias(ctx context.Context, userID, alias, roomID string) error
	GetAlias(ctx context.Context, alias string) (roomserver.AliasTarget, error)
	DeleteAlias(ctx context.Context, userID string, isAdmin bool, alias string) error
	RoomAliases(ctx context.Context, userID, roomID string) ([]string, error)
	Visibility(ctx context.Context, roomID string) (string, error)
	SetVisibility(ctx context.Context, userID string, isAdmin bool, roomID, visibility string) error
	PublicRooms(ctx context.Context, limit int, since string, filter roomserver.PublicRoomsFilter) (roomserver.PublicRoomsResponse, error)
	UpgradeRoom(ctx context.Context, userID, roomID, newVersion string) (string, error)
	RefreshMemberProfile(ctx context.Context, userID string) error
}

// roomRoutes are the room endpoints, all authenticated.
func (a *API) roomRoutes(r interface {
	Get(string, http.HandlerFunc)
	Post(string, http.HandlerFunc)
	Put(string, http.HandlerFunc)
	Delete(string, http.HandlerFunc)
}) {
	const v3 = "/_matrix/client/v3"
	r.Post(v3+"/createRoom", a.createRoom)
	r.Post(v3+"/join/{roomIdOrAlias}", a.joinByIDOrAlias)
	r.Post(v3+"/knock/{roomIdOrAlias}", a.knock)
	r.Post(v3+"/rooms/{roomId}/join", a.joinRoom)
	r.Post(v3+"/rooms/{roomId}/leave", a.membershipAction("leave"))
	r.Post(v3+"/rooms/{roomId}/invite", a.membershipAction("invite"))
	r.Post(v3+"/rooms/{roomId}/kick", a.membershipAction("kick"))
	r.Post(v3+"/rooms/{roomId}/ban", a.membershipAction("ban"))
	r.Post(v3+"/rooms/{roomId}/unban", a.membershipAction("unban"))
	r.Post(v3+"/rooms/{roomId}/forget", a.forget)
	r.Put(v3+"/rooms/{roomId}/send/{eventType}/{txnId}", a.sendMessage)
	r.Put(v3+"/rooms/{roomId}/state/{eventType}", a.putState)
	r.Put(v3+"/rooms/{roomId}/state/{eventType}/", a.putState)
	r.Put(v3+"/rooms/{roomId}/state/{eventType}/{stateKey}", a.putState)
	r.Get(v3+"/rooms/{roomId}/state", a.getState)
	r.Get(v3+"/rooms/{roomId}/state/{eventType}", a.getStateEvent)
	r.Get(v3+"/rooms/{roomId}/state/{eventType}/", a.getStateEvent)
	r.Get(v3+"/rooms/{roomId}/state/{eventType}/{stateKey}", a.getStateEvent)
	r.Get(v3+"/rooms/{roomId}/event/{eventId}", a.getEvent)
	r.Get(v3+"/rooms/{roomId}/members", a.members)
	r.Get(v3+"/rooms/{roomId}/joined_members", a.joinedMembers)
	r.Get(v3+"/joined_rooms", a.joinedRooms)
	r.Put(v3+"/rooms/{roomId}/redact/{eventId}/{txnId}", a.redact)
	r.Get(v3+"/rooms/{roomId}/messages", a.messages)
	r.Get(v3+"/rooms/{roomId}/context/{eventId}", a.eventContext)
	r.Get("/_matrix/client/v1/rooms/{roomId}/timestamp_to_event", a.timestampToEvent)
	r.Get("/_matrix/client/v1/rooms/{roomId}/relations/{eventId}", a.relations)
	r.Get("/_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}", a.relations)
	r.Get("/_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}", a.relations)
	r.Put(v3+"/directory/room/{roomAlias}", a.putAlias)
	r.Delete(v3+"/directory/room/{roomAlias}", a.deleteAlias)
	r.Get(v3+"/rooms/{roomId}/aliases", a.roomAliases)
	r.Post(v3+"/publicRooms", a.publicRoomsPost)
	r.Put(v3+"/directory/list/room/{roomId}", a.putVisibility)
	r.Post(v3+"/rooms/{roomId}/upgrade", a.upgradeRoom)
}

// openDirectoryRoutes are the directory reads the spec allows without a
// token (an invalid token is still refused).
func (a *API) openDirectoryRoutes(r interface {
	Get(string, http.HandlerFunc)
}) {
	const v3 = "/_matrix/client/v3"
	r.Get(v3+"/directory/room/{roomAlias}", a.getAlias)
	r.Get(v3+"/publicRooms", a.publicRoomsGet)
	r.Get(v3+"/directory/list/room/{roomId}", a.getVisibility)
}

func viewerOf(r *http.Request) roomserver.Viewer {
	s := session(r)
	return roomserver.Viewer{UserID: s.UserID, DeviceID: s.DeviceID}
}

// roomIDParam checks the {roomId} route parameter's shape.
func roomIDParam(r *http.Request) (string, error) {
	id := pathParam(r, "roomId")
	if !strings.HasPrefix(id, "!") || len(id) > 255 {
		return "", mxerr.New(mxerr.InvalidParam, "%q is not a room ID", id)
	}
	return id, nil
}

type createRoomBody struct {
	Visibility                string                       `json:"visibility"`
	RoomAliasName             string                       `json:"room_alias_name"`
	Name                      *string                      `json:"name"`
	Topic                     *string                      `json:"topic"`
	Invite                    []string                     `json:"invite"`
	Invite3PID                []json.RawMessage            `json:"invite_3pid"`
	RoomVersion               string                       `json:"room_version"`
	CreationContent           map[string]json.RawMessage   `json:"creation_content"`
	InitialState              []roomserver.StateEventInput `json:"initial_state"`
	Preset                    string                       `json:"preset"`
	IsDirect                  bool                         `json:"is_direct"`
	PowerLevelContentOverride map[string]json.RawMessage   `json:"power_level_content_override"`
}

// createRoom creates a room. Spec: POST /_matrix/client/v3/createRoom.
func (a *API) createRoom(w http.ResponseWriter, r *http.Request) {
	var body createRoomBody
	if err := a.decode(r, false, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if len(body.Invite3PID) > 0 {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.InvalidParam, "Third-party invites are not supported: this server has no identity server"))
		return
	}
	roomID, err := a.rooms.CreateRoom(r.Context(), session(r).UserID, roomserver.CreateRoomRequest{
		Visibility: body.Visibility, RoomAliasName: body.RoomAliasName, Name: body.Name, Topic: body.Topic,
		Invite: body.Invite, IsDirect: body.IsDirect, InitialState: body.InitialState, CreationContent: body.CreationContent,
		PowerLevelContentOverride: body.PowerLevelContentOverride, RoomVersion: body.RoomVersion, Preset: body.Preset,
	})
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
}

type membershipBody struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason"`
}

// joinByIDOrAlias joins a room named by ID or alias. Spec: POST /join/{roomIdOrAlias}.
func (a *API) joinByIDOrAlias(w http.ResponseWriter, r *http.Request) {
	a.join(w, r, pathParam(r, "roomIdOrAlias"))
}

// joinRoom joins a room by ID. Spec: POST /rooms/{roomId}/join.
func (a *API) joinRoom(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	a.join(w, r, roomID)
}

func (a *API) join(w http.ResponseWriter, r *http.Request, idOrAlias string) {
	var body membershipBody
	if err := a.decode(r, true, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	roomID, err := a.rooms.Join(r.Context(), roomserver.MembershipRequest{Sender: session(r).UserID, RoomID: idOrAlias, Reason: body.Reason})
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
}

// knock asks to join a knock room. Spec: POST /knock/{roomIdOrAlias}.
func (a *API) knock(w http.ResponseWriter, r *http.Request) {
	var body membershipBody
	if err := a.decode(r, true, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	roomID, err := a.rooms.Knock(r.Context(), roomserver.MembershipRequest{Sender: session(r).UserID, RoomID: pathParam(r, "roomIdOrAlias"), Reason: body.Reason})
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
}

// membershipAction serves leave, invite, kick, ban and unban.
// Spec: POST /rooms/{roomId}/{leave,invite,kick,ban,unban}.
func (a *API) membershipAction(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		roomID, err := roomIDParam(r)
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		var body membershipBody
		if err := a.decode(r, action == "leave", &body); err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		if action != "leave" && body.UserID == "" {
			mxhttp.WriteError(w, r, mxerr.New(mxerr.BadJSON, "user_id is required"))
			return
		}
		req := roomserver.MembershipRequest{Sender: session(r).UserID, RoomID: roomID, Target: body.UserID, Reason: body.Reason}
		ctx := r.Context()
		switch action {
		case "leave":
			err = a.rooms.Leave(ctx, req)
		case "invite":
			err = a.rooms.Invite(ctx, req)
		case "kick":
			err = a.rooms.Kick(ctx, req)
		case "ban":
			err = a.rooms.Ban(ctx, req)
		case "unban":
			err = a.rooms.Unban(ctx, req)
		}
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
	}
}

// forget forgets a left room. Spec: POST /rooms/{roomId}/forget.
func (a *API) forget(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if err := a.rooms.Forget(r.Context(), session(r).UserID, roomID); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}

// sendMessage sends a message event. Spec: PUT /rooms/{roomId}/send/{eventType}/{txnId}.
func (a *API) sendMessage(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	var body json.RawMessage
	if err := a.decode(r, false, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	s := session(r)
	id, err := a.rooms.Send(r.Context(), roomserver.SendRequest{
		UserID: s.UserID, DeviceID: s.DeviceID, RoomID: roomID, Type: pathParam(r, "eventType"),
		Content: body, TxnID: pathParam(r, "txnId"),
	})
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"event_id": id})
}

// putState sets a piece of state. Spec: PUT /rooms/{roomId}/state/{eventType}/{stateKey}.
func (a *API) putState(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	var body json.RawMessage
	if err := a.decode(r, false, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	key := pathParam(r, "stateKey")
	s := session(r)
	id, err := a.rooms.Send(r.Context(), roomserver.SendRequest{
		UserID: s.UserID, DeviceID: s.DeviceID, RoomID: roomID, Type: pathParam(r, "eventType"), StateKey: &key, Content: body,
	})
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"event_id": id})
}

type redactBody struct {
	Reason string `json:"reason"`
}

// redact redacts an event. Spec: PUT /rooms/{roomId}/redact/{eventId}/{txnId}.
func (a *API) redact(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	var body redactBody
	if err := a.decode(r, true, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	s := session(r)
	id, err := a.rooms.Redact(r.Context(), roomserver.RedactRequest{
		UserID: s.UserID, DeviceID: s.DeviceID, RoomID: roomID, EventID: pathParam(r, "eventId"), Reason: body.Reason, TxnID: pathParam(r, "txnId"),
	})
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"event_id": id})
}

// queryInt reads an optional non-negative integer query parameter.
func queryInt(r *http.Request, name string, def int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, mxerr.New(mxerr.InvalidParam, "%s must be a non-negative integer", name)
	}
	return n, nil
}
