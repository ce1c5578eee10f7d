package push

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/tidwall/gjson"

	"chappe/sqlstore"
)

// Delivery to push gateways (spec: push-gateway-api.md, POST
// /_matrix/push/v1/notify). Notifications are already stored with their
// event, so they are the queue: each pusher remembers the stream position
// up to which it delivered, and a restart resumes from there (a
// notification may then be sent twice; gateways suppress duplicates by
// event_id).

// Delivery tuning.
const (
	deliveryBatch      = 50               // notifications read per pusher per round
	deliveryPoll       = 10 * time.Second // rounds without a wake-up, for retries
	deliveryTimeout    = 15 * time.Second // per gateway request
	minBackoff         = time.Second
	maxBackoff         = 10 * time.Minute
	giveUpAfter        = 24 * time.Hour // a gateway failing this long loses the notification
	maxGatewayResponse = 64 << 10
)

// gatewayState is the in-memory retry state of a failing pusher.
type gatewayState struct {
	next    time.Time
	backoff time.Duration
}

// delivery is the work of the delivery loop: users notified by events whose
// transactions may not have committed yet, and the highest of those events'
// stream positions (their notifications are visible once the stream is past
// it).
type delivery struct {
	mu      sync.Mutex
	users   map[string]struct{}
	waitFor int64
	kick    chan struct{}
	// owners are the users who may have pushers (a superset: pushers
	// removed by another user's pushers/set stay until a restart). Until
	// the loop has read them all (ownersKnown), every user counts.
	owners      map[string]struct{}
	ownersKnown bool
}

// addOwner records that userID has a pusher.
func (d *delivery) addOwner(userID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.owners[userID] = struct{}{}
}

