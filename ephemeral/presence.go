package ephemeral

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"chappe/mxerr"
	"chappe/sqlstore"
	"chappe/streams"
)

// Presence states. Spec: modules/presence.md.
const (
	PresenceOnline      = "online"
	PresenceUnavailable = "unavailable"
	PresenceOffline     = "offline"
)

const (
	// OfflineAfter: a user neither syncing nor setting their presence for
	// this long is marked offline.
	OfflineAfter = 3 * time.Minute
	// presenceSweepInterval is how often users gone quiet are looked for.
	presenceSweepInterval = 15 * time.Second
	// MaxStatusMsgBytes bounds status_msg, which reaches everyone sharing a room.
	MaxStatusMsgBytes = 4096
)

// PresenceConfig is what presence needs from the configuration.
type PresenceConfig struct {
	// Enabled: when false, presence is not tracked: PUT is accepted and
	// ignored, GET answers offline, /sync gets no presence.
	Enabled bool
	// ServerName is ours: the presence other servers send is kept only for
	// their users who share a room with one of our users (ReceivePresence).
	ServerName string
}

// liveUser is a user this process believes is not offline.
type liveUser struct {
	lastSeen   time.Time // last sync or presence update: the user is still connected
	lastActive time.Time // last pro-active action (spec: "Last active ago")
}

// Presence is the presence component. The state is stored (with a stream
// position, so /sync delivers changes); who is connected is tracked in
// memory, and a sweep (Run) marks offline those gone quiet for OfflineAfter.
type Presence struct {
	store *sqlstore.Store
	hub   *streams.Hub
	cfg   PresenceConfig
	now   Clock
	fed   Federation // nil: changes stay on this server

	// mu guards live. A change of a user's state is claimed in live before
	// it is written, and the sweep writes "offline" while holding mu, so a
	// user who comes back during a sweep is never left offline.
	mu   sync.Mutex
	live map[string]*liveUser
}

// NewPresence returns the component. Changes take stream positions from hub
// and wake the user and the members of their rooms. now nil is the system clock.
func NewPresence(store *sqlstore.Store, hub *streams.Hub, cfg PresenceConfig, now Clock) *Presence {
	return &Presence{store: store, hub: hub, cfg: cfg, now: clockOrNow(now), live: map[string]*liveUser{}}
}

// Enabled tells whether presence is tracked.
func (p *Presence) Enabled() bool { return p.cfg.Enabled }

// Status is a user's presence as GET /presence/{userId}/status answers it.
type Status struct {
	Presence        string  `json:"presence"`
	LastActiveAgo   *int64  `json:"last_active_ago,omitempty"`
	StatusMsg       *string `json:"status_msg,omitempty"`
	CurrentlyActive *bool   `json:"currently_active,omitempty"`
}

// PutStatus sets the user's presence and status message (nil clears it).
// Spec: PUT /presence/{userId}/status. Accepted and ignored when presence
// is disabled.
func (p *Presence) PutStatus(ctx context.Context, userID, state string, statusMsg *string) error {
	if err := checkState(state); err != nil {
		return err
	}
	if statusMsg != nil && len(*statusMsg) > MaxStatusMsgBytes {
		return mxerr.New(mxerr.InvalidParam, "status_msg is limited to %d bytes", MaxStatusMsgBytes)
	}
	if !p.cfg.Enabled {
		return nil
	}
	now := p.now()
	p.mu.Lock()
	lu := p.live[userID]
	if state == PresenceOffline {
		delete(p.live, userID)
	} else {
		if lu == nil {
			lu = &liveUser{}
			p.live[userID] = lu
		}
		lu.lastSeen = now
		if state == PresenceOnline {
			lu.lastActive = now
		}
	}
	var lastActive time.Time
	if lu != nil {
		lastActive = lu.lastActive
	}
	p.mu.Unlock()
	return p.write(ctx, userID, func(old *sqlstore.Presence) (sqlstore.Presence, bool) {
		next := sqlstore.Presence{UserID: userID, State: state, StatusMsg: statusMsg, LastActiveTS: lastActive.UnixMilli()}
		if lastActive.IsZero() {
			next.LastActiveTS = 0
			if old != nil {
				next.LastActiveTS = old.LastActiveTS
			}
		}
		changed := old == nil || old.State != state || !sameMsg(old.StatusMsg, statusMsg)
		return next, changed
	})
}

