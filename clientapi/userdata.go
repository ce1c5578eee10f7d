package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"chappe/ephemeral"
	"chappe/mxerr"
	"chappe/mxhttp"
	"chappe/userdir"
	"chappe/voip"
)

// AccountData is what the client API needs from the account data component.
type AccountData interface {
	Get(ctx context.Context, userID, roomID, evType string) (json.RawMessage, error)
	Put(ctx context.Context, userID, roomID, evType string, content json.RawMessage) error
}

// Receipts is what the client API needs from the receipts component.
type Receipts interface {
	PostReceipt(ctx context.Context, userID, roomID, receiptType, eventID string, threadID *string) error
	SetReadMarkers(ctx context.Context, userID, roomID string, m ephemeral.ReadMarkers) error
}

// Typing is what the client API needs from the typing component.
type Typing interface {
	PutTyping(ctx context.Context, userID, roomID string, typing bool, timeoutMs int64) error
}

// Presence is what the client API needs from the presence component.
type Presence interface {
	PutStatus(ctx context.Context, userID, state string, statusMsg *string) error
	GetStatus(ctx context.Context, viewer, userID string) (ephemeral.Status, error)
}

// UserDirectory is what the client API needs from the user directory.
type UserDirectory interface {
	Search(ctx context.Context, searcher, term string, limit int) (userdir.Result, error)
}

// TURN is what the client API needs to hand out TURN credentials.
type TURN interface {
	ForUser(userID string) (voip.Credentials, bool)
}

// userDataRoutes are the per-user and ephemeral endpoints around /sync, all
// authenticated.
func (a *API) userDataRoutes(r routeAdder) {
	const v3 = "/_matrix/client/v3"
	r.Get(v3+"/user/{userId}/account_data/{type}", handle(a.getAccountData))
	r.Put(v3+"/user/{userId}/account_data/{type}", handle(a.putAccountData))
	r.Get(v3+"/user/{userId}/rooms/{roomId}/account_data/{type}", handle(a.getAccountData))
	r.Put(v3+"/user/{userId}/rooms/{roomId}/account_data/{type}", handle(a.putAccountData))
	r.Post(v3+"/rooms/{roomId}/receipt/{receiptType}/{eventId}", handleJSON(a, true, a.postReceipt))
	r.Post(v3+"/rooms/{roomId}/read_markers", handleJSON(a, true, a.readMarkers))
	r.Put(v3+"/rooms/{roomId}/typing/{userId}", handleJSON(a, false, a.putTyping))
	r.Put(v3+"/presence/{userId}/status", handleJSON(a, false, a.putPresence))
	r.Get(v3+"/presence/{userId}/status", handle(a.getPresence))
	r.Post(v3+"/user_directory/search", handleJSON(a, false, a.searchUsers))
	r.Get(v3+"/voip/turnServer", handle(a.turnServer))
	r.Get(v3+"/thirdparty/protocols", handle(a.thirdPartyProtocols))
}

// ownUserParam is the {userId} route parameter, which must be the caller.
func ownUserParam(r *http.Request, what string) (string, error) {
	userID := pathParam(r, "userId")
	if userID != session(r).UserID {
		return "", mxerr.New(mxerr.Forbidden, "You cannot %s of another user", what)
	}
	return userID, nil
}

// accountDataScope is the owner and room ("" for global) of an account data route.
func accountDataScope(r *http.Request, what string) (userID, roomID string, err error) {
	if userID, err = ownUserParam(r, what); err != nil {
		return "", "", err
	}
	if pathParam(r, "roomId") != "" {
		if roomID, err = roomIDParam(r); err != nil {
			return "", "", err
		}
	}
	return userID, roomID, nil
}

// getAccountData: GET /user/{userId}[/rooms/{roomId}]/account_data/{type}.
func (a *API) getAccountData(r *http.Request) (any, error) {
	userID, roomID, err := accountDataScope(r, "read the account data")
	if err != nil {
		return nil, err
	}
	return a.accountData.Get(r.Context(), userID, roomID, pathParam(r, "type"))
}

// putAccountData: PUT /user/{userId}[/rooms/{roomId}]/account_data/{type};
// the body is the content, kept as sent.
func (a *API) putAccountData(r *http.Request) (any, error) {
	userID, roomID, err := accountDataScope(r, "set the account data")
	if err != nil {
		return nil, err
	}
	body, err := mxhttp.ReadBody(r, a.cfg.MaxRequestBytes)
	if err != nil {
		return nil, err
	}
	var probe map[string]json.RawMessage
	if err := mxhttp.UnmarshalObject(body, false, &probe); err != nil {
		return nil, err
	}
	return empty, a.accountData.Put(r.Context(), userID, roomID, pathParam(r, "type"), body)
}

