package federation

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/tidwall/gjson"

	"chappe/ephemeral"
	"chappe/roomserver"
	"chappe/sqlstore"
)

// QueueGate is the allowlist as the outbox and the senders ask it: may this
// server exchange anything with serverName? (*allowlist.Service is one.)
type QueueGate interface {
	Allowed(serverName string) bool
}

// Waker is told, after a commit, which destinations have new items in the
// outbox. The Sender is one.
type Waker interface {
	Wake(destinations ...string)
}

// EDU is an ephemeral data unit as a transaction carries it.
// Spec: server-server-api.md, "EDUs".
type EDU struct {
	Type    string          `json:"edu_type"`
	Content json.RawMessage `json:"content"`
}

// Outbox queues what remote servers must receive, in the transaction that
// causes it: the PDUs the roomserver stores (it is a roomserver.EventListener)
// and the EDUs other components hand it (QueueEDU). After the commit it
// wakes the Sender, which reads the rows only once they are visible: an
// event is never sent before its transaction commits, and never at all if
// it rolls back.
type Outbox struct {
	serverName string
	gate       QueueGate
	waker      Waker
	now        func() time.Time
	// joined caches the servers of the joined members by state snapshot
	// (the stateAfter of EventStored): a snapshot never changes and its NID
	// is never reused, even when its transaction rolls back, so an entry is
	// never stale. A room's messages share one entry until its membership
	// changes.
	joined *lru.Cache[int64, []string]
}

var _ roomserver.EventListener = (*Outbox)(nil)

// joinedCacheSize bounds the cache: the snapshots of the busy rooms.
const joinedCacheSize = 10_000

// NewOutbox returns the outbox of the server serverName. Destinations the
// gate does not admit are never queued.
func NewOutbox(serverName string, gate QueueGate, waker Waker) *Outbox {
	joined, _ := lru.New[int64, []string](joinedCacheSize)
	return &Outbox{serverName: serverName, gate: gate, waker: waker, now: time.Now, joined: joined}
}

// WithRelay marks the events stored with the returned context as events
// this server relays although a remote server made them: the join, leave
// or knock a remote server submits through send_join, send_leave or
// send_knock, which the resident server must pass on to the other servers
// of the room (spec: server-server-api.md, "Joining Rooms", "Leaving
// Rooms", "Knocking upon a room"). The roomserver sets the same mark
// itself when it stores those events (roomserver.WithRelay).
func WithRelay(ctx context.Context) context.Context { return roomserver.WithRelay(ctx) }

// isRelay tells whether the event being stored is relayed.
func isRelay(ctx context.Context) bool { return roomserver.Relayed(ctx) }

// EventStored queues ev for the servers that must receive it, in the
// transaction q that stores it. Sent are the events of local users and the
// events marked with WithRelay; others came from a remote server, which
// sends them itself. The destinations are the servers of the members joined
// after the event, plus, for a membership event, the target's server (a
// kicked, banned or un-invited user's server is no longer in the room but
// must learn it) — except for an invite, which reaches the invitee's server
// through PUT /invite, as a server in no room cannot check an invite PDU.
// Never ourselves, never the server that made a relayed event, never a
// server the allowlist does not admit.
func (o *Outbox) EventStored(ctx context.Context, q *sqlstore.Queries, ev sqlstore.Event, stateAfter int64) error {
	origin := serverOfUser(ev.Sender)
	relay := isRelay(ctx)
	if origin != o.serverName && !relay {
		return nil
	}
	servers, err := o.joinedServers(ctx, q, ev.RoomID, stateAfter)
	if err != nil {
		return err
	}
	if ev.Type == "m.room.member" && ev.StateKey != nil &&
		gjson.Get(ev.JSON, "content.membership").String() != "invite" {
		if target := serverOfUser(*ev.StateKey); target != "" {
			servers = append(slices.Clip(servers), target) // a copy: servers is the cache's
		}
	}
	exclude := ""
	if relay {
		exclude = origin
	}
	dests := o.destinations(servers, exclude)
	if len(dests) == 0 {
		return nil
	}
	if err := q.EnqueuePDU(ctx, dests, ev.NID, o.now().UnixMilli()); err != nil {
		return err
	}
	q.AfterCommit(func() { o.waker.Wake(dests...) })
	return nil
}

// joinedServers is the servers of the members joined in the room's state
// snapshot stateAfter, which is the current state when the roomserver
// calls EventStored. The slice is shared: callers must not change it.
func (o *Outbox) joinedServers(ctx context.Context, q *sqlstore.Queries, roomID string, stateAfter int64) ([]string, error) {
	if servers, ok := o.joined.Get(stateAfter); ok {
		return servers, nil
	}
	servers, err := q.JoinedServers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	o.joined.Add(stateAfter, servers)
	return servers, nil
}

// ErrBadEDU is returned by QueueEDU for an EDU without a type or with a
// content that is not a JSON object.
var ErrBadEDU = errors.New("an EDU needs a type and a JSON object as content")

// QueueEDU queues edu for each of destinations in the transaction q (or at
// once, if q is the store's own Queries). Duplicates, our own server and
// servers the allowlist does not admit are left out. An m.typing EDU
// replaces the one about the same user and room still queued: only the
// latest state matters, so a server that is slow or down does not get a
// backlog of them. Spec: server-server-api.md, "EDUs", "Typing
// Notifications".
func (o *Outbox) QueueEDU(ctx context.Context, q *sqlstore.Queries, destinations []string, edu EDU) error {
	if edu.Type == "" || !gjson.ValidBytes(edu.Content) || !gjson.ParseBytes(edu.Content).IsObject() {
		return ErrBadEDU
	}
	dests := o.destinations(destinations, "")
	if len(dests) == 0 {
		return nil
	}
	if edu.Type == ephemeral.EDUTyping {
		t := gjson.GetManyBytes(edu.Content, "room_id", "user_id")
		if err := q.DropQueuedTyping(ctx, dests, t[0].String(), t[1].String()); err != nil {
			return err
		}
	}
	if err := q.EnqueueEDU(ctx, dests, edu.Type, edu.Content, o.now().UnixMilli()); err != nil {
		return err
	}
	q.AfterCommit(func() { o.waker.Wake(dests...) })
	return nil
}

// destinations is servers without duplicates, empty names, ourselves,
// exclude and the servers the gate does not admit.
func (o *Outbox) destinations(servers []string, exclude string) []string {
	out := make([]string, 0, len(servers))
	seen := make(map[string]struct{}, len(servers))
	for _, s := range servers {
		if _, dup := seen[s]; dup || s == "" || s == o.serverName || s == exclude {
			continue
		}
		seen[s] = struct{}{}
		if o.gate.Allowed(s) {
			out = append(out, s)
		}
	}
	return out
}

// serverOfUser is the server name of a user ID: everything after the first
// colon, which keeps a port (example.org:8448) and an IPv6 literal
// ([2001:db8::1]:8448) whole; "" if userID is not a user ID.
func serverOfUser(userID string) string {
	if !strings.HasPrefix(userID, "@") {
		return ""
	}
	_, server, _ := strings.Cut(userID, ":")
	return server
}