// SetPresence is /sync's set_presence: the user is connected. "online" (or
// "") marks them online and active, "unavailable" marks them unavailable,
// but only when they were offline: a state they chose through PUT is kept.
// "offline" leaves their presence alone (the spec: the client is not marked
// online by syncing). Without a change it costs no database query.
func (p *Presence) SetPresence(ctx context.Context, userID, state string) error {
	if state == "" {
		state = PresenceOnline
	}
	if err := checkState(state); err != nil {
		return err
	}
	if !p.cfg.Enabled || state == PresenceOffline {
		return nil
	}
	now := p.now()
	p.mu.Lock()
	if lu := p.live[userID]; lu != nil {
		lu.lastSeen = now
		if state == PresenceOnline {
			lu.lastActive = now
		}
		p.mu.Unlock()
		return nil
	}
	lu := &liveUser{lastSeen: now, lastActive: now}
	p.live[userID] = lu
	p.mu.Unlock()
	err := p.write(ctx, userID, func(old *sqlstore.Presence) (sqlstore.Presence, bool) {
		next := sqlstore.Presence{UserID: userID, State: state, LastActiveTS: now.UnixMilli()}
		if old == nil {
			return next, true
		}
		next.StatusMsg = old.StatusMsg
		if old.State != PresenceOffline { // already present (another process, or before a restart)
			next.State = old.State
		}
		return next, old.State != next.State
	})
	if err != nil {
		p.mu.Lock()
		if p.live[userID] == lu {
			delete(p.live, userID)
		}
		p.mu.Unlock()
	}
	return err
}

// write reads the user's stored presence, computes the next one and, if it
// changed, stores it at a new stream position, waking the user and their
// rooms. A change of last_active_ts alone is stored without a position.
func (p *Presence) write(ctx context.Context, userID string, next func(old *sqlstore.Presence) (sqlstore.Presence, bool)) error {
	return p.writeFrom(ctx, userID, true, next)
}

// writeFrom is write for a local user (whose change is announced to the
// servers sharing a room: announcePresence) or a remote one.
func (p *Presence) writeFrom(ctx context.Context, userID string, local bool, next func(old *sqlstore.Presence) (sqlstore.Presence, bool)) error {
	return inStream(ctx, p.store, p.hub, func(q *sqlstore.Queries, pos int64) (bool, streams.Change, error) {
		var old *sqlstore.Presence
		row, err := q.GetPresence(ctx, userID)
		switch {
		case err == nil:
			old = &row
		case !errors.Is(err, sqlstore.ErrNotFound):
			return false, streams.Change{}, err
		}
		n, changed := next(old)
		if !changed {
			return false, streams.Change{}, nil
		}
		n.StreamPos = pos
		if err := q.PutPresence(ctx, n); err != nil {
			return false, streams.Change{}, err
		}
		if local {
			if err := p.announcePresence(ctx, q, n); err != nil {
				return false, streams.Change{}, err
			}
		}
		rooms, err := q.RoomsWithMembership(ctx, userID, "join")
		return true, streams.Change{Users: []string{userID}, Rooms: rooms, Kind: streams.KindPresence}, err
	})
}

// GetStatus is the presence of userID as viewer may see it: their own, or
// that of a user sharing a room with them (403 otherwise). Offline when
// presence is disabled or nothing was ever set.
// Spec: GET /presence/{userId}/status.
func (p *Presence) GetStatus(ctx context.Context, viewer, userID string) (Status, error) {
	if viewer != userID {
		ok, err := p.store.ShareJoinedRoom(ctx, viewer, userID)
		if err != nil {
			return Status{}, err
		}
		if !ok {
			return Status{}, mxerr.New(mxerr.Forbidden, "You are not allowed to see the presence of %s: you share no room", userID)
		}
	}
	if !p.cfg.Enabled {
		return Status{Presence: PresenceOffline}, nil
	}
	row, err := p.store.GetPresence(ctx, userID)
	if errors.Is(err, sqlstore.ErrNotFound) {
		return Status{Presence: PresenceOffline}, nil
	}
	if err != nil {
		return Status{}, err
	}
	return p.status(row), nil
}

