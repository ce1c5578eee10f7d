package accounts

import (
	"context"
	"errors"
	"time"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// openIDTokenLifetime is how long an OpenID token is valid.
const openIDTokenLifetime = time.Hour

// OpenIDToken is the answer of POST /user/{userId}/openid/request_token.
// Spec: client-server-api, "OpenID", definitions/openid_token.yaml.
type OpenIDToken struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"` // always "Bearer"
	MatrixServerName string `json:"matrix_server_name"`
	ExpiresIn        int64  `json:"expires_in"` // seconds
}

// RequestOpenIDToken issues a token that proves, for an hour and to whoever
// asks GET /_matrix/federation/v1/openid/userinfo, that the bearer is
// userID; it opens nothing else. Only its hash is stored.
// Spec: POST /_matrix/client/v3/user/{userId}/openid/request_token.
func (s *Service) RequestOpenIDToken(ctx context.Context, userID string) (OpenIDToken, error) {
	now := s.now()
	t := OpenIDToken{
		AccessToken: newSecret("cho_"), TokenType: "Bearer", MatrixServerName: s.cfg.ServerName,
		ExpiresIn: int64(openIDTokenLifetime / time.Second),
	}
	err := s.store.InsertOpenIDToken(ctx, sqlstore.OpenIDToken{
		TokenHash: hashToken(t.AccessToken), UserID: userID,
		CreatedTS: now.UnixMilli(), ExpiresTS: now.Add(openIDTokenLifetime).UnixMilli(),
	})
	if err != nil {
		return OpenIDToken{}, err
	}
	return t, nil
}

// OpenIDUser is the user an OpenID token was issued to: M_UNKNOWN_TOKEN
// when it was never issued, has expired, or its user was deactivated.
// Spec: server-server-api.md, "OpenID", GET /openid/userinfo.
func (s *Service) OpenIDUser(ctx context.Context, token string) (string, error) {
	if token == "" {
		return "", mxerr.New(mxerr.UnknownToken, "The access_token parameter is missing")
	}
	userID, err := s.store.OpenIDTokenUser(ctx, hashToken(token), s.now().UnixMilli())
	if errors.Is(err, sqlstore.ErrNotFound) {
		return "", mxerr.New(mxerr.UnknownToken, "Unknown or expired OpenID access token")
	}
	return userID, err
}
