package roomserver

import (
	"context"
	"encoding/json"
	"slices"
	"sort"

	"github.com/tidwall/gjson"

	"chappe/sqlstore"
)

// StateFilter narrows the state section of a synced room (spec: the
// "state" StateFilter of a sync filter).
type StateFilter struct {
	EventFilter
	LazyLoadMembers bool
}

func (f StateFilter) keeps(k stateKey, sender string) bool {
	if f.Types != nil && !TypeMatches(k.Type, f.Types) {
		return false
	}
	if TypeMatches(k.Type, f.NotTypes) {
		return false
	}
	if f.Senders != nil && !slices.Contains(f.Senders, sender) {
		return false
	}
	return !slices.Contains(f.NotSenders, sender)
}

// TypeMatches matches an event type against filter patterns, '*' being a
// wildcard for any run of characters (spec: the types of filters).
func TypeMatches(t string, patterns []string) bool {
	for _, p := range patterns {
		if globMatch(p, t) {
			return true
		}
	}
	return false
}

func globMatch(pattern, s string) bool {
	for len(pattern) > 0 {
		if pattern[0] == '*' {
			for i := len(s); i >= 0; i-- {
				if globMatch(pattern[1:], s[i:]) {
					return true
				}
			}
			return false
		}
		if len(s) == 0 || pattern[0] != s[0] {
			return false
		}
		pattern, s = pattern[1:], s[1:]
	}
	return len(s) == 0
}

// SyncRequest asks for a user's rooms as a sync sees them: what changed in
// the stream range (Since, Upto], or everything (Since 0, an initial sync).
// Spec: GET /_matrix/client/v3/sync.
type SyncRequest struct {
	Viewer         Viewer
	Since, Upto    int64
	FullState      bool
	TimelineLimit  int
	TimelineFilter EventFilter
	StateFilter    StateFilter
	IncludeLeave   bool
	KeepRoom       func(roomID string) bool // rooms / not_rooms of the filter; nil keeps all
	Ignored        map[string]bool          // users whose events and invites are hidden
	// RoomChanged tells, on an incremental sync, whether a joined room may
	// have events in the range; rooms it rules out are not read at all. nil:
	// every room may have.
	RoomChanged func(roomID string) bool
	// MembershipUnchanged is set when the user's memberships certainly did
	// not change in the range, which saves looking for changes.
	MembershipUnchanged bool
}

// StrippedEvent is a state event reduced for invite and knock previews.
type StrippedEvent struct {
	Content  json.RawMessage `json:"content"`
	Sender   string          `json:"sender"`
	StateKey string          `json:"state_key"`
	Type     string          `json:"type"`
}

// RoomSummary is a joined room's summary (spec: RoomSummary).
type RoomSummary struct {
	Heroes  []string `json:"m.heroes,omitempty"`
	Joined  int      `json:"m.joined_member_count"`
	Invited int      `json:"m.invited_member_count"`
}

// SyncRoom is one room of a sync response.
type SyncRoom struct {
	RoomID        string
	Membership    string // join, invite, knock or leave (leave covers ban)
	Timeline      []ClientEvent
	Limited       bool
	PrevBatch     string
	State         []ClientEvent
	StrippedState []StrippedEvent
	Summary       *RoomSummary
	// EveryEventSeen is set when the timeline query saw every event of the
	// room in the range (not limited, no timeline filter), and
	// ViewerSentEvent when one of them came from the viewer: together they
	// tell sync whether read marks may have moved with the events.
	EveryEventSeen  bool
	ViewerSentEvent bool
	// Positions are the stream positions of the events of the range that
	// the timeline query saw (all of them when EveryEventSeen).
	Positions []int64
}

// strippedTypes are the state shown to invitees and knockers.
// Spec: "Stripped state".
var strippedTypes = []string{"m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
	"m.room.canonical_alias", "m.room.encryption", "m.room.topic"}

