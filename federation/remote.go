package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"chappe/allowlist"
	"chappe/mxerr"
	"chappe/roomserver"
)

// Remote is the roomserver's view of other servers (roomserver.Remote): one
// method per request, each a single Client.Do, so every one of them passes
// the allowlist gate, the backoff, discovery and signing in the same order.
// Spec: server-server-api.md.
type Remote struct {
	c *Client
}

// NewRemote wraps the client for the roomserver.
func NewRemote(c *Client) *Remote { return &Remote{c: c} }

var _ roomserver.Remote = (*Remote)(nil)

// fedPath joins the federation prefix and escaped path segments.
func fedPath(prefix string, segments ...string) string {
	p := prefix
	for _, s := range segments {
		p += "/" + url.PathEscape(s)
	}
	return p
}

// do runs one request and turns its failure into a Matrix error for the
// roomserver (see MatrixError).
func (r *Remote) do(ctx context.Context, req Request, out any) error {
	return MatrixError(req.Destination, r.c.Do(ctx, req, out))
}

// MatrixError turns the failure of a request to server, as Client.Do
// reports it, into the Matrix error our own client sees; nil stays nil. In
// order:
//   - a Matrix error passes as is;
//   - federation switched off (ErrDisabled) and a server outside the
//     allowlist are 403 M_FORBIDDEN, saying why (design: "client API:
//     requests naming an unlisted server fail with M_FORBIDDEN and a
//     message that says why");
//   - the remote server's own 4xx Matrix error passes through with its
//     status (a 404 M_NOT_FOUND stays one), except 401: a refusal of our
//     server's signature is not the client's token, and a 401
//     M_UNKNOWN_TOKEN would log the client out;
//   - anything else (unreachable, backed off, 5xx, a bad answer) is 502.
func MatrixError(server string, err error) error {
	if err == nil {
		return nil
	}
	if e, ok := mxerr.As(err); ok {
		return e
	}
	var notAllowed *allowlist.NotAllowedError
	var remote *RemoteError
	var backedOff *BackoffError
	switch {
	case errors.Is(err, ErrDisabled):
		return mxerr.New(mxerr.Forbidden, "%s is another server and federation is switched off on this server", server)
	case errors.As(err, &notAllowed):
		return mxerr.New(mxerr.Forbidden, "%s is outside the federation: %v", server, notAllowed)
	case errors.As(err, &remote) && remote.ErrCode != "" && remote.Status < 500 && remote.Status != http.StatusUnauthorized &&
		!isTokenError(remote.ErrCode):
		return mxerr.New(mxerr.Code(remote.ErrCode), "%s answered: %s", remote.Destination, remote.Message).WithStatus(remote.Status)
	case errors.As(err, &backedOff):
		return mxerr.New(mxerr.Unknown, "%s failed recently and is not called again before %s", server,
			backedOff.Until.UTC().Format(time.RFC3339)).WithStatus(http.StatusBadGateway)
	}
	return mxerr.New(mxerr.Unknown, "%v", err).WithStatus(http.StatusBadGateway)
}

// isTokenError tells the error codes about an access token: from another
// server they are about our server's signature, never the client's token,
// and passed on they would log the client out.
func isTokenError(code string) bool {
	return code == string(mxerr.UnknownToken) || code == string(mxerr.MissingToken)
}

// MakeJoin is GET /_matrix/federation/v1/make_join/{roomId}/{userId}.
func (r *Remote) MakeJoin(ctx context.Context, server, roomID, userID string, versions []string) (roomserver.MakeMembershipResponse, error) {
	q := url.Values{}
	for _, v := range versions {
		q.Add("ver", v)
	}
	var out roomserver.MakeMembershipResponse
	err := r.do(ctx, Request{Destination: server, Method: http.MethodGet, Path: fedPath("/_matrix/federation/v1/make_join", roomID, userID), Query: q}, &out)
	return out, err
}

