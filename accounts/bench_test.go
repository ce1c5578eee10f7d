package accounts

import (
	"context"
	"testing"

	"chappe/sqlstore/sqltest"
)

// BenchmarkAuthenticate measures the cost every authenticated request pays:
// one indexed lookup of the token hash joined with its user and device.
func BenchmarkAuthenticate(b *testing.B) {
	s := New(sqltest.Store(b), Config{ServerName: "localhost", RegistrationMode: "open", MinPasswordLength: 8})
	ctx := context.Background()
	tok, err := s.Register(ctx, RegisterRequest{Password: "long-enough"}) // generated name: this function runs several times
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Authenticate(ctx, tok.AccessToken, "127.0.0.1"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPasswordHash is the argon2id cost of one login or registration.
func BenchmarkPasswordHash(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := hashPassword("correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
}
