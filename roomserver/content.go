package roomserver

import (
	"encoding/json"
	"math"
	"slices"

	"chappe/mxerr"
)

// validateStateContent checks the content of the state event types whose
// shape the spec defines, so malformed state never enters a room: 400
// M_BAD_JSON with what is wrong. Other types are free-form objects.
// Spec: client-server-api/_index.md, "Room Events" (m.room.*).
func validateStateContent(evType string, raw json.RawMessage) error {
	var c map[string]json.RawMessage
	if err := json.Unmarshal(raw, &c); err != nil {
		return mxerr.New(mxerr.BadJSON, "The content of %s must be a JSON object", evType)
	}
	bad := func(format string, args ...any) error {
		return mxerr.New(mxerr.BadJSON, evType+": "+format, args...)
	}
	str := func(key string, required bool, allowed ...string) error {
		v, ok := c[key]
		if !ok {
			if required {
				return bad("%s is required", key)
			}
			return nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return bad("%s must be a string", key)
		}
		if len(allowed) > 0 && !slices.Contains(allowed, s) {
			return bad("%s must be one of %v, not %q", key, allowed, s)
		}
		return nil
	}
	switch evType {
	case "m.room.name":
		if err := str("name", true); err != nil {
			return err
		}
		var name string
		_ = json.Unmarshal(c["name"], &name)
		if len(name) > 255 {
			return bad("name is longer than 255 bytes")
		}
	case "m.room.topic":
		return str("topic", true)
	case "m.room.avatar":
		return str("url", false)
	case "m.room.join_rules":
		if err := str("join_rule", true, "public", "invite", "knock", "private", "restricted", "knock_restricted"); err != nil {
			return err
		}
		if v, ok := c["allow"]; ok {
			var allow []struct {
				Type   string `json:"type"`
				RoomID string `json:"room_id"`
			}
			if err := json.Unmarshal(v, &allow); err != nil {
				return bad("allow must be a list of {type, room_id}")
			}
		}
	case "m.room.history_visibility":
		return str("history_visibility", true, "invited", "joined", "shared", "world_readable")
	case "m.room.guest_access":
		return str("guest_access", true, "can_join", "forbidden")
	case "m.room.member":
		return str("membership", true, "join", "invite", "leave", "ban", "knock")
	case "m.room.encryption":
		return str("algorithm", true)
	case "m.room.tombstone":
		return str("replacement_room", true)
	case "m.room.canonical_alias":
		if err := str("alias", false); err != nil {
			return err
		}
		if v, ok := c["alt_aliases"]; ok {
			var alt []string
			if err := json.Unmarshal(v, &alt); err != nil {
				return bad("alt_aliases must be a list of strings")
			}
		}
	case "m.room.power_levels":
		for _, k := range []string{"ban", "invite", "kick", "redact", "events_default", "state_default", "users_default"} {
			if v, ok := c[k]; ok && !isPowerLevel(v) {
				return bad("%s must be an integer", k)
			}
		}
		for _, k := range []string{"users", "events", "notifications"} {
			v, ok := c[k]
			if !ok {
				continue
			}
			var m map[string]json.RawMessage
			if err := json.Unmarshal(v, &m); err != nil {
				return bad("%s must be an object of integers", k)
			}
			for name, lv := range m {
				if !isPowerLevel(lv) {
					return bad("%s.%s must be an integer", k, name)
				}
			}
		}
	case "m.room.server_acl":
		for _, k := range []string{"allow", "deny"} {
			if v, ok := c[k]; ok {
				var l []string
				if err := json.Unmarshal(v, &l); err != nil {
					return bad("%s must be a list of strings", k)
				}
			}
		}
	}
	return nil
}

// isPowerLevel accepts a JSON integer within the canonical JSON range.
func isPowerLevel(raw json.RawMessage) bool {
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return false
	}
	return f == math.Trunc(f) && math.Abs(f) <= 1<<53-1
}
