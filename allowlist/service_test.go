package allowlist_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"chappe/allowlist"
	"chappe/app"
	"chappe/sqlstore"
	"chappe/sqlstore/sqltest"
)

// syncBuffer collects a service's log lines (the refresh loop writes from
// its own goroutine).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the JSON log records whose message contains msg.
func (b *syncBuffer) lines(msg string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(b.buf.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && strings.Contains(rec["message"].(string), msg) {
			out = append(out, rec)
		}
	}
	return out
}

// harness is one server's allowlist service on its own database.
type harness struct {
	svc   *allowlist.Service
	store *sqlstore.Store
	url   string // the database
	log   *syncBuffer
	clock *fakeClock
	cfg   allowlist.Config
}

// newHarness opens a fresh database (or dbURL's) and builds a service on it
// for server `self`, trusting the three officers with threshold 2, at t0.
func newHarness(t testing.TB, dbURL string, configure func(*allowlist.Config)) *harness {
	t.Helper()
	if dbURL == "" {
		dbURL = sqltest.NewDatabase(t, "allowlist")
	}
	st, err := sqlstore.Open(context.Background(), dbURL, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	h := &harness{store: st, url: dbURL, log: &syncBuffer{}, clock: newClock(t0.Add(time.Minute))}
	h.cfg = allowlist.Config{
		ServerName: self, Mode: allowlist.Enforce, Federation: testFederation,
		TrustedKeys: trusted(officers...), Threshold: 2, Now: h.clock.Now,
	}
	if configure != nil {
		configure(&h.cfg)
	}
	h.svc, err = allowlist.New(h.cfg, app.AllowlistStore{Store: st}, zerolog.New(h.log))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// audit returns the audit rows, oldest first.
func (h *harness) audit(t *testing.T) []sqlstore.AllowlistAudit {
	t.Helper()
	rows, err := h.store.RecentAllowlistAudit(context.Background(), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for i, j := 0, len(rows)-1; i < j; i, j = i+1, j-1 {
		rows[i], rows[j] = rows[j], rows[i]
	}
	return rows
}

// offer offers doc and fails the test on a database error.
func (h *harness) offer(t *testing.T, doc []byte, source string) allowlist.Verdict {
	t.Helper()
	v, err := h.svc.Offer(context.Background(), doc, source)
	if err != nil {
		t.Fatalf("Offer: %v", err)
	}
	return v
}

// writeFile replaces path atomically, as an operator's deployment would.
func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond for up to 10 seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func checkAllowed(t *testing.T, svc *allowlist.Service, want map[string]bool) {
	t.Helper()
	for name, ok := range want {
		if got := svc.Allowed(name); got != ok {
			t.Errorf("Allowed(%q) = %v, want %v (%v)", name, got, ok, svc.Check(name))
		}
	}
}

func TestHotReloadFromFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "allowlist.json")
	writeFile(t, path, encode(t, build(t, listSpec{serial: 1})))
	h := newHarness(t, "", func(c *allowlist.Config) { c.File, c.RefreshInterval = path, 20*time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := h.svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	checkAllowed(t, h.svc, map[string]bool{self: true, "justice.gouv.fr": true, "armees.gouv.fr:8448": true,
		"armees.gouv.fr": false, "evil.example.org": false, "JUSTICE.GOUV.FR": false})

	done := make(chan struct{})
	go func() { h.svc.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// Serial 2: culture added, justice removed. Applied without restart.
	next := build(t, listSpec{serial: 2, servers: []string{self, "armees.gouv.fr:8448", "culture.gouv.fr"},
		removed: map[string]string{"justice.gouv.fr": "decommissioned"}})
	writeFile(t, path, encode(t, next))
	eventually(t, "serial 2 in force", func() bool { return h.svc.Serial() == 2 })
	checkAllowed(t, h.svc, map[string]bool{"culture.gouv.fr": true, "justice.gouv.fr": false})
	if err := h.svc.Check("justice.gouv.fr"); err == nil || !strings.Contains(err.Error(), "removed") || !strings.Contains(err.Error(), "decommissioned") {
		t.Errorf("Check(removed server) = %v, want it to say removed, and why", err)
	}
	if err := h.svc.Check("evil.example.org"); err == nil || !strings.Contains(err.Error(), "not in the allowlist") {
		t.Errorf("Check(never listed) = %v", err)
	}

	// Serial 3 signed by one officer only: refused, serial 2 stays.
	writeFile(t, path, encode(t, build(t, listSpec{serial: 3, servers: []string{self, "evil.example.org"}, signers: officers[:1]})))
	eventually(t, "the refusal in the audit trail", func() bool {
		rows := h.audit(t)
		return len(rows) == 3 && rows[2].Outcome == "refused"
	})
	checkAllowed(t, h.svc, map[string]bool{"evil.example.org": false, "culture.gouv.fr": true})
	// The bad file keeps being polled: logged each time, audited once.
	h.svc.Refresh(ctx)
	st := h.svc.Refresh(ctx)
	if len(st.Sources) != 1 || st.Sources[0].Result != "refused" || !strings.Contains(st.Sources[0].Detail, "signatures") {
		t.Errorf("refresh of the unchanged bad file: %+v", st.Sources)
	}
	rows := h.audit(t)
	if len(rows) != 3 {
		t.Fatalf("%d audit rows, want 3 (applied 1, applied 2, refused 3 once)", len(rows))
	}
	if len(h.log.lines("allowlist refused")) < 3 {
		t.Errorf("the refusal was not logged at every refresh:\n%v", h.log.lines("allowlist"))
	}
	a2 := rows[1]
	if a2.Outcome != "applied" || *a2.Serial != 2 || strings.Join(a2.ServersAdded, ",") != "culture.gouv.fr" ||
		strings.Join(a2.ServersRemoved, ",") != "justice.gouv.fr" || a2.Source != "file:"+path || len(a2.Signers) != 3 || a2.Document == nil {
		t.Errorf("audit row of serial 2: %+v", a2)
	}
}

// tlsList is an HTTPS server publishing a list with an ETag, as the
// officers' web server would.
type tlsList struct {
	srv       *httptest.Server
	mu        sync.Mutex
	doc       []byte
	status    int // when not 0, answered instead of the list
	full, nm  atomic.Int32
	lastINM   atomic.Value
	redirects string // when set, every request is redirected there
}

func newTLSList(t *testing.T, doc []byte) *tlsList {
	l := &tlsList{doc: doc}
	l.lastINM.Store("")
	l.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		doc, status, redirect := l.doc, l.status, l.redirects
		l.mu.Unlock()
		if redirect != "" {
			http.Redirect(w, r, redirect, http.StatusFound)
			return
		}
		if status != 0 {
			w.WriteHeader(status)
			return
		}
		sum := sha256.Sum256(doc)
		etag := `"` + hex.EncodeToString(sum[:8]) + `"`
		l.lastINM.Store(r.Header.Get("If-None-Match"))
		w.Header().Set("ETag", etag)
		if r.Header.Get("If-None-Match") == etag {
			l.nm.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		l.full.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	}))
	t.Cleanup(l.srv.Close)
	return l
}

func (l *tlsList) set(doc []byte, status int, redirect string) {
	l.mu.Lock()
	l.doc, l.status, l.redirects = doc, status, redirect
	l.mu.Unlock()
}

func TestHotReloadFromHTTPSURLWithETag(t *testing.T) {
	pub := newTLSList(t, encode(t, build(t, listSpec{serial: 1})))
	h := newHarness(t, "", func(c *allowlist.Config) {
		c.URL, c.HTTPClient, c.RefreshInterval = pub.srv.URL+"/allowlist.json", pub.srv.Client(), 20*time.Millisecond
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := h.svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if h.svc.Serial() != 1 || pub.full.Load() != 1 || pub.lastINM.Load() != "" {
		t.Fatalf("after start: serial %d, %d full answers, If-None-Match %q", h.svc.Serial(), pub.full.Load(), pub.lastINM.Load())
	}
	// Unchanged: the next refresh sends If-None-Match and gets a 304.
	st := h.svc.Refresh(ctx)
	if pub.nm.Load() != 1 || pub.full.Load() != 1 || st.Sources[0].Result != "not_modified" || pub.lastINM.Load() == "" {
		t.Fatalf("second refresh: %d×304, %d×200, result %+v", pub.nm.Load(), pub.full.Load(), st.Sources)
	}

	// Hot reload through the loop.
	done := make(chan struct{})
	go func() { h.svc.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	pub.set(encode(t, build(t, listSpec{serial: 2, servers: []string{self, "culture.gouv.fr"}})), 0, "")
	eventually(t, "serial 2 from the URL", func() bool { return h.svc.Serial() == 2 })
	checkAllowed(t, h.svc, map[string]bool{"culture.gouv.fr": true, "justice.gouv.fr": false})
	rows := h.audit(t)
	if last := rows[len(rows)-1]; last.Source != "url:"+pub.srv.URL+"/allowlist.json" || *last.Serial != 2 {
		t.Errorf("audit row of the URL's list: %+v", last)
	}

	// The URL failing keeps the list in force.
	pub.set(nil, http.StatusServiceUnavailable, "")
	st = h.svc.Refresh(ctx)
	if st.Sources[0].Result != "error" || !strings.Contains(st.Sources[0].Detail, "503") || h.svc.Serial() != 2 || !h.svc.Allowed("culture.gouv.fr") {
		t.Errorf("URL answering 503: %+v, serial %d", st.Sources, h.svc.Serial())
	}
	// A redirect to plain HTTP is not followed.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the plain-HTTP redirect target was fetched")
	}))
	defer plain.Close()
	pub.set(nil, 0, plain.URL+"/allowlist.json")
	st = h.svc.Refresh(ctx)
	if st.Sources[0].Result != "error" || !strings.Contains(st.Sources[0].Detail, "HTTPS only") {
		t.Errorf("redirect to http: %+v", st.Sources)
	}
}

func TestRestartWithFileGoneKeepsStoredList(t *testing.T) {
	path := filepath.Join(t.TempDir(), "allowlist.json")
	writeFile(t, path, encode(t, build(t, listSpec{serial: 7})))
	withFile := func(c *allowlist.Config) { c.File = path }
	first := newHarness(t, "", withFile)
	if err := first.svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if first.svc.Serial() != 7 {
		t.Fatalf("first start: serial %d", first.svc.Serial())
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}

	// A restart on the same database, the file gone.
	second := newHarness(t, first.url, withFile)
	if err := second.svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkAllowed(t, second.svc, map[string]bool{"justice.gouv.fr": true, "evil.example.org": false, self: true})
	st, err := second.svc.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.FederationClosed || st.Current == nil || st.Current.Serial != 7 || !st.Current.Verified || st.LastRefresh == nil ||
		st.LastRefresh.Sources[0].Result != "error" || !strings.Contains(st.LastRefresh.Sources[0].Detail, "does not exist") {
		t.Fatalf("status after restart without the file: %+v (last refresh %+v)", st, st.LastRefresh)
	}

	// A server that never had a list: closed to all but itself.
	fresh := newHarness(t, "", withFile)
	if err := fresh.svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkAllowed(t, fresh.svc, map[string]bool{"justice.gouv.fr": false, self: true})
	st, err = fresh.svc.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !st.FederationClosed || !strings.Contains(st.ClosedReason, "no valid allowlist") || st.Current != nil {
		t.Fatalf("status with no list ever: %+v", st)
	}
	if len(fresh.log.lines("federation is closed")) == 0 {
		t.Error("a refresh with federation closed did not log it")
	}
}

func TestExpiryClosesTheGate(t *testing.T) {
	h := newHarness(t, "", nil)
	ctx := context.Background()
	if err := h.svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if v := h.offer(t, encode(t, build(t, listSpec{validity: time.Hour})), "file:x"); v.Outcome != allowlist.Apply {
		t.Fatalf("offer: %s %s", v.Outcome, v.Reason)
	}
	checkAllowed(t, h.svc, map[string]bool{"justice.gouv.fr": true})

	h.clock.Set(t0.Add(time.Hour - time.Millisecond))
	checkAllowed(t, h.svc, map[string]bool{"justice.gouv.fr": true})
	h.clock.Set(t0.Add(time.Hour))
	checkAllowed(t, h.svc, map[string]bool{"justice.gouv.fr": false, self: true})
	if err := h.svc.Check("justice.gouv.fr"); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("Check after expiry: %v", err)
	}
	h.svc.Refresh(ctx)
	closed := h.log.lines("federation is closed")
	if len(closed) == 0 || closed[len(closed)-1]["level"] != "error" || !strings.Contains(closed[len(closed)-1]["reason"].(string), "expired") {
		t.Errorf("the refresh after expiry did not log the closure at error level: %v", closed)
	}
	st, err := h.svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.FederationClosed || !st.Current.Expired || !strings.Contains(st.ClosedReason, "expired") {
		t.Errorf("status after expiry: %+v", st)
	}

	// An expired list is refused; a fresh one reopens federation.
	if v := h.offer(t, encode(t, build(t, listSpec{serial: 2, validity: time.Hour})), "file:x"); v.Refusal != allowlist.RefusedExpired {
		t.Fatalf("an expired serial 2: %s %s", v.Outcome, v.Reason)
	}
	if v := h.offer(t, encode(t, build(t, listSpec{serial: 3, issued: t0.Add(time.Hour)})), "file:x"); v.Outcome != allowlist.Apply {
		t.Fatalf("a fresh serial 3: %s %s", v.Outcome, v.Reason)
	}
	checkAllowed(t, h.svc, map[string]bool{"justice.gouv.fr": true})
}

func TestOwnServerMissingClosesFederation(t *testing.T) {
	h := newHarness(t, "", nil)
	if err := h.svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	v := h.offer(t, encode(t, build(t, listSpec{servers: []string{"justice.gouv.fr"}})), "file:x")
	if v.Outcome != allowlist.Apply {
		t.Fatalf("a valid list without us is applied (it is the officers' decision): %s %s", v.Outcome, v.Reason)
	}
	checkAllowed(t, h.svc, map[string]bool{"justice.gouv.fr": false, self: true})
	if err := h.svc.Check("justice.gouv.fr"); err == nil || !strings.Contains(err.Error(), "this server ("+self+") is not in the allowlist") {
		t.Errorf("Check: %v", err)
	}
	// Removed rather than never listed: the reason is given.
	v = h.offer(t, encode(t, build(t, listSpec{serial: 2, servers: []string{"justice.gouv.fr"}, removed: map[string]string{self: "merged into justice"}})), "file:x")
	if v.Outcome != allowlist.Apply {
		t.Fatal(v.Reason)
	}
	if err := h.svc.Check("justice.gouv.fr"); err == nil || !strings.Contains(err.Error(), "merged into justice") {
		t.Errorf("Check: %v", err)
	}
	if st, _ := h.svc.Status(context.Background()); !st.FederationClosed {
		t.Error("status does not show federation closed")
	}
}

// Every case leaves the audit row it should, with its fields, and no row
// for a list already in force.
func TestAuditTrail(t *testing.T) {
	h := newHarness(t, "", nil)
	if err := h.svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	l1 := build(t, listSpec{serial: 1})
	h1, _ := l1.ContentHash()
	steps := []struct {
		doc    []byte
		source string
		want   allowlist.Outcome
	}{
		{encode(t, l1), "file:a", allowlist.Apply},
		{encode(t, build(t, listSpec{serial: 1, signers: officers[:2]})), "url:b", allowlist.Unchanged}, // same content: no row
		{encode(t, build(t, listSpec{serial: 2, signers: officers[2:]})), "peer:justice.gouv.fr", allowlist.Refuse},
		{encode(t, build(t, listSpec{serial: 2, federation: "other"})), "file:a", allowlist.Refuse},
		{encode(t, build(t, listSpec{serial: 2, validity: time.Second, issued: t0.Add(-time.Hour)})), "file:a", allowlist.Refuse},
		{encode(t, build(t, listSpec{serial: 1, servers: []string{self}})), "file:a", allowlist.Refuse},
		{[]byte("not json"), "url:b", allowlist.Refuse},
		{encode(t, build(t, listSpec{serial: 2, servers: []string{self, "justice.gouv.fr", "culture.gouv.fr"}})), "url:b", allowlist.Apply},
	}
	for i, s := range steps {
		if v := h.offer(t, s.doc, s.source); v.Outcome != s.want {
			t.Fatalf("step %d: %s (%s), want %s", i, v.Outcome, v.Reason, s.want)
		}
		if s.source == "peer:justice.gouv.fr" {
			// A peer offering the same bad list again: refused again, audited once.
			if v := h.offer(t, s.doc, s.source); v.Outcome != allowlist.Refuse {
				t.Fatalf("step %d again: %s", i, v.Outcome)
			}
		}
	}
	rows := h.audit(t)
	type row struct {
		outcome, reasonPrefix string
		serial                int64 // 0: NULL
		source                string
		signers               int
		added, removed        string
	}
	want := []row{
		{"applied", "", 1, "file:a", 3, "armees.gouv.fr:8448,interieur.gouv.fr,justice.gouv.fr", ""},
		{"refused", "signatures: 1 valid", 2, "peer:justice.gouv.fr", 1, "", ""},
		{"refused", "wrong_federation:", 2, "file:a", 0, "", ""},
		{"refused", "expired:", 2, "file:a", 3, "", ""},
		{"refused", "rollback: serial 1 is the serial in force", 1, "file:a", 3, "", "armees.gouv.fr:8448,justice.gouv.fr"},
		{"refused", "malformed:", 0, "url:b", 0, "", ""},
		{"applied", "", 2, "url:b", 3, "culture.gouv.fr", "armees.gouv.fr:8448"},
	}
	if len(rows) != len(want) {
		for _, r := range rows {
			t.Logf("%s %q", r.Outcome, r.Reason)
		}
		t.Fatalf("%d audit rows, want %d", len(rows), len(want))
	}
	for i, w := range want {
		r := rows[i]
		serial := int64(0)
		if r.Serial != nil {
			serial = *r.Serial
		}
		if r.Outcome != w.outcome || !strings.HasPrefix(r.Reason, w.reasonPrefix) || serial != w.serial || r.Source != w.source ||
			len(r.Signers) != w.signers || strings.Join(r.ServersAdded, ",") != w.added || strings.Join(r.ServersRemoved, ",") != w.removed {
			t.Errorf("row %d = %s %q serial %d source %s signers %v added %v removed %v\nwant %+v",
				i, r.Outcome, r.Reason, serial, r.Source, r.Signers, r.ServersAdded, r.ServersRemoved, w)
		}
		if r.ContentHash == "" || r.TS == 0 {
			t.Errorf("row %d has no content hash or time", i)
		}
		if (r.Outcome == "applied") != (r.Document != nil) {
			t.Errorf("row %d: the document is kept for applied lists only", i)
		}
	}
	if rows[0].ContentHash != h1 {
		t.Errorf("audit content hash %s, want the list's %s", rows[0].ContentHash, h1)
	}
}

// A list passed on by a peer goes through exactly the same checks, and a
// server serves its list only to the servers it federates with.
func TestPeers(t *testing.T) {
	ctx := context.Background()
	// A (interieur.gouv.fr) has serial 2; B (justice.gouv.fr) has serial 1.
	a := newHarness(t, "", nil)
	b := newHarness(t, "", func(c *allowlist.Config) { c.ServerName = "justice.gouv.fr" })
	for _, h := range []*harness{a, b} {
		if err := h.svc.Start(ctx); err != nil {
			t.Fatal(err)
		}
		h.offer(t, encode(t, build(t, listSpec{serial: 1})), "file:x")
	}
	serial2 := build(t, listSpec{serial: 2, servers: []string{self, "justice.gouv.fr", "culture.gouv.fr"}})
	if v := a.offer(t, encode(t, serial2), "file:x"); v.Outcome != allowlist.Apply {
		t.Fatal(v.Reason)
	}

	// A's federation endpoint; the test stands in for the X-Matrix check.
	peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.svc.ServePeer(w, r, r.Header.Get("X-Test-Origin"))
	}))
	defer peer.Close()
	fetch := func(origin, inm string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodGet, peer.URL, nil)
		req.Header.Set("X-Test-Origin", origin)
		if inm != "" {
			req.Header.Set("If-None-Match", inm)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}

	if !b.svc.ShouldFetchFrom(self, a.svc.Serial()) || b.svc.ShouldFetchFrom(self, 1) || b.svc.ShouldFetchFrom("evil.example.org", 99) {
		t.Fatal("ShouldFetchFrom: B should fetch from a listed peer with a higher serial only")
	}
	resp, body := fetch("justice.gouv.fr", "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") == "" {
		t.Fatalf("listed peer fetching the list: %d %s", resp.StatusCode, body)
	}
	if v := b.offer(t, body, "peer:"+self); v.Outcome != allowlist.Apply || b.svc.Serial() != 2 || !b.svc.Allowed("culture.gouv.fr") {
		t.Fatalf("B offered A's list: %s %s, serial %d", v.Outcome, v.Reason, b.svc.Serial())
	}
	if rows := b.audit(t); rows[len(rows)-1].Source != "peer:"+self {
		t.Errorf("B's audit row source = %s", rows[len(rows)-1].Source)
	}
	if r2, _ := fetch("justice.gouv.fr", resp.Header.Get("ETag")); r2.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match with the ETag: %d, want 304", r2.StatusCode)
	}
	if r3, body := fetch("evil.example.org", ""); r3.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "M_FORBIDDEN") {
		t.Errorf("unlisted origin: %d %s, want 403 M_FORBIDDEN", r3.StatusCode, body)
	}

	// A peer's tampered or under-signed list is refused like any other.
	tampered := bytes.Replace(encode(t, build(t, listSpec{serial: 3})), []byte(`"justice.gouv.fr"`), []byte(`"evil.example.org"`), 1)
	if v := b.offer(t, tampered, "peer:"+self); v.Refusal != allowlist.RefusedSignatures {
		t.Errorf("tampered list from a peer: %s %s", v.Outcome, v.Reason)
	}
	if v := b.offer(t, encode(t, build(t, listSpec{serial: 1})), "peer:"+self); v.Refusal != allowlist.RefusedRollback {
		t.Errorf("older list from a peer: %s %s", v.Outcome, v.Reason)
	}
	checkAllowed(t, b.svc, map[string]bool{"evil.example.org": false})

	// A server without a valid list has nothing to serve.
	empty := newHarness(t, "", func(c *allowlist.Config) { c.Mode = allowlist.Open })
	rec := httptest.NewRecorder()
	empty.svc.ServePeer(rec, httptest.NewRequest(http.MethodGet, "/", nil), "justice.gouv.fr")
	if rec.Code != http.StatusNotFound {
		t.Errorf("no list: %d, want 404", rec.Code)
	}
}

