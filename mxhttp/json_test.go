package mxhttp

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"chappe/mxerr"
)

func TestDecodeJSON(t *testing.T) {
	type body struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
		Inner struct {
			Flag bool `json:"flag"`
		} `json:"inner"`
	}
	cases := []struct {
		name       string
		body       string
		allowEmpty bool
		want       mxerr.Code // "" = success
	}{
		{"object", `{"name":"a","count":2}`, false, ""},
		{"empty allowed", ``, true, ""},
		{"whitespace allowed", " \n ", true, ""},
		{"empty refused", ``, false, mxerr.NotJSON},
		{"garbage", `{name:`, false, mxerr.NotJSON},
		{"truncated", `{"name":"a"`, false, mxerr.NotJSON},
		{"array", `[]`, false, mxerr.BadJSON},
		{"number", `42`, false, mxerr.BadJSON},
		{"null", `null`, false, mxerr.BadJSON},
		{"wrong type", `{"count":"two"}`, false, mxerr.BadJSON},
		{"wrong nested type", `{"inner":{"flag":"yes"}}`, false, mxerr.BadJSON},
		{"too large", `{"name":"` + strings.Repeat("a", 200) + `"}`, false, mxerr.TooLarge},
		{"NUL character", `{"name":"a\u0000b"}`, false, mxerr.BadJSON},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", strings.NewReader(tc.body))
			var b body
			err := DecodeJSON(r, 100, tc.allowEmpty, &b)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			e, ok := mxerr.As(err)
			if !ok || e.Code != tc.want {
				t.Fatalf("got %v, want %s", err, tc.want)
			}
			if e.Message == "" {
				t.Fatal("error without message")
			}
		})
	}
}

func TestWriteErrorHidesInternalErrors(t *testing.T) {
	w := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/", nil)
	WriteError(w, r, errSecret("password=hunter2 in a driver error"))
	if w.Code != 500 || strings.Contains(w.Body.String(), "hunter2") || !strings.Contains(w.Body.String(), "M_UNKNOWN") {
		t.Fatalf("internal error leaked or wrong: %d %s", w.Code, w.Body.String())
	}
}

type errSecret string

func (e errSecret) Error() string { return string(e) }

func TestErrorTable(t *testing.T) {
	for code, status := range map[mxerr.Code]int{
		mxerr.Forbidden: 403, mxerr.UnknownToken: 401, mxerr.MissingToken: 401, mxerr.NotJSON: 400, mxerr.BadJSON: 400,
		mxerr.TooLarge: 413, mxerr.LimitExceeded: 429, mxerr.NotFound: 404, mxerr.Unrecognized: 404,
		mxerr.UserInUse: 400, mxerr.GuestAccessForbidden: 403, mxerr.UserDeactivated: 403, "M_MADE_UP": 500,
	} {
		if got := mxerr.Status(code); got != status {
			t.Errorf("Status(%s) = %d, want %d", code, got, status)
		}
	}
}

func TestRealClientAddr(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	cases := []struct {
		name, peer, xff, want string
	}{
		{"untrusted peer: header ignored", "203.0.113.9:5555", "198.51.100.1", "203.0.113.9"},
		{"trusted proxy, one hop", "10.1.2.3:5555", "198.51.100.1", "198.51.100.1"},
		{"forged left entries are skipped", "10.1.2.3:5555", "6.6.6.6, 198.51.100.1", "198.51.100.1"},
		{"chain of trusted proxies", "10.1.2.3:5555", "198.51.100.1, 10.9.9.9", "198.51.100.1"},
		{"trusted proxy without header", "10.1.2.3:5555", "", "10.1.2.3"},
		{"garbled hop", "10.1.2.3:5555", "not-an-ip", "10.1.2.3"},
		{"IPv6 proxy", "[::1]:5555", "2001:db8::7", "2001:db8::7"},
	}
	for _, tc := range cases {
		var got string
		h := RealClientAddr(trusted)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = ClientIP(r) }))
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.peer
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
		if got != tc.want {
			t.Errorf("%s: client %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestRefuseUnstorableText(t *testing.T) {
	h := RefuseUnstorableText(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	for path, want := range map[string]int{
		"/ok/%40alice%3Ax": 204, "/nul/%00": 400, "/bad/%FF%FE": 400, "/q?x=%00": 400, "/q?x=%C3%A9": 204,
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		if w.Code != want {
			t.Errorf("%s: %d, want %d", path, w.Code, want)
		}
	}
}
