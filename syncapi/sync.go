package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	lru "github.com/hashicorp/golang-lru/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"chappe/mxerr"
	"chappe/roomserver"
	"chappe/sqlstore"
	"chappe/streams"
)

// Rooms is what sync needs from the roomserver.
type Rooms interface {
	SyncRooms(ctx context.Context, req roomserver.SyncRequest) ([]roomserver.SyncRoom, []string, error)
	CurrentMemberships(ctx context.Context, userID string) ([]sqlstore.CurrentMembership, error)
}

// AccountData is the account data component, as sync reads it.
type AccountData interface {
	// AccountDataSince returns the global and per-room account data events
	// changed in (from, to]; from 0 means all current account data.
	AccountDataSince(ctx context.Context, userID string, from, to int64) (global []json.RawMessage, rooms map[string][]json.RawMessage, err error)
	// IgnoredUsers is the user's m.ignored_user_list.
	IgnoredUsers(ctx context.Context, userID string) (map[string]bool, error)
}

// Ephemeral is typing, receipts and presence, as sync reads them.
type Ephemeral interface {
	// TypingSince returns the m.typing event of the room if its typing set
	// changed after the typing counter value since (always when since is 0).
	TypingSince(roomID string, since int64) (json.RawMessage, bool)
	// ReceiptsSince returns, per room, the m.receipt event of the receipts
	// changed in (from, to] that the viewer may see.
	ReceiptsSince(ctx context.Context, viewer string, roomIDs []string, from, to int64) (map[string]json.RawMessage, error)
	// PresenceSince returns the m.presence events of users changed in (from, to].
	PresenceSince(ctx context.Context, viewer string, from, to int64) ([]json.RawMessage, error)
	// SetPresence records the presence a syncing client asked for.
	SetPresence(ctx context.Context, userID, presence string) error
}

// Counts are a room's unread counts.
type Counts struct {
	Notifications int `json:"notification_count"`
	Highlights    int `json:"highlight_count"`
}

// RoomCounts are the unread counts of a room: all of it, its main timeline
// alone, and each of its threads.
type RoomCounts struct {
	Counts
	Main    Counts
	Threads map[string]Counts
}

// Push is the push-rule component, as sync reads it.
type Push interface {
	UnreadCounts(ctx context.Context, userID string, roomIDs []string) (map[string]RoomCounts, error)
	// CountsOfEvents adds up, from memory, the notifications of the events
	// at these positions; false when they are not all in memory.
	CountsOfEvents(userID string, positions []int64, ignored map[string]bool) (RoomCounts, bool)
	// UnreadCountsInRange counts only the events in (from, to].
	UnreadCountsInRange(ctx context.Context, userID string, roomIDs []string, from, to int64) (map[string]RoomCounts, error)
	// RulesContent is the user's m.push_rules account data content.
	RulesContent(ctx context.Context, userID string) (json.RawMessage, error)
}

// E2EE is the end-to-end encryption relay, as sync reads it.
type E2EE interface {
	ToDeviceSince(ctx context.Context, userID, deviceID string, from, to int64) ([]json.RawMessage, error)
	DeviceListsSince(ctx context.Context, userID string, from, to int64) (changed, left []string, err error)
	OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, []string, error)
}

// Deps are the components sync reads. Any of AccountData, Ephemeral, Push
// and E2EE may be nil while that component does not exist: its sections are
// then empty.
type Deps struct {
	Store       *sqlstore.Store
	Hub         *streams.Hub
	Rooms       Rooms
	AccountData AccountData
	Ephemeral   Ephemeral
	Push        Push
	E2EE        E2EE
}

// Syncer answers /sync.
type Syncer struct {
	Deps
	now     func() time.Time
	ignored *lru.Cache[string, ignoredList]
	counts  *lru.Cache[string, cachedCounts] // user|room → counts at a position
}

// New returns the sync component.
func New(d Deps) *Syncer {
	ignored, _ := lru.New[string, ignoredList](ignoredCacheSize)
	counts, _ := lru.New[string, cachedCounts](countsCacheSize)
	return &Syncer{Deps: d, now: time.Now, ignored: ignored, counts: counts}
}

// Token is a sync token: "s<stream>_<typing>".
func Token(p streams.Position) string { return fmt.Sprintf("s%d_%d", p.Stream, p.Typing) }

