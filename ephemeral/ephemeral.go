// Package ephemeral holds the data /sync shows outside the room graph:
// typing notifications (in memory, expiring by themselves), read receipts
// and read markers (in PostgreSQL, one row per user, type and thread), and
// presence.
//
// Spec: client-server-api/_index.md, modules/typing_notifications.md,
// modules/receipts.md, modules/read_markers.md, modules/presence.md.
package ephemeral

import (
	"context"
	"encoding/json"
	"time"

	"chappe/sqlstore"
	"chappe/streams"
)

// Event is an event as /sync shows it (m.presence has a sender).
type Event struct {
	Type    string          `json:"type"`
	Sender  string          `json:"sender,omitempty"`
	Content json.RawMessage `json:"content"`
}

// Clock tells the time; tests inject their own.
type Clock func() time.Time

func clockOrNow(c Clock) Clock {
	if c == nil {
		return time.Now
	}
	return c
}

// inStream runs fn in one database transaction with a stream position taken
// inside it, then reports the position to hub: visible (waking what change
// returns) if the transaction committed and fn changed something, abandoned
// otherwise.
func inStream(ctx context.Context, store *sqlstore.Store, hub *streams.Hub,
	fn func(q *sqlstore.Queries, pos int64) (changed bool, change streams.Change, err error)) error {
	var pos int64
	var changed bool
	var change streams.Change
	err := store.InTx(ctx, func(q *sqlstore.Queries) error {
		pos = hub.Alloc()
		var err error
		changed, change, err = fn(q, pos)
		return err
	})
	if pos != 0 {
		if err == nil && changed {
			hub.Commit(pos, change)
		} else {
			hub.Abort(pos)
		}
	}
	return err
}

// Service is the three ephemeral components together: what /sync reads.
type Service struct {
	Typing   *Typing
	Receipts *Receipts
	Presence *Presence
}

// New builds typing, receipts and presence on one store and Hub; read
// markers are stored through markers (the account data component); local
// changes go to the other servers sharing the room through fed (nil: none).
// now nil is the system clock.
func New(store *sqlstore.Store, hub *streams.Hub, markers FullyReadMarker, presence PresenceConfig, fed Federation, now Clock) *Service {
	s := &Service{
		Typing:   NewTyping(store, hub, now),
		Receipts: NewReceipts(store, hub, markers, now),
		Presence: NewPresence(store, hub, presence, now),
	}
	s.Typing.fed, s.Receipts.fed, s.Presence.fed = fed, fed, fed
	return s
}

// TypingSince is Typing.TypingSince.
func (s *Service) TypingSince(roomID string, since int64) (json.RawMessage, bool) {
	return s.Typing.TypingSince(roomID, since)
}

// ReceiptsSince is Receipts.ReceiptsSince.
func (s *Service) ReceiptsSince(ctx context.Context, viewer string, roomIDs []string, from, to int64) (map[string]json.RawMessage, error) {
	return s.Receipts.ReceiptsSince(ctx, viewer, roomIDs, from, to)
}

// PresenceSince is Presence.PresenceSince.
func (s *Service) PresenceSince(ctx context.Context, viewer string, from, to int64) ([]json.RawMessage, error) {
	return s.Presence.PresenceSince(ctx, viewer, from, to)
}

// SetPresence is Presence.SetPresence.
func (s *Service) SetPresence(ctx context.Context, userID, presence string) error {
	return s.Presence.SetPresence(ctx, userID, presence)
}

// ReadUpTo is Receipts.ReadUpTo.
func (s *Service) ReadUpTo(ctx context.Context, userID, roomID, threadID string) (int64, error) {
	return s.Receipts.ReadUpTo(ctx, userID, roomID, threadID)
}

// Run runs the typing and presence sweeps until ctx ends; presence errors
// go to onError.
func (s *Service) Run(ctx context.Context, onError func(error)) {
	done := make(chan struct{})
	go func() { s.Typing.Run(ctx); close(done) }()
	s.Presence.Run(ctx, onError)
	<-done
}
