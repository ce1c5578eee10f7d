package federation

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/rs/zerolog"

	"chappe/e2ee"
	"chappe/ephemeral"
	"chappe/mxerr"
)

// This file receives the EDUs of a transaction (PUT /send/{txnId}, after
// its PDUs): each is parsed, checked at the border and handed to its
// component through EDUReceiver. Spec: server-server-api.md, "EDUs",
// "Typing Notifications", "Receipts", "Presence", "Send-to-device
// messaging", "Device Management".
//
// An EDU that is malformed, of an unknown type, or that speaks for a user
// of another server than the origin is dropped and logged — a server speaks
// only for its own users (the origin is listed: the authentication
// middleware checked it), so nothing about a server outside the list comes
// in through a listed one. So is a Matrix error of a component (the EDU's
// content is refused), and any failure of a typing, receipt or presence
// EDU: those are ephemeral, the spec gives them no delivery guarantee.
//
// An internal failure (a database error) on an EDU that must arrive — a
// to-device message, which may carry a room key, or a device list or
// signing key update — fails the whole transaction instead (errEDURetry):
// PUT /send answers 500 and does not record the transaction, so the sender
// retries it (server-server-api.md, "Transactions": a transaction is
// retried until acknowledged). Applying those again is harmless: to-device
// messages are delivered once by message_id, device list updates compare
// stream IDs, signing key updates overwrite; the PDUs already stored are
// known the second time.

// EDUReceiver applies received EDUs; app wires it to the components.
type EDUReceiver interface {
	ReceiveTyping(ctx context.Context, roomID, userID string, typing bool) error
	ReceiveReceipt(ctx context.Context, roomID, userID, receiptType, eventID, threadID string, ts int64) error
	ReceivePresence(ctx context.Context, u ephemeral.PresenceUpdate) error
	ReceiveToDevice(ctx context.Context, origin string, m e2ee.DirectToDevice) error
	ReceiveDeviceListUpdate(ctx context.Context, origin string, u e2ee.DeviceListUpdate) error
	ReceiveSigningKeyUpdate(ctx context.Context, origin string, u e2ee.SigningKeyUpdate) error
}

// errForeignUser: the EDU names a user of another server than its origin.
var errForeignUser = errors.New("the EDU speaks for a user of another server than its origin")

// errMalformed: the EDU's content is not what its type requires.
var errMalformed = errors.New("malformed EDU content")

// mustArrive are the EDU types whose internal failures fail the
// transaction, so that the sender retries it.
var mustArrive = map[string]bool{
	e2ee.EDUDirectToDevice:   true,
	e2ee.EDUDeviceListUpdate: true,
	e2ee.EDUSigningKeyUpdate: true,
}

// errEDURetry wraps the internal failure of an EDU that must arrive: the
// transaction is answered 500 and not recorded.
type errEDURetry struct {
	eduType string
	err     error
}

func (e errEDURetry) Error() string { return "applying a received " + e.eduType + ": " + e.err.Error() }
func (e errEDURetry) Unwrap() error { return e.err }

// receiveEDUs hands each EDU of a transaction from origin to its component.
// It stops at the first internal failure of an EDU that must arrive and
// returns it (errEDURetry); every other failure is logged and the EDU
// dropped.
func receiveEDUs(ctx context.Context, recv EDUReceiver, origin string, edus []json.RawMessage) error {
	if recv == nil {
		return nil
	}
	for _, raw := range edus {
		var edu EDU
		err := json.Unmarshal(raw, &edu)
		if err == nil {
			err = receiveEDU(ctx, recv, origin, edu)
		}
		if err == nil {
			continue
		}
		if mustArrive[edu.Type] && isInternal(err) {
			return errEDURetry{eduType: edu.Type, err: err}
		}
		zerolog.Ctx(ctx).Warn().Err(err).Str("edu_type", edu.Type).Msg("received EDU dropped")
	}
	return nil
}

// isInternal tells a failure of ours (the database…) from a refusal of the
// EDU: bad input found here, or a Matrix error of the component.
func isInternal(err error) bool {
	var m *mxerr.Error
	return !errors.Is(err, errMalformed) && !errors.Is(err, errForeignUser) && !errors.As(err, &m)
}

