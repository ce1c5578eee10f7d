package clientapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"chappe/app/apptest"
	"chappe/sqlstore/sqltest"
)

func TestMain(m *testing.M) { sqltest.Main(m) }

// response is a decoded JSON answer.
type response struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    string
}

func (r response) errcode() string {
	s, _ := r.Body["errcode"].(string)
	return s
}

// call sends body (raw text, "" for none) with an optional access token.
func call(t *testing.T, method, url, token, body string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	out := response{Status: resp.StatusCode, Header: resp.Header, Raw: string(data)}
	if len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, &out.Body); err != nil {
			t.Fatalf("%s %s: answer is not a JSON object: %q", method, url, data)
		}
	}
	return out
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// user is a registered, logged-in test user.
type user struct {
	ID       string
	Token    string
	DeviceID string
	Password string
}

// register creates localpart on srv with the dummy stage (open registration).
func register(t *testing.T, srv *apptest.Server, localpart, password string) user {
	t.Helper()
	r := call(t, "POST", srv.URL+"/_matrix/client/v3/register", "", mustJSON(map[string]any{
		"username": localpart, "password": password, "auth": map[string]string{"type": "m.login.dummy"},
	}))
	if r.Status != 200 {
		t.Fatalf("register %s: %d %s", localpart, r.Status, r.Raw)
	}
	return user{ID: r.Body["user_id"].(string), Token: r.Body["access_token"].(string), DeviceID: r.Body["device_id"].(string), Password: password}
}

func login(t *testing.T, srv *apptest.Server, localpart, password string, extra map[string]any) response {
	t.Helper()
	body := map[string]any{
		"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": localpart}, "password": password,
	}
	for k, v := range extra {
		body[k] = v
	}
	return call(t, "POST", srv.URL+"/_matrix/client/v3/login", "", mustJSON(body))
}

func mustReadKeyFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
