// Package userdir is the user directory: the search a client runs to find
// people to invite or to talk to.
//
// Spec: client-server-api/_index.md, "User directory"
// (POST /user_directory/search): the server must at least consider the users
// who share a room with the searcher and those joined to rooms with a public
// join rule or world_readable history; the search is case-insensitive on user
// IDs and display names. Chappe searches exactly those users (never the
// whole user table: an account in no shared or public room stays unlisted),
// excluding the searcher.
package userdir

import (
	"context"
	"strings"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// Limits of a search.
const (
	DefaultLimit = 10
	MaxLimit     = 100
	maxWords     = 8
	maxTermBytes = 256
)

// User is one search result.
type User struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"display_name,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// Result is the answer of a search.
type Result struct {
	Results []User `json:"results"`
	Limited bool   `json:"limited"`
}

// Directory is the user directory component.
type Directory struct {
	store *sqlstore.Store
}

// New returns the component.
func New(store *sqlstore.Store) *Directory { return &Directory{store: store} }

// Search returns up to limit users visible to searcher (0: DefaultLimit;
// more than MaxLimit is capped) whose user ID or display name contains every
// word of term, case-insensitively; limited tells whether there were more.
// Results whose name or localpart starts with the first word come first.
func (d *Directory) Search(ctx context.Context, searcher, term string, limit int) (Result, error) {
	switch {
	case limit < 0:
		return Result{}, mxerr.New(mxerr.InvalidParam, "limit must not be negative")
	case limit == 0:
		limit = DefaultLimit
	case limit > MaxLimit:
		limit = MaxLimit
	}
	if len(term) > maxTermBytes {
		return Result{}, mxerr.New(mxerr.InvalidParam, "search_term is limited to %d bytes", maxTermBytes)
	}
	words := strings.Fields(strings.ToLower(term))
	if len(words) > maxWords {
		words = words[:maxWords]
	}
	rows, err := d.store.SearchUserDirectory(ctx, searcher, words, limit+1)
	if err != nil {
		return Result{}, err
	}
	out := Result{Results: []User{}}
	if len(rows) > limit {
		rows, out.Limited = rows[:limit], true
	}
	for _, r := range rows {
		u := User{UserID: r.UserID}
		if r.DisplayName != nil {
			u.DisplayName = *r.DisplayName
		}
		if r.AvatarURL != nil {
			u.AvatarURL = *r.AvatarURL
		}
		out.Results = append(out.Results, u)
	}
	return out, nil
}