// After the trusted keys change, a stored list they do not sign closes
// federation, and its serial still bars older lists.
func TestStoredListCheckedAgainstCurrentKeys(t *testing.T) {
	ctx := context.Background()
	first := newHarness(t, "", nil)
	if err := first.svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	first.offer(t, encode(t, build(t, listSpec{serial: 4})), "file:x")

	dave, _ := allowlist.GenerateKey("dave", "k1")
	second := newHarness(t, first.url, func(c *allowlist.Config) { c.TrustedKeys, c.Threshold = trusted(dave), 1 })
	if err := second.svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	checkAllowed(t, second.svc, map[string]bool{"justice.gouv.fr": false})
	if err := second.svc.Check("justice.gouv.fr"); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("Check: %v", err)
	}
	if second.svc.Serial() != 4 {
		t.Errorf("serial %d, want 4 kept as the rollback floor", second.svc.Serial())
	}
	signedByDave := func(serial int64) []byte {
		return encode(t, build(t, listSpec{serial: serial, signers: []allowlist.SecretKey{dave}}))
	}
	if v := second.offer(t, signedByDave(3), "file:y"); v.Refusal != allowlist.RefusedRollback {
		t.Errorf("serial 3 under the new keys: %s %s, want a rollback refusal", v.Outcome, v.Reason)
	}
	if v := second.offer(t, signedByDave(5), "file:y"); v.Outcome != allowlist.Apply {
		t.Errorf("serial 5 under the new keys: %s %s", v.Outcome, v.Reason)
	}
	checkAllowed(t, second.svc, map[string]bool{"justice.gouv.fr": true})
}