// ParseToken reads a sync token; 400 M_INVALID_PARAM if it is not one.
func ParseToken(s string) (streams.Position, error) {
	bad := mxerr.New(mxerr.InvalidParam, "Invalid since token %q", s)
	if !strings.HasPrefix(s, "s") {
		return streams.Position{}, bad
	}
	a, b, ok := strings.Cut(s[1:], "_")
	if !ok {
		return streams.Position{}, bad
	}
	stream, err1 := strconv.ParseInt(a, 10, 64)
	typing, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || stream < 0 || typing < 0 {
		return streams.Position{}, bad
	}
	return streams.Position{Stream: stream, Typing: typing}, nil
}

// Request is one /sync call.
type Request struct {
	UserID      string
	DeviceID    string
	Since       string
	Filter      Filter
	FullState   bool
	Timeout     time.Duration
	SetPresence string
}

// Sync answers a /sync: an initial sync at once, an incremental one as soon
// as something for the user is visible beyond since, or an empty one when
// the timeout ends. While it waits it holds no database connection.
func (s *Syncer) Sync(ctx context.Context, req Request) (*Response, error) {
	var since *streams.Position
	if req.Since != "" {
		p, err := ParseToken(req.Since)
		if err != nil {
			return nil, err
		}
		cur := s.Hub.Current()
		if p.Stream > cur.Stream {
			// A token beyond the stream: positions taken and abandoned (a
			// rolled-back write stores nothing) before a restart, which
			// resumes after the highest stored position. Nothing exists
			// beyond it, so reading on from the current position loses nothing.
			p.Stream = cur.Stream
		}
		if p.Typing > cur.Typing {
			// The typing counter lives in memory and restarted with the
			// server: send the current typing sets as if for the first time.
			p.Typing = 0
		}
		since = &p
	}
	if since != nil && s.E2EE != nil {
		// The since token acknowledges the to-device messages up to it, even
		// if this sync ends up returning nothing: they are deleted now.
		if _, err := s.E2EE.ToDeviceSince(ctx, req.UserID, req.DeviceID, since.Stream, since.Stream); err != nil {
			return nil, err
		}
	}
	if s.Ephemeral != nil {
		// Spec: set_presence defaults to "online" when omitted.
		presence := req.SetPresence
		if presence == "" {
			presence = "online"
		}
		if err := s.Ephemeral.SetPresence(ctx, req.UserID, presence); err != nil {
			return nil, err
		}
	}
	if since == nil || req.FullState {
		var from streams.Position
		if since != nil {
			from = *since
		}
		return s.compute(ctx, req, from, since == nil, s.Hub.Current())
	}
	// Subscribe before reading, so a change committed meanwhile wakes us.
	memberships, err := s.Rooms.CurrentMemberships(ctx, req.UserID)
	if err != nil {
		return nil, err
	}
	var rooms []string
	for _, m := range memberships {
		rooms = append(rooms, m.RoomID)
	}
	sub := s.Hub.Subscribe(req.UserID, rooms)
	defer sub.Close()
	deadline := s.now().Add(req.Timeout)
	waitCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	from := *since
	for {
		upto := sub.Wait(waitCtx, from)
		if !upto.After(from) {
			// Timed out (or the client went away) with nothing new. The
			// one-time key counts are in every response: clients take a
			// missing count for 0 and upload keys.
			resp := emptyResponse(from)
			if ctx.Err() == nil {
				if err := s.addKeyCounts(ctx, req, resp); err != nil {
					return nil, err
				}
			}
			return resp, nil
		}
		resp, err := s.compute(ctx, req, *since, false, upto)
		if err != nil {
			return nil, err
		}
		if !resp.empty() || !s.now().Before(deadline) || ctx.Err() != nil {
			return resp, nil
		}
		// What moved concerned other users: wait on from here.
		from = upto
	}
}