// SendJoin is PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}.
func (r *Remote) SendJoin(ctx context.Context, server, roomID, eventID string, event json.RawMessage) (roomserver.SendJoinResponse, error) {
	var out roomserver.SendJoinResponse
	err := r.do(ctx, Request{Destination: server, Method: http.MethodPut, Path: fedPath("/_matrix/federation/v2/send_join", roomID, eventID), Body: event}, &out)
	return out, err
}

// MakeLeave is GET /_matrix/federation/v1/make_leave/{roomId}/{userId}.
func (r *Remote) MakeLeave(ctx context.Context, server, roomID, userID string) (roomserver.MakeMembershipResponse, error) {
	var out roomserver.MakeMembershipResponse
	err := r.do(ctx, Request{Destination: server, Method: http.MethodGet, Path: fedPath("/_matrix/federation/v1/make_leave", roomID, userID)}, &out)
	return out, err
}

// SendLeave is PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}.
func (r *Remote) SendLeave(ctx context.Context, server, roomID, eventID string, event json.RawMessage) error {
	return r.do(ctx, Request{Destination: server, Method: http.MethodPut, Path: fedPath("/_matrix/federation/v2/send_leave", roomID, eventID), Body: event}, nil)
}

// MakeKnock is GET /_matrix/federation/v1/make_knock/{roomId}/{userId}.
func (r *Remote) MakeKnock(ctx context.Context, server, roomID, userID string, versions []string) (roomserver.MakeMembershipResponse, error) {
	var out roomserver.MakeMembershipResponse
	err := r.do(ctx, Request{Destination: server, Method: http.MethodGet, Path: fedPath("/_matrix/federation/v1/make_knock", roomID, userID),
		Query: url.Values{"ver": versions}}, &out)
	return out, err
}

// SendKnock is PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId};
// it returns the answer's knock_room_state.
func (r *Remote) SendKnock(ctx context.Context, server, roomID, eventID string, event json.RawMessage) ([]json.RawMessage, error) {
	var out struct {
		KnockRoomState []json.RawMessage `json:"knock_room_state"`
	}
	err := r.do(ctx, Request{Destination: server, Method: http.MethodPut, Path: fedPath("/_matrix/federation/v1/send_knock", roomID, eventID), Body: event}, &out)
	return out.KnockRoomState, err
}

// Invite is PUT /_matrix/federation/v2/invite/{roomId}/{eventId}.
func (r *Remote) Invite(ctx context.Context, server, roomID, eventID, roomVersion string, event json.RawMessage, inviteRoomState []json.RawMessage) (json.RawMessage, error) {
	body := map[string]any{"room_version": roomVersion, "event": event, "invite_room_state": inviteRoomState}
	var out struct {
		Event json.RawMessage `json:"event"`
	}
	err := r.do(ctx, Request{Destination: server, Method: http.MethodPut, Path: fedPath("/_matrix/federation/v2/invite", roomID, eventID), Body: body}, &out)
	return out.Event, err
}

// Event is GET /_matrix/federation/v1/event/{eventId}: a transaction
// holding the one event.
func (r *Remote) Event(ctx context.Context, server, eventID string) (json.RawMessage, error) {
	var out struct {
		PDUs []json.RawMessage `json:"pdus"`
	}
	if err := r.do(ctx, Request{Destination: server, Method: http.MethodGet, Path: fedPath("/_matrix/federation/v1/event", eventID)}, &out); err != nil {
		return nil, err
	}
	if len(out.PDUs) != 1 {
		return nil, mxerr.New(mxerr.Unknown, "%s answered %d events for event %s", server, len(out.PDUs), eventID).WithStatus(http.StatusBadGateway)
	}
	return out.PDUs[0], nil
}