// wakeDelivery tells the delivery loop that users were notified by the event
// at stream position pos. Users without pushers are left out.
func (s *Service) wakeDelivery(pos int64, users []string) {
	d := &s.delivery
	d.mu.Lock()
	for _, u := range users {
		if _, ok := d.owners[u]; ok || !d.ownersKnown {
			d.users[u] = struct{}{}
		}
	}
	d.waitFor = max(d.waitFor, pos)
	d.mu.Unlock()
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// take returns the users to deliver to and the position to wait for.
func (d *delivery) take() ([]string, int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	users := make([]string, 0, len(d.users))
	for u := range d.users {
		users = append(users, u)
	}
	clear(d.users)
	return users, d.waitFor
}

// Run delivers notifications to the users' push gateways until ctx ends.
// client is the HTTP client for gateway requests (nil: a default one). At
// start, every pusher catches up from its last delivered position.
func (s *Service) Run(ctx context.Context, client *http.Client, log zerolog.Logger) {
	if client == nil {
		client = &http.Client{Timeout: deliveryTimeout}
	}
	retry := map[string]*gatewayState{}
	all := true
	for {
		users, waitFor := s.delivery.take()
		if err := s.waitVisible(ctx, waitFor); err != nil {
			return
		}
		for key, st := range retry {
			if !s.now().Before(st.next) {
				users = append(users, strings.SplitN(key, "\x00", 2)[0])
			}
		}
		if all || len(users) > 0 {
			if all {
				users = nil // every pusher
			}
			if err := s.deliverRound(ctx, client, retry, users, log); err != nil {
				if ctx.Err() != nil {
					return
				}
				log.Warn().Err(err).Msg("push gateway delivery")
				all = true // the users taken are lost: next round, every pusher
			} else {
				all = false
			}
		}
		timer := time.NewTimer(nextRound(retry, s.now()))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-s.delivery.kick:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// nextRound is how long to wait for the next round without a wake-up: the
// poll interval, or less if a failing pusher is due for a retry before.
func nextRound(retry map[string]*gatewayState, now time.Time) time.Duration {
	wait := deliveryPoll
	for _, st := range retry {
		if until := st.next.Sub(now); until < wait {
			wait = max(until, 0)
		}
	}
	return wait
}

// waitVisible waits until every stream position up to pos is committed or
// abandoned.
func (s *Service) waitVisible(ctx context.Context, pos int64) error {
	for s.hub.Current().Stream < pos {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// deliverRound sends the pending notifications of the pushers of users
// (nil: of every pusher).
func (s *Service) deliverRound(ctx context.Context, client *http.Client, retry map[string]*gatewayState, users []string, log zerolog.Logger) error {
	upto := s.hub.Current().Stream
	pushers, err := s.store.PushersOf(ctx, users)
	if err != nil {
		return err
	}
	if users == nil {
		s.delivery.mu.Lock()
		for _, p := range pushers {
			s.delivery.owners[p.UserID] = struct{}{}
		}
		s.delivery.ownersKnown = true
		s.delivery.mu.Unlock()
	}
	now := s.now()
	for _, p := range pushers {
		key := p.UserID + "\x00" + p.AppID + "\x00" + p.Pushkey
		if st, ok := retry[key]; ok && now.Before(st.next) {
			continue
		}
		if err := s.deliverPusher(ctx, client, retry, key, p, upto, log); err != nil {
			return err
		}
	}
	return nil
}

// deliverPusher sends one pusher's notifications in order until they are
// all sent or the gateway fails.
func (s *Service) deliverPusher(ctx context.Context, client *http.Client, retry map[string]*gatewayState, key string, p sqlstore.Pusher, upto int64, log zerolog.Logger) error {
	for {
		notes, err := s.store.Notifications(ctx, p.UserID, p.LastStreamPos, upto, false, true, deliveryBatch)
		if err != nil || len(notes) == 0 {
			if err == nil {
				delete(retry, key)
			}
			return err
		}
		for _, n := range notes {
			outcome := s.notifyGateway(ctx, client, p, n)
			switch outcome {
			case gatewayRejected:
				log.Info().Str("user_id", p.UserID).Str("app_id", p.AppID).Msg("push gateway rejected the pushkey: pusher removed")
				delete(retry, key)
				return s.store.DeletePusher(ctx, p.UserID, p.AppID, p.Pushkey)
			case gatewayFailed:
				st := retry[key]
				if st == nil {
					st = &gatewayState{backoff: minBackoff / 2}
					retry[key] = st
				}
				st.backoff = min(st.backoff*2, maxBackoff)
				st.next = s.now().Add(st.backoff)
				since := s.now().UnixMilli()
				if p.FailingSinceTS != nil {
					since = *p.FailingSinceTS
				}
				if s.now().UnixMilli()-since < giveUpAfter.Milliseconds() {
					return s.store.SetPusherProgress(ctx, p.UserID, p.AppID, p.Pushkey, p.LastStreamPos, &since)
				}
				// Failing for too long: drop this notification and go on.
				log.Warn().Str("user_id", p.UserID).Str("app_id", p.AppID).Msg("push gateway unreachable for a day: notification dropped")
			}
			p.LastStreamPos, p.FailingSinceTS = n.StreamPos, nil
			// Recorded even if we are stopping: the gateway has it.
			if err := s.store.SetPusherProgress(context.WithoutCancel(ctx), p.UserID, p.AppID, p.Pushkey, n.StreamPos, nil); err != nil {
				return err
			}
		}
	}
}

// Outcomes of a gateway request.
const (
	gatewayDelivered = iota // 2xx, or a 4xx that retrying cannot fix: go on
	gatewayFailed           // network error, 5xx or 429: retry later
	gatewayRejected         // the gateway rejected the pushkey: remove the pusher
)

// notifyGateway sends one notification.
func (s *Service) notifyGateway(ctx context.Context, client *http.Client, p sqlstore.Pusher, n sqlstore.Notification) int {
	body, gwURL, err := s.notifyBody(ctx, p, n)
	if err != nil {
		return gatewayDelivered // nothing sensible can be sent; skip it
	}
	reqCtx, cancel := context.WithTimeout(ctx, deliveryTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, gwURL, bytes.NewReader(body))
	if err != nil {
		return gatewayDelivered
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return gatewayFailed
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxGatewayResponse))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		for _, k := range gjson.GetBytes(data, "rejected").Array() {
			if k.String() == p.Pushkey {
				return gatewayRejected
			}
		}
		return gatewayDelivered
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return gatewayFailed
	}
	return gatewayDelivered
}

// notifyBody builds the request of POST /_matrix/push/v1/notify for one
// notification and returns it with the gateway URL.
func (s *Service) notifyBody(ctx context.Context, p sqlstore.Pusher, n sqlstore.Notification) ([]byte, string, error) {
	var data map[string]json.RawMessage
	if err := json.Unmarshal([]byte(p.Data), &data); err != nil {
		return nil, "", err
	}
	var gwURL, format string
	_ = json.Unmarshal(data["url"], &gwURL)
	_ = json.Unmarshal(data["format"], &format)
	if gwURL == "" {
		return nil, "", fmt.Errorf("pusher without url")
	}
	delete(data, "url")
	var actions []json.RawMessage
	_ = json.Unmarshal([]byte(n.Actions), &actions)
	tweaks := map[string]any{}
	for _, a := range actions {
		var t struct {
			SetTweak string          `json:"set_tweak"`
			Value    json.RawMessage `json:"value"`
		}
		if json.Unmarshal(a, &t) == nil && t.SetTweak != "" {
			if len(t.Value) == 0 {
				tweaks[t.SetTweak] = true
			} else {
				tweaks[t.SetTweak] = t.Value
			}
		}
	}
	device := map[string]any{
		"app_id": p.AppID, "pushkey": p.Pushkey, "pushkey_ts": p.CreatedTS / 1000, "data": data, "tweaks": tweaks,
	}
	note := map[string]any{"event_id": n.EventID, "room_id": n.RoomID, "devices": []any{device}}
	if unread, err := s.badge(ctx, p.UserID); err == nil && unread > 0 {
		note["counts"] = map[string]int{"unread": unread}
	} else {
		note["counts"] = map[string]int{}
	}
	if format != "event_id_only" {
		ev := gjson.Parse(n.JSON)
		note["type"] = ev.Get("type").String()
		note["sender"] = ev.Get("sender").String()
		if c := ev.Get("content"); c.IsObject() {
			note["content"] = json.RawMessage(c.Raw)
		}
		if sk := ev.Get("state_key"); sk.Exists() {
			note["user_is_target"] = sk.String() == p.UserID
		}
		prio := "low"
		if _, sound := tweaks["sound"]; sound {
			prio = "high"
		}
		note["prio"] = prio
	}
	body, err := json.Marshal(map[string]any{"notification": note})
	return body, gwURL, err
}

// badge is the user's number of unread notifications across their rooms.
func (s *Service) badge(ctx context.Context, userID string) (int, error) {
	rooms, err := s.store.RoomsWithMembership(ctx, userID, "join")
	if err != nil || len(rooms) == 0 {
		return 0, err
	}
	counts, err := s.UnreadCounts(ctx, userID, rooms)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, c := range counts {
		total += c.Notifications
	}
	return total, nil
}
