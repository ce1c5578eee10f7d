package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"chappe/mxerr"
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
	PublicRooms(ctx context.Context, req roomserver.PublicRoomsRequest) (roomserver.PublicRoomsResponse, error)
	UpgradeRoom(ctx context.Context, userID, roomID, newVersion string) (string, error)
	RefreshMemberProfile(ctx context.Context, userID string) error
}

// routeAdder is the part of chi.Router the route lists use.
type routeAdder interface {
	Get(string, http.HandlerFunc)
	Post(string, http.HandlerFunc)
	Put(string, http.HandlerFunc)
	Delete(string, http.HandlerFunc)
}

// roomRoutes are the room endpoints, all authenticated.
func (a *API) roomRoutes(r routeAdder) {
	const v3 = "/_matrix/client/v3"
	r.Post(v3+"/createRoom", handleJSON(a, false, a.createRoom))
	r.Post(v3+"/join/{roomIdOrAlias}", handleJSON(a, true, a.joinByIDOrAlias))
	r.Post(v3+"/knock/{roomIdOrAlias}", handleJSON(a, true, a.knock))
	r.Post(v3+"/rooms/{roomId}/join", handleJSON(a, true, a.joinRoom))
	r.Post(v3+"/rooms/{roomId}/leave", handleJSON(a, true, a.membershipAction("leave")))
	for _, action := range []string{"invite", "kick", "ban", "unban"} {
		r.Post(v3+"/rooms/{roomId}/"+action, handleJSON(a, false, a.membershipAction(action)))
	}
	r.Post(v3+"/rooms/{roomId}/forget", handle(a.forget))
	r.Put(v3+"/rooms/{roomId}/send/{eventType}/{txnId}", handleJSON(a, false, a.sendMessage))
	for _, p := range []string{"/state/{eventType}", "/state/{eventType}/", "/state/{eventType}/{stateKey}"} {
		r.Put(v3+"/rooms/{roomId}"+p, handleJSON(a, false, a.putState))
		r.Get(v3+"/rooms/{roomId}"+p, handle(a.getStateEvent))
	}
	r.Get(v3+"/rooms/{roomId}/state", handle(a.getState))
	r.Get(v3+"/rooms/{roomId}/event/{eventId}", handle(a.getEvent))
	r.Get(v3+"/rooms/{roomId}/members", handle(a.members))
	r.Get(v3+"/rooms/{roomId}/joined_members", handle(a.joinedMembers))
	r.Get(v3+"/joined_rooms", handle(a.joinedRooms))
	r.Put(v3+"/rooms/{roomId}/redact/{eventId}/{txnId}", handleJSON(a, true, a.redact))
	r.Get(v3+"/rooms/{roomId}/messages", handle(a.messages))
	r.Get(v3+"/rooms/{roomId}/context/{eventId}", handle(a.eventContext))
	r.Get("/_matrix/client/v1/rooms/{roomId}/timestamp_to_event", handle(a.timestampToEvent))
	for _, p := range []string{"", "/{relType}", "/{relType}/{eventType}"} {
		r.Get("/_matrix/client/v1/rooms/{roomId}/relations/{eventId}"+p, handle(a.relations))
	}
	r.Put(v3+"/directory/room/{roomAlias}", handleJSON(a, false, a.putAlias))
	r.Delete(v3+"/directory/room/{roomAlias}", handle(a.deleteAlias))
	r.Get(v3+"/rooms/{roomId}/aliases", handle(a.roomAliases))
	r.Post(v3+"/publicRooms", handleJSON(a, true, a.publicRoomsPost))
	r.Put(v3+"/directory/list/room/{roomId}", handleJSON(a, false, a.putVisibility))
	r.Post(v3+"/rooms/{roomId}/upgrade", handleJSON(a, false, a.upgradeRoom))
}

// openDirectoryRoutes are the directory reads the spec allows without a
// token (an invalid token is still refused).
func (a *API) openDirectoryRoutes(r routeAdder) {
	const v3 = "/_matrix/client/v3"
	r.Get(v3+"/directory/room/{roomAlias}", handle(a.getAlias))
	r.Get(v3+"/publicRooms", handle(a.publicRoomsGet))
	r.Get(v3+"/directory/list/room/{roomId}", handle(a.getVisibility))
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
func (a *API) createRoom(r *http.Request, body *createRoomBody) (any, error) {
	if len(body.Invite3PID) > 0 {
		return nil, mxerr.New(mxerr.InvalidParam, "Third-party invites are not supported: this server has no identity server")
	}
	roomID, err := a.rooms.CreateRoom(r.Context(), session(r).UserID, roomserver.CreateRoomRequest{
		Visibility: body.Visibility, RoomAliasName: body.RoomAliasName, Name: body.Name, Topic: body.Topic,
		Invite: body.Invite, IsDirect: body.IsDirect, InitialState: body.InitialState, CreationContent: body.CreationContent,
		PowerLevelContentOverride: body.PowerLevelContentOverride, RoomVersion: body.RoomVersion, Preset: body.Preset,
	})
	return map[string]string{"room_id": roomID}, err
}

type membershipBody struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason"`
}

