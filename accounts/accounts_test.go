package accounts

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"chappe/mxerr"
	"chappe/sqlstore"
	"chappe/sqlstore/sqltest"
)

func TestMain(m *testing.M) { sqltest.Main(m) }

func newService(t *testing.T) *Service {
	t.Helper()
	return New(sqltest.Store(t), Config{
		ServerName: "localhost", RegistrationMode: "open", MinPasswordLength: 8,
		RefreshLifetime: time.Minute, UIASessionLifetime: 10 * time.Minute,
	})
}

func wantCode(t *testing.T, err error, code mxerr.Code) {
	t.Helper()
	e, ok := mxerr.As(err)
	if !ok || e.Code != code {
		t.Fatalf("got %v, want %s", err, code)
	}
}

func TestPasswordHash(t *testing.T) {
	h, err := hashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash format %q", h)
	}
	for pw, want := range map[string]bool{"correct horse": true, "correct horse ": false, "": false, "Correct horse": false} {
		ok, err := checkPassword(h, pw)
		if err != nil || ok != want {
			t.Errorf("checkPassword(%q) = %v, %v; want %v", pw, ok, err, want)
		}
	}
	h2, _ := hashPassword("correct horse")
	if h2 == h {
		t.Fatal("two hashes of one password are equal: the salt is not random")
	}
	for _, bad := range []string{"", "plain", "$2a$10$bcrypt", "$argon2id$v=19$m=x$a$b"} {
		if _, err := checkPassword(bad, "x"); err == nil {
			t.Errorf("checkPassword accepted hash %q", bad)
		}
	}
}

func TestLocalparts(t *testing.T) {
	s := &Service{cfg: Config{ServerName: "interieur.gouv.fr"}}
	cases := []struct {
		localpart string
		ok        bool
	}{
		{"alice", true},
		{"jean-pierre.dupont", true},
		{"a_b=c/d+e", true},
		{"0123", true},
		{"", false},
		{"Alice", false},
		{"élise", false},
		{"with space", false},
		{"colon:inside", false},
		{"@alice", false},
		{strings.Repeat("a", 255), false},
	}
	for _, tc := range cases {
		err := s.validLocalpart(tc.localpart)
		if (err == nil) != tc.ok {
			t.Errorf("validLocalpart(%q) = %v, want ok=%v", tc.localpart, err, tc.ok)
		}
		if err != nil {
			wantCode(t, err, mxerr.InvalidUsername)
		}
	}
	if got, ok := s.LocalpartOf("@alice:interieur.gouv.fr"); !ok || got != "alice" {
		t.Errorf("LocalpartOf local = %q %v", got, ok)
	}
	for _, id := range []string{"@alice:justice.gouv.fr", "alice", "@:interieur.gouv.fr", "@alice"} {
		if _, ok := s.LocalpartOf(id); ok {
			t.Errorf("LocalpartOf(%q) accepted", id)
		}
	}
}

func TestExpiredAccessTokenIsSoftLogout(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	if _, err := s.Register(ctx, RegisterRequest{Localpart: "expiry", Password: "long-enough", InhibitLogin: true}); err != nil {
		t.Fatal(err)
	}
	tok, err := s.Login(ctx, LoginRequest{LegacyUser: "expiry", Password: "long-enough", WantRefresh: true})
	if err != nil {
		t.Fatal(err)
	}
	if tok.ExpiresInMs != time.Minute.Milliseconds() {
		t.Fatalf("expires_in_ms = %d", tok.ExpiresInMs)
	}
	if _, err := s.Authenticate(ctx, tok.AccessToken, "10.0.0.1"); err != nil {
		t.Fatalf("fresh token: %v", err)
	}
	real := s.now
	s.now = func() time.Time { return real().Add(61 * time.Second) }
	_, err = s.Authenticate(ctx, tok.AccessToken, "10.0.0.1")
	wantCode(t, err, mxerr.UnknownToken)
	if e, _ := mxerr.As(err); !e.SoftLogout {
		t.Fatal("an expired token must answer soft_logout: true")
	}
	// The refresh token still works after the access token expired.
	fresh, err := s.Refresh(ctx, tok.RefreshToken)
	if err != nil {
		t.Fatalf("refresh after expiry: %v", err)
	}
	if _, err := s.Authenticate(ctx, fresh.AccessToken, "10.0.0.1"); err != nil {
		t.Fatalf("refreshed token: %v", err)
	}
	// A token without refresh never expires.
	s.now = real
	plain, err := s.Login(ctx, LoginRequest{LegacyUser: "expiry", Password: "long-enough"})
	if err != nil || plain.ExpiresInMs != 0 || plain.RefreshToken != "" {
		t.Fatalf("plain login: %+v %v", plain, err)
	}
	s.now = func() time.Time { return real().Add(1000 * time.Hour) }
	if _, err := s.Authenticate(ctx, plain.AccessToken, "10.0.0.1"); err != nil {
		t.Fatalf("non-refreshable token expired: %v", err)
	}
}

