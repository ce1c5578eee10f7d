package accounts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"regexp"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// Limits from the spec: the whole profile under 64 KiB, keys up to 255 bytes.
// Spec: PUT /_matrix/client/v3/profile/{userId}/{keyName}.
const (
	maxProfileBytes = 64 * 1024
	maxProfileKey   = 255
)

// profileKey is the spec's keyName grammar: the three defined keys or a
// namespaced identifier.
var profileKey = regexp.MustCompile(`^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$`)

// GetProfile returns a local user's whole profile; 404 for unknown users.
func (s *Service) GetProfile(ctx context.Context, userID string) (map[string]json.RawMessage, error) {
	p, err := s.store.GetProfile(ctx, userID)
	if errors.Is(err, sqlstore.ErrNotFound) {
		return nil, mxerr.New(mxerr.NotFound, "Profile not found")
	}
	return p, err
}

// GetProfileField returns one field; 404 if the user or the field is missing.
func (s *Service) GetProfileField(ctx context.Context, userID, key string) (json.RawMessage, error) {
	p, err := s.GetProfile(ctx, userID)
	if err != nil {
		return nil, err
	}
	v, ok := p[key]
	if !ok {
		return nil, mxerr.New(mxerr.NotFound, "The profile has no field %q", key)
	}
	return v, nil
}

// SetProfileField validates and stores one field of the user's own profile.
func (s *Service) SetProfileField(ctx context.Context, userID, key string, value json.RawMessage) error {
	if err := checkProfileKey(key); err != nil {
		return err
	}
	switch key {
	case "displayname":
		var name string
		if err := json.Unmarshal(value, &name); err != nil {
			return mxerr.New(mxerr.BadJSON, "displayname must be a string")
		}
		if len(name) > 256 {
			return mxerr.New(mxerr.InvalidParam, "displayname is longer than 256 bytes")
		}
	case "avatar_url":
		var url string
		if err := json.Unmarshal(value, &url); err != nil {
			return mxerr.New(mxerr.BadJSON, "avatar_url must be a string")
		}
		if url != "" && !validMXC(url) {
			return mxerr.New(mxerr.InvalidParam, "avatar_url must be an mxc:// URI")
		}
	case "m.tz":
		var tz string
		if err := json.Unmarshal(value, &tz); err != nil {
			return mxerr.New(mxerr.BadJSON, "m.tz must be a string")
		}
	}
	if bytes.Equal(bytes.TrimSpace(value), []byte("null")) {
		return mxerr.New(mxerr.InvalidParam, "null values are not stored; use DELETE to remove a field")
	}
	err := s.store.SetProfileField(ctx, userID, key, value, maxProfileBytes)
	switch {
	case errors.Is(err, sqlstore.ErrConflict):
		return mxerr.New(mxerr.ProfileTooLarge, "The profile would exceed %d bytes", maxProfileBytes)
	case errors.Is(err, sqlstore.ErrNotFound):
		return mxerr.New(mxerr.NotFound, "Profile not found")
	}
	return err
}

// DeleteProfileField removes one field of the user's own profile.
func (s *Service) DeleteProfileField(ctx context.Context, userID, key string) error {
	if err := checkProfileKey(key); err != nil {
		return err
	}
	err := s.store.DeleteProfileField(ctx, userID, key)
	if errors.Is(err, sqlstore.ErrNotFound) {
		return mxerr.New(mxerr.NotFound, "Profile not found")
	}
	return err
}

func checkProfileKey(key string) error {
	if len(key) > maxProfileKey {
		return mxerr.New(mxerr.KeyTooLarge, "Profile keys are at most %d bytes", maxProfileKey)
	}
	if !profileKey.MatchString(key) {
		return mxerr.New(mxerr.InvalidParam, "Invalid profile key %q: use displayname, avatar_url, m.tz or a namespaced key like org.example.field", key)
	}
	return nil
}

var mxcURI = regexp.MustCompile(`^mxc://[A-Za-z0-9.\-:\[\]]+/[A-Za-z0-9_\-]+$`)

func validMXC(u string) bool { return mxcURI.MatchString(u) }

// MemberProfile is the display name and avatar a local user's member events
// carry. Unknown users and unset fields give empty strings.
func (s *Service) MemberProfile(ctx context.Context, userID string) (displayName, avatarURL string) {
	p, err := s.store.GetProfile(ctx, userID)
	if err != nil {
		return "", ""
	}
	_ = json.Unmarshal(p["displayname"], &displayName)
	_ = json.Unmarshal(p["avatar_url"], &avatarURL)
	return displayName, avatarURL
}

// UserExists tells whether a local account exists (deactivated ones count).
func (s *Service) UserExists(ctx context.Context, userID string) (bool, error) {
	return s.store.UserExists(ctx, userID)
}
