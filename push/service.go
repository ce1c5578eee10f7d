package push

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"chappe/sqlstore"
	"chappe/streams"
)

// Config is what push needs from the configuration.
type Config struct {
	ServerName string
}

// Service is the push component.
type Service struct {
	cfg   Config
	store *sqlstore.Store
	hub   *streams.Hub
	now   func() time.Time

	defaults *Rules                       // the server-default rules, shared by every user who changed none
	rules    rulesLRU                     // compiled rules of recently evaluated users
	rooms    *lru.Cache[int64, *roomInfo] // room info by state snapshot NID

	// kick wakes the gateway delivery loop (see Run); pending is the highest
	// stream position of an event that notified someone.
	kick    chan struct{}
	pending atomic.Int64
}

// Cache sizes: every local member of the busiest rooms, and the rooms
// currently receiving messages.
const (
	rulesCacheSize = 100_000
	roomCacheSize  = 1_024
)

// New returns the push component. Rule changes take stream positions from
// hub, so that the m.push_rules account data reaches the user's syncs.
func New(cfg Config, store *sqlstore.Store, hub *streams.Hub) *Service {
	rooms, _ := lru.New[int64, *roomInfo](roomCacheSize)
	users, _ := lru.New[string, *Rules](rulesCacheSize)
	return &Service{
		cfg: cfg, store: store, hub: hub, now: time.Now,
		defaults: compileRuleset((&userRules{}).ruleset(userPlaceholder)),
		rules:    rulesLRU{lru: users},
		rooms:    rooms,
		kick:     make(chan struct{}, 1),
	}
}

// rulesLRU caches compiled rules by user. gen counts invalidations: a load
// that raced with a change (read the old rules, finished after the change
// invalidated the entry) is not cached.
type rulesLRU struct {
	mu  sync.Mutex
	lru *lru.Cache[string, *Rules]
	gen uint64
}

func (c *rulesLRU) invalidate(userID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.lru.Remove(userID)
}

// rulesOf returns the compiled rules of each user, reading the ones not
// cached in one query.
func (s *Service) rulesOf(ctx context.Context, q *sqlstore.Queries, userIDs []string) (map[string]*Rules, error) {
	out := make(map[string]*Rules, len(userIDs))
	var missing []string
	s.rules.mu.Lock()
	gen := s.rules.gen
	for _, u := range userIDs {
		if r, ok := s.rules.lru.Get(u); ok {
			out[u] = r
		} else {
			missing = append(missing, u)
		}
	}
	s.rules.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	docs, err := q.PushRulesOf(ctx, missing)
	if err != nil {
		return nil, err
	}
	loaded := make(map[string]*Rules, len(missing))
	for _, u := range missing {
		r := s.defaults
		if doc, ok := docs[u]; ok {
			r = compileRuleset(parseUserRules(doc).ruleset(userPlaceholder))
		}
		loaded[u] = r
		out[u] = r
	}
	s.rules.mu.Lock()
	if s.rules.gen == gen {
		for u, r := range loaded {
			s.rules.lru.Add(u, r)
		}
	}
	s.rules.mu.Unlock()
	return out, nil
}

// threadMain is the thread ID of the main timeline (spec: receipts.md,
// "Threaded read receipts").
const threadMain = "main"

// maxThreadHops is how many relations are followed to find an event's
// thread (spec: "a maximum of 3 hops is recommended").
const maxThreadHops = 3

// threadOf is the thread an event belongs to: the root of the thread it
// (or, within three hops, an event it relates to) is in, or "main".
func threadOf(ctx context.Context, q *sqlstore.Queries, ev sqlstore.Event) (string, error) {
	cur := ev
	for hop := 0; hop <= maxThreadHops; hop++ {
		if cur.RelatesTo == nil {
			return threadMain, nil
		}
		if cur.RelType != nil && *cur.RelType == "m.thread" {
			return *cur.RelatesTo, nil
		}
		if hop == maxThreadHops {
			break
		}
		parent, err := q.EventByID(ctx, *cur.RelatesTo)
		if errors.Is(err, sqlstore.ErrNotFound) || (err == nil && parent.RoomID != ev.RoomID) {
			return threadMain, nil
		}
		if err != nil {
			return "", err
		}
		cur = parent
	}
	return threadMain, nil
}

