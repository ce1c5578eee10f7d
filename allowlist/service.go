package allowlist

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Config is what the service needs from the configuration.
type Config struct {
	// ServerName is our own server name: always allowed, and required in
	// the list for federation to be open.
	ServerName string
	Mode       Mode
	// Federation, TrustedKeys and Threshold: see Policy.
	Federation  string
	TrustedKeys []TrustedKey
	Threshold   int
	// File and URL are the sources polled at every refresh; either may be empty.
	File string
	URL  string // https:// only
	// RefreshInterval is the time between refreshes in Run; 0 disables the loop.
	RefreshInterval time.Duration
	// HTTPClient fetches URL. Nil: the system's roots and a 30s timeout.
	// Unless it has a CheckRedirect of its own, redirects are followed only
	// to https:// URLs.
	HTTPClient *http.Client
	// Now is the clock (tests move it). Nil: time.Now.
	Now func() time.Time
}

// StoredList is the list in force as the database keeps it.
type StoredList struct {
	Document    []byte // exactly as received, signatures included
	Serial      int64
	ContentHash string
	Source      string
	AppliedAt   time.Time
}

// AuditEntry is one row of the append-only audit trail: a list applied or
// refused. Times are milliseconds since the Unix epoch.
type AuditEntry struct {
	TS          int64   `json:"ts"`
	Outcome     Outcome `json:"outcome"`
	Reason      string  `json:"reason,omitempty"`
	Federation  string  `json:"federation,omitempty"`
	Serial      int64   `json:"serial,omitempty"` // 0: the document could not be read
	ContentHash string  `json:"content_hash"`
	// Signers are the valid signatures that counted ("SIGNER ed25519:KEYID").
	Signers []string `json:"signers"`
	// Added, Removed and Changed compare the list's servers with the list in
	// force at the time.
	Added   []string `json:"added"`
	Removed []string `json:"removed"`
	Changed []string `json:"changed"`
	Source  string   `json:"source"`
	// Document is the signed list, kept for applied lists only.
	Document []byte `json:"-"`
}

