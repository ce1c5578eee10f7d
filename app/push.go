package app

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"time"

	"chappe/netguard"
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
	return toSyncCounts(counts), nil
}

// UnreadCountsInRange converts push's counts of a range to sync's.
func (sp syncPush) UnreadCountsInRange(ctx context.Context, userID string, roomIDs []string, from, to int64) (map[string]syncapi.RoomCounts, error) {
	counts, err := sp.p.UnreadCountsInRange(ctx, userID, roomIDs, from, to)
	if err != nil {
		return nil, err
	}
	return toSyncCounts(counts), nil
}

// CountsOfEvents converts push's in-memory counts to sync's.
func (sp syncPush) CountsOfEvents(userID string, positions []int64, ignored map[string]bool) (syncapi.RoomCounts, bool) {
	c, ok := sp.p.CountsOfEvents(userID, positions, ignored)
	if !ok {
		return syncapi.RoomCounts{}, false
	}
	return toSyncCounts(map[string]push.RoomCounts{"": c})[""], true
}

func toSyncCounts(counts map[string]push.RoomCounts) map[string]syncapi.RoomCounts {
	out := make(map[string]syncapi.RoomCounts, len(counts))
	for room, c := range counts {
		rc := syncapi.RoomCounts{
			Counts: syncapi.Counts{Notifications: c.Notifications, Highlights: c.Highlights},
			Main:   syncapi.Counts{Notifications: c.Main.Notifications, Highlights: c.Main.Highlights},
		}
		if len(c.Threads) > 0 {
			rc.Threads = make(map[string]syncapi.Counts, len(c.Threads))
			for t, tc := range c.Threads {
				rc.Threads[t] = syncapi.Counts{Notifications: tc.Notifications, Highlights: tc.Highlights}
			}
		}
		out[room] = rc
	}
	return out
}

// runPushDelivery delivers notifications to push gateways until ctx ends;
// the returned channel closes when it has stopped.
func (s *Server) runPushDelivery(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		s.Push.Run(ctx, s.pushGatewayClient(), s.Log)
		close(done)
	}()
	return done
}

// RulesContent is the user's m.push_rules account data, for initial syncs.
func (sp syncPush) RulesContent(ctx context.Context, userID string) (json.RawMessage, error) {
	return sp.p.RulesContent(ctx, userID)
}

// pushGatewayDeliveryTimeout bounds one request to a push gateway.
const pushGatewayDeliveryTimeout = 15 * time.Second

// pushGatewayClient reaches push gateways only outside the internal address
// ranges (plus what push.gateway_allowed_networks admits): pusher URLs come
// from clients and must not let them make the server call internal services.
func (s *Server) pushGatewayClient() *http.Client {
	parse := func(nets []string) []netip.Prefix {
		var out []netip.Prefix
		for _, n := range nets {
			out = append(out, netip.MustParsePrefix(n)) // checked by config.Verify
		}
		return out
	}
	filter := netguard.NewAddrFilter(parse(s.Config.Push.GatewayAllowedNetworks), parse(s.Config.Push.GatewayDeniedNetworks))
	return netguard.NewClient(filter, pushGatewayDeliveryTimeout, 3)
}