// EventStored evaluates the push rules of the room's local members on an
// event the roomserver just stored, inside the same transaction q, and
// writes the notifications they produce and the sender's read mark.
// stateAfter is the state snapshot after the event, which keys the cache of
// room state. Spec: push.md ("Server behaviour": rules are processed for
// each local user in the room except the sender; "Receiving notifications":
// the updated count must appear in the same /sync as the event).
func (s *Service) EventStored(ctx context.Context, q *sqlstore.Queries, ev sqlstore.Event, stateAfter int64) error {
	parsed, err := ParseEvent([]byte(ev.JSON), ev.EventID)
	if err != nil {
		return nil // not evaluable; the event itself was accepted
	}
	info, err := s.roomAt(ctx, q, ev, parsed, stateAfter)
	if err != nil {
		return err
	}
	recipients := make([]string, 0, len(info.local)+1)
	for _, u := range info.local {
		if u != ev.Sender {
			recipients = append(recipients, u)
		}
	}
	// The invitee is not joined yet; .m.rule.invite_for_me is for them.
	if ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey != ev.Sender && isLocal(*ev.StateKey, s.cfg.ServerName) {
		if m, _ := parsed.fields["content"].(map[string]any); m != nil && m["membership"] == "invite" {
			recipients = append(recipients, *ev.StateKey)
		}
	}
	senderLocal := isLocal(ev.Sender, s.cfg.ServerName)
	if len(recipients) == 0 && !senderLocal {
		return nil
	}
	var batch *sqlstore.NewNotifications
	if len(recipients) > 0 {
		rules, err := s.rulesOf(ctx, q, recipients)
		if err != nil {
			return err
		}
		batch = &sqlstore.NewNotifications{RoomID: ev.RoomID, StreamPos: ev.StreamPos, TS: s.now().UnixMilli(), Sender: ev.Sender}
		e := &evaluation{ev: parsed, room: info}
		for _, u := range recipients {
			e.userID = u
			r := rules[u].match(e)
			if r == nil || !r.actions.Notify {
				continue
			}
			batch.Users = append(batch.Users, u)
			batch.Highlight = append(batch.Highlight, r.actions.Highlight)
			batch.Actions = append(batch.Actions, r.actionsJSON)
		}
	}
	notifies := batch != nil && len(batch.Users) > 0
	if !notifies && !senderLocal {
		return nil
	}
	thread, err := threadOf(ctx, q, ev)
	if err != nil {
		return err
	}
	var mark *sqlstore.SentMark
	if senderLocal {
		mark = &sqlstore.SentMark{UserID: ev.Sender, RoomID: ev.RoomID, ThreadID: thread, StreamPos: ev.StreamPos}
	}
	if notifies {
		batch.ThreadID = thread
	} else {
		batch = nil
	}
	if err := q.RecordPush(ctx, batch, mark); err != nil {
		return err
	}
	if notifies {
		s.wakeDelivery(ev.StreamPos)
	}
	return nil
}

// roomAt returns the room info after ev: from the cache, derived from the
// state before ev when ev changes it, or read from the database.
func (s *Service) roomAt(ctx context.Context, q *sqlstore.Queries, ev sqlstore.Event, parsed *Event, stateAfter int64) (*roomInfo, error) {
	if ri, ok := s.rooms.Get(stateAfter); ok {
		return ri, nil
	}
	if stateAfter != ev.StateBefore {
		if base, ok := s.rooms.Get(ev.StateBefore); ok {
			ri := base
			if affectsInfo(ev) {
				ri = base.apply(ev, parsed, s.cfg.ServerName)
			}
			s.rooms.Add(stateAfter, ri)
			return ri, nil
		}
	}
	ri, err := s.loadRoomInfo(ctx, q, ev.RoomID)
	if err != nil {
		return nil, err
	}
	// A snapshot NID is never reused, even if this transaction rolls back,
	// so caching it now is safe.
	s.rooms.Add(stateAfter, ri)
	return ri, nil
}
