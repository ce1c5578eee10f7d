package app

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/rs/zerolog"

	"chappe/allowlist"
	"chappe/config"
	"chappe/sqlstore"
)

// NewAllowlist builds the allowlist service from the configuration, on the
// database. It does not load the stored list: call Start (the server) or
// Load (`chappe allowlist status`).
func NewAllowlist(cfg config.Config, store *sqlstore.Store, log zerolog.Logger) (*allowlist.Service, error) {
	keys, err := allowlist.ParseTrustedKeys(cfg.Allowlist.TrustedKeys) // checked by config.Verify
	if err != nil {
		return nil, err
	}
	return allowlist.New(allowlist.Config{
		ServerName:      cfg.ServerName,
		Mode:            allowlist.Mode(cfg.Allowlist.Mode),
		Federation:      cfg.Allowlist.Federation,
		TrustedKeys:     keys,
		Threshold:       cfg.Allowlist.Threshold,
		File:            cfg.Allowlist.File,
		URL:             cfg.Allowlist.URL,
		RefreshInterval: cfg.Allowlist.RefreshInterval.D(),
	}, AllowlistStore{Store: store}, log)
}

// AllowlistStore is the allowlist's Store on sqlstore: it converts between
// the allowlist's types and the rows (sqlstore imports nothing of Chappe's,
// nor does allowlist).
type AllowlistStore struct {
	Store *sqlstore.Store
}

var _ allowlist.Store = AllowlistStore{}

// CurrentList implements allowlist.Store.
func (a AllowlistStore) CurrentList(ctx context.Context) (allowlist.StoredList, bool, error) {
	c, err := a.Store.AllowlistCurrent(ctx)
	if errors.Is(err, sqlstore.ErrNotFound) {
		return allowlist.StoredList{}, false, nil
	}
	if err != nil {
		return allowlist.StoredList{}, false, err
	}
	return allowlist.StoredList{
		Document: c.Document, Serial: c.Serial, ContentHash: c.ContentHash,
		Source: c.Source, AppliedAt: time.UnixMilli(c.AppliedTS),
	}, true, nil
}

// SaveList implements allowlist.Store.
func (a AllowlistStore) SaveList(ctx context.Context, l allowlist.StoredList, e allowlist.AuditEntry) (bool, error) {
	return a.Store.ApplyAllowlist(ctx, sqlstore.AllowlistCurrent{
		Serial: l.Serial, ContentHash: l.ContentHash, Document: l.Document, Source: l.Source, AppliedTS: l.AppliedAt.UnixMilli(),
	}, auditRow(e))
}

// AppendAudit implements allowlist.Store.
func (a AllowlistStore) AppendAudit(ctx context.Context, e allowlist.AuditEntry) error {
	return a.Store.InsertAllowlistAudit(ctx, auditRow(e))
}

// RecentAudit implements allowlist.Store.
func (a AllowlistStore) RecentAudit(ctx context.Context, outcome allowlist.Outcome, limit int) ([]allowlist.AuditEntry, error) {
	rows, err := a.Store.RecentAllowlistAudit(ctx, string(outcome), limit)
	if err != nil {
		return nil, err
	}
	out := make([]allowlist.AuditEntry, 0, len(rows))
	for _, r := range rows {
		e := allowlist.AuditEntry{
			TS: r.TS, Outcome: allowlist.Outcome(r.Outcome), Reason: r.Reason, ContentHash: r.ContentHash,
			Signers: r.Signers, Added: r.ServersAdded, Removed: r.ServersRemoved, Changed: r.ServersChanged,
			Source: r.Source, Document: r.Document,
		}
		if r.Federation != nil {
			e.Federation = *r.Federation
		}
		if r.Serial != nil {
			e.Serial = *r.Serial
		}
		out = append(out, e)
	}
	return out, nil
}

// SaveRefresh implements allowlist.Store.
func (a AllowlistStore) SaveRefresh(ctx context.Context, r allowlist.RefreshStatus) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return a.Store.SaveAllowlistRefresh(ctx, r.TS, b)
}

// LastRefresh implements allowlist.Store.
func (a AllowlistStore) LastRefresh(ctx context.Context) (allowlist.RefreshStatus, bool, error) {
	_, b, err := a.Store.AllowlistRefresh(ctx)
	if errors.Is(err, sqlstore.ErrNotFound) {
		return allowlist.RefreshStatus{}, false, nil
	}
	if err != nil {
		return allowlist.RefreshStatus{}, false, err
	}
	var r allowlist.RefreshStatus
	if err := json.Unmarshal(b, &r); err != nil {
		return allowlist.RefreshStatus{}, false, err
	}
	return r, true, nil
}

func auditRow(e allowlist.AuditEntry) sqlstore.AllowlistAudit {
	row := sqlstore.AllowlistAudit{
		TS: e.TS, Outcome: string(e.Outcome), Reason: e.Reason, ContentHash: e.ContentHash,
		Signers: e.Signers, ServersAdded: e.Added, ServersRemoved: e.Removed, ServersChanged: e.Changed,
		Source: e.Source, Document: e.Document,
	}
	if e.Federation != "" {
		row.Federation = &e.Federation
	}
	if e.Serial != 0 {
		row.Serial = &e.Serial
	}
	return row
}