// joinByIDOrAlias joins a room named by ID or alias. Spec: POST /join/{roomIdOrAlias}.
func (a *API) joinByIDOrAlias(r *http.Request, body *membershipBody) (any, error) {
	return a.join(r, pathParam(r, "roomIdOrAlias"), body)
}

// joinRoom joins a room by ID. Spec: POST /rooms/{roomId}/join.
func (a *API) joinRoom(r *http.Request, body *membershipBody) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	return a.join(r, roomID, body)
}

func (a *API) join(r *http.Request, idOrAlias string, body *membershipBody) (any, error) {
	roomID, err := a.rooms.Join(r.Context(), roomserver.MembershipRequest{Sender: session(r).UserID, RoomID: idOrAlias, Reason: body.Reason, Via: viaServers(r)})
	return map[string]string{"room_id": roomID}, err
}

// viaServers are the servers that may help to join or knock on a room this
// server is not in: "via" (v1.12+) and its older name "server_name".
func viaServers(r *http.Request) []string {
	return append(r.URL.Query()["via"], r.URL.Query()["server_name"]...)
}

// knock asks to join a knock room. Spec: POST /knock/{roomIdOrAlias}.
func (a *API) knock(r *http.Request, body *membershipBody) (any, error) {
	roomID, err := a.rooms.Knock(r.Context(), roomserver.MembershipRequest{Sender: session(r).UserID, RoomID: pathParam(r, "roomIdOrAlias"), Reason: body.Reason, Via: viaServers(r)})
	return map[string]string{"room_id": roomID}, err
}

// membershipAction serves leave, invite, kick, ban and unban.
// Spec: POST /rooms/{roomId}/{leave,invite,kick,ban,unban}.
func (a *API) membershipAction(action string) func(r *http.Request, body *membershipBody) (any, error) {
	return func(r *http.Request, body *membershipBody) (any, error) {
		roomID, err := roomIDParam(r)
		if err != nil {
			return nil, err
		}
		if action != "leave" && body.UserID == "" {
			return nil, mxerr.New(mxerr.BadJSON, "user_id is required")
		}
		req := roomserver.MembershipRequest{Sender: session(r).UserID, RoomID: roomID, Target: body.UserID, Reason: body.Reason}
		do := map[string]func(context.Context, roomserver.MembershipRequest) error{
			"leave": a.rooms.Leave, "invite": a.rooms.Invite, "kick": a.rooms.Kick, "ban": a.rooms.Ban, "unban": a.rooms.Unban,
		}[action]
		return empty, do(r.Context(), req)
	}
}

// forget forgets a left room. Spec: POST /rooms/{roomId}/forget.
func (a *API) forget(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	return empty, a.rooms.Forget(r.Context(), session(r).UserID, roomID)
}

// sendMessage sends a message event. Spec: PUT /rooms/{roomId}/send/{eventType}/{txnId}.
func (a *API) sendMessage(r *http.Request, body *json.RawMessage) (any, error) {
	return a.send(r, *body, nil, pathParam(r, "txnId"))
}

// putState sets a piece of state. Spec: PUT /rooms/{roomId}/state/{eventType}/{stateKey}.
func (a *API) putState(r *http.Request, body *json.RawMessage) (any, error) {
	key := pathParam(r, "stateKey")
	return a.send(r, *body, &key, "")
}

func (a *API) send(r *http.Request, content json.RawMessage, stateKey *string, txnID string) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	s := session(r)
	id, err := a.rooms.Send(r.Context(), roomserver.SendRequest{
		UserID: s.UserID, DeviceID: s.DeviceID, RoomID: roomID, Type: pathParam(r, "eventType"),
		StateKey: stateKey, Content: content, TxnID: txnID,
	})
	return map[string]string{"event_id": id}, err
}

type redactBody struct {
	Reason string `json:"reason"`
}

// redact redacts an event. Spec: PUT /rooms/{roomId}/redact/{eventId}/{txnId}.
func (a *API) redact(r *http.Request, body *redactBody) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	s := session(r)
	id, err := a.rooms.Redact(r.Context(), roomserver.RedactRequest{
		UserID: s.UserID, DeviceID: s.DeviceID, RoomID: roomID, EventID: pathParam(r, "eventId"), Reason: body.Reason, TxnID: pathParam(r, "txnId"),
	})
	return map[string]string{"event_id": id}, err
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
