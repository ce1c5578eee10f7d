package push

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"

	"chappe/sqlstore"
)

// roomInfo is the state of a room that push evaluation reads: joined
// members (with the display names of the local ones), power levels and
// creators. It is immutable once built and cached by state snapshot, so
// every message between two state changes shares it.
type roomInfo struct {
	joined      map[string]string // joined member → display name (local members only; "" for remote ones)
	local       []string          // joined local members
	powerLevels *PowerLevels      // nil: the room has no m.room.power_levels
	creator     string            // sender of m.room.create
	creators    map[string]bool   // v12 and later: creators, who outrank every level; nil before
}

// MemberCount is the number of joined members, local and remote.
func (ri *roomInfo) MemberCount() int { return len(ri.joined) }

// DisplayName is the display name of a joined local member.
func (ri *roomInfo) DisplayName(userID string) string { return ri.joined[userID] }

// SenderMayNotify compares the sender's power level with notifications.<key>
// (50 when absent). Without power levels, the creator has 100, others 0.
func (ri *roomInfo) SenderMayNotify(sender, key string) bool {
	return ri.levelOf(sender) >= ri.notificationLevel(key)
}

func (ri *roomInfo) levelOf(userID string) int64 {
	if ri.creators[userID] {
		return infinitePower
	}
	if ri.powerLevels == nil {
		if userID == ri.creator {
			return 100
		}
		return 0
	}
	if n, ok := ri.powerLevels.Users[userID]; ok {
		return n
	}
	return ri.powerLevels.UsersDefault
}

func (ri *roomInfo) notificationLevel(key string) int64 {
	if ri.powerLevels != nil {
		if n, ok := ri.powerLevels.Notifications[key]; ok {
			return n
		}
	}
	return defaultNotificationLevel
}

// isLocal tells whether userID belongs to this server.
func isLocal(userID, serverName string) bool {
	i := strings.IndexByte(userID, ':')
	return i >= 0 && userID[i+1:] == serverName
}

// loadRoomInfo reads the room's current state. The roomserver calls
// EventStored inside the transaction that stored the event, with the room
// locked, so the current state is the state after the event.
func (s *Service) loadRoomInfo(ctx context.Context, q *sqlstore.Queries, roomID string) (*roomInfo, error) {
	st, err := q.PushRoomState(ctx, roomID, s.cfg.ServerName)
	if err != nil {
		return nil, err
	}
	ri := &roomInfo{joined: make(map[string]string, len(st.Members))}
	for _, m := range st.Members {
		ri.joined[m.UserID] = m.DisplayName
		if isLocal(m.UserID, s.cfg.ServerName) {
			ri.local = append(ri.local, m.UserID)
		}
	}
	if st.PowerLevels != nil {
		ri.powerLevels = parsePowerLevels(st.PowerLevels)
	}
	if st.Create != nil {
		ri.setCreate(st.Creator, st.Create)
	}
	return ri, nil
}

// setCreate records the creator(s) from the create event.
func (ri *roomInfo) setCreate(sender string, content []byte) {
	ri.creator = sender
	var c struct {
		RoomVersion        string   `json:"room_version"`
		AdditionalCreators []string `json:"additional_creators"`
	}
	_ = json.Unmarshal(content, &c)
	if c.RoomVersion == "" {
		c.RoomVersion = "1"
	}
	ver, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(c.RoomVersion))
	if err != nil || !ver.PrivilegedCreators() {
		ri.creators = nil
		return
	}
	ri.creators = map[string]bool{sender: true}
	for _, u := range c.AdditionalCreators {
		ri.creators[u] = true
	}
}

// affectsInfo tells whether a state event changes what roomInfo holds.
func affectsInfo(ev sqlstore.Event) bool {
	if ev.StateKey == nil {
		return false
	}
	switch ev.Type {
	case "m.room.member":
		return true
	case "m.room.power_levels", "m.room.create":
		return *ev.StateKey == ""
	}
	return false
}

// apply returns the room info after a state event, sharing what it does
// not change; base is never modified.
func (ri *roomInfo) apply(ev sqlstore.Event, parsed *Event, serverName string) *roomInfo {
	next := *ri
	content, _ := parsed.fields["content"].(map[string]any)
	contentJSON := func() []byte {
		b, _ := json.Marshal(content)
		return b
	}
	switch ev.Type {
	case "m.room.member":
		target := *ev.StateKey
		membership, _ := content["membership"].(string)
		name := ""
		if isLocal(target, serverName) {
			name, _ = content["displayname"].(string)
		}
		_, was := ri.joined[target]
		if membership == "join" || was {
			next.joined = make(map[string]string, len(ri.joined)+1)
			for u, n := range ri.joined {
				next.joined[u] = n
			}
			if membership == "join" {
				next.joined[target] = name
			} else {
				delete(next.joined, target)
			}
			if (membership == "join") != was && isLocal(target, serverName) {
				next.local = make([]string, 0, len(ri.local)+1)
				for _, u := range ri.local {
					if u != target {
						next.local = append(next.local, u)
					}
				}
				if membership == "join" {
					next.local = append(next.local, target)
				}
			}
		}
	case "m.room.power_levels":
		next.powerLevels = parsePowerLevels(contentJSON())
	case "m.room.create":
		next.setCreate(ev.Sender, contentJSON())
	}
	return &next
}