func TestUIASessionExpires(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	op := Operation{Name: "register", Flows: []Flow{{Stages: []string{StageDummy}}}}
	_, err := s.Authorize(ctx, op, nil)
	var uia *UIAError
	if !errors.As(err, &uia) || uia.Session == "" {
		t.Fatalf("first step: %v", err)
	}
	real := s.now
	s.now = func() time.Time { return real().Add(11 * time.Minute) }
	_, err = s.Authorize(ctx, op, &AuthDict{Type: StageDummy, Session: uia.Session})
	wantCode(t, err, mxerr.Unknown)
	// Starting any new session purges the expired one.
	if _, err := s.store.GetUIASession(ctx, uia.Session); err != nil {
		t.Fatalf("expired session should still be stored before a purge: %v", err)
	}
	_, _ = s.Authorize(ctx, op, nil)
	if _, err := s.store.GetUIASession(ctx, uia.Session); !errors.Is(err, sqlstore.ErrNotFound) {
		t.Fatalf("expired session not purged: %v", err)
	}
}

// TestRegistrationTokenSpentOnce races registrations on a one-use token: the
// row lock lets exactly one through.
func TestRegistrationTokenSpentOnce(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	one := 1
	if err := s.CreateRegistrationToken(ctx, "race-token", &one, nil); err != nil {
		t.Fatal(err)
	}
	tok := "race-token"
	var wg sync.WaitGroup
	var mu sync.Mutex
	succeeded, refused := 0, 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := s.Register(ctx, RegisterRequest{Localpart: fmt.Sprintf("racer%d", i), Password: "long-enough", RegistrationToken: &tok})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				succeeded++
			} else if e, ok := mxerr.As(err); ok && e.Code == mxerr.Forbidden {
				refused++
			} else {
				t.Errorf("unexpected error: %v", err)
			}
		}(i)
	}
	wg.Wait()
	if succeeded != 1 || refused != 7 {
		t.Fatalf("%d registrations succeeded and %d were refused; want 1 and 7", succeeded, refused)
	}
	tokens, err := s.ListRegistrationTokens(ctx)
	if err != nil || len(tokens) != 1 || tokens[0].Completed != 1 {
		t.Fatalf("token after the race: %+v %v", tokens, err)
	}
}

func TestSharedSecretNonceIsSingleUse(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	nonce, err := s.NewSharedSecretNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := SharedSecretRequest{Nonce: nonce, Username: "ops", Password: "long-enough", Admin: true}
	req.MAC = macFor("s3cret", req)
	if _, err := s.RegisterWithSharedSecret(ctx, "s3cret", req); err != nil {
		t.Fatalf("first use: %v", err)
	}
	req.Username = "ops2"
	req.MAC = macFor("s3cret", req)
	_, err = s.RegisterWithSharedSecret(ctx, "s3cret", req)
	wantCode(t, err, mxerr.Unknown)
	u, err := s.store.GetUser(ctx, "@ops:localhost")
	if err != nil || !u.IsAdmin {
		t.Fatalf("admin flag: %+v %v", u, err)
	}
	if ok, _ := s.store.UserExists(ctx, "@ops2:localhost"); ok {
		t.Fatal("a replayed nonce created an account")
	}
}
