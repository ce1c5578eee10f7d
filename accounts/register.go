package accounts

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"time"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// RegisterRequest creates an account. Spec: POST /_matrix/client/v3/register.
type RegisterRequest struct {
	Localpart    string // empty: generated
	Password     string // empty: no password login
	IsAdmin      bool
	DisplayName  string
	DeviceID     string
	DeviceName   *string
	InhibitLogin bool
	WantRefresh  bool
	// RegistrationToken, when set, is spent in the same transaction.
	RegistrationToken *string
}

// RegistrationFlows are the UIA flows /register offers in the configured mode.
func (s *Service) RegistrationFlows() ([]Flow, error) {
	switch s.cfg.RegistrationMode {
	case "open":
		return []Flow{{Stages: []string{StageDummy}}}, nil
	case "token":
		return []Flow{{Stages: []string{StageRegistrationToken}}}, nil
	}
	return nil, mxerr.New(mxerr.Forbidden, "Registration is closed on this server; ask its administrators for an account")
}

// CheckAvailable validates a localpart and tells whether it is free.
// Spec: GET /register/available.
func (s *Service) CheckAvailable(ctx context.Context, localpart string) error {
	if err := s.validLocalpart(localpart); err != nil {
		return err
	}
	taken, err := s.store.UserExists(ctx, s.UserID(localpart))
	if err != nil {
		return err
	}
	if taken {
		return mxerr.New(mxerr.UserInUse, "The user name %q is already taken", localpart)
	}
	return nil
}

// CheckPasswordStrength refuses passwords shorter than the configured minimum.
func (s *Service) CheckPasswordStrength(password string) error {
	if len([]rune(password)) < s.cfg.MinPasswordLength {
		return mxerr.New(mxerr.WeakPassword, "The password must be at least %d characters long", s.cfg.MinPasswordLength)
	}
	return nil
}

// Register creates the account and, unless InhibitLogin, its first device and
// tokens, all in one transaction (with the registration token spent in it).
func (s *Service) Register(ctx context.Context, req RegisterRequest) (Tokens, error) {
	if req.Localpart == "" {
		req.Localpart = newGeneratedLocalpart()
	}
	if err := s.validLocalpart(req.Localpart); err != nil {
		return Tokens{}, err
	}
	var hash *string
	if req.Password != "" {
		if err := s.CheckPasswordStrength(req.Password); err != nil {
			return Tokens{}, err
		}
		h, err := s.hash(req.Password)
		if err != nil {
			return Tokens{}, err
		}
		hash = &h
	}
	if req.DeviceID != "" {
		if err := validDeviceID(req.DeviceID); err != nil {
			return Tokens{}, err
		}
	}
	userID := s.UserID(req.Localpart)
	now := s.now().UnixMilli()
	profile := map[string]any{"displayname": req.Localpart}
	if req.DisplayName != "" {
		profile["displayname"] = req.DisplayName
	}
	out := Tokens{UserID: userID}
	err := s.store.InTx(ctx, func(q *sqlstore.Queries) error {
		if req.RegistrationToken != nil {
			ok, err := q.SpendRegistrationToken(ctx, *req.RegistrationToken, now)
			if err != nil {
				return err
			}
			if !ok {
				return mxerr.New(mxerr.Forbidden, "The registration token was used up or expired during registration")
			}
		}
		err := q.CreateUser(ctx, sqlstore.User{UserID: userID, PasswordHash: hash, IsAdmin: req.IsAdmin, CreatedTS: now}, profile)
		if errors.Is(err, sqlstore.ErrConflict) {
			return mxerr.New(mxerr.UserInUse, "The user name %q is already taken", req.Localpart)
		}
		if err != nil || req.InhibitLogin {
			return err
		}
		deviceID := req.DeviceID
		if deviceID == "" {
			deviceID = newDeviceID()
		}
		if err := q.UpsertDevice(ctx, sqlstore.Device{UserID: userID, DeviceID: deviceID, DisplayName: req.DeviceName, CreatedTS: now}); err != nil {
			return err
		}
		out, err = s.issueTokens(ctx, q, userID, deviceID, req.WantRefresh, nil)
		return err
	})
	return out, err
}

