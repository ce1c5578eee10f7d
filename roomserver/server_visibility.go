package roomserver

import (
	"context"
	"encoding/json"

	"github.com/tidwall/gjson"

	"chappe/sqlstore"
)

// This file decides what another server may see of a room's history: the
// history visibility rules (client-server-api "History visibility")
// applied to a server as a whole, which sees what its users could see.
// Events it may not see are served redacted rather than left out, so the
// room's graph stays connected for it (auth and prev_events intact) while
// their content stays here.

// serverCanSee tells whether origin may see a timeline event:
//  1. world_readable or shared at the event: allow (a server only reads a
//     room it has a member in, or one that is world readable);
//  2. a user of origin was joined at the event: allow;
//  3. invited at the event, and a user of origin was invited then: allow;
//  4. otherwise deny.
//
// A user's own membership event counts with the membership it sets.
func (r *Roomserver) serverCanSee(ctx context.Context, origin, version string, row sqlstore.Event) (bool, error) {
	q := r.db()
	before, err := r.loadSnapshot(ctx, q, row.StateBefore)
	if err != nil {
		return false, err
	}
	visibility, err := r.historyVisibilityAt(ctx, q, version, before)
	if err != nil {
		return false, err
	}
	if visibility == "world_readable" || visibility == "shared" {
		return true, nil
	}
	memberships := map[string]bool{}
	if row.Type == "m.room.member" && row.StateKey != nil && serverOf(*row.StateKey) == origin {
		memberships[gjson.Get(row.JSON, "content.membership").String()] = true
	}
	var nids []int64
	for k, nid := range before.state {
		if k.Type == "m.room.member" && serverOf(k.StateKey) == origin {
			nids = append(nids, nid)
		}
	}
	evs, err := r.loadEvents(ctx, q, version, nids)
	if err != nil {
		return false, err
	}
	for _, ev := range evs {
		memberships[gjson.GetBytes(ev.Content(), "membership").String()] = true
	}
	return memberships["join"] || (visibility == "invited" && memberships["invite"]), nil
}

// eventsForServer is rows as origin may receive them: whole when it may
// see them, redacted otherwise.
func (r *Roomserver) eventsForServer(ctx context.Context, origin, version string, rows []sqlstore.Event) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(rows))
	for _, row := range rows {
		ok, err := r.serverCanSee(ctx, origin, version, row)
		if err != nil {
			return nil, err
		}
		// An outlier that is not a state event (a soft-failed message) has
		// no known state before it to judge by: its content stays here.
		ok = ok && !(row.Outlier && row.StateKey == nil)
		if ok || row.RedactedBy != nil {
			out = append(out, json.RawMessage(row.JSON))
			continue
		}
		redacted, err := redactJSON(version, []byte(row.JSON))
		if err != nil {
			return nil, err
		}
		out = append(out, redacted)
	}
	return out, nil
}
