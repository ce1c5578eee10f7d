package ephemeral

import (
	"context"
	"errors"

	"github.com/rs/zerolog"

	"chappe/sqlstore"
)

// This file carries typing notifications, read receipts and presence
// between servers: local changes are queued for the other servers of the
// room (or, for presence, of the user's rooms) as EDUs, and the EDUs other
// servers send are applied here. Spec: server-server-api.md, "Typing
// Notifications", "Receipts", "Presence".

// Federation is how the components reach other servers
// (federation.E2EEPeers): QueueEDU queues an EDU for the destinations in
// the transaction q (ourselves and servers outside the allowlist are left
// out).
type Federation interface {
	QueueEDU(ctx context.Context, q *sqlstore.Queries, destinations []string, eduType string, content any) error
}

// EDU types of the components.
const (
	EDUTyping   = "m.typing"
	EDUReceipt  = "m.receipt"
	EDUPresence = "m.presence"
)

// remoteTypingTimeout is how long a remote user's typing notification
// lasts without a refresh: m.typing carries no timeout, and a server that
// misses the "stopped" EDU must not show them typing forever.
const remoteTypingTimeout = DefaultTypingTimeout

// typingEDU is the content of m.typing.
type typingEDU struct {
	RoomID string `json:"room_id"`
	UserID string `json:"user_id"`
	Typing bool   `json:"typing"`
}

// announceTyping queues m.typing for the room's other servers. A refresh is
// sent too: receivers forget a notification after remoteTypingTimeout.
func (t *Typing) announceTyping(ctx context.Context, roomID, userID string, typing bool) error {
	if t.fed == nil {
		return nil
	}
	q := &t.store.Queries
	servers, err := q.JoinedServers(ctx, roomID)
	if err != nil {
		return err
	}
	return t.fed.QueueEDU(ctx, q, servers, EDUTyping, typingEDU{RoomID: roomID, UserID: userID, Typing: typing})
}

// ReceiveTyping applies m.typing from another server about one of its
// users, who must be joined to the room (else it is dropped).
func (t *Typing) ReceiveTyping(ctx context.Context, roomID, userID string, typing bool) error {
	m, err := t.store.Membership(ctx, roomID, userID)
	if err != nil || m != "join" {
		return err
	}
	if !typing {
		t.Stop(roomID, userID)
		return nil
	}
	return t.Start(roomID, userID, remoteTypingTimeout)
}

// receiptEDUUser is one user's receipt in m.receipt.
type receiptEDUUser struct {
	EventIDs []string       `json:"event_ids"`
	Data     receiptEDUData `json:"data"`
}

type receiptEDUData struct {
	TS       int64  `json:"ts"`
	ThreadID string `json:"thread_id,omitempty"`
}

// announceReceipt queues m.receipt with a local user's public receipt for
// the room's other servers, in the transaction q that stores it.
func (r *Receipts) announceReceipt(ctx context.Context, q *sqlstore.Queries, userID, thread string, ev sqlstore.Event, ts int64) error {
	if r.fed == nil {
		return nil
	}
	servers, err := q.JoinedServers(ctx, ev.RoomID)
	if err != nil {
		return err
	}
	content := map[string]map[string]map[string]receiptEDUUser{
		ev.RoomID: {ReceiptRead: {userID: {EventIDs: []string{ev.EventID}, Data: receiptEDUData{TS: ts, ThreadID: thread}}}},
	}
	return r.fed.QueueEDU(ctx, q, servers, EDUReceipt, content)
}

// ReceiveReceipt applies one receipt of m.receipt from another server
// about one of its users. Dropped (nil) unless it is an m.read receipt of a
// user joined to the room, on an event of the room we hold.
func (r *Receipts) ReceiveReceipt(ctx context.Context, roomID, userID, receiptType, eventID, threadID string, ts int64) error {
	if receiptType != ReceiptRead {
		return nil
	}
	if err := r.checkMember(ctx, userID, roomID); err != nil {
		return dropped(ctx, err, "receipt of a user not in the room")
	}
	ev, err := r.roomEvent(ctx, roomID, eventID)
	if err != nil {
		return dropped(ctx, err, "receipt on an event we do not hold")
	}
	return r.put(ctx, userID, receiptType, threadID, ev, ts, false)
}

// dropped logs why an EDU is dropped and returns nil, unless err is an
// internal failure, which it returns.
func dropped(ctx context.Context, err error, why string) error {
	var m interface{ Status() int }
	if errors.As(err, &m) && m.Status() < 500 {
		zerolog.Ctx(ctx).Debug().Err(err).Msg("EDU dropped: " + why)
		return nil
	}
	return err
}

// presenceEDU is the content of m.presence.
type presenceEDU struct {
	Push []PresenceUpdate `json:"push"`
}

// PresenceUpdate is one user's presence in m.presence.
type PresenceUpdate struct {
	UserID          string  `json:"user_id"`
	Presence        string  `json:"presence"`
	StatusMsg       *string `json:"status_msg,omitempty"`
	LastActiveAgo   int64   `json:"last_active_ago"`
	CurrentlyActive bool    `json:"currently_active,omitempty"`
}

// announcePresence queues m.presence with a local user's new presence for
// the servers sharing a room with them, in the transaction q that stores it.
func (p *Presence) announcePresence(ctx context.Context, q *sqlstore.Queries, row sqlstore.Presence) error {
	if p.fed == nil {
		return nil
	}
	servers, err := q.ServersSharingRoomWith(ctx, row.UserID)
	if err != nil || len(servers) == 0 {
		return err
	}
	u := PresenceUpdate{UserID: row.UserID, Presence: row.State, StatusMsg: row.StatusMsg,
		CurrentlyActive: row.State == PresenceOnline}
	if row.LastActiveTS > 0 {
		u.LastActiveAgo = max(p.now().UnixMilli()-row.LastActiveTS, 0)
	}
	return p.fed.QueueEDU(ctx, q, servers, EDUPresence, presenceEDU{Push: []PresenceUpdate{u}})
}

// ReceivePresence applies one update of m.presence from another server
// about one of its users; ignored when presence is off here, dropped when
// its state is not one of the spec's, or when the user shares no room with
// any of our users: nobody here may see it (presence is shown to users
// sharing a room, modules/presence.md), and a server would otherwise fill
// our table with users of its own. Spec: server-server-api.md, "Presence".
func (p *Presence) ReceivePresence(ctx context.Context, u PresenceUpdate) error {
	if !p.cfg.Enabled {
		return nil
	}
	if err := checkState(u.Presence); err != nil {
		return dropped(ctx, err, "presence with an unknown state")
	}
	shared, err := p.store.SharesRoomWithServer(ctx, u.UserID, p.cfg.ServerName)
	if err != nil || !shared {
		return err
	}
	lastActive := int64(0)
	if u.LastActiveAgo >= 0 {
		lastActive = p.now().UnixMilli() - u.LastActiveAgo
	}
	return p.writeFrom(ctx, u.UserID, false, func(old *sqlstore.Presence) (sqlstore.Presence, bool) {
		next := sqlstore.Presence{UserID: u.UserID, State: u.Presence, StatusMsg: u.StatusMsg, LastActiveTS: lastActive}
		return next, old == nil || old.State != next.State || !sameMsg(old.StatusMsg, next.StatusMsg)
	})
}
