package roomserver

import (
	"context"
	"encoding/json"
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

// authTuplesOf lists the (type, state_key) pairs the auth rules look at for
// a received event (spec: "Auth events selection").
func authTuplesOf(ev gomatrixserverlib.PDU) []gomatrixserverlib.StateKeyTuple {
	return gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{ev}).Tuples()
}

// membershipTemplate is the event template of make_join, make_leave and
// make_knock: userID's membership event on top of prevEvents, with its
// auth_events chosen from auth, and checked against the auth rules (a
// refusal is M_FORBIDDEN). The template is unsigned: the user's server
// fills in origin_server_ts, hashes and signatures.
// Spec: server-server-api.md, GET /make_join/{roomId}/{userId}.
func membershipTemplate(ver gomatrixserverlib.IRoomVersion, roomID, userID string, content []byte, prevEvents []string, depth int64,
	auth *gomatrixserverlib.AuthEvents, origin string, key signingkey.Key, now time.Time) ([]byte, error) {
	stateKey := userID
	p := proto{Sender: userID, Type: "m.room.member", StateKey: &stateKey, Content: content}
	// Built and signed by us only to run the auth rules, then dropped.
	if _, err := buildEvent(ver, roomID, p, prevEvents, depth, auth, origin, key, now); err != nil {
		return nil, err
	}
	b := ver.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
		SenderID: userID, RoomID: roomID, Type: "m.room.member", StateKey: &stateKey,
		PrevEvents: prevEvents, Depth: depth, Content: content, Version: ver,
	})
	if err := b.AddAuthEvents(auth); err != nil {
		return nil, err
	}
	return json.Marshal(b)
}

// buildFromTemplate builds and signs our user's membership event from a
// resident server's template (make_join, make_leave, make_knock), with our
// own content. The template's sender, state_key, type and room must be what
// we asked for.
func buildFromTemplate(ver gomatrixserverlib.IRoomVersion, template []byte, roomID, userID, membership string, content map[string]any,
	origin string, key signingkey.Key, now time.Time) (gomatrixserverlib.PDU, error) {
	var pe gomatrixserverlib.ProtoEvent
	if err := json.Unmarshal(template, &pe); err != nil {
		return nil, fmt.Errorf("the template is not an event: %w", err)
	}
	if pe.Type != "m.room.member" || pe.SenderID != userID || pe.StateKey == nil || *pe.StateKey != userID || pe.RoomID != roomID {
		return nil, fmt.Errorf("the template is not a membership event of %s in %s", userID, roomID)
	}
	// Keep what the resident server set (join_authorised_via_users_server),
	// then ours on top.
	merged := map[string]any{}
	_ = json.Unmarshal(pe.Content, &merged)
	for k, v := range content {
		merged[k] = v
	}
	merged["membership"] = membership
	raw, err := json.Marshal(merged)
	if err != nil {
		return nil, err
	}
	pe.Content = raw
	pe.Unsigned = nil
	pe.Signature = nil
	pe.Redacts = ""
	pe.Version = ver
	b := ver.NewEventBuilderFromProtoEvent(&pe)
	return b.Build(now, spec.ServerName(origin), key.ID, key.Private)
}

// signEvent adds our server's signature to a remote event (invites we
// accept, restricted joins we authorise).
func signEvent(ev gomatrixserverlib.PDU, origin string, key signingkey.Key) gomatrixserverlib.PDU {
	return ev.Sign(origin, key.ID, key.Private)
}

// joinResponseState is the state and auth chain of a send_join answer as
// events. Parsing, the border and signatures are checked by the caller.
type joinResponseState struct {
	state, authChain gomatrixserverlib.EventJSONs
}

func (j joinResponseState) GetAuthEvents() gomatrixserverlib.EventJSONs  { return j.authChain }
func (j joinResponseState) GetStateEvents() gomatrixserverlib.EventJSONs { return j.state }

// checkJoinResponse checks a send_join answer: every state and auth chain
// event correctly signed (through keys, which refuses unlisted servers) and
// allowed by its auth events, and our join allowed by the returned state.
// Events that fail are dropped from the answer. Spec: server-server-api.md,
// "Joining Rooms" (the joining server must validate the response).
func checkJoinResponse(ctx context.Context, version string, state, authChain []json.RawMessage, join gomatrixserverlib.PDU,
	keys gomatrixserverlib.JSONVerifier, missing gomatrixserverlib.EventProvider) (stateEvs, authEvs []gomatrixserverlib.PDU, err error) {
	resp := joinResponseState{}
	for _, s := range state {
		resp.state = append(resp.state, spec.RawJSON(s))
	}
	for _, a := range authChain {
		resp.authChain = append(resp.authChain, spec.RawJSON(a))
	}
	checked, err := gomatrixserverlib.CheckSendJoinResponse(ctx, gomatrixserverlib.RoomVersion(version), resp, keys, join, missing, userIDForSender)
	if err != nil {
		return nil, nil, err
	}
	return checked.GetStateEvents().UntrustedEvents(gomatrixserverlib.RoomVersion(version)),
		checked.GetAuthEvents().UntrustedEvents(gomatrixserverlib.RoomVersion(version)), nil
}
