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
	"golang.org/x/sync/singleflight"

	"chappe/mxerr"
	"chappe/signingkey"
	"chappe/sqlstore"
	"chappe/streams"
)

// Config is what the roomserver needs from the configuration.
type Config struct {
	ServerName     string
	DefaultVersion string // room version used when createRoom names none
	// EncryptPrivateByDefault gives rooms created with the private_chat or
	// trusted_private_chat preset, or as direct chats, an m.room.encryption
	// state event (megolm) unless initial_state sets another.
	EncryptPrivateByDefault bool
	// RefusePlaintextInEncrypted refuses m.room.message events in rooms with
	// m.room.encryption state (400 M_BAD_JSON).
	RefusePlaintextInEncrypted bool
	// Federation shares rooms with other servers; the zero value keeps
	// every room on this server.
	Federation Federation
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
	// versions caches room versions, which never change.
	versions *lru.Cache[string, string]
	// memberships and histories cache, per user, the current memberships
	// and the membership history in a room, as of a stream position; they
	// are valid until the Hub reports a membership change of the user.
	memberships *lru.Cache[string, cachedMemberships]
	histories   *lru.Cache[string, cachedHistory]
	// tails keeps the latest events of active rooms (see roomTail).
	tails *lru.Cache[string, *roomTail]
	// backfillQuiet holds, per room, until when a backfill is not tried
	// again after one that brought nothing (see backfill).
	backfillQuiet *lru.Cache[string, time.Time]
	// backfills makes concurrent backfills of one room one.
	backfills singleflight.Group
}

type cachedMemberships struct {
	at   int64
	list []sqlstore.CurrentMembership
}

type cachedHistory struct {
	at      int64
	history []sqlstore.MembershipChange
}

// Cache sizes: enough for the working set of busy rooms, bounded so memory
// does not grow with history.
const (
	eventCacheSize    = 50_000
	snapshotCacheSize = 2_000
	versionCacheSize  = 100_000
	// per-user caches of the sync path
	membershipCacheSize = 20_000
	historyCacheSize    = 200_000
	tailCacheSize       = 5_000 // rooms whose latest events stay in memory
)

// New returns the roomserver. Every event it stores takes its stream
// position from hub, which wakes the clients waiting for it, and is shown
// to listeners in its transaction.
func New(cfg Config, store *sqlstore.Store, key signingkey.Key, profiles Profiles, hub *streams.Hub, listeners ...EventListener) *Roomserver {
	events, _ := lru.New[int64, gomatrixserverlib.PDU](eventCacheSize)
	snapshots, _ := lru.New[int64, *snapshot](snapshotCacheSize)
	versions, _ := lru.New[string, string](versionCacheSize)
	memberships, _ := lru.New[string, cachedMemberships](membershipCacheSize)
	histories, _ := lru.New[string, cachedHistory](historyCacheSize)
	tails, _ := lru.New[string, *roomTail](tailCacheSize)
	backfillQuiet, _ := lru.New[string, time.Time](tailCacheSize)
	return &Roomserver{cfg: cfg, store: store, key: key, profiles: profiles, hub: hub, listeners: listeners, now: time.Now, events: events, snapshots: snapshots, versions: versions,
		memberships: memberships, histories: histories, tails: tails, backfillQuiet: backfillQuiet}
}

// notFoundRoom is the error for a room this server does not know.
func notFoundRoom(roomID string) error {
	return mxerr.New(mxerr.NotFound, "Unknown room %s", roomID)
}

// roomVersionOf is the room's version, from the cache when possible.
func (r *Roomserver) roomVersionOf(ctx context.Context, q *sqlstore.Queries, roomID string) (string, error) {
	if v, ok := r.versions.Get(roomID); ok {
		return v, nil
	}
	room, err := r.loadRoom(ctx, q, roomID, false)
	if err != nil {
		return "", err
	}
	r.versions.Add(roomID, room.RoomVersion)
	return room.RoomVersion, nil
}

// currentMemberships is the user's memberships, cached until the Hub
// reports a membership event for the user.
func (r *Roomserver) currentMemberships(ctx context.Context, q *sqlstore.Queries, userID string) ([]sqlstore.CurrentMembership, error) {
	if c, ok := r.memberships.Get(userID); ok && !r.hub.ChangedSince(streams.KindEvent, userID, c.at) {
		return c.list, nil
	}
	at := r.hub.Current().Stream // before reading: a change meanwhile invalidates
	list, err := q.CurrentMemberships(ctx, userID)
	if err != nil {
		return nil, err
	}
	r.memberships.Add(userID, cachedMemberships{at: at, list: list})
	return list, nil
}

// membershipHistories is MembershipHistories through the cache.
func (r *Roomserver) membershipHistories(ctx context.Context, q *sqlstore.Queries, userID string, roomIDs []string) (map[string][]sqlstore.MembershipChange, error) {
	out := map[string][]sqlstore.MembershipChange{}
	var missing []string
	for _, room := range roomIDs {
		if c, ok := r.histories.Get(userID + "|" + room); ok && !r.hub.ChangedSince(streams.KindEvent, userID, c.at) {
			out[room] = c.history
		} else {
			missing = append(missing, room)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	at := r.hub.Current().Stream
	fetched, err := q.MembershipHistories(ctx, userID, missing)
	if err != nil {
		return nil, err
	}
	for _, room := range missing {
		out[room] = fetched[room]
		r.histories.Add(userID+"|"+room, cachedHistory{at: at, history: fetched[room]})
	}
	return out, nil
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