// compute builds the response for the range (since, upto]. On an
// incremental sync, what the Hub says did not change for the user (rooms
// without events, account data, receipts, presence) is not read at all: a
// wake-up for one message in one room costs a few queries, whatever the
// number of rooms.
func (s *Syncer) compute(ctx context.Context, req Request, since streams.Position, initial bool, upto streams.Position) (*Response, error) {
	f := req.Filter
	resp := newResponse(upto)
	incremental := !initial && !req.FullState
	changed := func(kind streams.Kind, key string) bool {
		return !incremental || s.Hub.ChangedSince(kind, key, since.Stream)
	}
	ignored, err := s.ignoredUsers(ctx, req.UserID)
	if err != nil {
		return nil, err
	}
	timelineFilter := f.Room.Timeline
	rooms, joinedAll, err := s.Rooms.SyncRooms(ctx, roomserver.SyncRequest{
		Viewer:         roomserver.Viewer{UserID: req.UserID, DeviceID: req.DeviceID},
		Since:          since.Stream,
		Upto:           upto.Stream,
		FullState:      req.FullState,
		TimelineLimit:  timelineFilter.limit(10),
		TimelineFilter: timelineFilter.eventFilter(),
		StateFilter:    roomserver.StateFilter{EventFilter: f.Room.State.eventFilter(), LazyLoadMembers: f.Room.State.LazyLoadMembers},
		IncludeLeave:   f.Room.IncludeLeave,
		KeepRoom: func(roomID string) bool {
			return f.Room.keepsRoom(roomID) && f.Room.Timeline.keepsRoom(roomID)
		},
		Ignored:             ignored,
		RoomChanged:         func(roomID string) bool { return changed(streams.KindEvent, roomID) },
		MembershipUnchanged: !changed(streams.KindEvent, req.UserID),
	})
	if err != nil {
		return nil, err
	}
	deltaOK := map[string]bool{}
	positions := map[string][]int64{}
	for _, r := range rooms {
		switch r.Membership {
		case "join":
			resp.Rooms.Join[r.RoomID] = s.joinedRoom(r, f)
			deltaOK[r.RoomID] = r.EveryEventSeen && !r.ViewerSentEvent
			positions[r.RoomID] = r.Positions
		case "invite":
			resp.Rooms.Invite[r.RoomID] = &InvitedRoom{InviteState: strippedList{Events: r.StrippedState}}
		case "knock":
			resp.Rooms.Knock[r.RoomID] = &KnockedRoom{KnockState: strippedList{Events: r.StrippedState}}
		default:
			resp.Rooms.Leave[r.RoomID] = &LeftRoom{
				Timeline: timeline{Events: s.events(r.Timeline, f), Limited: r.Limited, PrevBatch: r.PrevBatch},
				State:    eventList{Events: s.events(r.State, f)}, AccountData: eventList{Events: []json.RawMessage{}},
			}
		}
	}
	if changed(streams.KindAccountData, req.UserID) {
		if err := s.addAccountData(ctx, req, f, resp, joinedAll, since, upto, initial); err != nil {
			return nil, err
		}
	}
	if err := s.addEphemeral(ctx, req, f, resp, joinedAll, since, upto, initial, changed); err != nil {
		return nil, err
	}
	// Counts move with events and receipts: only those rooms need them.
	var countRooms []string
	for _, r := range joinedAll {
		if !incremental || changed(streams.KindEvent, r) || changed(streams.KindReceipt, r) || changed(streams.KindReceipt, req.UserID) {
			countRooms = append(countRooms, r)
		}
	}
	if err := s.addCounts(ctx, req, resp, countRooms, since.Stream, upto.Stream, incremental, deltaOK, positions, ignored); err != nil {
		return nil, err
	}
	if err := s.addE2EE(ctx, req, resp, joinedAll, since, upto, changed); err != nil {
		return nil, err
	}
	if !initial && !req.FullState {
		resp.pruneQuietRooms()
	}
	return resp, nil
}

func (s *Syncer) joinedRoom(r roomserver.SyncRoom, f Filter) *JoinedRoom {
	jr := &JoinedRoom{
		Timeline:    timeline{Events: s.events(r.Timeline, f), Limited: r.Limited, PrevBatch: r.PrevBatch},
		State:       eventList{Events: s.events(r.State, f)},
		AccountData: eventList{Events: []json.RawMessage{}},
		Ephemeral:   eventList{Events: []json.RawMessage{}},
		Summary:     r.Summary,
	}
	if jr.Summary == nil {
		jr.Summary = &roomserver.RoomSummary{}
		jr.summaryUnchanged = true
	}
	return jr
}

