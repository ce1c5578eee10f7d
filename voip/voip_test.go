package voip

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"testing"
	"time"
)

func TestCredentials(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	if _, ok := New(Config{TTL: time.Hour}, clock).ForUser("@a:x"); ok {
		t.Error("credentials without a TURN server")
	}
	if _, ok := New(Config{URIs: []string{"turn:t:3478"}, TTL: time.Hour}, clock).ForUser("@a:x"); ok {
		t.Error("credentials without a shared secret")
	}
	turn := New(Config{URIs: []string{"turn:t:3478"}, SharedSecret: "secret", TTL: 24 * time.Hour}, clock)
	c, ok := turn.ForUser("@alice:example.gouv.fr")
	if !ok {
		t.Fatal("no credentials")
	}
	if want := "1700086400:@alice:example.gouv.fr"; c.Username != want {
		t.Errorf("username %q, want %q", c.Username, want)
	}
	mac := hmac.New(sha1.New, []byte("secret"))
	mac.Write([]byte(c.Username))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); c.Password != want {
		t.Errorf("password %q, want %q", c.Password, want)
	}
	if c.TTL != 86400 || len(c.URIs) != 1 {
		t.Errorf("ttl %d uris %v", c.TTL, c.URIs)
	}
	c.URIs[0] = "changed"
	if again, _ := turn.ForUser("@b:x"); again.URIs[0] != "turn:t:3478" {
		t.Error("the answer shares the configuration's slice")
	}
}
