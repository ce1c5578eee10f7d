package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/rs/zerolog"

	"chappe/mxerr"
	"chappe/mxhttp"
	"chappe/roomserver"
	"chappe/sqlstore"
)

// This file holds the room endpoints of the server-server API, mounted in
// the authenticated group: every handler runs after the allowlist gate and
// the request signature check, with the origin in the context (Origin).
// Spec: server-server-api.md.

// Rooms is what the room endpoints need of the roomserver.
type Rooms interface {
	ReceivePDU(ctx context.Context, origin string, raw json.RawMessage) (string, error)
	MakeMembership(ctx context.Context, origin, roomID, userID, membership string, versions []string) (roomserver.MakeMembershipResponse, error)
	SendMembership(ctx context.Context, origin, roomID, eventID, membership string, raw json.RawMessage) (roomserver.SendJoinResponse, error)
	ReceiveInvite(ctx context.Context, origin, roomID, eventID, roomVersion string, raw json.RawMessage, inviteRoomState []json.RawMessage) (json.RawMessage, error)
	EventForServer(ctx context.Context, origin, eventID string) (json.RawMessage, error)
	StateForServer(ctx context.Context, origin, roomID, eventID string) (state, authChain []gomatrixserverlib.PDU, err error)
	EventAuthForServer(ctx context.Context, origin, roomID, eventID string) ([]gomatrixserverlib.PDU, error)
	MissingEventsForServer(ctx context.Context, origin, roomID string, earliest, latest []string, limit int, minDepth int64) ([]json.RawMessage, error)
	BackfillForServer(ctx context.Context, origin, roomID string, from []string, limit int) ([]json.RawMessage, error)
	TimestampToEventForServer(ctx context.Context, origin, roomID string, ts int64, forwards bool) (string, int64, error)
	LocalAlias(ctx context.Context, alias string) (roomserver.AliasTarget, error)
}

// RoomEndpoints serves the room endpoints.
type RoomEndpoints struct {
	serverName string
	rooms      Rooms
	edus       EDUReceiver // nil: EDUs are ignored
	store      *sqlstore.Store
	maxBody    int64
	now        func() time.Time
}

// NewRoomEndpoints builds the room endpoints; the EDUs of received
// transactions go to edus (edus.go).
func NewRoomEndpoints(serverName string, rooms Rooms, edus EDUReceiver, store *sqlstore.Store, maxBody int64) *RoomEndpoints {
	return &RoomEndpoints{serverName: serverName, rooms: rooms, edus: edus, store: store, maxBody: maxBody, now: time.Now}
}

// Register mounts the endpoints (inside the authenticated group).
func (e *RoomEndpoints) Register(r chi.Router) {
	const v1, v2 = "/_matrix/federation/v1", "/_matrix/federation/v2"
	r.Put(v1+"/send/{txnId}", e.send)
	r.Get(v1+"/make_join/{roomId}/{userId}", e.makeMembership("join"))
	r.Put(v2+"/send_join/{roomId}/{eventId}", e.sendMembership("join"))
	r.Get(v1+"/make_leave/{roomId}/{userId}", e.makeMembership("leave"))
	r.Put(v2+"/send_leave/{roomId}/{eventId}", e.sendMembership("leave"))
	r.Get(v1+"/make_knock/{roomId}/{userId}", e.makeMembership("knock"))
	r.Put(v1+"/send_knock/{roomId}/{eventId}", e.sendMembership("knock"))
	r.Put(v2+"/invite/{roomId}/{eventId}", e.invite)
	r.Get(v1+"/event/{eventId}", e.event)
	r.Get(v1+"/state/{roomId}", e.state(false))
	r.Get(v1+"/state_ids/{roomId}", e.state(true))
	r.Get(v1+"/event_auth/{roomId}/{eventId}", e.eventAuth)
	r.Get(v1+"/backfill/{roomId}", e.backfill)
	r.Post(v1+"/get_missing_events/{roomId}", e.missingEvents)
	r.Get(v1+"/timestamp_to_event/{roomId}", e.timestampToEvent)
	r.Get(v1+"/query/directory", e.queryDirectory)
}

func param(r *http.Request, name string) string {
	raw := chi.URLParam(r, name)
	if v, err := url.PathUnescape(raw); err == nil {
		return v
	}
	return raw
}

