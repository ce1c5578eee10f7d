package roomserver

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// GetEvent returns one event of the room if the viewer may see it; 404
// otherwise, so the existence of hidden events is not revealed.
// Spec: GET /rooms/{roomId}/event/{eventId}.
func (r *Roomserver) GetEvent(ctx context.Context, viewer Viewer, roomID, eventID string) (ClientEvent, error) {
	rd, err := r.openReader(ctx, roomID, viewer.UserID)
	if err != nil {
		return ClientEvent{}, err
	}
	row, err := rd.q.EventByID(ctx, eventID)
	notFound := mxerr.New(mxerr.NotFound, "Event %s not found in room %s, or you may not see it", eventID, roomID)
	// Rejected and soft-failed events are never served to clients (spec:
	// server-server-api.md, "Rejection", "Soft failure").
	if errors.Is(err, sqlstore.ErrNotFound) || (err == nil && (row.RoomID != roomID || row.Rejected != nil || row.SoftFailed)) {
		return ClientEvent{}, notFound
	}
	if err != nil {
		return ClientEvent{}, err
	}
	if ok, err := rd.canSee(ctx, row); err != nil {
		return ClientEvent{}, err
	} else if !ok {
		return ClientEvent{}, notFound
	}
	evs, err := r.formatEvents(ctx, rd.q, rd.room, viewer, []sqlstore.Event{row})
	if err != nil {
		return ClientEvent{}, err
	}
	return evs[0], nil
}

// State returns the room state the viewer may read.
// Spec: GET /rooms/{roomId}/state.
func (r *Roomserver) State(ctx context.Context, viewer Viewer, roomID string) ([]ClientEvent, error) {
	rd, err := r.openReader(ctx, roomID, viewer.UserID)
	if err != nil {
		return nil, err
	}
	snap, err := rd.stateView(ctx)
	if err != nil {
		return nil, err
	}
	return r.snapshotEvents(ctx, rd, viewer, snap, func(stateKey) bool { return true })
}

// StateEvent returns the content of one piece of state.
// Spec: GET /rooms/{roomId}/state/{eventType}/{stateKey}.
func (r *Roomserver) StateEvent(ctx context.Context, viewer Viewer, roomID, evType, key string) (ClientEvent, error) {
	rd, err := r.openReader(ctx, roomID, viewer.UserID)
	if err != nil {
		return ClientEvent{}, err
	}
	snap, err := rd.stateView(ctx)
	if err != nil {
		return ClientEvent{}, err
	}
	evs, err := r.snapshotEvents(ctx, rd, viewer, snap, func(k stateKey) bool { return k.Type == evType && k.StateKey == key })
	if err != nil {
		return ClientEvent{}, err
	}
	if len(evs) == 0 {
		return ClientEvent{}, mxerr.New(mxerr.NotFound, "The room has no %s state with key %q", evType, key)
	}
	return evs[0], nil
}

// snapshotEvents formats the state events of snap that keep selects.
func (r *Roomserver) snapshotEvents(ctx context.Context, rd *reader, viewer Viewer, snap *snapshot, keep func(stateKey) bool) ([]ClientEvent, error) {
	var nids []int64
	for k, nid := range snap.state {
		if keep(k) {
			nids = append(nids, nid)
		}
	}
	if len(nids) == 0 {
		return []ClientEvent{}, nil
	}
	rows, err := rd.q.EventsByNID(ctx, nids)
	if err != nil {
		return nil, err
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].StreamPos < rows[j].StreamPos })
	return r.formatEvents(ctx, rd.q, rd.room, viewer, rows)
}

// MembersRequest filters GET /rooms/{roomId}/members.
type MembersRequest struct {
	At            string // a pagination token: members at that point
	Membership    string
	NotMembership string
}

