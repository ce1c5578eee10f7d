package accounts

import (
	"context"
	"testing"
	"time"

	"chappe/mxerr"
)

func isCode(err error, code mxerr.Code) bool {
	e, ok := mxerr.As(err)
	return ok && e.Code == code
}

// An OpenID token names its user for an hour, then is refused and purged;
// other strings, access tokens included, are refused; a deactivated user's
// tokens die with the account.
func TestOpenIDTokens(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	alice, err := s.Register(ctx, RegisterRequest{Localpart: "alice", Password: "long-enough"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Register(ctx, RegisterRequest{Localpart: "bob", Password: "long-enough", InhibitLogin: true}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s.now = func() time.Time { return start }
	tok, err := s.RequestOpenIDToken(ctx, "@alice:localhost")
	if err != nil {
		t.Fatal(err)
	}
	if tok.TokenType != "Bearer" || tok.MatrixServerName != "localhost" || tok.ExpiresIn != 3600 || len(tok.AccessToken) < 40 {
		t.Fatalf("token: %+v", tok)
	}
	if user, err := s.OpenIDUser(ctx, tok.AccessToken); err != nil || user != "@alice:localhost" {
		t.Fatalf("OpenIDUser: %q %v", user, err)
	}
	// The table holds a hash, not the token.
	var stored int
	if err := s.store.Pool().QueryRow(ctx, `SELECT count(*) FROM openid_tokens WHERE token_hash = $1`, []byte(tok.AccessToken)).Scan(&stored); err != nil || stored != 0 {
		t.Fatalf("the token itself is stored (%d rows, %v)", stored, err)
	}
	for name, bad := range map[string]string{"empty": "", "made up": "cho_nope", "an access token": alice.AccessToken, "with a space": tok.AccessToken + " "} {
		if _, err := s.OpenIDUser(ctx, bad); !isCode(err, mxerr.UnknownToken) {
			t.Errorf("%s token: got %v, want M_UNKNOWN_TOKEN", name, err)
		}
	}

	// An hour later the token is refused, and the next issue purges it.
	s.now = func() time.Time { return start.Add(time.Hour) }
	_, err = s.OpenIDUser(ctx, tok.AccessToken)
	wantCode(t, err, mxerr.UnknownToken)
	bobTok, err := s.RequestOpenIDToken(ctx, "@bob:localhost")
	if err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := s.store.Pool().QueryRow(ctx, `SELECT count(*) FROM openid_tokens`).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("after the purge: %d rows (%v), want bob's only", rows, err)
	}

	// Deactivation ends bob's token at once.
	if err := s.Deactivate(ctx, "@bob:localhost", false); err != nil {
		t.Fatal(err)
	}
	_, err = s.OpenIDUser(ctx, bobTok.AccessToken)
	wantCode(t, err, mxerr.UnknownToken)
}
