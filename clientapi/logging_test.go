package clientapi_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"chappe/app/apptest"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestLogsCarryNoSecrets drives requests full of secrets and checks the log
// has one line per request with a request id, and none of the secrets.
func TestLogsCarryNoSecrets(t *testing.T) {
	var log syncBuffer
	srv := apptest.StartWithLog(t, &log)
	u := register(t, srv, "paul", "paul-secret-password")
	refresh := login(t, srv, "paul", "paul-secret-password", map[string]any{"refresh_token": true}).Body["refresh_token"].(string)
	call(t, "GET", srv.URL+c+"/account/whoami?access_token="+u.Token, "", "")
	call(t, "POST", srv.URL+c+"/refresh", "", mustJSON(map[string]string{"refresh_token": refresh}))
	call(t, "POST", srv.URL+c+"/account/password", u.Token, mustJSON(map[string]any{
		"new_password": "paul-new-secret", "auth": passwordAuth("paul", "paul-secret-password", ""),
	}))
	call(t, "GET", srv.URL+"/_matrix/key/v2/server", "", "")

	text := log.String()
	seed := strings.Fields(mustReadKeyFile(t, srv.Config.SigningKeyPath()))[2]
	for what, secret := range map[string]string{
		"access token": u.Token, "refresh token": refresh, "password": "paul-secret-password",
		"new password": "paul-new-secret", "signing key seed": seed,
	} {
		if strings.Contains(text, secret) {
			t.Errorf("the log contains the %s", what)
		}
	}
	requests := 0
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if entry["message"] == "request" {
			requests++
			if id, _ := entry["request_id"].(string); id == "" {
				t.Errorf("access-log line without request id: %s", line)
			}
		}
	}
	if requests < 6 {
		t.Errorf("%d access-log lines for 6 requests:\n%s", requests, text)
	}
	if !strings.Contains(text, `"user_id":"@paul:localhost"`) {
		t.Error("authenticated requests should name the user in the log")
	}
}