// Members returns the room's member events. Spec: GET /rooms/{roomId}/members.
func (r *Roomserver) Members(ctx context.Context, viewer Viewer, roomID string, req MembersRequest) ([]ClientEvent, error) {
	rd, err := r.openReader(ctx, roomID, viewer.UserID)
	if err != nil {
		return nil, err
	}
	snap, err := rd.stateView(ctx)
	if err != nil {
		return nil, err
	}
	if req.At != "" {
		pos, err := ParseToken(req.At)
		if err != nil {
			return nil, err
		}
		// The state after the last event before the gap, capped by what the
		// user may read.
		rows, err := rd.q.EventsPage(ctx, roomID, pos, false, 1, sqlstore.EventFilter{})
		if err != nil {
			return nil, err
		}
		if len(rows) > 0 && (rd.membership() == "join" || !before(rd.history[len(rd.history)-1].Pos, posOf(rows[0]))) {
			if snap, err = r.stateAfter(ctx, rd.q, rows[0]); err != nil {
				return nil, err
			}
		}
	}
	evs, err := r.snapshotEvents(ctx, rd, viewer, snap, func(k stateKey) bool { return k.Type == "m.room.member" })
	if err != nil {
		return nil, err
	}
	out := evs[:0]
	for _, ev := range evs {
		m := gjson.GetBytes(ev.Content, "membership").String()
		if req.Membership != "" && m != req.Membership {
			continue
		}
		if req.NotMembership != "" && m == req.NotMembership {
			continue
		}
		out = append(out, ev)
	}
	return out, nil
}

