package roomserver

import (
	"chappe/allowlist"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"chappe/mxerr"
	"chappe/signingkey"
	"chappe/sqlstore"
	"chappe/sqlstore/sqltest"
	"chappe/streams"
)

// peers are roomservers that federate in process, each on a database of
// its own: a server's Remote calls the other's resident methods directly,
// with the caller as origin (what the federation endpoints do once the
// request's signature is checked), and every server's signatures are
// checked against the real keys. No outbox: events reach other servers only
// through the requests themselves (invites, make/send_*), which is what the
// membership handshakes need.
type peers struct {
	t       testing.TB
	servers map[string]*Roomserver
	keys    map[string]signingkey.Key
}

func newPeers(t testing.TB, names ...string) *peers {
	t.Helper()
	p := &peers{t: t, servers: map[string]*Roomserver{}, keys: map[string]signingkey.Key{}}
	for _, name := range names {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		p.keys[name] = signingkey.Key{ID: "ed25519:peer", Private: priv}
	}
	for _, name := range names {
		// A database each: a server locks its room rows while it asks the
		// other, as real servers do.
		store, err := sqlstore.Open(context.Background(), sqltest.NewDatabase(t, "chappe_peer"), 5)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(store.Close)
		last, err := store.MaxStreamPosition(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		fed := Federation{Remote: loopRemote{from: name, peers: p}, Keys: peerKeys{p}, Gate: allowAll{}}
		p.servers[name] = New(Config{ServerName: name, DefaultVersion: "10", Federation: fed}, store, p.keys[name], nil, streams.NewHub(last))
	}
	return p
}

// membership is user's current membership in the room on server ("" if none).
func (p *peers) membership(server, user, roomID string) string {
	p.t.Helper()
	list, err := p.servers[server].CurrentMemberships(context.Background(), user)
	if err != nil {
		p.t.Fatal(err)
	}
	for _, m := range list {
		if m.RoomID == roomID {
			return m.Membership
		}
	}
	return ""
}

// strippedRoom is the room as user's initial /sync on server lists it among
// invites or knocks (kind), or false.
func (p *peers) strippedRoom(server, user, roomID, kind string) (SyncRoom, bool) {
	p.t.Helper()
	rs := p.servers[server]
	rooms, _, err := rs.SyncRooms(context.Background(), SyncRequest{Viewer: Viewer{UserID: user}, Upto: rs.hub.Current().Stream})
	if err != nil {
		p.t.Fatal(err)
	}
	for _, sr := range rooms {
		if sr.RoomID == roomID && sr.Membership == kind {
			return sr, true
		}
	}
	return SyncRoom{}, false
}

// previewName is the room name in a stripped state list.
func previewName(state []StrippedEvent) string {
	for _, se := range state {
		if se.Type == "m.room.name" {
			var c struct {
				Name string `json:"name"`
			}
			_ = json.Unmarshal(se.Content, &c)
			return c.Name
		}
	}
	return ""
}

// peerKeys verifies signatures with the peers' real keys.
type peerKeys struct{ p *peers }

func (k peerKeys) VerifyJSONs(_ context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	out := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
	for i, req := range reqs {
		key, ok := k.p.keys[string(req.ServerName)]
		if !ok {
			out[i].Error = fmt.Errorf("no key for %s", req.ServerName)
			continue
		}
		out[i].Error = gomatrixserverlib.VerifyJSON(string(req.ServerName), gomatrixserverlib.KeyID(key.ID), key.Private.Public().(ed25519.PublicKey), req.Message)
	}
	return out, nil
}

type allowAll struct{}

func (allowAll) Allowed(string) bool                      { return true }
func (allowAll) Check(string) error                       { return nil }
func (allowAll) Removed(string) (allowlist.Removal, bool) { return allowlist.Removal{}, false }

// loopRemote is one server's Remote: each call goes to the named peer.
type loopRemote struct {
	from  string
	peers *peers
}

var errNoPeer = errors.New("no such peer")

func (l loopRemote) to(server string) (*Roomserver, error) {
	if rs, ok := l.peers.servers[server]; ok {
		return rs, nil
	}
	return nil, errNoPeer
}

func (l loopRemote) makeMembership(ctx context.Context, server, roomID, userID, membership string, versions []string) (MakeMembershipResponse, error) {
	rs, err := l.to(server)
	if err != nil {
		return MakeMembershipResponse{}, err
	}
	return rs.MakeMembership(ctx, l.from, roomID, userID, membership, versions)
}

func (l loopRemote) sendMembership(ctx context.Context, server, roomID, eventID, membership string, event json.RawMessage) (SendJoinResponse, error) {
	rs, err := l.to(server)
	if err != nil {
		return SendJoinResponse{}, err
	}
	return rs.SendMembership(ctx, l.from, roomID, eventID, membership, event)
}

func (l loopRemote) MakeJoin(ctx context.Context, server, roomID, userID string, versions []string) (MakeMembershipResponse, error) {
	return l.makeMembership(ctx, server, roomID, userID, "join", versions)
}

func (l loopRemote) SendJoin(ctx context.Context, server, roomID, eventID string, event json.RawMessage) (SendJoinResponse, error) {
	return l.sendMembership(ctx, server, roomID, eventID, "join", event)
}

func (l loopRemote) MakeLeave(ctx context.Context, server, roomID, userID string) (MakeMembershipResponse, error) {
	return l.makeMembership(ctx, server, roomID, userID, "leave", nil)
}

func (l loopRemote) SendLeave(ctx context.Context, server, roomID, eventID string, event json.RawMessage) error {
	_, err := l.sendMembership(ctx, server, roomID, eventID, "leave", event)
	return err
}

func (l loopRemote) MakeKnock(ctx context.Context, server, roomID, userID string, versions []string) (MakeMembershipResponse, error) {
	return l.makeMembership(ctx, server, roomID, userID, "knock", versions)
}

func (l loopRemote) SendKnock(ctx context.Context, server, roomID, eventID string, event json.RawMessage) ([]json.RawMessage, error) {
	resp, err := l.sendMembership(ctx, server, roomID, eventID, "knock", event)
	return resp.KnockRoomState, err
}

func (l loopRemote) Invite(ctx context.Context, server, roomID, eventID, roomVersion string, event json.RawMessage, inviteRoomState []json.RawMessage) (json.RawMessage, error) {
	rs, err := l.to(server)
	if err != nil {
		return nil, err
	}
	return rs.ReceiveInvite(ctx, l.from, roomID, eventID, roomVersion, event, inviteRoomState)
}

func (l loopRemote) Event(ctx context.Context, server, eventID string) (json.RawMessage, error) {
	rs, err := l.to(server)
	if err != nil {
		return nil, err
	}
	return rs.EventForServer(ctx, l.from, eventID)
}

func (l loopRemote) StateIDs(context.Context, string, string, string) ([]string, []string, error) {
	return nil, nil, mxerr.New(mxerr.Unrecognized, "not in this fixture")
}

func (l loopRemote) MissingEvents(context.Context, string, string, []string, []string, int, int64) ([]json.RawMessage, error) {
	return nil, nil
}

func (l loopRemote) Backfill(context.Context, string, string, []string, int) ([]json.RawMessage, error) {
	return nil, nil
}

func (l loopRemote) TimestampToEvent(context.Context, string, string, int64, bool) (string, int64, error) {
	return "", 0, mxerr.New(mxerr.Unrecognized, "not in this fixture")
}

func (l loopRemote) QueryAlias(ctx context.Context, server, alias string) (string, []string, error) {
	rs, err := l.to(server)
	if err != nil {
		return "", nil, err
	}
	target, err := rs.LocalAlias(ctx, alias)
	return target.RoomID, target.Servers, err
}