// receiveEDU parses one EDU by type and applies it.
func receiveEDU(ctx context.Context, recv EDUReceiver, origin string, edu EDU) error {
	switch edu.Type {
	case ephemeral.EDUTyping:
		return receiveTyping(ctx, recv, origin, edu.Content)
	case ephemeral.EDUReceipt:
		return receiveReceipts(ctx, recv, origin, edu.Content)
	case ephemeral.EDUPresence:
		return receivePresence(ctx, recv, origin, edu.Content)
	case e2ee.EDUDirectToDevice:
		var m e2ee.DirectToDevice
		if err := decodeEDU(edu.Content, &m); err != nil || m.MessageID == "" || m.Type == "" {
			return errMalformed
		}
		if err := ownUser(origin, m.Sender); err != nil {
			return err
		}
		return recv.ReceiveToDevice(ctx, origin, m)
	case e2ee.EDUDeviceListUpdate:
		var u e2ee.DeviceListUpdate
		if err := decodeEDU(edu.Content, &u); err != nil || u.DeviceID == "" {
			return errMalformed
		}
		if err := ownUser(origin, u.UserID); err != nil {
			return err
		}
		return recv.ReceiveDeviceListUpdate(ctx, origin, u)
	case e2ee.EDUSigningKeyUpdate:
		var u e2ee.SigningKeyUpdate
		if err := decodeEDU(edu.Content, &u); err != nil {
			return errMalformed
		}
		if err := ownUser(origin, u.UserID); err != nil {
			return err
		}
		return recv.ReceiveSigningKeyUpdate(ctx, origin, u)
	}
	zerolog.Ctx(ctx).Debug().Str("edu_type", edu.Type).Msg("EDU of an unknown type ignored")
	return nil
}

// decodeEDU reads an EDU's content into out.
func decodeEDU(content json.RawMessage, out any) error {
	if len(content) == 0 {
		return errMalformed
	}
	return json.Unmarshal(content, out)
}

// ownUser refuses a user ID that is not of origin.
func ownUser(origin, userID string) error {
	if serverOfUser(userID) != origin {
		return errForeignUser
	}
	return nil
}

// receiveTyping: {"room_id", "user_id", "typing"}.
func receiveTyping(ctx context.Context, recv EDUReceiver, origin string, content json.RawMessage) error {
	var t struct {
		RoomID string `json:"room_id"`
		UserID string `json:"user_id"`
		Typing bool   `json:"typing"`
	}
	if err := decodeEDU(content, &t); err != nil || t.RoomID == "" {
		return errMalformed
	}
	if err := ownUser(origin, t.UserID); err != nil {
		return err
	}
	return recv.ReceiveTyping(ctx, t.RoomID, t.UserID, t.Typing)
}

// receiptUpdate is one user's receipt in m.receipt.
type receiptUpdate struct {
	EventIDs []string `json:"event_ids"`
	Data     struct {
		TS       int64  `json:"ts"`
		ThreadID string `json:"thread_id"`
	} `json:"data"`
}

// receiveReceipts: {room ID: {receipt type: {user ID: receiptUpdate}}}.
// A user of another server spoils the whole EDU; each receipt is applied
// on its own otherwise.
func receiveReceipts(ctx context.Context, recv EDUReceiver, origin string, content json.RawMessage) error {
	var rooms map[string]map[string]map[string]receiptUpdate
	if err := decodeEDU(content, &rooms); err != nil {
		return errMalformed
	}
	for _, types := range rooms {
		for _, users := range types {
			for userID := range users {
				if err := ownUser(origin, userID); err != nil {
					return err
				}
			}
		}
	}
	var errs []error
	for roomID, types := range rooms {
		for receiptType, users := range types {
			for userID, u := range users {
				for _, eventID := range u.EventIDs {
					errs = append(errs, recv.ReceiveReceipt(ctx, roomID, userID, receiptType, eventID, u.Data.ThreadID, u.Data.TS))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// receivePresence: {"push": [update…]}; all of origin's users, or none.
func receivePresence(ctx context.Context, recv EDUReceiver, origin string, content json.RawMessage) error {
	var p struct {
		Push []ephemeral.PresenceUpdate `json:"push"`
	}
	if err := decodeEDU(content, &p); err != nil {
		return errMalformed
	}
	for _, u := range p.Push {
		if err := ownUser(origin, u.UserID); err != nil {
			return err
		}
	}
	var errs []error
	for _, u := range p.Push {
		errs = append(errs, recv.ReceivePresence(ctx, u))
	}
	return errors.Join(errs...)
}
