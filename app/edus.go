package app

import (
	"context"

	"chappe/e2ee"
	"chappe/ephemeral"
	"chappe/federation"
)

// eduReceiver hands the EDUs other servers send to the components that own
// them: typing, receipts and presence (ephemeral), to-device messages and
// device lists (e2ee). The federation package has checked each EDU's shape
// and that it speaks only for users of its origin.
type eduReceiver struct {
	eph  *ephemeral.Service
	keys *e2ee.Service
}

var _ federation.EDUReceiver = eduReceiver{}

func (r eduReceiver) ReceiveTyping(ctx context.Context, roomID, userID string, typing bool) error {
	return r.eph.Typing.ReceiveTyping(ctx, roomID, userID, typing)
}

func (r eduReceiver) ReceiveReceipt(ctx context.Context, roomID, userID, receiptType, eventID, threadID string, ts int64) error {
	return r.eph.Receipts.ReceiveReceipt(ctx, roomID, userID, receiptType, eventID, threadID, ts)
}

func (r eduReceiver) ReceivePresence(ctx context.Context, u ephemeral.PresenceUpdate) error {
	return r.eph.Presence.ReceivePresence(ctx, u)
}

func (r eduReceiver) ReceiveToDevice(ctx context.Context, origin string, m e2ee.DirectToDevice) error {
	return r.keys.ReceiveToDevice(ctx, origin, m)
}

func (r eduReceiver) ReceiveDeviceListUpdate(ctx context.Context, origin string, u e2ee.DeviceListUpdate) error {
	return r.keys.ReceiveDeviceListUpdate(ctx, origin, u)
}

func (r eduReceiver) ReceiveSigningKeyUpdate(ctx context.Context, origin string, u e2ee.SigningKeyUpdate) error {
	return r.keys.ReceiveSigningKeyUpdate(ctx, origin, u)
}