// Several processes on one database: a list one applies reaches the others
// at their next refresh, and a process that lags never writes a duplicate.
func TestProcessesSharingADatabase(t *testing.T) {
	ctx := context.Background()
	p1 := newHarness(t, "", nil)
	p2 := newHarness(t, p1.url, nil)
	for _, h := range []*harness{p1, p2} {
		if err := h.svc.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	l1 := encode(t, build(t, listSpec{serial: 1}))
	p1.offer(t, l1, "file:x")
	// p2 has not refreshed; it is offered the same list, which p1 stored.
	if v := p2.offer(t, l1, "url:y"); v.Outcome != allowlist.Unchanged || p2.svc.Serial() != 1 {
		t.Fatalf("the lagging process: %s %s, serial %d", v.Outcome, v.Reason, p2.svc.Serial())
	}
	p1.offer(t, encode(t, build(t, listSpec{serial: 2, servers: []string{self, "culture.gouv.fr"}})), "file:x")
	st := p2.svc.Refresh(ctx)
	if p2.svc.Serial() != 2 || !p2.svc.Allowed("culture.gouv.fr") || len(st.Sources) != 1 || st.Sources[0].Source != "database" {
		t.Fatalf("p2 after refresh: serial %d, %+v", p2.svc.Serial(), st.Sources)
	}
	if n := len(p1.audit(t)); n != 2 {
		t.Errorf("%d audit rows, want 2", n)
	}
}

func TestOpenMode(t *testing.T) {
	h := newHarness(t, "", func(c *allowlist.Config) { c.Mode = allowlist.Open })
	if err := h.svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkAllowed(t, h.svc, map[string]bool{"anyone.example.org": true, "justice.gouv.fr": true})
	warn := h.log.lines("allowlist.mode is open")
	if len(warn) == 0 || warn[0]["level"] != "warn" {
		t.Errorf("open mode was not logged as a warning at start: %v", warn)
	}
	st, err := h.svc.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode != allowlist.Open || st.OpenModeWarning == "" || st.FederationClosed {
		t.Errorf("status in open mode: %+v", st)
	}
}

// Lookups read the snapshot while lists are applied: run with -race.
func TestGateReadsWhileListsChange(t *testing.T) {
	h := newHarness(t, "", nil)
	if err := h.svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	docs := make([][]byte, 20)
	for i := range docs {
		servers := []string{self, "even.gouv.fr"}
		if i%2 == 1 {
			servers = []string{self, "odd.gouv.fr"}
		}
		docs[i] = encode(t, build(t, listSpec{serial: int64(i + 1), servers: servers, signers: officers[:2]}))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var reads atomic.Int64
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				h.svc.Allowed("even.gouv.fr")
				h.svc.Pinned("odd.gouv.fr")
				_ = h.svc.Check("x.fr")
				reads.Add(1)
			}
		}()
	}
	for _, d := range docs {
		if v := h.offer(t, d, "file:x"); v.Outcome != allowlist.Apply {
			t.Fatal(v.Reason)
		}
	}
	close(stop)
	wg.Wait()
	if reads.Load() == 0 {
		t.Fatal("the readers did not run")
	}
	checkAllowed(t, h.svc, map[string]bool{"odd.gouv.fr": true, "even.gouv.fr": false})
}