// StateIDs is GET /_matrix/federation/v1/state_ids/{roomId}?event_id=.
func (r *Remote) StateIDs(ctx context.Context, server, roomID, eventID string) ([]string, []string, error) {
	var out struct {
		PDUIDs       []string `json:"pdu_ids"`
		AuthChainIDs []string `json:"auth_chain_ids"`
	}
	err := r.do(ctx, Request{Destination: server, Method: http.MethodGet, Path: fedPath("/_matrix/federation/v1/state_ids", roomID),
		Query: url.Values{"event_id": {eventID}}}, &out)
	return out.PDUIDs, out.AuthChainIDs, err
}

// MissingEvents is POST /_matrix/federation/v1/get_missing_events/{roomId}.
func (r *Remote) MissingEvents(ctx context.Context, server, roomID string, earliest, latest []string, limit int, minDepth int64) ([]json.RawMessage, error) {
	body := map[string]any{"earliest_events": earliest, "latest_events": latest, "limit": limit, "min_depth": minDepth}
	var out struct {
		Events []json.RawMessage `json:"events"`
	}
	err := r.do(ctx, Request{Destination: server, Method: http.MethodPost, Path: fedPath("/_matrix/federation/v1/get_missing_events", roomID), Body: body}, &out)
	return out.Events, err
}

// Backfill is GET /_matrix/federation/v1/backfill/{roomId}?v=…&limit=….
func (r *Remote) Backfill(ctx context.Context, server, roomID string, from []string, limit int) ([]json.RawMessage, error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	for _, id := range from {
		q.Add("v", id)
	}
	var out struct {
		PDUs []json.RawMessage `json:"pdus"`
	}
	err := r.do(ctx, Request{Destination: server, Method: http.MethodGet, Path: fedPath("/_matrix/federation/v1/backfill", roomID), Query: q}, &out)
	return out.PDUs, err
}

// TimestampToEvent is GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts=…&dir=f|b.
func (r *Remote) TimestampToEvent(ctx context.Context, server, roomID string, ts int64, forwards bool) (string, int64, error) {
	dir := "b"
	if forwards {
		dir = "f"
	}
	var out struct {
		EventID        string `json:"event_id"`
		OriginServerTS int64  `json:"origin_server_ts"`
	}
	err := r.do(ctx, Request{Destination: server, Method: http.MethodGet, Path: fedPath("/_matrix/federation/v1/timestamp_to_event", roomID),
		Query: url.Values{"ts": {strconv.FormatInt(ts, 10)}, "dir": {dir}}}, &out)
	return out.EventID, out.OriginServerTS, err
}

// QueryAlias is GET /_matrix/federation/v1/query/directory?room_alias=.
func (r *Remote) QueryAlias(ctx context.Context, server, alias string) (string, []string, error) {
	var out struct {
		RoomID  string   `json:"room_id"`
		Servers []string `json:"servers"`
	}
	err := r.do(ctx, Request{Destination: server, Method: http.MethodGet, Path: "/_matrix/federation/v1/query/directory",
		Query: url.Values{"room_alias": {alias}}}, &out)
	return out.RoomID, out.Servers, err
}

// SendTransaction is the senders' Transport: PUT /send/{txnId} with the
// PDUs and EDUs of one batch. It returns each PDU's error ("" when the
// receiver accepted it). Spec: server-server-api.md, "Transactions".
func (r *Remote) SendTransaction(ctx context.Context, dest, txnID string, pdus []json.RawMessage, edus []EDU) (map[string]string, error) {
	body, err := TransactionBody(r.c.cfg.ServerName, time.Now(), pdus, edus)
	if err != nil {
		return nil, err
	}
	var out struct {
		PDUs map[string]struct {
			Error string `json:"error"`
		} `json:"pdus"`
	}
	if err := r.c.Do(ctx, Request{Destination: dest, Method: http.MethodPut, Path: fedPath("/_matrix/federation/v1/send", txnID), Body: json.RawMessage(body)}, &out); err != nil {
		return nil, err
	}
	results := make(map[string]string, len(out.PDUs))
	for id, res := range out.PDUs {
		results[id] = res.Error
	}
	return results, nil
}