// SyncRooms computes the rooms section of a sync with a handful of queries
// whatever the number of rooms: memberships, membership changes, timelines
// and visibility histories are each read for all rooms at once. It also
// returns every room the user is joined to (changed or not).
func (r *Roomserver) SyncRooms(ctx context.Context, req SyncRequest) ([]SyncRoom, []string, error) {
	q := &r.store.Queries
	user := req.Viewer.UserID
	current, err := r.currentMemberships(ctx, q, user)
	if err != nil {
		return nil, nil, err
	}
	membership := map[string]string{}
	for _, m := range current {
		membership[m.RoomID] = m.Membership
	}
	// Rooms whose membership changed in the range: newly joined rooms get
	// their full state; leaves, invites and knocks in the range are reported.
	changed := map[string]bool{}
	if req.Since > 0 && !req.MembershipUnchanged {
		changes, err := q.MembershipChanges(ctx, user, req.Since, req.Upto)
		if err != nil {
			return nil, nil, err
		}
		for _, c := range changes {
			changed[c.RoomID] = true
		}
	}
	keep := func(room string) bool { return req.KeepRoom == nil || req.KeepRoom(room) }
	var withTimeline, invites, knocks, joined []string
	kinds := map[string]string{}
	for room, m := range membership {
		if !keep(room) {
			continue
		}
		switch m {
		case "join":
			joined = append(joined, room)
			if req.Since > 0 && req.RoomChanged != nil && !req.RoomChanged(room) && !changed[room] {
				continue
			}
			withTimeline = append(withTimeline, room)
			kinds[room] = "join"
		case "invite":
			if req.Since == 0 || changed[room] {
				invites = append(invites, room)
			}
		case "knock":
			if req.Since == 0 || changed[room] {
				knocks = append(knocks, room)
			}
		case "leave", "ban":
			if (req.Since == 0 && req.IncludeLeave) || changed[room] {
				if forgotten, err := q.RoomForgotten(ctx, user, room); err != nil {
					return nil, nil, err
				} else if !forgotten {
					withTimeline = append(withTimeline, room)
					kinds[room] = "leave"
				}
			}
		}
	}
	sort.Strings(withTimeline)
	sort.Strings(joined)
	out := []SyncRoom{}
	if len(withTimeline) > 0 {
		rooms, err := r.syncTimelines(ctx, q, req, withTimeline, kinds, changed)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, rooms...)
	}
	for _, group := range []struct {
		rooms []string
		kind  string
	}{{invites, "invite"}, {knocks, "knock"}} {
		for _, room := range group.rooms {
			sr, ok, err := r.strippedRoom(ctx, q, req, room, group.kind)
			if err != nil {
				return nil, nil, err
			}
			if ok {
				out = append(out, sr)
			}
		}
	}
	return out, joined, nil
}

// syncTimelines builds the joined and left rooms: timeline, state, summary.
func (r *Roomserver) syncTimelines(ctx context.Context, q *sqlstore.Queries, req SyncRequest, roomIDs []string, kinds map[string]string, changed map[string]bool) ([]SyncRoom, error) {
	limit := req.TimelineLimit
	if limit <= 0 {
		limit = 10
	}
	// Incremental syncs of active rooms read their latest events from memory.
	byRoom := map[string][]sqlstore.Event{}
	var fromDB []string
	for _, room := range roomIDs {
		if req.Since > 0 {
			if rows, ok := r.tailRange(room, req.Since, req.Upto, limit+1, req.TimelineFilter); ok {
				byRoom[room] = rows
				continue
			}
		}
		fromDB = append(fromDB, room)
	}
	if len(fromDB) > 0 {
		rows, err := q.RoomEventsInRange(ctx, fromDB, req.Since, req.Upto, limit+1, req.TimelineFilter)
		if err != nil {
			return nil, err
		}
		for _, row := range rows {
			byRoom[row.RoomID] = append(byRoom[row.RoomID], row)
		}
	}
	histories, err := r.membershipHistories(ctx, q, req.Viewer.UserID, roomIDs)
	if err != nil {
		return nil, err
	}
	// Where the state must be computed from a point in the stream: the
	// room's state at "since" (for gappy incremental syncs) and at "upto"
	// (for rooms whose timeline in the range is empty).
	var atSince map[string]sqlstore.Event
	if req.Since > 0 {
		var gappy []string // rooms with more events in the range than the limit
		for _, room := range roomIDs {
			if len(byRoom[room]) > limit {
				gappy = append(gappy, room)
			}
		}
		if len(gappy) > 0 {
			if atSince, err = r.lastEvents(ctx, q, gappy, req.Since); err != nil {
				return nil, err
			}
		}
	}
	// Rooms with no event in the range need their last event before it.
	var quiet []string
	for _, room := range roomIDs {
		if len(byRoom[room]) == 0 {
			quiet = append(quiet, room)
		}
	}
	atUpto := map[string]sqlstore.Event{}
	if len(quiet) > 0 {
		if atUpto, err = r.lastEvents(ctx, q, quiet, req.Upto); err != nil {
			return nil, err
		}
	}
	var summaries map[string]*sqlstore.RoomMemberSummary
	var out []SyncRoom
	var needSummary []string
	for _, roomID := range roomIDs {
		version, err := r.roomVersionOf(ctx, q, roomID)
		if err != nil {
			return nil, err
		}
		// The sync path reads history by event, never the current state, so
		// the reader needs only the room's ID and version.
		room := sqlstore.Room{RoomID: roomID, RoomVersion: version}
		rd := &reader{r: r, q: q, room: room, userID: req.Viewer.UserID, history: histories[roomID]}
		sr, err := r.syncTimelineRoom(ctx, rd, req, byRoom[roomID], limit, kinds[roomID], changed[roomID], atSince, atUpto)
		if err != nil {
			return nil, err
		}
		if sr.Membership == "join" && (req.Since == 0 || changed[roomID] || hasMemberEvent(sr)) {
			needSummary = append(needSummary, roomID)
		}
		out = append(out, sr)
	}
	if len(needSummary) > 0 {
		if summaries, err = q.MemberSummaries(ctx, needSummary, req.Viewer.UserID); err != nil {
			return nil, err
		}
		for i := range out {
			if s, ok := summaries[out[i].RoomID]; ok {
				out[i].Summary = &RoomSummary{Heroes: s.Heroes, Joined: s.Joined, Invited: s.Invited}
			}
		}
	}
	return out, nil
}