// Transaction limits. Spec: PUT /send/{txnId}.
const (
	maxTxnPDUs = 50
	maxTxnEDUs = 100
	// txnMemory is how long a transaction ID is remembered.
	txnMemory = 24 * time.Hour
)

type transaction struct {
	Origin         string            `json:"origin"`
	OriginServerTS int64             `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
	EDUs           []json.RawMessage `json:"edus"`
}

type pduResult struct {
	Error string `json:"error,omitempty"`
}

// send is PUT /send/{txnId}: each PDU checked and stored on its own, with
// its result in the answer, then the EDUs (receiveEDUs); a transaction ID
// already processed is answered as the first time, without processing it
// again. An internal failure on an EDU that must arrive answers 500 without
// recording the transaction, so that it comes again (edus.go).
func (e *RoomEndpoints) send(w http.ResponseWriter, r *http.Request) {
	origin, txnID := Origin(r.Context()), param(r, "txnId")
	var txn transaction
	if err := mxhttp.DecodeJSON(r, e.maxBody, false, &txn); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	switch {
	case txn.Origin != origin:
		mxhttp.WriteError(w, r, mxerr.New(mxerr.Forbidden, "The transaction's origin %q is not the signing server %q", txn.Origin, origin))
		return
	case len(txn.PDUs) > maxTxnPDUs || len(txn.EDUs) > maxTxnEDUs:
		mxhttp.WriteError(w, r, mxerr.New(mxerr.BadJSON, "A transaction holds at most %d PDUs and %d EDUs", maxTxnPDUs, maxTxnEDUs))
		return
	}
	if prev, err := e.store.FederationTxnResponse(r.Context(), origin, txnID); err == nil {
		mxhttp.WriteJSON(w, http.StatusOK, prev)
		return
	}
	results := map[string]pduResult{}
	// Each PDU commits without waiting for the disk; recording the
	// transaction below flushes them all before we acknowledge it, and
	// only then do local clients see them (flush).
	ctx, flush := sqlstore.FlushLater(r.Context())
	for i, raw := range txn.PDUs {
		id, err := e.rooms.ReceivePDU(ctx, origin, raw)
		if id == "" {
			id = "pdu#" + strconv.Itoa(i) // an unparseable PDU has no ID to report under
		}
		if err != nil {
			results[id] = pduResult{Error: pduError(r, err)}
		} else {
			results[id] = pduResult{}
		}
	}
	if err := receiveEDUs(ctx, e.edus, origin, txn.EDUs); err != nil {
		// Not recorded: the sender retries the whole transaction.
		flush() // the stream positions taken must not stay in flight
		mxhttp.WriteError(w, r, err)
		return
	}
	resp, _ := json.Marshal(map[string]any{"pdus": results})
	now := e.now()
	err := e.store.RecordFederationTxn(r.Context(), origin, txnID, now.UnixMilli(), now.Add(-txnMemory).UnixMilli(), resp)
	flush() // whatever the outcome: the stream positions taken must not stay in flight
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, json.RawMessage(resp))
}

// pduError is a PDU's error as the sending server sees it: the Matrix
// error's message, or a generic one (logged here) for an internal failure.
func pduError(r *http.Request, err error) string {
	var e *mxerr.Error
	if errors.As(err, &e) || errors.Is(err, roomserver.ErrRejected) {
		return err.Error()
	}
	zerolog.Ctx(r.Context()).Error().Err(err).Msg("processing a received PDU")
	return "internal error while processing the event"
}

func (e *RoomEndpoints) makeMembership(membership string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		resp, err := e.rooms.MakeMembership(r.Context(), Origin(r.Context()), param(r, "roomId"), param(r, "userId"), membership, r.URL.Query()["ver"])
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		mxhttp.WriteJSON(w, http.StatusOK, resp)
	}
}

func (e *RoomEndpoints) sendMembership(membership string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		raw, err := mxhttp.ReadBody(r, e.maxBody)
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		resp, err := e.rooms.SendMembership(r.Context(), Origin(r.Context()), param(r, "roomId"), param(r, "eventId"), membership, raw)
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		switch membership {
		case "join":
			mxhttp.WriteJSON(w, http.StatusOK, resp)
		case "knock":
			mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"knock_room_state": resp.KnockRoomState})
		default:
			mxhttp.WriteJSON(w, http.StatusOK, map[string]any{})
		}
	}
}

func (e *RoomEndpoints) invite(w http.ResponseWriter, r *http.Request) {
	var body struct {
		RoomVersion     string            `json:"room_version"`
		Event           json.RawMessage   `json:"event"`
		InviteRoomState []json.RawMessage `json:"invite_room_state"`
	}
	if err := mxhttp.DecodeJSON(r, e.maxBody, false, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	signed, err := e.rooms.ReceiveInvite(r.Context(), Origin(r.Context()), param(r, "roomId"), param(r, "eventId"), body.RoomVersion, body.Event, body.InviteRoomState)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"event": signed})
}

// txnOf is the transaction shape of /event and /backfill answers.
func (e *RoomEndpoints) txnOf(pdus []json.RawMessage) map[string]any {
	if pdus == nil {
		pdus = []json.RawMessage{}
	}
	return map[string]any{"origin": e.serverName, "origin_server_ts": e.now().UnixMilli(), "pdus": pdus}
}

func (e *RoomEndpoints) event(w http.ResponseWriter, r *http.Request) {
	raw, err := e.rooms.EventForServer(r.Context(), Origin(r.Context()), param(r, "eventId"))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, e.txnOf([]json.RawMessage{raw}))
}

func (e *RoomEndpoints) state(idsOnly bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		eventID := r.URL.Query().Get("event_id")
		if eventID == "" {
			mxhttp.WriteError(w, r, mxerr.New(mxerr.MissingParam, "event_id is required"))
			return
		}
		state, chain, err := e.rooms.StateForServer(r.Context(), Origin(r.Context()), param(r, "roomId"), eventID)
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		if idsOnly {
			mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"pdu_ids": eventIDs(state), "auth_chain_ids": eventIDs(chain)})
			return
		}
		mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"pdus": eventJSONs(state), "auth_chain": eventJSONs(chain)})
	}
}

func (e *RoomEndpoints) eventAuth(w http.ResponseWriter, r *http.Request) {
	chain, err := e.rooms.EventAuthForServer(r.Context(), Origin(r.Context()), param(r, "roomId"), param(r, "eventId"))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"auth_chain": eventJSONs(chain)})
}

func (e *RoomEndpoints) backfill(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit < 1 || len(q["v"]) == 0 {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.InvalidParam, "backfill needs v (event IDs) and a positive limit"))
		return
	}
	pdus, err := e.rooms.BackfillForServer(r.Context(), Origin(r.Context()), param(r, "roomId"), q["v"], limit)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, e.txnOf(pdus))
}

// timestampToEvent is GET /timestamp_to_event/{roomId}?ts=…&dir=f|b: our
// event closest to ts that origin may see.
func (e *RoomEndpoints) timestampToEvent(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	dir := q.Get("dir")
	if err != nil || ts < 0 || (dir != "f" && dir != "b") {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.InvalidParam, "timestamp_to_event needs ts (milliseconds) and dir (f or b)"))
		return
	}
	id, originTS, err := e.rooms.TimestampToEventForServer(r.Context(), Origin(r.Context()), param(r, "roomId"), ts, dir == "f")
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"event_id": id, "origin_server_ts": originTS})
}

func (e *RoomEndpoints) missingEvents(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Earliest []string `json:"earliest_events"`
		Latest   []string `json:"latest_events"`
		Limit    int      `json:"limit"`
		MinDepth int64    `json:"min_depth"`
	}
	if err := mxhttp.DecodeJSON(r, e.maxBody, false, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if body.Limit == 0 {
		body.Limit = 10
	}
	evs, err := e.rooms.MissingEventsForServer(r.Context(), Origin(r.Context()), param(r, "roomId"), body.Earliest, body.Latest, body.Limit, body.MinDepth)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if evs == nil {
		evs = []json.RawMessage{}
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"events": evs})
}

// queryDirectory is GET /query/directory: our own aliases only.
func (e *RoomEndpoints) queryDirectory(w http.ResponseWriter, r *http.Request) {
	alias := r.URL.Query().Get("room_alias")
	if alias == "" {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.MissingParam, "room_alias is required"))
		return
	}
	target, err := e.rooms.LocalAlias(r.Context(), alias)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, target)
}

func eventIDs(evs []gomatrixserverlib.PDU) []string {
	out := make([]string, 0, len(evs))
	for _, ev := range evs {
		out = append(out, ev.EventID())
	}
	return out
}

func eventJSONs(evs []gomatrixserverlib.PDU) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(evs))
	for _, ev := range evs {
		out = append(out, ev.JSON())
	}
	return out
}