// events applies event_format and event_fields.
func (s *Syncer) events(evs []roomserver.ClientEvent, f Filter) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(evs))
	for _, ev := range evs {
		var raw json.RawMessage
		if f.EventFormat == "federation" && len(ev.PDU) > 0 {
			raw = ev.PDU
		} else {
			raw, _ = json.Marshal(ev)
		}
		out = append(out, project(raw, f.EventFields))
	}
	return out
}

func (s *Syncer) addAccountData(ctx context.Context, req Request, f Filter, resp *Response, joined []string, since, upto streams.Position, initial bool) error {
	if s.AccountData == nil {
		return nil
	}
	from := since.Stream
	if initial {
		from = 0
	}
	global, rooms, err := s.AccountData.AccountDataSince(ctx, req.UserID, from, upto.Stream)
	if err != nil {
		return err
	}
	if initial && s.Push != nil && !hasType(global, "m.push_rules") {
		// A user who never changed a rule has no m.push_rules stored; an
		// initial sync still carries the rules in force (the defaults).
		rules, err := s.Push.RulesContent(ctx, req.UserID)
		if err != nil {
			return err
		}
		ev, _ := json.Marshal(map[string]json.RawMessage{"type": json.RawMessage(`"m.push_rules"`), "content": rules})
		global = append(global, ev)
	}
	limit := f.AccountData.limit(1 << 30)
	for _, ev := range global {
		if len(resp.AccountData.Events) < limit && f.AccountData.keeps(eventType(ev), "") {
			resp.AccountData.Events = append(resp.AccountData.Events, ev)
		}
	}
	for roomID, evs := range rooms {
		if !f.Room.AccountData.keepsRoom(roomID) || !slices.Contains(joined, roomID) {
			continue
		}
		jr := resp.joinedRoom(roomID)
		for _, ev := range evs {
			if f.Room.AccountData.keeps(eventType(ev), "") {
				jr.AccountData.Events = append(jr.AccountData.Events, ev)
			}
		}
	}
	return nil
}

func (s *Syncer) addEphemeral(ctx context.Context, req Request, f Filter, resp *Response, joined []string, since, upto streams.Position, initial bool,
	changed func(streams.Kind, string) bool) error {
	if s.Ephemeral == nil {
		return nil
	}
	eph := f.Room.Ephemeral
	var rooms []string
	for _, r := range joined {
		if eph.keepsRoom(r) {
			rooms = append(rooms, r)
		}
	}
	typingSince := since.Typing
	if initial {
		typingSince = 0
	}
	if eph.keeps("m.typing", "") && (initial || upto.Typing > since.Typing) {
		for _, r := range rooms {
			if ev, ok := s.Ephemeral.TypingSince(r, typingSince); ok {
				jr := resp.joinedRoom(r)
				jr.Ephemeral.Events = append(jr.Ephemeral.Events, ev)
			}
		}
	}
	from := since.Stream
	if initial {
		from = 0
	}
	var receiptRooms []string
	for _, r := range rooms {
		if changed(streams.KindReceipt, r) || changed(streams.KindReceipt, req.UserID) {
			receiptRooms = append(receiptRooms, r)
		}
	}
	if eph.keeps("m.receipt", "") && len(receiptRooms) > 0 {
		receipts, err := s.Ephemeral.ReceiptsSince(ctx, req.UserID, receiptRooms, from, upto.Stream)
		if err != nil {
			return err
		}
		for r, ev := range receipts {
			jr := resp.joinedRoom(r)
			jr.Ephemeral.Events = append(jr.Ephemeral.Events, ev)
		}
	}
	if !changed(streams.KindPresence, streams.Anywhere) {
		return nil
	}
	presence, err := s.Ephemeral.PresenceSince(ctx, req.UserID, from, upto.Stream)
	if err != nil {
		return err
	}
	limit := f.Presence.limit(1 << 30)
	for _, ev := range presence {
		if len(resp.Presence.Events) < limit && f.Presence.keeps("m.presence", eventSender(ev)) {
			resp.Presence.Events = append(resp.Presence.Events, ev)
		}
	}
	return nil
}

