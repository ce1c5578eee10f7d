package roomserver

import (
	"context"
	"encoding/json"
	"errors"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// SendRequest is a client's message or state event.
type SendRequest struct {
	UserID   string
	DeviceID string
	RoomID   string
	Type     string
	StateKey *string // nil: a message event
	Content  json.RawMessage
	TxnID    string // "" for state events, which are not transactional
}

// maxEventBytes is the spec's size limit on a whole event (PDU).
const maxEventBytes = 65536

// Send appends a message or state event from a local user. A message with
// a transaction ID already used by this device returns the first event ID
// and changes nothing. Spec: PUT /rooms/{roomId}/send/{eventType}/{txnId},
// PUT /rooms/{roomId}/state/{eventType}/{stateKey}.
func (r *Roomserver) Send(ctx context.Context, req SendRequest) (string, error) {
	// The transaction ID is not looked up first: the common case is a new
	// transaction, and a repeated one is caught by the unique key when the
	// event is stored (the transaction then rolls back and the first event
	// is returned). That saves a round trip on every send.
	if err := checkEventType(req.Type); err != nil {
		return "", err
	}
	if req.StateKey != nil && len(*req.StateKey) > 255 {
		return "", mxerr.New(mxerr.InvalidParam, "State keys are limited to 255 bytes")
	}
	if len(req.Content) > maxEventBytes {
		return "", mxerr.New(mxerr.TooLarge, "The content is %d bytes; events are limited to %d", len(req.Content), maxEventBytes)
	}
	if req.StateKey != nil {
		if err := validateStateContent(req.Type, req.Content); err != nil {
			return "", err
		}
	}
	if req.Type == "m.room.redaction" {
		return "", mxerr.New(mxerr.BadJSON, "Use PUT /rooms/{roomId}/redact/{eventId}/{txnId} to redact")
	}
	var eventID string
	err := r.inTx(ctx, func(q *txn) error {
		w, err := r.openWriter(ctx, q, req.RoomID)
		if err != nil {
			return err
		}
		if r.cfg.RefusePlaintextInEncrypted && req.Type == "m.room.message" && req.StateKey == nil {
			if _, encrypted := w.state.state[stateKey{"m.room.encryption", ""}]; encrypted {
				return mxerr.New(mxerr.BadJSON, "This room is encrypted: send m.room.encrypted events, not plaintext m.room.message")
			}
		}
		if req.Type == "m.room.canonical_alias" && req.StateKey != nil && *req.StateKey == "" {
			if err := r.checkCanonicalAlias(ctx, q.Queries, req.RoomID, req.Content); err != nil {
				return err
			}
		}
		var txn *sqlstore.ClientTxn
		if req.TxnID != "" {
			t := sendTxn(req, r.now().UnixMilli())
			txn = &t
		}
		a, err := w.appendWithTxn(ctx, proto{Sender: req.UserID, Type: req.Type, StateKey: req.StateKey, Content: req.Content}, txn)
		if err != nil {
			return r.explainRefusal(ctx, w, req.UserID, req.Type, req.StateKey != nil, err)
		}
		eventID = a.Event.EventID()
		return nil
	})
	if err != nil && req.TxnID != "" {
		// A retry of a stored transaction (possibly refused now, e.g. the
		// user left since): its first event is the answer.
		if id, lookupErr := r.store.ClientTxnEvent(ctx, sendTxn(req, 0)); lookupErr == nil {
			return id, nil
		}
	}
	if err != nil {
		return "", err
	}
	return eventID, nil
}

// RedactRequest asks to redact an event. Spec: PUT /rooms/{roomId}/redact/{eventId}/{txnId}.
type RedactRequest struct {
	UserID   string
	DeviceID string
	RoomID   string
	EventID  string
	Reason   string
	TxnID    string
}

// Redact sends an m.room.redaction for an event of the room. The sender may
// redact their own events, or anyone's with the power level "redact".
func (r *Roomserver) Redact(ctx context.Context, req RedactRequest) (string, error) {
	scoped := sqlstore.ClientTxn{UserID: req.UserID, DeviceID: req.DeviceID, Scope: "redact " + req.RoomID + " " + req.EventID, TxnID: req.TxnID}
	if id, err := r.store.ClientTxnEvent(ctx, scoped); err == nil {
		return id, nil
	} else if !errors.Is(err, sqlstore.ErrNotFound) {
		return "", err
	}
	var eventID string
	err := r.inTx(ctx, func(q *txn) error {
		w, err := r.openWriter(ctx, q, req.RoomID)
		if err != nil {
			return err
		}
		target, err := q.EventByID(ctx, req.EventID)
		if errors.Is(err, sqlstore.ErrNotFound) || (err == nil && target.RoomID != req.RoomID) {
			return mxerr.New(mxerr.NotFound, "Event %s is not in room %s", req.EventID, req.RoomID)
		}
		if err != nil {
			return err
		}
		if membership, err := w.membership(ctx, req.UserID); err != nil {
			return err
		} else if membership != "join" {
			return mxerr.New(mxerr.Forbidden, "You are not joined to room %s", req.RoomID)
		}
		if target.Sender != req.UserID {
			level, err := w.userLevel(ctx, req.UserID)
			if err != nil {
				return err
			}
			pl, err := w.powerLevels(ctx)
			if err != nil {
				return err
			}
			if level < pl.Redact {
				return mxerr.New(mxerr.Forbidden, "Redacting other users' events needs power level %d; you have %d", pl.Redact, level)
			}
		}
		c := map[string]any{}
		if req.Reason != "" {
			c["reason"] = req.Reason
		}
		p := proto{Sender: req.UserID, Type: "m.room.redaction"}
		if versionNumber(w.room.RoomVersion) >= 11 {
			c["redacts"] = req.EventID
		} else {
			p.Redacts = req.EventID
		}
		p.Content = content(c)
		txn := scoped
		txn.CreatedTS = r.now().UnixMilli()
		a, err := w.appendWithTxn(ctx, p, &txn)
		if err != nil {
			return r.explainRefusal(ctx, w, req.UserID, p.Type, false, err)
		}
		eventID = a.Event.EventID()
		return nil
	})
	if errors.Is(err, sqlstore.ErrConflict) {
		return r.store.ClientTxnEvent(ctx, scoped)
	}
	return eventID, err
}

// explainRefusal turns an auth-rule refusal into the error a client can act
// on: not a member, or the power level that was needed.
func (r *Roomserver) explainRefusal(ctx context.Context, w *writer, userID, evType string, isState bool, cause error) error {
	e, ok := mxerr.As(cause)
	if !ok || e.Code != mxerr.Forbidden {
		return cause
	}
	membership, err := w.membership(ctx, userID)
	if err != nil {
		return cause
	}
	if membership != "join" {
		return mxerr.New(mxerr.Forbidden, "You are not joined to room %s (your membership is %q)", w.room.RoomID, membership)
	}
	pl, err := w.powerLevels(ctx)
	if err != nil {
		return cause
	}
	level, err := w.userLevel(ctx, userID)
	if err != nil {
		return cause
	}
	if needed := pl.EventLevel(evType, isState); level < needed {
		return mxerr.New(mxerr.Forbidden, "Sending %s in this room needs power level %d; you have %d", evType, needed, level)
	}
	return cause
}

// sendTxn is a send's transaction, scoped to its endpoint: the room and the
// event type of the path (spec: "Transaction identifiers").
func sendTxn(req SendRequest, now int64) sqlstore.ClientTxn {
	return sqlstore.ClientTxn{UserID: req.UserID, DeviceID: req.DeviceID, Scope: "send " + req.RoomID + " " + req.Type, TxnID: req.TxnID, CreatedTS: now}
}

// checkEventType refuses empty or oversized event types.
func checkEventType(t string) error {
	if t == "" || len(t) > 255 {
		return mxerr.New(mxerr.InvalidParam, "The event type must be 1 to 255 bytes long")
	}
	return nil
}

// checkCanonicalAlias checks that every alias of an m.room.canonical_alias
// exists and points at this room (spec: m.room.canonical_alias, M_BAD_ALIAS).
func (r *Roomserver) checkCanonicalAlias(ctx context.Context, q *sqlstore.Queries, roomID string, raw json.RawMessage) error {
	var c struct {
		Alias      string   `json:"alias"`
		AltAliases []string `json:"alt_aliases"`
	}
	_ = json.Unmarshal(raw, &c)
	all := c.AltAliases
	if c.Alias != "" {
		all = append([]string{c.Alias}, all...)
	}
	for _, a := range all {
		target, _, err := q.ResolveAlias(ctx, a)
		if errors.Is(err, sqlstore.ErrNotFound) || (err == nil && target != roomID) {
			return mxerr.New(mxerr.BadAlias, "The alias %s does not point to this room", a)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
