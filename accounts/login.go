package accounts

import (
	"context"
	"errors"
	"strings"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// LoginRequest is a password login. Spec: POST /_matrix/client/v3/login.
type LoginRequest struct {
	Identifier  *Identifier
	LegacyUser  string // the deprecated top-level "user" field
	Password    string
	DeviceID    string // reuse this device (its old tokens are revoked) or create it
	DisplayName *string
	WantRefresh bool
}

// Login checks the password and opens a session on a new or named device.
func (s *Service) Login(ctx context.Context, req LoginRequest) (Tokens, error) {
	userID, err := s.resolveIdentifier(req.Identifier, req.LegacyUser)
	if err != nil {
		return Tokens{}, err
	}
	if err := s.checkUserPassword(ctx, userID, req.Password); err != nil {
		return Tokens{}, err
	}
	deviceID := req.DeviceID
	if deviceID == "" {
		deviceID = newDeviceID()
	} else if err := validDeviceID(deviceID); err != nil {
		return Tokens{}, err
	}
	var out Tokens
	// Logging in on an existing device revokes its old tokens.
	defer s.forgetSessions(userID)
	err = s.store.InTx(ctx, func(q *sqlstore.Queries) error {
		dev := sqlstore.Device{UserID: userID, DeviceID: deviceID, DisplayName: req.DisplayName, CreatedTS: s.now().UnixMilli()}
		if err := q.UpsertDevice(ctx, dev); err != nil {
			return err
		}
		var err error
		out, err = s.issueTokens(ctx, q, userID, deviceID, req.WantRefresh, nil)
		return err
	})
	return out, err
}

// validDeviceID bounds client-chosen device IDs.
func validDeviceID(id string) error {
	if len(id) > 255 {
		return mxerr.New(mxerr.InvalidParam, "device_id is longer than 255 characters")
	}
	for _, c := range id {
		if c < 0x21 || c > 0x7e {
			return mxerr.New(mxerr.InvalidParam, "device_id may only contain printable ASCII without spaces")
		}
	}
	return nil
}

// resolveIdentifier turns an m.id.user identifier (or the legacy user field)
// into a local user ID. A bare localpart is lower-cased, as user IDs are.
func (s *Service) resolveIdentifier(id *Identifier, legacyUser string) (string, error) {
	user := legacyUser
	if id != nil {
		if id.Type != "m.id.user" {
			return "", mxerr.New(mxerr.Unknown, "Identifier type %q is not supported; use m.id.user", id.Type)
		}
		user = id.User
	}
	if user == "" {
		return "", mxerr.New(mxerr.BadJSON, "identifier.user is missing")
	}
	if strings.HasPrefix(user, "@") {
		if _, ok := s.LocalpartOf(user); !ok {
			return "", mxerr.New(mxerr.Forbidden, "Invalid username or password")
		}
		return user, nil
	}
	return s.UserID(strings.ToLower(user)), nil
}

// checkUserPassword verifies a password in constant time whatever the outcome,
// and answers the same M_FORBIDDEN for an unknown user and a wrong password.
func (s *Service) checkUserPassword(ctx context.Context, userID, password string) error {
	invalid := mxerr.New(mxerr.Forbidden, "Invalid username or password")
	u, err := s.store.GetUser(ctx, userID)
	if errors.Is(err, sqlstore.ErrNotFound) {
		_, _ = s.check(dummyHash, password)
		return invalid
	}
	if err != nil {
		return err
	}
	if u.Deactivated {
		_, _ = s.check(dummyHash, password)
		return mxerr.New(mxerr.UserDeactivated, "This account has been deactivated")
	}
	if u.PasswordHash == nil {
		_, _ = s.check(dummyHash, password)
		return invalid
	}
	ok, err := s.check(*u.PasswordHash, password)
	if err != nil {
		return err
	}
	if !ok {
		return invalid
	}
	return nil
}