// addCounts adds the unread counts of rooms. A long-poll chain is cheap:
// when the counts at since are cached and none of the user's read marks can
// have moved (no receipt, no push-rule or ignore-list change, no membership
// change, no event of the user's own in the room), only the events of the
// range are counted and added.
func (s *Syncer) addCounts(ctx context.Context, req Request, resp *Response, rooms []string, since, upto int64, incremental bool,
	deltaOK map[string]bool, positions map[string][]int64, ignored map[string]bool) error {
	if s.Push == nil || len(rooms) == 0 {
		return nil
	}
	marksStill := incremental &&
		!s.Hub.ChangedSince(streams.KindReceipt, req.UserID, since) &&
		!s.Hub.ChangedSince(streams.KindAccountData, req.UserID, since) &&
		!s.Hub.ChangedSince(streams.KindEvent, req.UserID, since)
	var full, delta []string
	base := map[string]RoomCounts{}
	result := map[string]RoomCounts{}
	for _, room := range rooms {
		c, ok := s.counts.Get(req.UserID + "|" + room)
		if marksStill && ok && c.at == since && deltaOK[room] && !s.Hub.ChangedSince(streams.KindReceipt, room, since) {
			base[room] = c.counts
			if added, inMemory := s.Push.CountsOfEvents(req.UserID, positions[room], ignored); inMemory {
				result[room] = c.counts.plus(added)
				continue
			}
			delta = append(delta, room)
		} else {
			full = append(full, room)
		}
	}
	if len(full) > 0 {
		counts, err := s.Push.UnreadCounts(ctx, req.UserID, full)
		if err != nil {
			return err
		}
		for r, c := range counts {
			result[r] = c
		}
	}
	if len(delta) > 0 {
		added, err := s.Push.UnreadCountsInRange(ctx, req.UserID, delta, since, upto)
		if err != nil {
			return err
		}
		for _, r := range delta {
			result[r] = base[r].plus(added[r])
		}
	}
	for roomID, c := range result {
		s.counts.Add(req.UserID+"|"+roomID, cachedCounts{at: upto, counts: c})
		jr := resp.joinedRoom(roomID)
		jr.countsChanged = true
		// Spec: with unread_thread_notifications, unread_notifications
		// counts the main timeline only and each thread is counted apart.
		cc := c.Counts
		if req.Filter.Room.Timeline.UnreadThreadNotifications {
			cc = c.Main
			if len(c.Threads) > 0 {
				jr.UnreadThreadNotifications = c.Threads
			}
		}
		jr.UnreadNotifications = &cc
	}
	return nil
}

type cachedCounts struct {
	at     int64
	counts RoomCounts
}

// plus adds the counts of more events.
func (c RoomCounts) plus(d RoomCounts) RoomCounts {
	out := RoomCounts{Counts: c.Counts.plus(d.Counts), Main: c.Main.plus(d.Main)}
	if len(c.Threads)+len(d.Threads) > 0 {
		out.Threads = map[string]Counts{}
		for t, v := range c.Threads {
			out.Threads[t] = v
		}
		for t, v := range d.Threads {
			out.Threads[t] = out.Threads[t].plus(v)
		}
	}
	return out
}

func (c Counts) plus(d Counts) Counts {
	return Counts{Notifications: c.Notifications + d.Notifications, Highlights: c.Highlights + d.Highlights}
}

// addE2EE adds to-device messages, device-list changes and one-time key
// counts. Device lists are read only if a device list changed for the user
// or in one of its rooms, or a room event (a membership) happened there or
// to the user. ToDeviceSince is always called, since the sync also
// acknowledges earlier messages; it asks the Hub itself (KindToDevice) and
// skips its queries when there is nothing to read or delete.
func (s *Syncer) addE2EE(ctx context.Context, req Request, resp *Response, joined []string, since, upto streams.Position,
	changed func(streams.Kind, string) bool) error {
	if s.E2EE == nil {
		return nil
	}
	msgs, err := s.E2EE.ToDeviceSince(ctx, req.UserID, req.DeviceID, since.Stream, upto.Stream)
	if err != nil {
		return err
	}
	resp.ToDevice.Events = append(resp.ToDevice.Events, msgs...)
	// Device lists move with key changes and with memberships (users who
	// start or stop sharing a room), not with ordinary messages.
	listsMoved := changed(streams.KindDeviceList, req.UserID) || changed(streams.KindEvent, req.UserID)
	for _, r := range joined {
		if listsMoved {
			break
		}
		listsMoved = changed(streams.KindDeviceList, r) || changed(streams.KindMembership, r)
	}
	if since.Stream > 0 && listsMoved {
		changed, left, err := s.E2EE.DeviceListsSince(ctx, req.UserID, since.Stream, upto.Stream)
		if err != nil {
			return err
		}
		resp.DeviceLists.Changed, resp.DeviceLists.Left = changed, left
	}
	return s.addKeyCounts(ctx, req, resp)
}

