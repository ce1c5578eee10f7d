package roomserver

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"chappe/mxerr"
	"chappe/signingkey"
)

// This file is the one place Chappe calls gomatrixserverlib's event
// machinery: building, signing, parsing, auth checks and redaction. Each use
// is wrapped in one function of ours with its own tests, so the library's
// deprecated or untested corners stay out of the rest of the code.

// supportedVersions are the room versions accepted in createRoom. Version 12
// (domainless room IDs, privileged creators) is included: its create-event
// rules are exercised end to end by the tests.
var supportedVersions = []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}

// SupportedVersions lists the room versions this server creates and joins.
func SupportedVersions() []string { return append([]string(nil), supportedVersions...) }

// roomVersion returns the implementation of version v, or
// M_UNSUPPORTED_ROOM_VERSION.
func roomVersion(v string) (gomatrixserverlib.IRoomVersion, error) {
	for _, s := range supportedVersions {
		if s == v {
			return gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(v))
		}
	}
	return nil, mxerr.New(mxerr.UnsupportedRoomVer, "Room version %q is not supported; this server supports %v", v, supportedVersions)
}

// proto is a local event before it is built: who sends what.
type proto struct {
	Sender   string
	Type     string
	StateKey *string
	Content  []byte
	Redacts  string // target of an m.room.redaction in versions before 11
}

// authTuples lists the (type, state_key) pairs of the current state that the
// auth rules need to authorise p (spec: "Auth events selection").
func authTuples(ver gomatrixserverlib.IRoomVersion, p proto) ([]gomatrixserverlib.StateKeyTuple, error) {
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(&gomatrixserverlib.ProtoEvent{
		SenderID: p.Sender, Type: p.Type, StateKey: p.StateKey, Content: p.Content, Version: ver,
	})
	if err != nil {
		return nil, mxerr.New(mxerr.BadJSON, "Invalid event content: %v", err)
	}
	return needed.Tuples(), nil
}

// buildEvent builds and signs a local event on top of prevEvents, choosing
// its auth_events from auth, and checks the auth rules against the same
// events. The room ID is empty only for the create event of a v12 room.
func buildEvent(ver gomatrixserverlib.IRoomVersion, roomID string, p proto, prevEvents []string, depth int64,
	auth *gomatrixserverlib.AuthEvents, origin string, key signingkey.Key, now time.Time) (gomatrixserverlib.PDU, error) {
	if prevEvents == nil {
		prevEvents = []string{} // the create event: an empty list, never null
	}
	pe := &gomatrixserverlib.ProtoEvent{
		SenderID: p.Sender, RoomID: roomID, Type: p.Type, StateKey: p.StateKey,
		PrevEvents: prevEvents, Depth: depth, Content: p.Content, Redacts: p.Redacts, Version: ver,
	}
	b := ver.NewEventBuilderFromProtoEvent(pe)
	if err := b.AddAuthEvents(auth); err != nil {
		return nil, fmt.Errorf("choosing auth events: %w", err)
	}
	if refs, ok := b.AuthEvents.([]string); ok && refs == nil {
		b.AuthEvents = []string{}
	}
	ev, err := b.Build(now, spec.ServerName(origin), key.ID, key.Private)
	var invalid gomatrixserverlib.EventValidationError
	if errors.As(err, &invalid) && invalid.Code == gomatrixserverlib.EventValidationTooLarge {
		return nil, mxerr.New(mxerr.TooLarge, "The event is too large: %s", invalid.Message)
	}
	if err != nil {
		return nil, mxerr.New(mxerr.BadJSON, "The event cannot be built: %v", err)
	}
	if err := checkAuth(ev, auth); err != nil {
		return nil, err
	}
	return ev, nil
}

// checkAuth applies the room version's authorization rules to ev with the
// given auth events. A refusal is 403 M_FORBIDDEN with the rule that failed.
// Spec: rooms/v*.md, "Authorization rules".
func checkAuth(ev gomatrixserverlib.PDU, auth gomatrixserverlib.AuthEventProvider) error {
	err := gomatrixserverlib.Allowed(ev, auth, userIDForSender)
	var notAllowed *gomatrixserverlib.NotAllowed
	if errors.As(err, &notAllowed) {
		return mxerr.New(mxerr.Forbidden, "%s", notAllowed.Message)
	}
	return err
}

// userIDForSender maps a sender to a user ID: Chappe's rooms do not use
// pseudonymous sender IDs, so they are the same.
func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}

// newAuthEvents wraps events for the auth rules.
func newAuthEvents(events []gomatrixserverlib.PDU) (*gomatrixserverlib.AuthEvents, error) {
	return gomatrixserverlib.NewAuthEvents(events)
}

// parseStored parses an event this server stored (already checked when it
// was accepted).
func parseStored(version, eventJSON string, redacted bool) (gomatrixserverlib.PDU, error) {
	ver, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version))
	if err != nil {
		return nil, err
	}
	return ver.NewEventFromTrustedJSON([]byte(eventJSON), redacted)
}

// redactJSON applies the room version's redaction algorithm to an event's
// JSON. Spec: client-server-api/_index.md "Redactions", rooms/v*.md.
func redactJSON(version string, eventJSON []byte) ([]byte, error) {
	ver, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version))
	if err != nil {
		return nil, err
	}
	return ver.RedactEventJSON(eventJSON)
}

// powerLevels returns the power levels in force given the auth events
// (the spec's defaults when the room has none yet).
func powerLevels(auth gomatrixserverlib.AuthEventProvider, creator string) (gomatrixserverlib.PowerLevelContent, error) {
	return gomatrixserverlib.NewPowerLevelContentFromAuthEvents(auth, creator)
}

// versionNumber orders numeric room versions ("10" > "9"); unknown ones sort first.
func versionNumber(v string) int {
	n, err := strconv.Atoi(v)
	if err != nil {
		return -1
	}
	return n
}

// privilegedCreators tells whether the version gives the creators unlimited
// power and keeps them out of power_levels (v12).
func privilegedCreators(version string) bool {
	ver, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version))
	return err == nil && ver.PrivilegedCreators()
}

// domainlessRoomIDs tells whether the room ID is derived from the create event (v12).
func domainlessRoomIDs(version string) bool {
	ver, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version))
	return err == nil && ver.DomainlessRoomIDs()
}

func sortedVersions() []string {
	out := SupportedVersions()
	sort.Slice(out, func(i, j int) bool { return versionNumber(out[i]) < versionNumber(out[j]) })
	return out
}

// specSender is a user ID as the library's sender ID type.
func specSender(userID string) spec.SenderID { return spec.SenderID(userID) }
