package roomserver

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib"

	"chappe/sqlstore"
)

// ClientEvent is an event as the client-server API shows it.
// Spec: client-server-api/_index.md, "Room Event Format" (ClientEvent).
type ClientEvent struct {
	Content        json.RawMessage `json:"content"`
	EventID        string          `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         string          `json:"room_id"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	Redacts        string          `json:"redacts,omitempty"`
	Unsigned       map[string]any  `json:"unsigned,omitempty"`

	// PDU is the event as signed, for the "federation" event format of
	// sync filters; never part of the client format.
	PDU json.RawMessage `json:"-"`
}

// Viewer is who reads: the user, and the device whose transaction IDs are
// echoed back in unsigned.transaction_id.
type Viewer struct {
	UserID   string
	DeviceID string
}

// formatEvents turns stored events into client events, with unsigned data:
// age, the viewer's transaction_id, redacted_because, and prev_content /
// replaces_state for state events.
func (r *Roomserver) formatEvents(ctx context.Context, q *sqlstore.Queries, room sqlstore.Room, viewer Viewer, rows []sqlstore.Event) ([]ClientEvent, error) {
	if len(rows) == 0 {
		return []ClientEvent{}, nil
	}
	ids := make([]string, len(rows))
	var redactionIDs []string
	for i, row := range rows {
		ids[i] = row.EventID
		if row.RedactedBy != nil {
			redactionIDs = append(redactionIDs, *row.RedactedBy)
		}
	}
	txns := map[string]string{}
	ownEvents := false
	for _, row := range rows {
		ownEvents = ownEvents || row.Sender == viewer.UserID
	}
	if viewer.DeviceID != "" && ownEvents {
		var err error
		if txns, err = q.TxnsOfEvents(ctx, ids, viewer.UserID, viewer.DeviceID); err != nil {
			return nil, err
		}
	}
	redactions := map[string]ClientEvent{}
	if len(redactionIDs) > 0 {
		reds, err := q.EventsByID(ctx, redactionIDs)
		if err != nil {
			return nil, err
		}
		for _, red := range reds {
			ev, err := parseStored(room.RoomVersion, red.JSON, red.RedactedBy != nil)
			if err != nil {
				return nil, err
			}
			redactions[red.EventID] = r.toClientEvent(ev, nil)
		}
	}
	out := make([]ClientEvent, 0, len(rows))
	for _, row := range rows {
		ev, err := r.parseRow(ctx, q, room.RoomVersion, row)
		if err != nil {
			return nil, err
		}
		unsigned := map[string]any{}
		if age := r.now().UnixMilli() - row.OriginServerTS; age >= 0 {
			unsigned["age"] = age
		}
		if txn, ok := txns[row.EventID]; ok {
			unsigned["transaction_id"] = txn
		}
		if row.RedactedBy != nil {
			if red, ok := redactions[*row.RedactedBy]; ok {
				unsigned["redacted_because"] = red
			}
		}
		if row.StateKey != nil {
			if err := r.addPrevContent(ctx, q, room.RoomVersion, row, unsigned); err != nil {
				return nil, err
			}
		}
		out = append(out, r.toClientEvent(ev, unsigned))
	}
	return out, nil
}

// parseRow parses a stored event through the cache.
func (r *Roomserver) parseRow(ctx context.Context, q *sqlstore.Queries, version string, row sqlstore.Event) (gomatrixserverlib.PDU, error) {
	if ev, ok := r.events.Get(row.NID); ok {
		return ev, nil
	}
	ev, err := parseStored(version, row.JSON, row.RedactedBy != nil)
	if err != nil {
		return nil, err
	}
	r.events.Add(row.NID, ev)
	return ev, nil
}

// addPrevContent adds the content of the state this event replaced.
func (r *Roomserver) addPrevContent(ctx context.Context, q *sqlstore.Queries, version string, row sqlstore.Event, unsigned map[string]any) error {
	before, err := r.loadSnapshot(ctx, q, row.StateBefore)
	if err != nil {
		return err
	}
	prev, err := r.stateEvent(ctx, q, version, before, stateKey{row.Type, *row.StateKey})
	if err != nil || prev == nil {
		return err
	}
	unsigned["replaces_state"] = prev.EventID()
	unsigned["prev_content"] = json.RawMessage(prev.Content())
	unsigned["prev_sender"] = string(prev.SenderID())
	return nil
}

func (r *Roomserver) toClientEvent(ev gomatrixserverlib.PDU, unsigned map[string]any) ClientEvent {
	c := ClientEvent{
		Content:        json.RawMessage(ev.Content()),
		EventID:        ev.EventID(),
		OriginServerTS: int64(ev.OriginServerTS()),
		RoomID:         ev.RoomID().String(),
		Sender:         string(ev.SenderID()),
		StateKey:       ev.StateKey(),
		Type:           ev.Type(),
		Redacts:        ev.Redacts(),
		Unsigned:       unsigned,
		PDU:            ev.JSON(),
	}
	if len(c.Content) == 0 {
		c.Content = json.RawMessage("{}")
	}
	return c
}
