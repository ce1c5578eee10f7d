package allowlist

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
)

// Status is the state of the allowlist, for the admin endpoint
// (GET /_chappe/admin/v1/allowlist) and `chappe allowlist status`.
// Times are milliseconds since the Unix epoch.
type Status struct {
	ServerName string `json:"server_name"`
	Mode       Mode   `json:"mode"`
	// OpenModeWarning is set in open mode, so nobody can miss it.
	OpenModeWarning string `json:"open_mode_warning,omitempty"`
	// FederationClosed: no server but ourselves is allowed, for ClosedReason.
	FederationClosed bool   `json:"federation_closed"`
	ClosedReason     string `json:"closed_reason,omitempty"`
	// Federation, Threshold and TrustedKeys are this server's policy.
	Federation  string   `json:"federation"`
	Threshold   int      `json:"threshold"`
	TrustedKeys []string `json:"trusted_keys"`
	// Current is the list in force; nil when none was ever applied.
	Current *CurrentStatus `json:"current"`
	// LastRefresh is the latest refresh (of this process or, from the
	// command line, of the server's).
	LastRefresh    *RefreshStatus `json:"last_refresh"`
	RecentRefusals []AuditEntry   `json:"recent_refusals"`
	RecentChanges  []AuditEntry   `json:"recent_changes"`
}

// CurrentStatus describes the list in force.
type CurrentStatus struct {
	Serial      int64  `json:"serial"`
	ContentHash string `json:"content_hash"`
	Source      string `json:"source"`
	AppliedAt   int64  `json:"applied_at"`
	// Verified is false when the stored list no longer verifies with this
	// server's configuration; the fields below are then empty.
	Verified   bool               `json:"verified"`
	Federation string             `json:"federation,omitempty"`
	IssuedAt   int64              `json:"issued_at,omitempty"`
	ExpiresAt  int64              `json:"expires_at,omitempty"`
	Expired    bool               `json:"expired"`
	Signers    []string           `json:"signers"`
	Servers    map[string]Server  `json:"servers"`
	Removed    map[string]Removal `json:"removed"`
}

// recentAuditRows is how many refusals and changes the status shows.
const recentAuditRows = 10

// Status reports the list in force, the gate's state, the latest refresh and
// the recent audit rows.
func (s *Service) Status(ctx context.Context) (Status, error) {
	now := s.now()
	snap := s.snap.Load()
	st := Status{
		ServerName: s.cfg.ServerName, Mode: s.cfg.Mode, Federation: s.policy.Federation,
		Threshold: s.policy.Threshold, TrustedKeys: []string{},
	}
	for _, k := range s.policy.TrustedKeys {
		st.TrustedKeys = append(st.TrustedKeys, k.Name())
	}
	if s.cfg.Mode == Open {
		st.OpenModeWarning = "allowlist.mode is open: this server federates with any server, whatever the list says"
	} else if reason := snap.closedReason(now); reason != "" {
		st.FederationClosed, st.ClosedReason = true, reason
	}
	if snap.applied.Serial > 0 {
		c := &CurrentStatus{
			Serial: snap.applied.Serial, ContentHash: snap.applied.ContentHash, Source: snap.source,
			AppliedAt: snap.appliedAt.UnixMilli(), Signers: []string{}, Servers: map[string]Server{}, Removed: map[string]Removal{},
		}
		if d := snap.doc; d != nil {
			c.Verified, c.Federation, c.IssuedAt, c.ExpiresAt = true, d.Federation, d.IssuedAt, d.ExpiresAt
			c.Expired = now.UnixMilli() >= d.ExpiresAt
			c.Signers, c.Servers, c.Removed = snap.signers, d.Servers, d.Removed
		}
		st.Current = c
	}
	if r := s.lastRefresh.Load(); r != nil {
		st.LastRefresh = r
	} else {
		r, ok, err := s.store.LastRefresh(ctx)
		if err != nil {
			return st, err
		}
		if ok {
			st.LastRefresh = &r
		}
	}
	var err error
	if st.RecentRefusals, err = s.store.RecentAudit(ctx, Refuse, recentAuditRows); err != nil {
		return st, err
	}
	if st.RecentChanges, err = s.store.RecentAudit(ctx, Apply, recentAuditRows); err != nil {
		return st, err
	}
	if st.RecentRefusals == nil {
		st.RecentRefusals = []AuditEntry{}
	}
	if st.RecentChanges == nil {
		st.RecentChanges = []AuditEntry{}
	}
	return st, nil
}

// ServePeer is the body of the federation handler through which a listed
// server fetches our list in force, signatures included, byte for byte as we
// received it (so it verifies as it did here). origin is the requesting
// server as the federation layer authenticated it (X-Matrix). It answers
// 403 M_FORBIDDEN to a server we do not federate with, 404 M_NOT_FOUND when
// we have no valid list, and honours If-None-Match with the ETag it sends.
// Mounting it on a federation route waits for the federation transport.
func (s *Service) ServePeer(w http.ResponseWriter, r *http.Request, origin string) {
	if err := s.Check(origin); err != nil {
		writeMatrixError(w, http.StatusForbidden, "M_FORBIDDEN", err.Error())
		return
	}
	snap := s.snap.Load()
	if snap.doc == nil {
		writeMatrixError(w, http.StatusNotFound, "M_NOT_FOUND", "This server has no valid allowlist to share")
		return
	}
	etag := `"` + hashHex(snap.raw) + `"`
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "no-cache")
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatches(inm, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(snap.raw)
}

// etagMatches tells whether an If-None-Match header names etag (weak
// comparison, RFC 9110 section 13.1.2).
func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}

// writeMatrixError answers with a Matrix error body. (This package imports
// nothing of Chappe's, so not mxhttp.)
func writeMatrixError(w http.ResponseWriter, status int, code, msg string) {
	body, _ := json.Marshal(map[string]string{"errcode": code, "error": msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