type receiptBody struct {
	ThreadID json.RawMessage `json:"thread_id"`
}

// postReceipt: POST /rooms/{roomId}/receipt/{receiptType}/{eventId}.
func (a *API) postReceipt(r *http.Request, body *receiptBody) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var threadID *string
	if raw := strings.TrimSpace(string(body.ThreadID)); raw != "" && raw != "null" {
		var s string
		if json.Unmarshal(body.ThreadID, &s) != nil {
			return nil, mxerr.New(mxerr.InvalidParam, "thread_id field must be a non-empty string")
		}
		threadID = &s
	}
	return empty, a.receipts.PostReceipt(r.Context(), session(r).UserID, roomID,
		pathParam(r, "receiptType"), pathParam(r, "eventId"), threadID)
}

type readMarkersBody struct {
	FullyRead   string `json:"m.fully_read"`
	Read        string `json:"m.read"`
	ReadPrivate string `json:"m.read.private"`
}

// readMarkers: POST /rooms/{roomId}/read_markers.
func (a *API) readMarkers(r *http.Request, body *readMarkersBody) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	return empty, a.receipts.SetReadMarkers(r.Context(), session(r).UserID, roomID, ephemeral.ReadMarkers{
		FullyRead: body.FullyRead, Read: body.Read, ReadPrivate: body.ReadPrivate,
	})
}

type typingBody struct {
	Typing  *bool  `json:"typing"`
	Timeout *int64 `json:"timeout"`
}

// putTyping: PUT /rooms/{roomId}/typing/{userId}.
func (a *API) putTyping(r *http.Request, body *typingBody) (any, error) {
	userID, err := ownUserParam(r, "set the typing notifications")
	if err != nil {
		return nil, err
	}
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	if body.Typing == nil {
		return nil, mxerr.New(mxerr.BadJSON, "typing is required")
	}
	var timeout int64
	if body.Timeout != nil {
		timeout = *body.Timeout
	}
	return empty, a.typing.PutTyping(r.Context(), userID, roomID, *body.Typing, timeout)
}

type presenceBody struct {
	Presence  *string `json:"presence"`
	StatusMsg *string `json:"status_msg"`
}

// putPresence: PUT /presence/{userId}/status.
func (a *API) putPresence(r *http.Request, body *presenceBody) (any, error) {
	userID, err := ownUserParam(r, "set the presence")
	if err != nil {
		return nil, err
	}
	if body.Presence == nil {
		return nil, mxerr.New(mxerr.BadJSON, "presence is required")
	}
	return empty, a.presence.PutStatus(r.Context(), userID, *body.Presence, body.StatusMsg)
}

// getPresence: GET /presence/{userId}/status.
func (a *API) getPresence(r *http.Request) (any, error) {
	userID := pathParam(r, "userId")
	if !strings.HasPrefix(userID, "@") || !strings.Contains(userID, ":") {
		return nil, mxerr.New(mxerr.InvalidParam, "%q is not a user ID", userID)
	}
	return a.presence.GetStatus(r.Context(), session(r).UserID, userID)
}

type searchUsersBody struct {
	SearchTerm *string `json:"search_term"`
	Limit      *int    `json:"limit"`
}

// searchUsers: POST /user_directory/search.
func (a *API) searchUsers(r *http.Request, body *searchUsersBody) (any, error) {
	if body.SearchTerm == nil {
		return nil, mxerr.New(mxerr.BadJSON, "search_term is required")
	}
	limit := 0 // the directory's default
	if body.Limit != nil {
		if limit = *body.Limit; limit < 1 {
			return nil, mxerr.New(mxerr.InvalidParam, "limit must be at least 1, got %d", limit)
		}
	}
	return a.userDir.Search(r.Context(), session(r).UserID, *body.SearchTerm, limit)
}

// turnServer: GET /voip/turnServer; {} when no TURN server is configured.
func (a *API) turnServer(r *http.Request) (any, error) {
	if creds, ok := a.turn.ForUser(session(r).UserID); ok {
		return creds, nil
	}
	return empty, nil
}

// thirdPartyProtocols: GET /thirdparty/protocols. Chappe bridges to no
// third-party network.
func (a *API) thirdPartyProtocols(*http.Request) (any, error) {
	return empty, nil
}