func hasMemberEvent(sr SyncRoom) bool {
	for _, ev := range sr.Timeline {
		if ev.Type == "m.room.member" {
			return true
		}
	}
	for _, ev := range sr.State {
		if ev.Type == "m.room.member" {
			return true
		}
	}
	return false
}

func (r *Roomserver) lastEvents(ctx context.Context, q *sqlstore.Queries, roomIDs []string, pos int64) (map[string]sqlstore.Event, error) {
	rows, err := q.LastEventsAtOrBefore(ctx, roomIDs, pos)
	if err != nil {
		return nil, err
	}
	out := make(map[string]sqlstore.Event, len(rows))
	for _, row := range rows {
		out[row.RoomID] = row
	}
	return out, nil
}

// syncTimelineRoom builds one joined or left room. rows are the room's
// newest events in the range, newest first, at most limit+1.
func (r *Roomserver) syncTimelineRoom(ctx context.Context, rd *reader, req SyncRequest, rows []sqlstore.Event, limit int,
	kind string, membershipChanged bool, atSince, atUpto map[string]sqlstore.Event) (SyncRoom, error) {
	roomID := rd.room.RoomID
	sr := SyncRoom{RoomID: roomID, Membership: kind, Timeline: []ClientEvent{}, State: []ClientEvent{}}
	sr.Limited = len(rows) > limit
	if sr.Limited {
		rows = rows[:limit]
	}
	f := req.TimelineFilter
	sr.EveryEventSeen = !sr.Limited && f.Types == nil && f.NotTypes == nil && f.Senders == nil && f.NotSenders == nil && f.ContainsURL == nil
	for _, row := range rows {
		sr.ViewerSentEvent = sr.ViewerSentEvent || row.Sender == req.Viewer.UserID
		sr.Positions = append(sr.Positions, row.StreamPos)
	}
	// Oldest first, visible, not from ignored users.
	var kept []sqlstore.Event
	for i := len(rows) - 1; i >= 0; i-- {
		row := rows[i]
		if req.Ignored[row.Sender] && row.Sender != req.Viewer.UserID {
			continue
		}
		ok, err := rd.canSee(ctx, row)
		if err != nil {
			return sr, err
		}
		if ok {
			kept = append(kept, row)
		}
	}
	timeline, err := r.formatEvents(ctx, rd.q, rd.room, req.Viewer, kept)
	if err != nil {
		return sr, err
	}
	sr.Timeline = timeline
	if len(rows) > 0 {
		sr.PrevBatch = Token(posOf(rows[len(rows)-1]))
	} else if last, ok := atUpto[roomID]; ok {
		sr.PrevBatch = Token(gapAfter(posOf(last)))
	}

	// The state at the start of the timeline.
	var start *snapshot
	switch {
	case len(rows) > 0:
		start, err = r.loadSnapshot(ctx, rd.q, rows[stateStart(rows)].StateBefore)
	default:
		last, ok := atUpto[roomID]
		if !ok {
			return sr, nil
		}
		start, err = r.stateAfter(ctx, rd.q, last)
	}
	if err != nil {
		return sr, err
	}
	// Full state on initial syncs, on full_state, and for rooms joined in
	// the range; a delta from "since" otherwise (empty unless the timeline
	// has a gap).
	var from *snapshot
	if req.Since > 0 && !req.FullState && !(membershipChanged && kind == "join") {
		if !sr.Limited {
			return sr, nil
		}
		if prev, ok := atSince[roomID]; ok {
			if from, err = r.stateAfter(ctx, rd.q, prev); err != nil {
				return sr, err
			}
		}
	}
	inTimeline := map[string]bool{}
	senders := map[string]bool{req.Viewer.UserID: true}
	for _, row := range kept {
		inTimeline[row.EventID] = true
		senders[row.Sender] = true
	}
	var nids []int64
	for k, nid := range start.state {
		if from != nil && from.state[k] == nid {
			continue
		}
		if req.StateFilter.LazyLoadMembers && k.Type == "m.room.member" && !senders[k.StateKey] {
			continue
		}
		nids = append(nids, nid)
	}
	if len(nids) == 0 {
		return sr, nil
	}
	stateRows, err := rd.q.EventsByNID(ctx, nids)
	if err != nil {
		return sr, err
	}
	var keptState []sqlstore.Event
	for _, row := range stateRows {
		if inTimeline[row.EventID] || !req.StateFilter.keeps(stateKey{row.Type, deref(row.StateKey)}, row.Sender) {
			continue
		}
		keptState = append(keptState, row)
	}
	sort.Slice(keptState, func(i, j int) bool { return keptState[i].StreamPos < keptState[j].StreamPos })
	sr.State, err = r.formatEvents(ctx, rd.q, rd.room, req.Viewer, keptState)
	return sr, err
}

