package roomserver

import (
	"context"
	"errors"
	"time"

	"chappe/sqlstore"
)

// maxBackfillsToJump bounds the backfills one /timestamp_to_event may make
// to bring another server's answer into our timeline, and jumpTimeout the
// time the whole remote part may take.
const (
	maxBackfillsToJump = 10
	jumpTimeout        = 30 * time.Second
)

// remoteNearTimestamp asks the room's other servers for an event closer to
// ts than best (nil: we have none), when ts falls before the history we hold
// and there is history we lack. The answer counts only once backfill has
// placed it in our timeline and the reader may see it, so the client can
// read around it (/context, /messages). Spec: server-server-api.md,
// GET /timestamp_to_event ("it should try to backfill this event").
func (r *Roomserver) remoteNearTimestamp(ctx context.Context, rd *reader, ts int64, forwards bool, best *sqlstore.Event) (*sqlstore.Event, error) {
	if !r.cfg.Federation.enabled() {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, jumpTimeout)
	defer cancel()
	roomID := rd.room.RoomID
	oldest, err := r.db().EventsPage(ctx, roomID, Position{}, true, 1, sqlstore.EventFilter{})
	if err != nil || len(oldest) == 0 || (best != nil && ts >= oldest[0].OriginServerTS) {
		return nil, err
	}
	if missing, err := r.missingHistory(ctx, roomID); err != nil || len(missing) == 0 {
		return nil, err
	}
	servers, err := r.backfillServersOf(ctx, rd.room)
	if err != nil {
		return nil, err
	}
	for _, server := range servers {
		eventID, originTS, err := r.cfg.Federation.Remote.TimestampToEvent(ctx, server, roomID, ts, forwards)
		if err != nil {
			continue
		}
		if best != nil && ((forwards && originTS >= best.OriginServerTS) || (!forwards && originTS <= best.OriginServerTS)) {
			return nil, nil // ours is as close
		}
		return r.backfillUntil(ctx, rd, eventID)
	}
	return nil, nil
}

// backfillUntil backfills the room until eventID is in the timeline, and
// returns it if the reader's user may see it.
func (r *Roomserver) backfillUntil(ctx context.Context, rd *reader, eventID string) (*sqlstore.Event, error) {
	for range maxBackfillsToJump {
		row, err := r.db().EventByID(ctx, eventID)
		if err != nil && !errors.Is(err, sqlstore.ErrNotFound) {
			return nil, err
		}
		if err == nil && !row.Outlier && row.Rejected == nil && row.RoomID == rd.room.RoomID {
			fresh, err := r.openReader(ctx, rd.room.RoomID, rd.userID)
			if err != nil {
				return nil, err
			}
			if ok, err := fresh.canSee(ctx, row); err != nil || !ok {
				return nil, err
			}
			return &row, nil
		}
		if got, err := r.backfill(ctx, rd.room.RoomID); err != nil || !got {
			return nil, err
		}
	}
	return nil, nil
}

// TimestampToEventForServer answers GET /timestamp_to_event: our timeline
// event closest to ts in the direction that origin may see.
func (r *Roomserver) TimestampToEventForServer(ctx context.Context, origin, roomID string, ts int64, forwards bool) (string, int64, error) {
	version, err := r.checkServerMayRead(ctx, origin, roomID)
	if err != nil {
		return "", 0, err
	}
	rows, err := r.db().EventsNearTimestamp(ctx, roomID, ts, forwards, 100)
	if err != nil {
		return "", 0, err
	}
	for _, row := range rows {
		if ok, err := r.serverCanSee(ctx, origin, version, row); err != nil {
			return "", 0, err
		} else if ok {
			return row.EventID, row.OriginServerTS, nil
		}
	}
	return "", 0, notFoundNear(ts, forwards)
}
