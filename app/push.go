package app

import (
	"context"

	"chappe/push"
	"chappe/syncapi"
)

// syncPush shows the push component to /sync with sync's own count types.
type syncPush struct{ p *push.Service }

// UnreadCounts converts push's counts to sync's. Counts cover the whole
// room; the main timeline's alone are in push.RoomCounts.Main.
func (sp syncPush) UnreadCounts(ctx context.Context, userID string, roomIDs []string) (map[string]syncapi.RoomCounts, error) {
	counts, err := sp.p.UnreadCounts(ctx, userID, roomIDs)
	if err != nil {
		return nil, err
	}
	out := make(map[string]syncapi.RoomCounts, len(counts))
	for room, c := range counts {
		rc := syncapi.RoomCounts{Counts: syncapi.Counts{Notifications: c.Notifications, Highlights: c.Highlights}}
		if len(c.Threads) > 0 {
			rc.Threads = make(map[string]syncapi.Counts, len(c.Threads))
			for t, tc := range c.Threads {
				rc.Threads[t] = syncapi.Counts{Notifications: tc.Notifications, Highlights: tc.Highlights}
			}
		}
		out[room] = rc
	}
	return out, nil
}

// runPushDelivery delivers notifications to push gateways until ctx ends;
// the returned channel closes when it has stopped.
func (s *Server) runPushDelivery(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		s.Push.Run(ctx, nil, s.Log)
		close(done)
	}()
	return done
}
