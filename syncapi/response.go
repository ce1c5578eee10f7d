package syncapi

import (
	"encoding/json"

	"chappe/roomserver"
	"chappe/streams"
)

// Response is the body of /sync. Spec: GET /_matrix/client/v3/sync.
type Response struct {
	NextBatch              string         `json:"next_batch"`
	Rooms                  RoomsSection   `json:"rooms"`
	AccountData            eventList      `json:"account_data"`
	Presence               eventList      `json:"presence"`
	ToDevice               eventList      `json:"to_device"`
	DeviceLists            deviceLists    `json:"device_lists"`
	OneTimeKeysCount       map[string]int `json:"device_one_time_keys_count"`
	UnusedFallbackKeyTypes []string       `json:"device_unused_fallback_key_types"`
}

// RoomsSection is the rooms of a sync, by membership.
type RoomsSection struct {
	Join   map[string]*JoinedRoom  `json:"join"`
	Invite map[string]*InvitedRoom `json:"invite"`
	Knock  map[string]*KnockedRoom `json:"knock"`
	Leave  map[string]*LeftRoom    `json:"leave"`
}

type eventList struct {
	Events []json.RawMessage `json:"events"`
}

type strippedList struct {
	Events []roomserver.StrippedEvent `json:"events"`
}

type timeline struct {
	Events    []json.RawMessage `json:"events"`
	Limited   bool              `json:"limited"`
	PrevBatch string            `json:"prev_batch,omitempty"`
}

type deviceLists struct {
	Changed []string `json:"changed"`
	Left    []string `json:"left"`
}

// JoinedRoom is a room the user is joined to.
type JoinedRoom struct {
	Timeline                  timeline                `json:"timeline"`
	State                     eventList               `json:"state"`
	AccountData               eventList               `json:"account_data"`
	Ephemeral                 eventList               `json:"ephemeral"`
	Summary                   *roomserver.RoomSummary `json:"summary"`
	UnreadNotifications       *Counts                 `json:"unread_notifications,omitempty"`
	UnreadThreadNotifications map[string]Counts       `json:"unread_thread_notifications,omitempty"`

	summaryUnchanged bool // no membership change: the summary is not news
	countsChanged    bool // the unread counts moved in the range
}

// InvitedRoom is a room the user is invited to.
type InvitedRoom struct {
	InviteState strippedList `json:"invite_state"`
}

// KnockedRoom is a room the user knocked on.
type KnockedRoom struct {
	KnockState strippedList `json:"knock_state"`
}

// LeftRoom is a room the user left or was removed from.
type LeftRoom struct {
	Timeline    timeline  `json:"timeline"`
	State       eventList `json:"state"`
	AccountData eventList `json:"account_data"`
}

func newResponse(upto streams.Position) *Response {
	return &Response{
		NextBatch: Token(upto),
		Rooms: RoomsSection{
			Join: map[string]*JoinedRoom{}, Invite: map[string]*InvitedRoom{},
			Knock: map[string]*KnockedRoom{}, Leave: map[string]*LeftRoom{},
		},
		AccountData:            eventList{Events: []json.RawMessage{}},
		Presence:               eventList{Events: []json.RawMessage{}},
		ToDevice:               eventList{Events: []json.RawMessage{}},
		DeviceLists:            deviceLists{Changed: []string{}, Left: []string{}},
		OneTimeKeysCount:       map[string]int{},
		UnusedFallbackKeyTypes: []string{},
	}
}

func emptyResponse(at streams.Position) *Response { return newResponse(at) }

// empty tells whether an incremental response carries nothing for the
// client, so the long-poll may keep waiting.
func (r *Response) empty() bool {
	if len(r.Rooms.Invite)+len(r.Rooms.Knock)+len(r.Rooms.Leave) > 0 ||
		len(r.AccountData.Events)+len(r.Presence.Events)+len(r.ToDevice.Events) > 0 ||
		len(r.DeviceLists.Changed)+len(r.DeviceLists.Left) > 0 {
		return false
	}
	for _, jr := range r.Rooms.Join {
		if len(jr.Timeline.Events)+len(jr.State.Events)+len(jr.AccountData.Events)+len(jr.Ephemeral.Events) > 0 || !jr.summaryUnchanged || jr.countsChanged {
			return false
		}
	}
	return true
}

// pruneQuietRooms drops, from an incremental response, the joined rooms in
// which nothing happened.
func (r *Response) pruneQuietRooms() {
	for id, jr := range r.Rooms.Join {
		if len(jr.Timeline.Events)+len(jr.State.Events)+len(jr.AccountData.Events)+len(jr.Ephemeral.Events) == 0 && jr.summaryUnchanged && !jr.countsChanged {
			delete(r.Rooms.Join, id)
		}
	}
}

// joinedRoom returns the entry of a joined room, creating an empty one for a
// room that only has ephemeral events, account data or counts.
func (r *Response) joinedRoom(roomID string) *JoinedRoom {
	if jr, ok := r.Rooms.Join[roomID]; ok {
		return jr
	}
	jr := &JoinedRoom{
		Timeline:    timeline{Events: []json.RawMessage{}},
		State:       eventList{Events: []json.RawMessage{}},
		AccountData: eventList{Events: []json.RawMessage{}},
		Ephemeral:   eventList{Events: []json.RawMessage{}},
		Summary:     &roomserver.RoomSummary{}, summaryUnchanged: true,
	}
	r.Rooms.Join[roomID] = jr
	return jr
}
