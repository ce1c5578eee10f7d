package e2e

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"chappe/app/apptest"
)

// TestNoRouteAnswers500ToBadInput sends every route of the server, with and
// without a valid token, path parameters of several bad shapes and bodies
// that are not what it expects. Bad input must get a 4xx Matrix error, never
// a 5xx: a 500 on bad input is a bug.
func TestNoRouteAnswers500ToBadInput(t *testing.T) {
	srv := apptest.Start(t)
	token := registerToken(t, srv)
	router, ok := srv.Handler().(chi.Routes)
	if !ok {
		t.Fatal("the server's handler is not a chi router")
	}
	params := []string{"x", "%40nobody%3Alocalhost", "!nope%3Alocalhost", "%24nope", "%23nope%3Alocalhost", strings.Repeat("a", 300), "%00", "%FF%FE", "..%2F.."}
	bodies := []string{"", "{", "[]", "null", `"s"`, `{"a":1}`, `{"user_id":5,"room_id":[],"content":"x","auth":"x","devices":{}}`,
		`{"one_time_keys":{"x":1},"device_keys":"x","filter":1,"limit":-5,"from":"garbage"}`, `{"n":1e400}`, `{"displayname":"a\u0000b","body":"\u0000","room_id":"!a\u0000:x"}`, "{\"x\":\"\xff\xfe\"}"}
	queries := []string{"", "?limit=-1&from=zz&dir=x&since=bogus&filter=%7B&ts=x&timeout=x", "?access_token=bad"}
	requests := 0
	err := chi.Walk(router, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if method == http.MethodOptions {
			return nil
		}
		for _, p := range params {
			path := fillParams(route, p)
			for _, q := range queries {
				for _, body := range bodies {
					for _, tok := range []string{"", token} {
						status, resp := send(t, method, srv.URL+path+q, tok, body)
						requests++
						if status >= 500 {
							t.Errorf("%s %s%s with body %q (token %v): %d %s", method, path, q, body, tok != "", status, resp)
						}
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if requests < 1000 {
		t.Fatalf("only %d requests sent: the route walk found too few routes", requests)
	}
}

// fillParams replaces every {param} of a chi route pattern with value.
func fillParams(route, value string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(route, '{')
		if i < 0 {
			b.WriteString(route)
			break
		}
		j := strings.IndexByte(route[i:], '}')
		b.WriteString(route[:i])
		b.WriteString(value)
		route = route[i+j+1:]
	}
	return strings.ReplaceAll(b.String(), "/*", "/x")
}

func send(t *testing.T, method, u, token, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		if _, perr := url.Parse(u); perr != nil {
			return 400, "unparseable URL"
		}
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
	return resp.StatusCode, string(data)
}

// registerToken registers a user over HTTP and returns its access token.
func registerToken(t *testing.T, srv *apptest.Server) string {
	t.Helper()
	status, body := send(t, "POST", srv.URL+"/_matrix/client/v3/register", "", `{"username":"sweeper","password":"sweeper-password","auth":{"type":"m.login.dummy"}}`)
	if status != 200 {
		t.Fatalf("register: %d %s", status, body)
	}
	i := strings.Index(body, `"access_token":"`)
	if i < 0 {
		t.Fatalf("no token in %s", body)
	}
	rest := body[i+len(`"access_token":"`):]
	return rest[:strings.IndexByte(rest, '"')]
}