// addKeyCounts adds the device's one-time key counts and unused fallback key types.
func (s *Syncer) addKeyCounts(ctx context.Context, req Request, resp *Response) error {
	if s.E2EE == nil {
		return nil
	}
	counts, fallback, err := s.E2EE.OneTimeKeyCounts(ctx, req.UserID, req.DeviceID)
	if err != nil {
		return err
	}
	resp.OneTimeKeysCount, resp.UnusedFallbackKeyTypes = counts, fallback
	return nil
}

func hasType(evs []json.RawMessage, t string) bool {
	for _, ev := range evs {
		if eventType(ev) == t {
			return true
		}
	}
	return false
}

func eventType(ev json.RawMessage) string {
	var e struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(ev, &e)
	return e.Type
}

func eventSender(ev json.RawMessage) string {
	var e struct {
		Sender string `json:"sender"`
	}
	_ = json.Unmarshal(ev, &e)
	return e.Sender
}

// Cache sizes: ignored-user lists per user, unread counts per user and room.
const (
	ignoredCacheSize = 10_000
	countsCacheSize  = 200_000
)

// ignoredUsers is the user's m.ignored_user_list, cached until the Hub says
// the user's account data changed.
func (s *Syncer) ignoredUsers(ctx context.Context, userID string) (map[string]bool, error) {
	if s.AccountData == nil {
		return nil, nil
	}
	if c, ok := s.ignored.Get(userID); ok && !s.Hub.ChangedSince(streams.KindAccountData, userID, c.at) {
		return c.users, nil
	}
	at := s.Hub.Current().Stream
	users, err := s.AccountData.IgnoredUsers(ctx, userID)
	if err != nil {
		return nil, err
	}
	s.ignored.Add(userID, ignoredList{at: at, users: users})
	return users, nil
}

type ignoredList struct {
	at    int64
	users map[string]bool
}

// SaveFilter stores a filter for the user. Spec: POST /user/{userId}/filter.
func (s *Syncer) SaveFilter(ctx context.Context, userID string, raw []byte) (string, error) {
	f, err := ParseFilter(raw)
	if err != nil {
		return "", err
	}
	canonical, err := json.Marshal(f)
	if err != nil {
		return "", err
	}
	id, err := s.Store.InsertFilter(ctx, userID, canonical, s.now().UnixMilli())
	return strconv.FormatInt(id, 10), err
}

// LoadFilter returns a stored filter. Spec: GET /user/{userId}/filter/{filterId}.
func (s *Syncer) LoadFilter(ctx context.Context, userID, filterID string) (Filter, error) {
	id, err := strconv.ParseInt(filterID, 10, 64)
	notFound := mxerr.New(mxerr.NotFound, "No filter %q", filterID)
	if err != nil || id < 0 {
		return Filter{}, notFound
	}
	raw, err := s.Store.GetFilter(ctx, userID, id)
	if errors.Is(err, sqlstore.ErrNotFound) {
		return Filter{}, notFound
	}
	if err != nil {
		return Filter{}, err
	}
	var f Filter
	err = json.Unmarshal(raw, &f)
	return f, err
}

// ResolveFilter reads the filter parameter of /sync: a stored filter ID or
// inline JSON.
func (s *Syncer) ResolveFilter(ctx context.Context, userID, param string) (Filter, error) {
	switch {
	case param == "":
		return Filter{}, nil
	case strings.HasPrefix(strings.TrimSpace(param), "{"):
		f, err := ParseFilter([]byte(param))
		if e, ok := mxerr.As(err); ok {
			return f, mxerr.New(mxerr.InvalidParam, "filter: %s", e.Message)
		}
		return f, err
	}
	f, err := s.LoadFilter(ctx, userID, param)
	if e, ok := mxerr.As(err); ok && e.Code == mxerr.NotFound {
		return f, mxerr.New(mxerr.InvalidParam, "Unknown filter ID %q", param)
	}
	return f, err
}
