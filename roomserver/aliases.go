package roomserver

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// checkAliasSyntax validates a room alias (#localpart:server).
func checkAliasSyntax(alias string) error {
	local, server, ok := strings.Cut(strings.TrimPrefix(alias, "#"), ":")
	if !strings.HasPrefix(alias, "#") || !ok || local == "" || server == "" || len(alias) > 255 || strings.ContainsAny(local, " \t\n#") {
		return mxerr.New(mxerr.InvalidParam, "%q is not a valid room alias (#localpart:server)", alias)
	}
	return nil
}

// SetAlias creates a local alias for a room the user is joined to.
// Spec: PUT /directory/room/{roomAlias}.
func (r *Roomserver) SetAlias(ctx context.Context, userID, alias, roomID string) error {
	if err := checkAliasSyntax(alias); err != nil {
		return err
	}
	if !strings.HasSuffix(alias, ":"+r.cfg.ServerName) {
		return mxerr.New(mxerr.InvalidParam, "Aliases created here must end in :%s", r.cfg.ServerName)
	}
	rd, err := r.openReader(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if rd.membership() != "join" {
		return rd.notMember()
	}
	err = r.store.InsertAlias(ctx, alias, roomID, userID, r.now().UnixMilli())
	if errors.Is(err, sqlstore.ErrConflict) {
		e := mxerr.New(mxerr.Unknown, "The room alias %s already exists", alias)
		e.HTTPStatus = http.StatusConflict
		return e
	}
	return err
}

// AliasTarget is GET /directory/room/{roomAlias}'s answer.
type AliasTarget struct {
	RoomID  string   `json:"room_id"`
	Servers []string `json:"servers"`
}

// GetAlias resolves a local alias. Spec: GET /directory/room/{roomAlias}.
func (r *Roomserver) GetAlias(ctx context.Context, alias string) (AliasTarget, error) {
	if err := checkAliasSyntax(alias); err != nil {
		return AliasTarget{}, err
	}
	if serverOf(alias) != r.cfg.ServerName && r.cfg.Federation.enabled() {
		roomID, servers, err := r.resolveRoomAndServers(ctx, alias, nil)
		if err != nil {
			return AliasTarget{}, err
		}
		return AliasTarget{RoomID: roomID, Servers: servers}, nil
	}
	roomID, err := r.ResolveRoom(ctx, alias)
	if err != nil {
		return AliasTarget{}, err
	}
	servers := []string{r.cfg.ServerName}
	if r.cfg.Federation.enabled() {
		if joined, err := r.db().JoinedServers(ctx, roomID); err == nil {
			for _, s := range joined {
				if s != r.cfg.ServerName && r.cfg.Federation.Gate.Allowed(s) {
					servers = append(servers, s)
				}
			}
		}
	}
	return AliasTarget{RoomID: roomID, Servers: servers}, nil
}

// LocalAlias resolves one of our own aliases for another server
// (GET /query/directory); other servers' aliases are not ours to answer.
func (r *Roomserver) LocalAlias(ctx context.Context, alias string) (AliasTarget, error) {
	if err := checkAliasSyntax(alias); err != nil {
		return AliasTarget{}, err
	}
	if serverOf(alias) != r.cfg.ServerName {
		return AliasTarget{}, mxerr.New(mxerr.NotFound, "%s is not an alias of this server", alias)
	}
	return r.GetAlias(ctx, alias)
}

// DeleteAlias removes an alias: its creator, a server administrator, or a
// room member with the power to set the canonical alias may.
// Spec: DELETE /directory/room/{roomAlias}.
func (r *Roomserver) DeleteAlias(ctx context.Context, userID string, isAdmin bool, alias string) error {
	if err := checkAliasSyntax(alias); err != nil {
		return err
	}
	roomID, creator, err := r.store.ResolveAlias(ctx, alias)
	if errors.Is(err, sqlstore.ErrNotFound) {
		return mxerr.New(mxerr.NotFound, "Room alias %s not found", alias)
	}
	if err != nil {
		return err
	}
	if creator != userID && !isAdmin {
		allowed, err := r.hasStatePower(ctx, roomID, userID, "m.room.canonical_alias")
		if err != nil {
			return err
		}
		if !allowed {
			return mxerr.New(mxerr.Forbidden, "Only the alias's creator, an administrator or a room moderator may delete %s", alias)
		}
	}
	return r.store.DeleteAlias(ctx, alias)
}

// RoomAliases lists the room's local aliases to its members (or anyone if
// the room is world readable). Spec: GET /rooms/{roomId}/aliases.
func (r *Roomserver) RoomAliases(ctx context.Context, userID, roomID string) ([]string, error) {
	rd, err := r.openReader(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	if rd.membership() != "join" {
		if wr, err := rd.worldReadable(ctx); err != nil {
			return nil, err
		} else if !wr {
			return nil, rd.notMember()
		}
	}
	return r.store.AliasesOfRoom(ctx, roomID)
}

// hasStatePower tells whether the user is joined and may send evType as state.
func (r *Roomserver) hasStatePower(ctx context.Context, roomID, userID, evType string) (bool, error) {
	ok := false
	err := r.store.InTx(ctx, func(q *sqlstore.Queries) error {
		room, err := r.loadRoom(ctx, q, roomID, false)
		if err != nil {
			return err
		}
		ver, err := roomVersion(room.RoomVersion)
		if err != nil {
			return err
		}
		state, err := r.loadSnapshot(ctx, q, room.StateSnapshot)
		if err != nil {
			return err
		}
		w := &writer{r: r, q: q, room: room, ver: ver, state: state}
		if m, err := w.membership(ctx, userID); err != nil || m != "join" {
			return err
		}
		level, err := w.userLevel(ctx, userID)
		if err != nil {
			return err
		}
		pl, err := w.powerLevels(ctx)
		if err != nil {
			return err
		}
		ok = level >= pl.EventLevel(evType, true)
		return nil
	})
	return ok, err
}