// status is the presence content of a stored row, with the last active time
// this process saw if it is more recent.
func (p *Presence) status(row sqlstore.Presence) Status {
	now := p.now()
	last := row.LastActiveTS
	p.mu.Lock()
	if lu := p.live[row.UserID]; lu != nil && row.State != PresenceOffline && lu.lastActive.UnixMilli() > last {
		last = lu.lastActive.UnixMilli()
	}
	p.mu.Unlock()
	s := Status{Presence: row.State, StatusMsg: row.StatusMsg}
	if last > 0 {
		ago := max(now.UnixMilli()-last, 0)
		s.LastActiveAgo = &ago
	}
	if row.State == PresenceOnline {
		active := true
		s.CurrentlyActive = &active
	}
	return s
}

// PresenceSince is what /sync shows of presence: the m.presence events of
// the viewer and of the users sharing a joined room with them, for the
// changes at stream positions in (from, to]. from = 0 gives the current
// presence of those not offline. Nothing when presence is disabled.
func (p *Presence) PresenceSince(ctx context.Context, viewer string, from, to int64) ([]json.RawMessage, error) {
	if !p.cfg.Enabled || to <= from {
		return nil, nil
	}
	rows, err := p.store.PresenceSince(ctx, viewer, from, to, from > 0)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(rows))
	for _, row := range rows {
		content, err := json.Marshal(p.status(row))
		if err != nil {
			return nil, err
		}
		ev, err := json.Marshal(Event{Type: "m.presence", Sender: row.UserID, Content: content})
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

// Sweep marks offline the users gone quiet for OfflineAfter.
func (p *Presence) Sweep(ctx context.Context) error {
	if !p.cfg.Enabled {
		return nil
	}
	cutoff := p.now().Add(-OfflineAfter)
	p.mu.Lock()
	var quiet []string
	for u, lu := range p.live {
		if lu.lastSeen.Before(cutoff) {
			quiet = append(quiet, u)
		}
	}
	p.mu.Unlock()
	var errs []error
	for _, u := range quiet {
		errs = append(errs, p.goOffline(ctx, u, cutoff))
	}
	return errors.Join(errs...)
}

// goOffline writes the user offline if they are still quiet, holding mu so
// that they cannot come back between the check and the write.
func (p *Presence) goOffline(ctx context.Context, userID string, cutoff time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	lu := p.live[userID]
	if lu == nil || !lu.lastSeen.Before(cutoff) {
		return nil
	}
	err := p.write(ctx, userID, func(old *sqlstore.Presence) (sqlstore.Presence, bool) {
		next := sqlstore.Presence{UserID: userID, State: PresenceOffline, LastActiveTS: lu.lastActive.UnixMilli()}
		if old == nil {
			return next, true
		}
		next.StatusMsg = old.StatusMsg
		next.LastActiveTS = max(next.LastActiveTS, old.LastActiveTS)
		return next, old.State != PresenceOffline
	})
	if err == nil {
		delete(p.live, userID)
	}
	return err
}

// adopt watches the users stored as not offline (after a restart they are
// given OfflineAfter to come back).
func (p *Presence) adopt(ctx context.Context) error {
	rows, err := p.store.PresenceNotOffline(ctx)
	if err != nil {
		return err
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range rows {
		if p.live[r.UserID] == nil {
			p.live[r.UserID] = &liveUser{lastSeen: now, lastActive: time.UnixMilli(r.LastActiveTS)}
		}
	}
	return nil
}

// Run watches the stored users, then sweeps until ctx ends. Errors are
// returned to onError (logging) and do not stop it.
func (p *Presence) Run(ctx context.Context, onError func(error)) {
	if !p.cfg.Enabled {
		return
	}
	if err := p.adopt(ctx); err != nil && ctx.Err() == nil {
		onError(err)
	}
	tick := time.NewTicker(presenceSweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := p.Sweep(ctx); err != nil && ctx.Err() == nil {
				onError(err)
			}
		}
	}
}

func checkState(state string) error {
	switch state {
	case PresenceOnline, PresenceUnavailable, PresenceOffline:
		return nil
	}
	return mxerr.New(mxerr.InvalidParam, "presence must be online, unavailable or offline, not %q", state)
}

func sameMsg(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
