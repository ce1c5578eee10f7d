// Package roomserver is the only writer of the room graph. It builds and
// signs local events with gomatrixserverlib at the room's forward
// extremities, checks them against the auth rules before anything is stored,
// stores each event once with the state it changes, and answers every read
// of rooms with history visibility applied.
//
// Spec: client-server-api/_index.md ("Rooms", "Room membership", "Events"),
// rooms/v1.md … rooms/v12.md (auth rules, redaction algorithm), appendices.md
// (canonical JSON, signing, hashing).
package roomserver

import (
	"context"
	"errors"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/rs/zerolog"

	"chappe/mxerr"
	"chappe/signingkey"
	"chappe/sqlstore"
	"chappe/streams"
)

// Config is what the roomserver needs from the configuration.
type Config struct {
	ServerName     string
	DefaultVersion string // room version used when createRoom names none
}

// Profiles gives the display name and avatar of local users for their
// member events, and tells which local users exist.
type Profiles interface {
	MemberProfile(ctx context.Context, userID string) (displayName, avatarURL string)
	UserExists(ctx context.Context, userID string) (bool, error)
}

// EventListener learns of every event the roomserver stores, inside the
// transaction q that stores it: what it writes commits or rolls back with
// the event, and an error rolls the event back. stateAfter is the state
// snapshot after the event (equal to ev.StateBefore for a message event).
// Push rules use it to count notifications (package push).
type EventListener interface {
	EventStored(ctx context.Context, q *sqlstore.Queries, ev sqlstore.Event, stateAfter int64) error
}

// Roomserver is the room component.
type Roomserver struct {
	cfg       Config
	store     *sqlstore.Store
	key       signingkey.Key
	profiles  Profiles
	hub       *streams.Hub
	listeners []EventListener
	now       func() time.Time

	// events caches parsed events by NID. Events are immutable except for
	// redaction, which evicts the entry.
	events *lru.Cache[int64, gomatrixserverlib.PDU]
	// snapshots caches materialised state snapshots, which never change.
	snapshots *lru.Cache[int64, *snapshot]
}

// Cache sizes: enough for the working set of busy rooms, bounded so memory
// does not grow with history.
const (
	eventCacheSize    = 50_000
	snapshotCacheSize = 2_000
)

// New returns the roomserver. Every event it stores takes its stream
// position from hub, which wakes the clients waiting for it, and is shown
// to listeners in its transaction.
func New(cfg Config, store *sqlstore.Store, key signingkey.Key, profiles Profiles, hub *streams.Hub, listeners ...EventListener) *Roomserver {
	events, _ := lru.New[int64, gomatrixserverlib.PDU](eventCacheSize)
	snapshots, _ := lru.New[int64, *snapshot](snapshotCacheSize)
	return &Roomserver{cfg: cfg, store: store, key: key, profiles: profiles, hub: hub, listeners: listeners, now: time.Now, events: events, snapshots: snapshots}
}

// notFoundRoom is the error for a room this server does not know.
func notFoundRoom(roomID string) error {
	return mxerr.New(mxerr.NotFound, "Unknown room %s", roomID)
}

// loadRoom returns the room row or 404.
func (r *Roomserver) loadRoom(ctx context.Context, q *sqlstore.Queries, roomID string, lock bool) (sqlstore.Room, error) {
	var room sqlstore.Room
	var err error
	if lock {
		room, err = q.LockRoom(ctx, roomID)
	} else {
		room, err = q.GetRoom(ctx, roomID)
	}
	if errors.Is(err, sqlstore.ErrNotFound) {
		return room, notFoundRoom(roomID)
	}
	return room, err
}

func (r *Roomserver) log(ctx context.Context) *zerolog.Logger { return zerolog.Ctx(ctx) }
