package push

import (
	"context"
	"errors"
	"sync"
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

	// delivery is what the gateway delivery loop (see Run) has to do.
	delivery delivery
	// recent keeps the results of recently stored events (see recent.go).
	recent *lru.Cache[int64, recentEvent]
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
		delivery: delivery{kick: make(chan struct{}, 1), users: map[string]struct{}{}, owners: map[string]struct{}{}},
		recent:   newRecent(),
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
// records the outcome, the sender's read mark and local membership changes.
// stateAfter is the state snapshot after the event, which keys the cache of
// room state. Spec: push.md ("Server behaviour": rules are processed for
// each local user in the room except the sender; "Receiving notifications":
// the updated count must appear in the same /sync as the event).
//
// The outcome is stored once for the event: the one most joined members
// share, plus an exception for each member whose outcome differs, and for
// an invitee who is notified (see migration 007).
func (s *Service) EventStored(ctx context.Context, q *sqlstore.Queries, ev sqlstore.Event, stateAfter int64) error {
	parsed, err := ParseEvent([]byte(ev.JSON), ev.EventID)
	if err != nil {
		return nil // not evaluable; the event itself was accepted
	}
	var rec sqlstore.PushRecord
	content, _ := parsed.fields["content"].(map[string]any)
	var invitee string
	if ev.Type == "m.room.member" && ev.StateKey != nil && isLocal(*ev.StateKey, s.cfg.ServerName) {
		membership, _ := content["membership"].(string)
		rec.Membership = &sqlstore.PushMembership{UserID: *ev.StateKey, RoomID: ev.RoomID, Joined: membership == "join", StreamPos: ev.StreamPos}
		if membership == "invite" && *ev.StateKey != ev.Sender {
			invitee = *ev.StateKey // not joined: .m.rule.invite_for_me is for them
		}
	}
	info, err := s.roomAt(ctx, q, ev, parsed, stateAfter)
	if err != nil {
		return err
	}
	joined := make([]string, 0, len(info.local))
	for _, u := range info.local {
		if u != ev.Sender {
			joined = append(joined, u)
		}
	}
	if len(joined) > 0 || invitee != "" {
		rec.Event, rec.Exceptions, err = s.evaluate(ctx, q, ev, parsed, info, joined, invitee)
		if err != nil {
			return err
		}
	}
	senderLocal := isLocal(ev.Sender, s.cfg.ServerName)
	if rec.Event != nil || senderLocal {
		thread, err := threadOf(ctx, q, ev)
		if err != nil {
			return err
		}
		if rec.Event != nil {
			rec.Event.ThreadID = thread
		}
		if senderLocal {
			rec.Mark = &sqlstore.SentMark{UserID: ev.Sender, RoomID: ev.RoomID, ThreadID: thread, StreamPos: ev.StreamPos}
		}
	}
	if err := q.RecordPush(ctx, rec); err != nil {
		return err
	}
	s.remember(ev, rec)
	if rec.Event != nil {
		var notified []string
		if rec.Event.Notify {
			notified = joined
		}
		for _, x := range rec.Exceptions {
			if x.Notify {
				notified = append(notified, x.UserID)
			}
		}
		s.wakeDelivery(ev.StreamPos, notified)
	}
	return nil
}

// outcomes evaluates the rules of each user on e's event. An outcome that
// did not depend on who the user is holds for everyone with the same rules
// (usually the server defaults), so most members are not evaluated at all.
func outcomes(rules map[string]*Rules, users []string, e *evaluation) []outcome {
	results := make([]outcome, len(users))
	shared := map[*Rules]outcome{}
	for i, u := range users {
		o, ok := shared[rules[u]]
		if !ok {
			e.userID, e.personal = u, false
			o = noNotification
			if r := rules[u].match(e); r != nil && r.actions.Notify {
				o = outcome{notify: true, highlight: r.actions.Highlight, actions: r.actionsJSON}
			}
			if !e.personal {
				shared[rules[u]] = o
			}
		}
		results[i] = o
	}
	return results
}

// outcome is what one user's rules gave for an event.
type outcome struct {
	notify, highlight bool
	actions           string
}

// noNotification is the outcome of a user not notified, whatever the rule.
var noNotification = outcome{actions: "[]"}

// evaluate runs the rules of the joined members and of the invitee, and
// returns the event's common outcome with the exceptions to it, or nil if
// nobody is notified.
func (s *Service) evaluate(ctx context.Context, q *sqlstore.Queries, ev sqlstore.Event, parsed *Event, info *roomInfo,
	joined []string, invitee string) (*sqlstore.PushEvent, []sqlstore.PushException, error) {
	users := joined
	if invitee != "" {
		users = append(joined[:len(joined):len(joined)], invitee)
	}
	rules, err := s.rulesOf(ctx, q, users)
	if err != nil {
		return nil, nil, err
	}
	results := outcomes(rules, users, &evaluation{ev: parsed, room: info})
	tally := map[outcome]int{}
	anyNotify := false
	for i, o := range results {
		anyNotify = anyNotify || o.notify
		if i < len(joined) {
			tally[o]++
		}
	}
	if !anyNotify {
		return nil, nil, nil
	}
	common, best := noNotification, 0
	for o, n := range tally {
		if n > best || (n == best && o.actions < common.actions) {
			common, best = o, n
		}
	}
	var exceptions []sqlstore.PushException
	for i, u := range users {
		o := results[i]
		isJoined := i < len(joined)
		// The invitee is not joined, so the common outcome never applies
		// to them: they need an exception only to be notified.
		if (isJoined && o == common) || (!isJoined && !o.notify) {
			continue
		}
		exceptions = append(exceptions, sqlstore.PushException{UserID: u, Notify: o.notify, Highlight: o.highlight, Actions: o.actions})
	}
	pe := &sqlstore.PushEvent{StreamPos: ev.StreamPos, RoomID: ev.RoomID, Sender: ev.Sender,
		Notify: common.notify, Highlight: common.highlight, Actions: common.actions, TS: s.now().UnixMilli()}
	return pe, exceptions, nil
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