// JoinedMember is an entry of /joined_members.
type JoinedMember struct {
	DisplayName *string `json:"display_name,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

// JoinedMembers lists the joined members with their room profiles; only
// members may ask. Spec: GET /rooms/{roomId}/joined_members.
func (r *Roomserver) JoinedMembers(ctx context.Context, viewer Viewer, roomID string) (map[string]JoinedMember, error) {
	rd, err := r.openReader(ctx, roomID, viewer.UserID)
	if err != nil {
		return nil, err
	}
	if rd.membership() != "join" {
		return nil, rd.notMember()
	}
	evs, err := r.stateEvents(ctx, rd.q, rd.room.RoomVersion, rd.current, memberKeys(rd.current))
	if err != nil {
		return nil, err
	}
	out := map[string]JoinedMember{}
	for _, ev := range evs {
		if m, _ := ev.Membership(); m != "join" {
			continue
		}
		var jm JoinedMember
		if v := gjson.GetBytes(ev.Content(), "displayname"); v.Type == gjson.String {
			s := v.String()
			jm.DisplayName = &s
		}
		if v := gjson.GetBytes(ev.Content(), "avatar_url"); v.Type == gjson.String {
			s := v.String()
			jm.AvatarURL = &s
		}
		out[*ev.StateKey()] = jm
	}
	return out, nil
}

func memberKeys(s *snapshot) []stateKey {
	var out []stateKey
	for k := range s.state {
		if k.Type == "m.room.member" {
			out = append(out, k)
		}
	}
	return out
}

// JoinedRooms lists the rooms the user is joined to. Spec: GET /joined_rooms.
func (r *Roomserver) JoinedRooms(ctx context.Context, userID string) ([]string, error) {
	rooms, err := r.store.RoomsWithMembership(ctx, userID, "join")
	if rooms == nil {
		rooms = []string{}
	}
	return rooms, err
}

// Tokens mark gaps between events: "t<depth>_<stream>" is the gap just
// before the event at (depth, stream) in the room's topological order (the
// position need not hold an event). Paging backwards from a gap returns the
// events before it; forwards, the events after it, so a backward page's end
// token read forwards gives back the same events. Spec: pagination tokens
// are opaque to clients.

// gapAfter is the gap right after an event.
func gapAfter(p Position) Position { return Position{Depth: p.Depth, Stream: p.Stream + 1} }

// Token writes a position as a pagination token.
func Token(p Position) string { return fmt.Sprintf("t%d_%d", p.Depth, p.Stream) }

// roomGap reads a pagination token for one room: a room token ("t…"), or a
// sync token ("s<stream>_…", which /sync's next_batch is and which /messages
// accepts too): the gap after every event of the room at or before that
// stream position.
func (r *Roomserver) roomGap(ctx context.Context, q *sqlstore.Queries, roomID, tok string) (Position, error) {
	if !strings.HasPrefix(tok, "s") {
		return ParseToken(tok)
	}
	streamPart, _, _ := strings.Cut(tok[1:], "_")
	stream, err := strconv.ParseInt(streamPart, 10, 64)
	if err != nil || stream < 0 {
		return Position{}, mxerr.New(mxerr.InvalidParam, "Invalid pagination token %q", tok)
	}
	p, err := q.FirstPositionAfterStream(ctx, roomID, stream)
	if errors.Is(err, sqlstore.ErrNotFound) {
		latest, err := q.LatestPosition(ctx, roomID)
		if err != nil {
			return Position{}, err
		}
		return gapAfter(latest), nil
	}
	return p, err
}

// ParseToken reads a pagination token; 400 M_INVALID_PARAM if malformed.
func ParseToken(s string) (Position, error) {
	bad := mxerr.New(mxerr.InvalidParam, "Invalid pagination token %q", s)
	if !strings.HasPrefix(s, "t") {
		return Position{}, bad
	}
	d, st, ok := strings.Cut(s[1:], "_")
	if !ok {
		return Position{}, bad
	}
	depth, err1 := strconv.ParseInt(d, 10, 64)
	stream, err2 := strconv.ParseInt(st, 10, 64)
	// The stream part is negative in backfilled history (see
	// sqlstore.NextBackfillPosition).
	if err1 != nil || err2 != nil || depth < 0 {
		return Position{}, bad
	}
	return Position{Depth: depth, Stream: stream}, nil
}

// MessagesRequest is GET /rooms/{roomId}/messages.
type MessagesRequest struct {
	From            string // "" = from the end (backwards) or the start (forwards)
	To              string
	Forwards        bool
	Limit           int
	Filter          sqlstore.EventFilter
	LazyLoadMembers bool
}

// MessagesResponse is its answer.
type MessagesResponse struct {
	Chunk []ClientEvent `json:"chunk"`
	Start string        `json:"start"`
	End   string        `json:"end,omitempty"`
	State []ClientEvent `json:"state,omitempty"`
}

// maxBackfillsPerPage bounds the backfills one /messages request may wait for.
const maxBackfillsPerPage = 3

// Messages pages through the room's history with history visibility
// applied; paging back past the history we hold backfills it from the
// room's other servers. end is omitted when there is nothing more in that direction.
// Spec: GET /rooms/{roomId}/messages.
func (r *Roomserver) Messages(ctx context.Context, viewer Viewer, roomID string, req MessagesRequest) (MessagesResponse, error) {
	rd, err := r.openReader(ctx, roomID, viewer.UserID)
	if err != nil {
		return MessagesResponse{}, err
	}
	if !rd.everMember() {
		if wr, err := rd.worldReadable(ctx); err != nil {
			return MessagesResponse{}, err
		} else if !wr {
			return MessagesResponse{}, rd.notMember()
		}
	}
	var from Position // forwards: the gap before the first event
	if !req.Forwards {
		// backwards: the gap after the latest event, a real position so the
		// token can later be used to page forwards from "now"
		latest, err := rd.q.LatestPosition(ctx, roomID)
		if err != nil {
			return MessagesResponse{}, err
		}
		from = gapAfter(latest)
	}
	if req.From != "" {
		if from, err = r.roomGap(ctx, rd.q, roomID, req.From); err != nil {
			return MessagesResponse{}, err
		}
	}
	var to *Position
	if req.To != "" {
		p, err := r.roomGap(ctx, rd.q, roomID, req.To)
		if err != nil {
			return MessagesResponse{}, err
		}
		to = &p
	}
	limit := req.Limit
	if limit <= 0 {
		limit = 10
	}
	if limit > 1000 {
		limit = 1000
	}
	resp := MessagesResponse{Start: Token(from), Chunk: []ClientEvent{}}
	var kept []sqlstore.Event
	pos := from
	exhausted, reachedTo := false, false
	for backfills := 0; ; backfills++ {
		for len(kept) < limit && !exhausted {
			page, err := rd.q.EventsPage(ctx, roomID, pos, req.Forwards, limit, req.Filter)
			if err != nil {
				return MessagesResponse{}, err
			}
			if len(page) < limit {
				exhausted = true
			}
			for _, row := range page {
				p := posOf(row)
				// A forward page stops at the gap "to" (events before it); a
				// backward page at the events at or after it.
				if to != nil && ((req.Forwards && !before(p, *to)) || (!req.Forwards && before(p, *to))) {
					exhausted, reachedTo = true, true
					break
				}
				if req.Forwards {
					pos = gapAfter(p)
				} else {
					pos = p
				}
				ok, err := rd.canSee(ctx, row)
				if err != nil {
					return MessagesResponse{}, err
				}
				if ok {
					kept = append(kept, row)
					if len(kept) == limit {
						break
					}
				}
			}
		}
		// Paging back past the oldest event we hold: ask the room's other
		// servers for the history before it, then page on.
		if req.Forwards || reachedTo || len(kept) >= limit || backfills == maxBackfillsPerPage {
			break
		}
		if got, err := r.backfill(ctx, roomID); err != nil || !got {
			if err != nil {
				r.log(ctx).Warn().Err(err).Str("room_id", roomID).Msg("backfill")
			}
			break
		}
		exhausted = false
		// Backfilled history may hold the viewer's earlier memberships.
		if rd, err = r.openReader(ctx, roomID, viewer.UserID); err != nil {
			return MessagesResponse{}, err
		}
	}
	if resp.Chunk, err = r.formatEvents(ctx, rd.q, rd.room, viewer, kept); err != nil {
		return MessagesResponse{}, err
	}
	if !exhausted || len(kept) == limit {
		resp.End = Token(pos)
	}
	if req.LazyLoadMembers && len(kept) > 0 {
		if resp.State, err = r.senderMembers(ctx, rd, viewer, kept); err != nil {
			return MessagesResponse{}, err
		}
	}
	return resp, nil
}

// senderMembers is the member events of the senders of rows, from the state
// before the first of them (lazy-loading members, spec "Lazy-loading room members").
func (r *Roomserver) senderMembers(ctx context.Context, rd *reader, viewer Viewer, rows []sqlstore.Event) ([]ClientEvent, error) {
	snap, err := r.loadSnapshot(ctx, rd.q, rows[0].StateBefore)
	if err != nil {
		return nil, err
	}
	senders := map[string]bool{}
	for _, row := range rows {
		senders[row.Sender] = true
	}
	return r.snapshotEvents(ctx, rd, viewer, snap, func(k stateKey) bool { return k.Type == "m.room.member" && senders[k.StateKey] })
}

// ContextResponse is GET /rooms/{roomId}/context/{eventId}'s answer.
type ContextResponse struct {
	Event        ClientEvent   `json:"event"`
	EventsBefore []ClientEvent `json:"events_before"`
	EventsAfter  []ClientEvent `json:"events_after"`
	Start        string        `json:"start"`
	End          string        `json:"end"`
	State        []ClientEvent `json:"state"`
}

// Context returns an event with the events around it.
// Spec: GET /rooms/{roomId}/context/{eventId}.
func (r *Roomserver) Context(ctx context.Context, viewer Viewer, roomID, eventID string, limit int, filter sqlstore.EventFilter) (ContextResponse, error) {
	ev, err := r.GetEvent(ctx, viewer, roomID, eventID)
	if err != nil {
		return ContextResponse{}, err
	}
	row, err := r.store.EventByID(ctx, eventID)
	if err != nil {
		return ContextResponse{}, err
	}
	if limit < 0 {
		limit = 0
	}
	if limit > 100 {
		limit = 100
	}
	at := posOf(row)
	nBefore := limit / 2
	beforeResp, err := r.Messages(ctx, viewer, roomID, MessagesRequest{From: Token(at), Limit: max(nBefore, 1), Filter: filter})
	if err != nil {
		return ContextResponse{}, err
	}
	afterResp, err := r.Messages(ctx, viewer, roomID, MessagesRequest{From: Token(gapAfter(at)), Forwards: true, Limit: max(limit-nBefore, 1), Filter: filter})
	if err != nil {
		return ContextResponse{}, err
	}
	if nBefore == 0 {
		beforeResp.Chunk = []ClientEvent{}
	}
	if limit-nBefore == 0 {
		afterResp.Chunk = []ClientEvent{}
	}
	// start: the gap before the earliest event returned; end: the gap after
	// the last one.
	resp := ContextResponse{Event: ev, EventsBefore: beforeResp.Chunk, EventsAfter: afterResp.Chunk, Start: Token(at), End: Token(gapAfter(at))}
	if n := len(beforeResp.Chunk); n > 0 {
		if first, err := r.store.EventByID(ctx, beforeResp.Chunk[n-1].EventID); err == nil {
			resp.Start = Token(posOf(first))
		}
	}
	if n := len(afterResp.Chunk); n > 0 {
		if last, err := r.store.EventByID(ctx, afterResp.Chunk[n-1].EventID); err == nil {
			resp.End = Token(gapAfter(posOf(last)))
		}
	}
	rd, err := r.openReader(ctx, roomID, viewer.UserID)
	if err != nil {
		return ContextResponse{}, err
	}
	snap, err := r.loadSnapshot(ctx, rd.q, row.StateBefore)
	if err != nil {
		return ContextResponse{}, err
	}
	if resp.State, err = r.snapshotEvents(ctx, rd, viewer, snap, func(stateKey) bool { return true }); err != nil {
		return ContextResponse{}, err
	}
	return resp, nil
}

// TimestampToEvent finds the visible event closest to ts in the direction,
// asking the room's other servers when the time falls in history we lack
// (see remoteNearTimestamp). Spec: GET /rooms/{roomId}/timestamp_to_event.
func (r *Roomserver) TimestampToEvent(ctx context.Context, viewer Viewer, roomID string, ts int64, forwards bool) (string, int64, error) {
	rd, err := r.openReader(ctx, roomID, viewer.UserID)
	if err != nil {
		return "", 0, err
	}
	if !rd.everMember() {
		if wr, err := rd.worldReadable(ctx); err != nil {
			return "", 0, err
		} else if !wr {
			return "", 0, rd.notMember()
		}
	}
	best, err := rd.nearTimestamp(ctx, ts, forwards)
	if err != nil {
		return "", 0, err
	}
	if remote, err := r.remoteNearTimestamp(ctx, rd, ts, forwards, best); err != nil {
		r.log(ctx).Warn().Err(err).Str("room_id", roomID).Msg("timestamp_to_event over federation")
	} else if remote != nil {
		best = remote
	}
	if best == nil {
		return "", 0, notFoundNear(ts, forwards)
	}
	return best.EventID, best.OriginServerTS, nil
}

// notFoundNear is the 404 of /timestamp_to_event.
func notFoundNear(ts int64, forwards bool) error {
	if forwards {
		return mxerr.New(mxerr.NotFound, "No event found after %d", ts)
	}
	return mxerr.New(mxerr.NotFound, "No event found before %d", ts)
}

// nearTimestamp is the timeline event closest to ts in the direction that
// the reader may see; nil if none.
func (rd *reader) nearTimestamp(ctx context.Context, ts int64, forwards bool) (*sqlstore.Event, error) {
	rows, err := rd.q.EventsNearTimestamp(ctx, rd.room.RoomID, ts, forwards, 100)
	if err != nil {
		return nil, err
	}
	for _, row := range rows {
		if ok, err := rd.canSee(ctx, row); err != nil {
			return nil, err
		} else if ok {
			return &row, nil
		}
	}
	return nil, nil
}

// RelationsRequest is GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]].
type RelationsRequest struct {
	RelType   *string
	EventType *string
	From      string
	To        string
	Forwards  bool
	Limit     int
}

// RelationsResponse is its answer.
type RelationsResponse struct {
	Chunk     []ClientEvent `json:"chunk"`
	NextBatch string        `json:"next_batch,omitempty"`
	PrevBatch string        `json:"prev_batch,omitempty"`
}

// relationToken is "r<stream>"; /relations pages by stream position.
func relationToken(stream int64) string { return "r" + strconv.FormatInt(stream, 10) }

func parseRelationToken(s string) (int64, error) {
	if !strings.HasPrefix(s, "r") {
		return 0, mxerr.New(mxerr.InvalidParam, "Invalid relations token %q", s)
	}
	n, err := strconv.ParseInt(s[1:], 10, 64)
	if err != nil || n < 0 {
		return 0, mxerr.New(mxerr.InvalidParam, "Invalid relations token %q", s)
	}
	return n, nil
}

// Relations lists the visible events relating to a visible parent.
// Spec: GET /rooms/{roomId}/relations/{eventId}.
func (r *Roomserver) Relations(ctx context.Context, viewer Viewer, roomID, parentID string, req RelationsRequest) (RelationsResponse, error) {
	if _, err := r.GetEvent(ctx, viewer, roomID, parentID); err != nil {
		return RelationsResponse{}, err
	}
	rd, err := r.openReader(ctx, roomID, viewer.UserID)
	if err != nil {
		return RelationsResponse{}, err
	}
	from := int64(math.MaxInt64)
	if req.Forwards {
		from = 0
	}
	if req.From != "" {
		if from, err = parseRelationToken(req.From); err != nil {
			return RelationsResponse{}, err
		}
	}
	to := int64(-1)
	if req.To != "" {
		if to, err = parseRelationToken(req.To); err != nil {
			return RelationsResponse{}, err
		}
	}
	limit := req.Limit
	if limit <= 0 || limit > 1000 {
		limit = 50
	}
	var kept []sqlstore.Event
	pos := from
	more := true
	for len(kept) < limit && more {
		page, err := rd.q.Relations(ctx, roomID, parentID, req.RelType, req.EventType, pos, req.Forwards, limit)
		if err != nil {
			return RelationsResponse{}, err
		}
		more = len(page) == limit
		for _, row := range page {
			if to >= 0 && ((req.Forwards && row.StreamPos >= to) || (!req.Forwards && row.StreamPos <= to)) {
				more = false
				break
			}
			pos = row.StreamPos
			if ok, err := rd.canSee(ctx, row); err != nil {
				return RelationsResponse{}, err
			} else if ok {
				kept = append(kept, row)
				if len(kept) == limit {
					break
				}
			}
		}
	}
	chunk, err := r.formatEvents(ctx, rd.q, rd.room, viewer, kept)
	if err != nil {
		return RelationsResponse{}, err
	}
	resp := RelationsResponse{Chunk: chunk}
	if req.From != "" {
		resp.PrevBatch = req.From
	}
	if more || len(kept) == limit {
		resp.NextBatch = relationToken(pos)
	}
	return resp, nil
}

// EventFilter is the RoomEventFilter applied to pages of events.
type EventFilter = sqlstore.EventFilter