// SourceResult is what one source gave at a refresh.
type SourceResult struct {
	Source string `json:"source"`
	// Result is applied, unchanged, not_modified (HTTP 304), refused or error.
	Result string `json:"result"`
	Serial int64  `json:"serial,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// RefreshStatus is the outcome of one refresh.
type RefreshStatus struct {
	TS      int64          `json:"ts"`
	Sources []SourceResult `json:"sources"`
	// Closed says why federation was closed after the refresh, "" if open.
	Closed string `json:"federation_closed,omitempty"`
}

// Store is what the service needs from the database.
type Store interface {
	// CurrentList returns the list in force; ok is false when there is none.
	CurrentList(ctx context.Context) (l StoredList, ok bool, err error)
	// SaveList makes l the list in force and appends a to the audit trail,
	// in one transaction, if l's serial is above the stored one. It returns
	// false and writes nothing otherwise (another process got there first).
	SaveList(ctx context.Context, l StoredList, a AuditEntry) (bool, error)
	// AppendAudit appends a row to the audit trail.
	AppendAudit(ctx context.Context, a AuditEntry) error
	// RecentAudit returns the latest rows with this outcome, newest first.
	RecentAudit(ctx context.Context, outcome Outcome, limit int) ([]AuditEntry, error)
	// SaveRefresh and LastRefresh keep the outcome of the latest refresh.
	SaveRefresh(ctx context.Context, r RefreshStatus) error
	LastRefresh(ctx context.Context) (r RefreshStatus, ok bool, err error)
}

// Service is a server's allowlist: the gate, the list in force and its
// refresh. Lookups (Allowed, Check, Pinned) read an immutable snapshot
// without locking; applying a list builds a new snapshot and swaps it in.
type Service struct {
	cfg    Config
	policy Policy
	store  Store
	log    zerolog.Logger
	now    func() time.Time
	client *http.Client

	snap atomic.Pointer[snapshot]

	// applyMu serialises the writers: Load, Offer and a refresh's applying.
	applyMu sync.Mutex
	// refused remembers, per source, the last refusal written to the audit
	// trail, so a bad file polled every minute is logged every time but
	// audited once. Guarded by applyMu.
	refused map[string]string

	// refreshMu serialises refreshes; it guards the fields below.
	refreshMu   sync.Mutex
	fileHash    string       // hash of the file's bytes at the last successful read
	fileResult  SourceResult // what those bytes gave
	etag        string       // ETag of the URL's last successful answer
	urlResult   SourceResult // what that answer gave
	lastRefresh atomic.Pointer[RefreshStatus]
}

// New builds the service; federation stays closed until Load or Start.
func New(cfg Config, store Store, log zerolog.Logger) (*Service, error) {
	var errs []error
	switch cfg.Mode {
	case Enforce, Open:
	default:
		errs = append(errs, fmt.Errorf("mode must be enforce or open, got %q", cfg.Mode))
	}
	if cfg.ServerName == "" {
		errs = append(errs, errors.New("the server name is empty"))
	}
	if cfg.Threshold < 1 {
		errs = append(errs, fmt.Errorf("the threshold must be at least 1, got %d", cfg.Threshold))
	}
	if cfg.URL != "" && !strings.HasPrefix(cfg.URL, "https://") {
		errs = append(errs, fmt.Errorf("the URL must be https://, got %q", cfg.URL))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("allowlist: %w", err)
	}
	s := &Service{
		cfg:     cfg,
		policy:  Policy{Federation: cfg.Federation, TrustedKeys: cfg.TrustedKeys, Threshold: cfg.Threshold},
		store:   store,
		log:     log.With().Str("component", "allowlist").Logger(),
		now:     cfg.Now,
		client:  cfg.HTTPClient,
		refused: map[string]string{},
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.client == nil {
		s.client = &http.Client{Timeout: 30 * time.Second}
	}
	if s.client.CheckRedirect == nil {
		c := *s.client
		c.CheckRedirect = httpsOnlyRedirects
		s.client = &c
	}
	s.snap.Store(&snapshot{closed: s.noListReason()})
	return s, nil
}

func httpsOnlyRedirects(req *http.Request, via []*http.Request) error {
	if req.URL.Scheme != "https" {
		return fmt.Errorf("refusing to follow a redirect to %s: the allowlist is fetched over HTTPS only", req.URL.Redacted())
	}
	if len(via) >= 5 {
		return errors.New("too many redirects")
	}
	return nil
}

func (s *Service) noListReason() string {
	if len(s.cfg.TrustedKeys) == 0 {
		return "no allowlist has been applied, and none can be: allowlist.trusted_keys is empty"
	}
	return "no valid allowlist has been applied yet"
}

// Start logs the mode, loads the stored list and refreshes once from the
// configured sources, so a server starts with the newest list it can get.
// Only a database failure is an error: a missing or bad list leaves
// federation closed, and says so.
func (s *Service) Start(ctx context.Context) error {
	if s.cfg.Mode == Open {
		s.log.Warn().Msg("allowlist.mode is open: this server federates with ANY server, listed or not. " +
			"Use open mode only for conformance test suites and laboratories, never in production")
	} else if len(s.cfg.TrustedKeys) == 0 {
		s.log.Error().Msg("allowlist.trusted_keys is empty: no allowlist can be accepted, so federation stays closed")
	}
	if err := s.Load(ctx); err != nil {
		return err
	}
	s.Refresh(ctx)
	return nil
}

// Load puts the stored list in force, after checking it again against the
// configured federation and keys (which may have changed since it was
// applied). A stored list that no longer verifies closes federation; its
// serial still bars older lists.
func (s *Service) Load(ctx context.Context) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	stored, ok, err := s.store.CurrentList(ctx)
	if err != nil {
		return fmt.Errorf("reading the stored allowlist: %w", err)
	}
	if !ok {
		s.snap.Store(&snapshot{closed: s.noListReason()})
		return nil
	}
	s.adopt(stored)
	snap := s.snap.Load()
	if snap.doc != nil {
		s.log.Info().Int64("serial", snap.doc.Serial).Str("expires_at", formatMs(snap.doc.ExpiresAt)).
			Int("servers", len(snap.doc.Servers)).Str("source", snap.source).Msg("allowlist loaded from the database")
	}
	return nil
}

// adopt builds the snapshot of a stored list. Called with applyMu held.
func (s *Service) adopt(stored StoredList) {
	snap := &snapshot{
		raw:       stored.Document,
		applied:   Applied{Serial: stored.Serial, ContentHash: stored.ContentHash},
		source:    stored.Source,
		appliedAt: stored.AppliedAt,
	}
	d, err := Parse(stored.Document)
	switch {
	case err != nil:
		snap.closed = fmt.Sprintf("the stored allowlist (serial %d) cannot be read: %v", stored.Serial, err)
	case d.Federation != s.policy.Federation:
		snap.closed = fmt.Sprintf("the stored allowlist (serial %d) is for federation %q, not %q", d.Serial, d.Federation, s.policy.Federation)
	default:
		v := VerifySignatures(stored.Document, d, s.policy.TrustedKeys, s.policy.Threshold)
		if !v.Met() {
			snap.closed = fmt.Sprintf("the stored allowlist (serial %d) does not verify with the configured trusted keys: %s", d.Serial, v.Summary())
			break
		}
		snap.doc, snap.signers = d, v.Signers()
		snap.closed = s.selfCheck(d)
	}
	s.snap.Store(snap)
}

// selfCheck is why a valid list still closes federation: it does not name us.
func (s *Service) selfCheck(d *Document) string {
	if _, ok := d.Servers[s.cfg.ServerName]; ok {
		return ""
	}
	if r, ok := d.Removed[s.cfg.ServerName]; ok {
		return fmt.Sprintf("this server (%s) was removed from the allowlist (serial %d) on %s: %s", s.cfg.ServerName, d.Serial, formatMs(r.RemovedAt), r.Reason)
	}
	return fmt.Sprintf("this server (%s) is not in the allowlist (serial %d)", s.cfg.ServerName, d.Serial)
}

// Offer considers a list from any source: a file, a URL or a listed peer
// that showed a higher serial ("peer:NAME"). Every source gets exactly the
// same checks (Policy.Judge). An applied list is in force at once, stored,
// and audited; a refused one is audited with the reason. The error is only
// for a database failure.
func (s *Service) Offer(ctx context.Context, raw []byte, source string) (Verdict, error) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	for attempt := 0; ; attempt++ {
		snap := s.snap.Load()
		v := s.policy.Judge(raw, snap.applied, s.now())
		switch v.Outcome {
		case Unchanged:
			return v, nil
		case Refuse:
			return v, s.recordRefusal(ctx, snap, v, source)
		}
		now := s.now()
		changes := Diff(snap.doc, v.Doc)
		stored := StoredList{Document: raw, Serial: v.Doc.Serial, ContentHash: v.ContentHash, Source: source, AppliedAt: now}
		entry := AuditEntry{
			TS: now.UnixMilli(), Outcome: Apply, Federation: v.Doc.Federation, Serial: v.Doc.Serial,
			ContentHash: v.ContentHash, Signers: v.Verification.Signers(),
			Added: changes.Added, Removed: changes.Removed, Changed: changes.Changed,
			Source: source, Document: raw,
		}
		ok, err := s.store.SaveList(ctx, stored, entry)
		if err != nil {
			return v, fmt.Errorf("storing the allowlist: %w", err)
		}
		if !ok {
			// Another process on this database applied a list meanwhile:
			// take it, then judge again against it (once).
			if attempt > 0 {
				return v, errors.New("storing the allowlist: the stored serial keeps changing")
			}
			cur, found, err := s.store.CurrentList(ctx)
			if err != nil {
				return v, fmt.Errorf("reading the stored allowlist: %w", err)
			}
			if found {
				s.adopt(cur)
			}
			continue
		}
		next := &snapshot{
			doc: v.Doc, raw: raw, applied: Applied{Serial: v.Doc.Serial, ContentHash: v.ContentHash},
			signers: v.Verification.Signers(), source: source, appliedAt: now, closed: s.selfCheck(v.Doc),
		}
		s.snap.Store(next)
		delete(s.refused, source)
		s.log.Info().Int64("serial", v.Doc.Serial).Str("source", source).Strs("signers", entry.Signers).
			Strs("added", changes.Added).Strs("removed", changes.Removed).Strs("changed", changes.Changed).
			Str("expires_at", formatMs(v.Doc.ExpiresAt)).Msg("allowlist applied")
		if next.closed != "" && s.cfg.Mode == Enforce {
			s.log.Error().Str("reason", next.closed).Msg("federation is closed")
		}
		return v, nil
	}
}

// recordRefusal logs a refused list at error level and audits it, once per
// source and content (called with applyMu held).
func (s *Service) recordRefusal(ctx context.Context, snap *snapshot, v Verdict, source string) error {
	s.log.Error().Str("source", source).Str("reason", v.Reason).Msg("allowlist refused")
	key := v.ContentHash + "\x00" + v.Reason
	if s.refused[source] == key {
		return nil
	}
	entry := AuditEntry{
		TS: s.now().UnixMilli(), Outcome: Refuse, Reason: v.Reason, ContentHash: v.ContentHash,
		Signers: v.Verification.Signers(), Added: []string{}, Removed: []string{}, Changed: []string{}, Source: source,
	}
	if v.Doc != nil {
		entry.Federation, entry.Serial = v.Doc.Federation, v.Doc.Serial
		c := Diff(snap.doc, v.Doc)
		entry.Added, entry.Removed, entry.Changed = c.Added, c.Removed, c.Changed
	}
	if err := s.store.AppendAudit(ctx, entry); err != nil {
		return fmt.Errorf("writing the allowlist audit trail: %w", err)
	}
	s.refused[source] = key
	return nil
}

// Run refreshes every RefreshInterval until ctx ends.
func (s *Service) Run(ctx context.Context) {
	if s.cfg.RefreshInterval <= 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(s.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Refresh(ctx)
		}
	}
}

// Refresh takes a list another process applied to the database, then reads
// the file and the URL, offering what they hold. While federation is closed
// it says why at error level, every time.
func (s *Service) Refresh(ctx context.Context) RefreshStatus {
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	var results []SourceResult
	if r, ok := s.reloadIfChanged(ctx); ok {
		results = append(results, r)
	}
	if s.cfg.File != "" {
		results = append(results, s.refreshFile(ctx))
	}
	if s.cfg.URL != "" {
		results = append(results, s.refreshURL(ctx))
	}
	now := s.now()
	status := RefreshStatus{TS: now.UnixMilli(), Sources: results}
	if status.Sources == nil {
		status.Sources = []SourceResult{}
	}
	snap := s.snap.Load()
	if reason := snap.closedReason(now); reason != "" {
		status.Closed = reason
		if s.cfg.Mode == Enforce {
			s.log.Error().Str("reason", reason).Msg("federation is closed")
		} else {
			s.log.Warn().Str("reason", reason).Msg("allowlist.mode is open: federating with any server although the allowlist says federation is closed")
		}
	} else if left := time.UnixMilli(snap.doc.ExpiresAt).Sub(now); left < 72*time.Hour {
		s.log.Warn().Int64("serial", snap.doc.Serial).Str("expires_at", formatMs(snap.doc.ExpiresAt)).
			Msg("the allowlist expires in less than 72 hours: federation will close unless a new list is published")
	}
	s.lastRefresh.Store(&status)
	if err := s.store.SaveRefresh(ctx, status); err != nil {
		s.log.Warn().Err(err).Msg("could not record the allowlist refresh")
	}
	return status
}

// reloadIfChanged adopts the stored list when another process (several
// servers on one database) applied one.
func (s *Service) reloadIfChanged(ctx context.Context) (SourceResult, bool) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	stored, ok, err := s.store.CurrentList(ctx)
	if err != nil {
		s.log.Error().Err(err).Msg("reading the stored allowlist")
		return SourceResult{Source: "database", Result: "error", Detail: err.Error()}, true
	}
	cur := s.snap.Load().applied
	if !ok || (stored.Serial == cur.Serial && stored.ContentHash == cur.ContentHash) {
		return SourceResult{}, false
	}
	s.adopt(stored)
	s.log.Info().Int64("serial", stored.Serial).Str("source", stored.Source).Msg("allowlist taken from the database, where another process applied it")
	return SourceResult{Source: "database", Result: "applied", Serial: stored.Serial}, true
}

func (s *Service) refreshFile(ctx context.Context) SourceResult {
	source := "file:" + s.cfg.File
	raw, err := readLimited(s.cfg.File)
	if errors.Is(err, fs.ErrNotExist) {
		s.log.Warn().Str("file", s.cfg.File).Msg("the allowlist file does not exist; the list in force is kept")
		return SourceResult{Source: source, Result: "error", Detail: "the file does not exist; the list in force is kept"}
	}
	if err != nil {
		s.log.Error().Err(err).Str("file", s.cfg.File).Msg("reading the allowlist file")
		return SourceResult{Source: source, Result: "error", Detail: err.Error()}
	}
	hash := hashHex(raw)
	if hash == s.fileHash {
		return s.again(s.fileResult)
	}
	r, err := s.offerResult(ctx, raw, source)
	if err == nil {
		s.fileHash, s.fileResult = hash, r
	}
	return r
}

// again is the result of a source that still holds what it held at the
// previous refresh: unchanged, or refused again (and logged again).
func (s *Service) again(prev SourceResult) SourceResult {
	if prev.Result == string(Refuse) {
		s.log.Error().Str("source", prev.Source).Str("reason", prev.Detail).Msg("allowlist refused (the source has not changed)")
		return prev
	}
	return SourceResult{Source: prev.Source, Result: string(Unchanged), Serial: prev.Serial}
}

func (s *Service) refreshURL(ctx context.Context) SourceResult {
	source := "url:" + s.cfg.URL
	fail := func(err error) SourceResult {
		s.log.Error().Err(err).Str("url", s.cfg.URL).Msg("fetching the allowlist")
		return SourceResult{Source: source, Result: "error", Detail: err.Error()}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.URL, nil)
	if err != nil {
		return fail(err)
	}
	req.Header.Set("Accept", "application/json")
	if s.etag != "" {
		req.Header.Set("If-None-Match", s.etag)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		r := s.again(s.urlResult)
		if r.Result == string(Unchanged) {
			r.Result = "not_modified"
		}
		return r
	case http.StatusOK:
	default:
		return fail(fmt.Errorf("HTTP %d", resp.StatusCode))
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxDocumentBytes+1))
	if err != nil {
		return fail(err)
	}
	if len(raw) > MaxDocumentBytes {
		return fail(fmt.Errorf("the document is larger than %d bytes", MaxDocumentBytes))
	}
	r, err := s.offerResult(ctx, raw, source)
	if err == nil {
		s.etag, s.urlResult = resp.Header.Get("ETag"), r
	}
	return r
}

// offerResult is Offer for a refresh: the verdict as a SourceResult.
func (s *Service) offerResult(ctx context.Context, raw []byte, source string) (SourceResult, error) {
	v, err := s.Offer(ctx, raw, source)
	r := SourceResult{Source: source, Result: string(v.Outcome), Detail: v.Reason}
	if v.Doc != nil {
		r.Serial = v.Doc.Serial
	}
	if err != nil {
		s.log.Error().Err(err).Str("source", source).Msg("applying the allowlist")
		r.Result, r.Detail = "error", err.Error()
	}
	return r, err
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, MaxDocumentBytes+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > MaxDocumentBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, MaxDocumentBytes)
	}
	return raw, nil
}