// stateStart is the index, in rows (newest first), of the event whose
// state before it is the state at the start of the timeline: the oldest,
// unless it is a stub membership (a remote invite, or its rejection,
// stored before we held the room: no state before it). Then it is the
// oldest event that has a state before it, so that a room joined over
// federation shows its state even when the invite is in the same range.
func stateStart(rows []sqlstore.Event) int {
	for i := len(rows) - 1; i >= 0; i-- {
		if rows[i].StateBefore != 0 || rows[i].Type == "m.room.create" {
			return i
		}
	}
	return len(rows) - 1
}

// strippedRoom builds an invite or knock: the stripped state of the room and
// the user's own membership event. An invite from an ignored user is hidden.
func (r *Roomserver) strippedRoom(ctx context.Context, q *sqlstore.Queries, req SyncRequest, roomID, kind string) (SyncRoom, bool, error) {
	room, err := r.loadRoom(ctx, q, roomID, false)
	if err != nil {
		return SyncRoom{}, false, err
	}
	snap, err := r.loadSnapshot(ctx, q, room.StateSnapshot)
	if err != nil {
		return SyncRoom{}, false, err
	}
	keys := []stateKey{{"m.room.member", req.Viewer.UserID}}
	for _, t := range strippedTypes {
		keys = append(keys, stateKey{t, ""})
	}
	evs, err := r.stateEvents(ctx, q, room.RoomVersion, snap, keys)
	if err != nil {
		return SyncRoom{}, false, err
	}
	sr := SyncRoom{RoomID: roomID, Membership: kind, StrippedState: []StrippedEvent{}}
	for _, ev := range evs {
		// An invite from another server, or a knock through one, carries
		// the room's preview that server sent (see withPreview): shown
		// instead of ours, which is the membership alone.
		if ev.Type() == "m.room.member" {
			if sent := gjson.GetBytes(ev.Unsigned(), kind+"_room_state"); sent.IsArray() {
				for _, s := range sent.Array() {
					var se StrippedEvent
					if json.Unmarshal([]byte(s.Raw), &se) == nil && se.Type != "m.room.member" {
						sr.StrippedState = append(sr.StrippedState, se)
					}
				}
			}
		}
		if ev.Type() == "m.room.member" && req.Ignored[string(ev.SenderID())] {
			return SyncRoom{}, false, nil
		}
		if ev.Type() == "m.room.member" && gjson.GetBytes(ev.Content(), "membership").String() != kind {
			return SyncRoom{}, false, nil // changed since; the next sync reports it
		}
		sr.StrippedState = append(sr.StrippedState, strippedOf(ev))
	}
	return sr, true, nil
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// CurrentMemberships lists the rooms the user has a membership in (cached).
func (r *Roomserver) CurrentMemberships(ctx context.Context, userID string) ([]sqlstore.CurrentMembership, error) {
	return r.currentMemberships(ctx, &r.store.Queries, userID)
}
