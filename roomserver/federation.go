package roomserver

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"

	"chappe/allowlist"
	"chappe/mxerr"
	"chappe/sqlstore"
)

// Federation is what the roomserver needs to share rooms with other
// servers. The zero value means federation is off: remote rooms, users and
// aliases get clear errors.
type Federation struct {
	// Remote asks other servers; package federation implements it on its
	// one outbound client, so every call passes the allowlist gate.
	Remote Remote
	// Keys verifies other servers' signatures (package federation's key
	// ring: keys pinned by the allowlist or fetched from the server itself,
	// never for an unlisted server).
	Keys gomatrixserverlib.JSONVerifier
	// Gate is the allowlist.
	Gate Gate
}

// Gate is the allowlist as the roomserver sees it.
type Gate interface {
	// Allowed tells whether we may exchange anything with the server.
	Allowed(server string) bool
	// Check is Allowed with the reason, for people (nil when allowed).
	Check(server string) error
	// Removed is the removal record of a server the list shows as removed
	// (see checkBorder).
	Removed(server string) (allowlist.Removal, bool)
}

// Remote is the roomserver's view of other servers: one method per
// server-server request it makes. Spec: server-server-api.md.
type Remote interface {
	// MakeJoin asks server for a join event template (GET /make_join).
	MakeJoin(ctx context.Context, server, roomID, userID string, versions []string) (MakeMembershipResponse, error)
	// SendJoin submits a signed join (PUT /v2/send_join).
	SendJoin(ctx context.Context, server, roomID, eventID string, event json.RawMessage) (SendJoinResponse, error)
	// MakeLeave asks for a leave event template (GET /make_leave).
	MakeLeave(ctx context.Context, server, roomID, userID string) (MakeMembershipResponse, error)
	// SendLeave submits a signed leave (PUT /v2/send_leave).
	SendLeave(ctx context.Context, server, roomID, eventID string, event json.RawMessage) error
	// MakeKnock asks for a knock event template (GET /make_knock).
	MakeKnock(ctx context.Context, server, roomID, userID string, versions []string) (MakeMembershipResponse, error)
	// SendKnock submits a signed knock (PUT /send_knock) and returns the
	// room's state the resident server sent back (knock_room_state).
	SendKnock(ctx context.Context, server, roomID, eventID string, event json.RawMessage) ([]json.RawMessage, error)
	// Invite asks the invitee's server to countersign an invite (PUT /v2/invite).
	Invite(ctx context.Context, server, roomID, eventID, roomVersion string, event json.RawMessage, inviteRoomState []json.RawMessage) (json.RawMessage, error)
	// Event fetches one event (GET /event/{eventId}).
	Event(ctx context.Context, server, eventID string) (json.RawMessage, error)
	// StateIDs is the state before an event (GET /state_ids).
	StateIDs(ctx context.Context, server, roomID, eventID string) (state, authChain []string, err error)
	// MissingEvents fills a gap (POST /get_missing_events).
	MissingEvents(ctx context.Context, server, roomID string, earliest, latest []string, limit int, minDepth int64) ([]json.RawMessage, error)
	// Backfill fetches history before some events (GET /backfill).
	Backfill(ctx context.Context, server, roomID string, from []string, limit int) ([]json.RawMessage, error)
	// TimestampToEvent finds server's event closest to ts in a direction
	// (GET /timestamp_to_event).
	TimestampToEvent(ctx context.Context, server, roomID string, ts int64, forwards bool) (eventID string, originTS int64, err error)
	// QueryAlias resolves an alias of server (GET /query/directory).
	QueryAlias(ctx context.Context, server, alias string) (roomID string, servers []string, err error)
}

// MakeMembershipResponse is the answer to make_join, make_leave or make_knock.
type MakeMembershipResponse struct {
	RoomVersion string          `json:"room_version"`
	Event       json.RawMessage `json:"event"`
}

// SendJoinResponse is the answer to send_join (v2).
type SendJoinResponse struct {
	State     []json.RawMessage `json:"state"`
	AuthChain []json.RawMessage `json:"auth_chain"`
	// Event is the join as the resident server signed it too (restricted
	// joins); may be absent.
	Event json.RawMessage `json:"event,omitempty"`
	// Origin is the resident server.
	Origin string `json:"origin"`
	// KnockRoomState is the answer to send_knock instead: the room's state
	// for the knocker's preview (see previewState). Not part of send_join.
	KnockRoomState []json.RawMessage `json:"-"`
}

// enabled tells whether federation is on.
func (f Federation) enabled() bool { return f.Remote != nil && f.Keys != nil && f.Gate != nil }

// serverOf is the server name of a user ID, alias or v1–v11 room ID:
// everything after the first colon.
func serverOf(id string) string {
	if i := strings.IndexByte(id, ':'); i >= 0 {
		return id[i+1:]
	}
	return ""
}

// checkServerAllowed refuses, with M_FORBIDDEN and the allowlist's reason, a
// request that names a server outside the federation. Our own server is
// always allowed.
func (r *Roomserver) checkServerAllowed(server string) error {
	if server == r.cfg.ServerName {
		return nil
	}
	if !r.cfg.Federation.enabled() {
		return mxerr.New(mxerr.Forbidden, "%s is another server and federation is switched off on this server", server)
	}
	if err := r.cfg.Federation.Gate.Check(server); err != nil {
		return mxerr.New(mxerr.Forbidden, "%s is outside the federation: %v", server, err)
	}
	return nil
}

// db runs queries on the pool, outside any transaction.
func (r *Roomserver) db() *sqlstore.Queries { return &r.store.Queries }
