package roomserver

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// Presets of createRoom. Spec: POST /_matrix/client/v3/createRoom.
const (
	PresetPrivate        = "private_chat"
	PresetTrustedPrivate = "trusted_private_chat"
	PresetPublic         = "public_chat"
)

// StateEventInput is one entry of createRoom's initial_state.
type StateEventInput struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// CreateRoomRequest is createRoom's body, already decoded.
type CreateRoomRequest struct {
	Visibility                string
	RoomAliasName             string
	Name                      *string
	Topic                     *string
	Invite                    []string
	IsDirect                  bool
	InitialState              []StateEventInput
	CreationContent           map[string]json.RawMessage
	PowerLevelContentOverride map[string]json.RawMessage
	RoomVersion               string
	Preset                    string
}

// CreateRoom creates a room with all the events the request implies, in the
// spec's order, in one transaction: either the whole room exists afterwards
// or nothing does. Spec: POST /_matrix/client/v3/createRoom.
func (r *Roomserver) CreateRoom(ctx context.Context, creator string, req CreateRoomRequest) (string, error) {
	version := req.RoomVersion
	if version == "" {
		version = r.cfg.DefaultVersion
	}
	ver, err := roomVersion(version)
	if err != nil {
		return "", err
	}
	preset := req.Preset
	switch preset {
	case "":
		preset = PresetPrivate
		if req.Visibility == "public" {
			preset = PresetPublic
		}
	case PresetPrivate, PresetTrustedPrivate, PresetPublic:
	default:
		return "", mxerr.New(mxerr.InvalidParam, "Unknown preset %q", req.Preset)
	}
	switch req.Visibility {
	case "", "private", "public":
	default:
		return "", mxerr.New(mxerr.InvalidParam, "visibility must be public or private, not %q", req.Visibility)
	}
	for _, u := range req.Invite {
		if err := r.checkInvitee(ctx, u); err != nil {
			return "", err
		}
	}
	alias := ""
	if req.RoomAliasName != "" {
		if alias, err = r.localAlias(req.RoomAliasName); err != nil {
			return "", err
		}
	}
	for _, s := range req.InitialState {
		if s.Type == "" || len(s.Content) == 0 || s.Content[0] != '{' {
			return "", mxerr.New(mxerr.InvalidRoomState, "initial_state entries need a type and an object content")
		}
		if s.Type == "m.room.create" || s.Type == "m.room.member" {
			return "", mxerr.New(mxerr.InvalidRoomState, "initial_state may not contain %s events", s.Type)
		}
		if err := validateStateContent(s.Type, s.Content); err != nil {
			return "", mxerr.New(mxerr.InvalidRoomState, "initial_state %s: %s", s.Type, err.(*mxerr.Error).Message)
		}
	}

	if err := validateStateContent("m.room.power_levels", r.defaultPowerLevels(creator, version, preset, req)); err != nil {
		return "", mxerr.New(mxerr.BadJSON, "power_level_content_override: %s", err.(*mxerr.Error).Message)
	}
	createContent, err := r.createContent(creator, version, preset, req)
	if err != nil {
		return "", err
	}
	var roomID string
	err = r.inTx(ctx, func(q *txn) error {
		w, err := r.startRoom(ctx, q, ver, creator, createContent)
		if err != nil {
			return err
		}
		roomID = w.room.RoomID
		if alias != "" {
			if err := q.InsertAlias(ctx, alias, roomID, creator, r.now().UnixMilli()); errors.Is(err, sqlstore.ErrConflict) {
				return mxerr.New(mxerr.RoomInUse, "The alias %s is already taken", alias)
			} else if err != nil {
				return err
			}
		}
		for _, p := range r.creationEvents(ctx, creator, version, preset, alias, req) {
			if _, err := w.append(ctx, p); err != nil {
				if e, ok := mxerr.As(err); ok && e.Code == mxerr.Forbidden && p.Type != "m.room.member" {
					return mxerr.New(mxerr.InvalidRoomState, "The %s event is not allowed: %s", p.Type, e.Message)
				}
				return err
			}
		}
		if req.Visibility == "public" {
			return q.SetRoomPublished(ctx, roomID, true)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return roomID, nil
}

// createContent is the content of the m.room.create event.
func (r *Roomserver) createContent(creator, version, preset string, req CreateRoomRequest) ([]byte, error) {
	c := map[string]json.RawMessage{}
	for k, v := range req.CreationContent {
		c[k] = v
	}
	delete(c, "creator")
	if versionNumber(version) < 11 {
		c["creator"] = content(creator)
	}
	c["room_version"] = content(version)
	if privilegedCreators(version) && preset == PresetTrustedPrivate {
		var extra []string
		if raw, ok := c["additional_creators"]; ok {
			if err := json.Unmarshal(raw, &extra); err != nil {
				return nil, mxerr.New(mxerr.BadJSON, "creation_content.additional_creators must be a list of user IDs")
			}
		}
		for _, u := range req.Invite {
			if !slices.Contains(extra, u) && u != creator {
				extra = append(extra, u)
			}
		}
		if len(extra) > 0 {
			c["additional_creators"] = content(extra)
		}
	}
	return json.Marshal(c)
}

// startRoom creates the room row and its m.room.create event. For room
// versions with domainless room IDs (12) the room ID is derived from the
// create event's ID, so the event is built first.
func (r *Roomserver) startRoom(ctx context.Context, q *txn, ver gomatrixserverlib.IRoomVersion, creator string, createContent []byte) (*writer, error) {
	version := string(ver.Version())
	roomID := ""
	if !ver.DomainlessRoomIDs() {
		roomID = "!" + randomID(18) + ":" + r.cfg.ServerName
	}
	empty, err := newAuthEvents(nil)
	if err != nil {
		return nil, err
	}
	stateKeyEmpty := ""
	p := proto{Sender: creator, Type: "m.room.create", StateKey: &stateKeyEmpty, Content: createContent}
	ev, err := buildEvent(ver, roomID, p, nil, 1, empty, r.cfg.ServerName, r.key, r.now())
	if err != nil {
		return nil, err
	}
	if roomID == "" {
		roomID = ev.RoomID().String()
	}
	room := sqlstore.Room{RoomID: roomID, RoomVersion: version, Creator: creator, CreatedTS: r.now().UnixMilli(), ForwardExtremities: []string{}}
	// The room row references its state snapshot; start from the empty state.
	room.StateSnapshot = 0
	if err := q.InsertRoom(ctx, room); err != nil {
		if errors.Is(err, sqlstore.ErrConflict) {
			return nil, mxerr.New(mxerr.RoomInUse, "Room %s already exists", roomID)
		}
		return nil, err
	}
	state, err := r.emptySnapshot(ctx, q.Queries, roomID)
	if err != nil {
		return nil, err
	}
	room.StateSnapshot = state.nid
	w := &writer{r: r, q: q.Queries, t: q, room: room, ver: ver, state: state}
	if _, err := w.store(ctx, ev); err != nil {
		return nil, err
	}
	return w, nil
}

// creationEvents lists steps 2 to 8 of the spec's createRoom order.
func (r *Roomserver) creationEvents(ctx context.Context, creator, version, preset, alias string, req CreateRoomRequest) []proto {
	empty := ""
	state := func(typ, key string, c []byte) proto {
		k := key
		return proto{Sender: creator, Type: typ, StateKey: &k, Content: c}
	}
	var out []proto
	// 2. The creator joins.
	out = append(out, state("m.room.member", creator, r.memberContent(ctx, creator, "join", "", false)))
	// 3. Power levels.
	out = append(out, state("m.room.power_levels", empty, r.defaultPowerLevels(creator, version, preset, req)))
	// 4. Canonical alias.
	if alias != "" {
		out = append(out, state("m.room.canonical_alias", empty, content(map[string]string{"alias": alias})))
	}
	// 5. The preset's rules.
	joinRule, guest := "invite", "can_join"
	if preset == PresetPublic {
		joinRule, guest = "public", "forbidden"
	}
	out = append(out,
		state("m.room.join_rules", empty, content(map[string]string{"join_rule": joinRule})),
		state("m.room.history_visibility", empty, content(map[string]string{"history_visibility": "shared"})),
		state("m.room.guest_access", empty, content(map[string]string{"guest_access": guest})),
	)
	// Encrypted by default (rooms.encrypt_private_by_default), unless
	// initial_state sets its own m.room.encryption.
	if r.cfg.EncryptPrivateByDefault && (preset == PresetPrivate || preset == PresetTrustedPrivate || req.IsDirect) && !setsEncryption(req.InitialState) {
		out = append(out, state("m.room.encryption", empty, content(map[string]string{"algorithm": "m.megolm.v1.aes-sha2"})))
	}
	// 6. initial_state, in order.
	for _, s := range req.InitialState {
		out = append(out, state(s.Type, s.StateKey, s.Content))
	}
	// 7. Name and topic.
	if req.Name != nil {
		out = append(out, state("m.room.name", empty, content(map[string]string{"name": *req.Name})))
	}
	if req.Topic != nil {
		out = append(out, state("m.room.topic", empty, content(map[string]any{
			"topic":   *req.Topic,
			"m.topic": map[string]any{"m.text": []map[string]string{{"body": *req.Topic, "mimetype": "text/plain"}}},
		})))
	}
	// 8. Invites.
	for _, u := range req.Invite {
		if u == creator {
			continue
		}
		out = append(out, state("m.room.member", u, r.memberContent(ctx, u, "invite", "", req.IsDirect)))
	}
	return out
}

// setsEncryption tells whether initial_state holds the room's m.room.encryption.
func setsEncryption(initial []StateEventInput) bool {
	for _, s := range initial {
		if s.Type == "m.room.encryption" && s.StateKey == "" {
			return true
		}
	}
	return false
}

// defaultPowerLevels is the power_levels content of a new room, with the
// request's override applied on top.
func (r *Roomserver) defaultPowerLevels(creator, version, preset string, req CreateRoomRequest) []byte {
	users := map[string]int64{}
	tombstone := int64(100)
	if privilegedCreators(version) {
		tombstone = 150 // must exceed state_default's 100 for creators-only upgrades (spec, v12)
	} else {
		users[creator] = 100
		if preset == PresetTrustedPrivate {
			for _, u := range req.Invite {
				users[u] = 100
			}
		}
	}
	pl := map[string]any{
		"users":          users,
		"users_default":  0,
		"events_default": 0,
		"state_default":  50,
		"ban":            50,
		"kick":           50,
		"redact":         50,
		"invite":         0,
		"events": map[string]int64{
			"m.room.name":               50,
			"m.room.avatar":             50,
			"m.room.topic":              50,
			"m.room.canonical_alias":    50,
			"m.room.power_levels":       100,
			"m.room.history_visibility": 100,
			"m.room.encryption":         100,
			"m.room.server_acl":         100,
			"m.room.tombstone":          tombstone,
		},
		"notifications": map[string]int64{"room": 50},
	}
	merged := map[string]json.RawMessage{}
	for k, v := range pl {
		merged[k] = content(v)
	}
	for k, v := range req.PowerLevelContentOverride {
		merged[k] = v
	}
	b, _ := json.Marshal(merged)
	return b
}

// memberContent is the content of a member event for a local user, with
// their profile.
func (r *Roomserver) memberContent(ctx context.Context, userID, membership, reason string, isDirect bool) []byte {
	c := map[string]any{"membership": membership}
	if r.profiles != nil {
		if name, avatar := r.profiles.MemberProfile(ctx, userID); name != "" || avatar != "" {
			if name != "" {
				c["displayname"] = name
			}
			if avatar != "" {
				c["avatar_url"] = avatar
			}
		}
	}
	if reason != "" {
		c["reason"] = reason
	}
	if isDirect {
		c["is_direct"] = true
	}
	return content(c)
}

// checkUserID validates a user ID named in a request.
func (r *Roomserver) checkUserID(u string) error {
	if !strings.HasPrefix(u, "@") || !strings.Contains(u, ":") || len(u) > 255 {
		return mxerr.New(mxerr.InvalidParam, "%q is not a valid user ID", u)
	}
	return nil
}

// checkInvitee validates an invitee: a well-formed ID, an existing account
// if local, a server of the federation if remote.
func (r *Roomserver) checkInvitee(ctx context.Context, u string) error {
	if err := r.checkUserID(u); err != nil {
		return err
	}
	if !strings.HasSuffix(u, ":"+r.cfg.ServerName) {
		return r.checkServerAllowed(serverOf(u))
	}
	if r.profiles == nil {
		return nil
	}
	ok, err := r.profiles.UserExists(ctx, u)
	if err != nil {
		return err
	}
	if !ok {
		return mxerr.New(mxerr.NotFound, "There is no user %s", u)
	}
	return nil
}

// localAlias builds #localpart:server_name and validates it.
func (r *Roomserver) localAlias(localpart string) (string, error) {
	if strings.ContainsAny(localpart, ":# \t\n") || localpart == "" {
		return "", mxerr.New(mxerr.InvalidParam, "room_alias_name %q may not contain ':', '#' or white space", localpart)
	}
	alias := "#" + localpart + ":" + r.cfg.ServerName
	if len(alias) > 255 {
		return "", mxerr.New(mxerr.InvalidParam, "The alias would be longer than 255 characters")
	}
	return alias, nil
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	s := base64.RawURLEncoding.EncodeToString(b)
	return strings.NewReplacer("-", "a", "_", "b").Replace(s)[:n]
}