// nonceLifetime is how long a shared-secret registration nonce stays usable.
const nonceLifetime = time.Minute

// NewSharedSecretNonce hands out a single-use nonce.
// Spec (Synapse admin API): GET /_synapse/admin/v1/register.
func (s *Service) NewSharedSecretNonce(ctx context.Context) (string, error) {
	nonce := hex.EncodeToString(hashToken(newSecret(""))[:16])
	now := s.now()
	if err := s.store.InsertNonce(ctx, nonce, now.UnixMilli(), now.Add(-nonceLifetime).UnixMilli()); err != nil {
		return "", err
	}
	return nonce, nil
}

// SharedSecretRequest is the body of POST /_synapse/admin/v1/register.
type SharedSecretRequest struct {
	Nonce       string
	Username    string
	DisplayName string
	Password    string
	Admin       bool
	UserType    string
	MAC         string
}

// RegisterWithSharedSecret checks the HMAC-SHA1 of the request under secret,
// consumes the nonce and creates the account with a first device.
// The MAC covers nonce, username, password, "admin"/"notadmin" and, if given,
// user_type, separated by NUL bytes.
func (s *Service) RegisterWithSharedSecret(ctx context.Context, secret string, req SharedSecretRequest) (Tokens, error) {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(req.Nonce))
	mac.Write([]byte{0})
	mac.Write([]byte(req.Username))
	mac.Write([]byte{0})
	mac.Write([]byte(req.Password))
	mac.Write([]byte{0})
	if req.Admin {
		mac.Write([]byte("admin"))
	} else {
		mac.Write([]byte("notadmin"))
	}
	if req.UserType != "" {
		mac.Write([]byte{0})
		mac.Write([]byte(req.UserType))
	}
	want := mac.Sum(nil)
	got, err := hex.DecodeString(req.MAC)
	if err != nil || !hmac.Equal(got, want) {
		return Tokens{}, mxerr.New(mxerr.Forbidden, "HMAC incorrect")
	}
	ok, err := s.store.ConsumeNonce(ctx, req.Nonce, s.now().Add(-nonceLifetime).UnixMilli())
	if err != nil {
		return Tokens{}, err
	}
	if !ok {
		return Tokens{}, mxerr.New(mxerr.Unknown, "Unrecognised, used or expired nonce; get a new one")
	}
	return s.Register(ctx, RegisterRequest{Localpart: req.Username, Password: req.Password, IsAdmin: req.Admin, DisplayName: req.DisplayName})
}

// CreateRegistrationToken stores a token for registration.mode = token.
func (s *Service) CreateRegistrationToken(ctx context.Context, token string, usesAllowed *int, expiry *time.Time) error {
	t := sqlstore.RegistrationToken{Token: token, UsesAllowed: usesAllowed, CreatedTS: s.now().UnixMilli()}
	if expiry != nil {
		ms := expiry.UnixMilli()
		t.ExpiryTS = &ms
	}
	if err := s.store.CreateRegistrationToken(ctx, t); errors.Is(err, sqlstore.ErrConflict) {
		return errors.New("a registration token with this value already exists")
	} else if err != nil {
		return err
	}
	return nil
}

// ListRegistrationTokens returns every registration token.
func (s *Service) ListRegistrationTokens(ctx context.Context) ([]sqlstore.RegistrationToken, error) {
	return s.store.ListRegistrationTokens(ctx)
}

// DeleteRegistrationToken removes a registration token.
func (s *Service) DeleteRegistrationToken(ctx context.Context, token string) error {
	if err := s.store.DeleteRegistrationToken(ctx, token); errors.Is(err, sqlstore.ErrNotFound) {
		return errors.New("no such registration token")
	} else if err != nil {
		return err
	}
	return nil
}