func TestStoreErrorsAreReported(t *testing.T) {
	h := newHarness(t, "", nil)
	h.store.Close() // the database goes away
	if err := h.svc.Start(context.Background()); err == nil {
		t.Fatal("Start with the database closed succeeded")
	}
	_, err := h.svc.Offer(context.Background(), encode(t, build(t, listSpec{})), "file:x")
	if err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("Offer with the database closed: %v", err)
	}
	checkAllowed(t, h.svc, map[string]bool{"justice.gouv.fr": false})
}

func BenchmarkAllowed(b *testing.B) {
	servers := []string{self}
	for i := 0; i < 500; i++ {
		servers = append(servers, "ministere"+strings.Repeat("x", i%7)+hex.EncodeToString([]byte{byte(i), byte(i >> 8)})+".gouv.fr")
	}
	d := build(b, listSpec{servers: servers})
	h := newHarness(b, "", nil)
	if _, err := h.svc.Offer(context.Background(), encode(b, d), "bench"); err != nil {
		b.Fatal(err)
	}
	svc := h.svc
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if i%2 == 0 {
				svc.Allowed(servers[i%len(servers)])
			} else {
				svc.Allowed("unlisted.example.org")
			}
			i++
		}
	})
}

func TestPinnedKeysAndEndpoint(t *testing.T) {
	h := newHarness(t, "", nil)
	if err := h.svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	d := build(t, listSpec{signers: []allowlist.SecretKey{}})
	pinned := allowlist.Server{Organisation: "Justice", Endpoint: "matrix.justice.gouv.fr:8448",
		VerifyKeys: map[string]string{"ed25519:a1": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"}}
	if _, err := allowlist.Edit(d, allowlist.AddServer("justice.gouv.fr", pinned, true)); err != nil {
		t.Fatal(err)
	}
	for _, k := range officers[:2] {
		if _, err := allowlist.Sign(d, k, t0); err != nil {
			t.Fatal(err)
		}
	}
	h.offer(t, encode(t, d), "file:x")
	got, ok := h.svc.Pinned("justice.gouv.fr")
	if !ok || got.Endpoint != pinned.Endpoint || got.VerifyKeys["ed25519:a1"] != pinned.VerifyKeys["ed25519:a1"] {
		t.Fatalf("Pinned = %+v, %v", got, ok)
	}
	got.VerifyKeys["ed25519:a1"] = "changed by the caller"
	if again, _ := h.svc.Pinned("justice.gouv.fr"); again.VerifyKeys["ed25519:a1"] != pinned.VerifyKeys["ed25519:a1"] {
		t.Fatal("a caller changed the gate's snapshot through Pinned")
	}
	if _, ok := h.svc.Pinned("evil.example.org"); ok {
		t.Fatal("Pinned returned an entry for an unlisted server")
	}
}

// TestRemovedCarriesPinnedKeys: removing a server keeps the keys its entry
// pinned in the removal record, which the gate returns (never allowing
// the server) and which a list must write correctly.
func TestRemovedCarriesPinnedKeys(t *testing.T) {
	h := newHarness(t, "", nil)
	if err := h.svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	d := build(t, listSpec{signers: []allowlist.SecretKey{}})
	keys := map[string]string{"ed25519:a1": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"}
	for _, step := range []func(*allowlist.Document) error{
		allowlist.AddServer("justice.gouv.fr", allowlist.Server{VerifyKeys: keys}, true),
		allowlist.RemoveServer("justice.gouv.fr", "compromised", t0),
	} {
		if _, err := allowlist.Edit(d, step); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range officers[:2] {
		if _, err := allowlist.Sign(d, k, t0); err != nil {
			t.Fatal(err)
		}
	}
	h.offer(t, encode(t, d), "file:x")
	got, ok := h.svc.Removed("justice.gouv.fr")
	if !ok || got.RemovedAt != t0.UnixMilli() || got.VerifyKeys["ed25519:a1"] != keys["ed25519:a1"] {
		t.Fatalf("Removed = %+v, %v", got, ok)
	}
	if h.svc.Allowed("justice.gouv.fr") {
		t.Fatal("a removed server is allowed")
	}
	got.VerifyKeys["ed25519:a1"] = "changed by the caller"
	if again, _ := h.svc.Removed("justice.gouv.fr"); again.VerifyKeys["ed25519:a1"] != keys["ed25519:a1"] {
		t.Fatal("a caller changed the gate's snapshot through Removed")
	}
	if _, ok := h.svc.Removed("armees.gouv.fr:8448"); ok {
		t.Fatal("Removed returned a record for a listed server")
	}

	bad := build(t, listSpec{signers: []allowlist.SecretKey{}})
	bad.Removed["interieur.gouv.fr"] = allowlist.Removal{RemovedAt: t0.UnixMilli(), Reason: "r", VerifyKeys: map[string]string{"ed25519:a1": "not base64!"}}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "removed.interieur.gouv.fr.verify_keys") {
		t.Fatalf("a removal record with a bad key: %v", err)
	}
}
