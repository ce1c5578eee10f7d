package config

import (
	"strings"
	"testing"
	"time"
)

func TestVerifyTURN(t *testing.T) {
	tests := []struct {
		name    string
		turn    TURN
		wantErr string // "" when valid
	}{
		{"unset", TURN{URIs: []string{}, TTL: Duration(time.Hour)}, ""},
		{"set", TURN{URIs: []string{"turn:t.example:3478?transport=udp", "turns:t.example:443"}, SharedSecret: "s", TTL: Duration(time.Hour)}, ""},
		{"stun URI", TURN{URIs: []string{"stun:t.example"}, SharedSecret: "s", TTL: Duration(time.Hour)}, "turn.uris"},
		{"no secret", TURN{URIs: []string{"turn:t.example"}, TTL: Duration(time.Hour)}, "turn.shared_secret"},
		{"secret alone", TURN{SharedSecret: "s", TTL: Duration(time.Hour)}, "turn.uris"},
		{"short ttl", TURN{TTL: Duration(time.Second)}, "turn.ttl"},
	}
	for _, tc := range tests {
		cfg := Defaults()
		cfg.TURN = tc.turn
		err := cfg.Verify()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: want an error about %s, got %v", tc.name, tc.wantErr, err)
		}
	}
	env, err := Load("", []string{"CHAPPE_TURN_URIS=turn:a:1, turns:b:2", "CHAPPE_TURN_SHARED_SECRET=x", "CHAPPE_TURN_TTL=2h", "CHAPPE_PRESENCE_ENABLED=false"})
	if err != nil {
		t.Fatal(err)
	}
	if len(env.TURN.URIs) != 2 || env.TURN.URIs[1] != "turns:b:2" || env.TURN.TTL.D() != 2*time.Hour || env.Presence.Enabled {
		t.Errorf("environment: %+v %+v", env.TURN, env.Presence)
	}
}
