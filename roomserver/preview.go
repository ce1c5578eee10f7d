package roomserver

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"chappe/sqlstore"
)

// Room previews: the state that travels with an invite (invite_room_state)
// and comes back from a knock (knock_room_state), so that the invited or
// knocking user's client can show the room before joining it.
// Spec: client-server-api/_index.md "Stripped state"; server-server-api.md,
// PUT /v2/invite and PUT /send_knock (since v1.16: full PDUs formatted for
// the room version, the create event included; improperly signed entries
// removed before clients see them).

// previewState is the room's preview as the resident server sends it: the
// create, join rules, name, avatar, canonical alias, encryption and topic
// events of the state snap, as full PDUs.
func (r *Roomserver) previewState(ctx context.Context, q *sqlstore.Queries, version string, snap *snapshot) ([]json.RawMessage, error) {
	keys := make([]stateKey, 0, len(strippedTypes))
	for _, t := range strippedTypes {
		keys = append(keys, stateKey{t, ""})
	}
	evs, err := r.stateEvents(ctx, q, version, snap, keys)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(evs))
	for _, ev := range evs {
		out = append(out, ev.JSON())
	}
	return out, nil
}

// currentPreview is previewState of the room's current state.
func (r *Roomserver) currentPreview(ctx context.Context, version, roomID string) ([]json.RawMessage, error) {
	room, err := r.loadRoom(ctx, r.db(), roomID, false)
	if err != nil {
		return nil, err
	}
	snap, err := r.loadSnapshot(ctx, r.db(), room.StateSnapshot)
	if err != nil {
		return nil, err
	}
	return r.previewState(ctx, r.db(), version, snap)
}

// checkedPreview keeps, as stripped events, the entries of a preview
// another server sent that are state events of the room, correctly signed
// by servers of the federation. Servers older than v1.16 sent stripped
// events, without signatures: those are still taken in room versions 1–11,
// where the check is optional.
func (r *Roomserver) checkedPreview(ctx context.Context, version, roomID string, sent []json.RawMessage) []StrippedEvent {
	out := []StrippedEvent{}
	for _, raw := range sent {
		ev, err := r.parseHistoricalPDU(ctx, version, raw)
		switch {
		case err == nil && ev.RoomID().String() == roomID && ev.StateKey() != nil:
			out = append(out, strippedOf(ev))
		case err != nil && versionNumber(version) < 12 && !gjson.GetBytes(raw, "signatures").Exists():
			var se StrippedEvent
			if json.Unmarshal(raw, &se) == nil && se.Type != "" {
				out = append(out, se)
			}
		default:
			r.log(ctx).Info().AnErr("check", err).Str("room_id", roomID).Msg("dropped an entry of a room preview")
		}
	}
	return out
}

// hasCreate tells whether a preview holds the room's create event.
func hasCreate(preview []StrippedEvent) bool {
	for _, se := range preview {
		if se.Type == "m.room.create" && se.StateKey == "" {
			return true
		}
	}
	return false
}

// withPreview is ev's JSON as this server stores it, with the checked
// preview in unsigned.<field> (invite_room_state or knock_room_state),
// where the user's /sync finds it (see strippedRoom).
func withPreview(ev gomatrixserverlib.PDU, field string, preview []StrippedEvent) []byte {
	if len(preview) == 0 {
		return ev.JSON()
	}
	stored, err := sjson.SetBytes(ev.JSON(), "unsigned."+field, preview)
	if err != nil {
		return ev.JSON()
	}
	return stored
}

// strippedOf reduces a state event to its stripped form.
func strippedOf(ev gomatrixserverlib.PDU) StrippedEvent {
	return StrippedEvent{Content: ev.Content(), Sender: string(ev.SenderID()), StateKey: deref(ev.StateKey()), Type: ev.Type()}
}
