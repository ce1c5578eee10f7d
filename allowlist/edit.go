package allowlist

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// The officers' edits, used by `chappe allowlist`. Every edit that changes
// the content drops the signatures, since each covers the whole content.

// NewDocument starts a list: serial 1, no servers, valid for validity from now.
func NewDocument(federation string, now time.Time, validity time.Duration) (*Document, error) {
	if validity <= 0 {
		return nil, errors.New("the validity must be positive")
	}
	d := &Document{
		Federation: federation, Serial: 1,
		IssuedAt: now.UnixMilli(), ExpiresAt: now.Add(validity).UnixMilli(),
		Servers: map[string]Server{}, Removed: map[string]Removal{},
	}
	return d, d.Validate()
}

// EditReport says what an edit did to the signatures.
type EditReport struct {
	// Changed: the content changed.
	Changed bool
	// Dropped names the signatures the change invalidated and removed.
	Dropped []string
	// SerialAlreadySigned: the serial was already signed with other content,
	// so the list must be bumped before it is signed again.
	SerialAlreadySigned bool
}

// Edit applies fn to d; if the content changed, it drops every signature
// (they covered the old content) and reports them. On error d is unchanged.
func Edit(d *Document, fn func(*Document) error) (EditReport, error) {
	before, err := d.ContentHash()
	if err != nil {
		return EditReport{}, err
	}
	next := d.Clone()
	if err := fn(next); err != nil {
		return EditReport{}, err
	}
	if err := next.Validate(); err != nil {
		return EditReport{}, err
	}
	after, err := next.ContentHash()
	if err != nil {
		return EditReport{}, err
	}
	var rep EditReport
	if after != before {
		rep.Changed = true
		for _, signer := range sortedKeys(next.Signatures) {
			for _, id := range sortedKeys(next.Signatures[signer]) {
				rep.Dropped = append(rep.Dropped, signer+" "+id)
			}
		}
		next.Signatures = nil
		if ls, ok := next.LastSigned(); ok && ls.Serial == next.Serial && ls.ContentHash != after {
			rep.SerialAlreadySigned = true
		}
	}
	*d = *next
	return rep, nil
}

// AddServer lists a server. A listed server is refused unless replace; a
// removed one is listed again (its removal record goes).
func AddServer(name string, srv Server, replace bool) func(*Document) error {
	return func(d *Document) error {
		if err := ValidServerName(name); err != nil {
			return err
		}
		if _, ok := d.Servers[name]; ok && !replace {
			return fmt.Errorf("%s is already listed (use --replace to change its entry)", name)
		}
		delete(d.Removed, name)
		d.Servers[name] = srv
		return nil
	}
}

// RemoveServer takes a listed server out, recording when and why, with
// the verify keys its entry pinned (see Removal.VerifyKeys).
func RemoveServer(name, reason string, now time.Time) func(*Document) error {
	return func(d *Document) error {
		srv, ok := d.Servers[name]
		if !ok {
			return fmt.Errorf("%s is not listed", name)
		}
		delete(d.Servers, name)
		d.Removed[name] = Removal{RemovedAt: now.UnixMilli(), Reason: reason, VerifyKeys: srv.VerifyKeys}
		return nil
	}
}

// Bump prepares the next list: serial + 1, issued now, valid for validity
// (0: as long as the previous list was).
func Bump(now time.Time, validity time.Duration) func(*Document) error {
	return func(d *Document) error {
		if validity <= 0 {
			validity = time.Duration(d.ExpiresAt-d.IssuedAt) * time.Millisecond
		}
		d.Serial++
		d.IssuedAt = now.UnixMilli()
		d.ExpiresAt = now.Add(validity).UnixMilli()
		return nil
	}
}

// LastSigned is the tool's note, kept in "unsigned" (which signatures do not
// cover and servers ignore), of the serial and content it last signed.
type LastSigned struct {
	Serial      int64  `json:"serial"`
	ContentHash string `json:"content_sha256"`
}

// LastSigned reads the tool's note.
func (d *Document) LastSigned() (LastSigned, bool) {
	var notes struct {
		LastSigned *LastSigned `json:"last_signed"`
	}
	if len(d.Unsigned) == 0 || json.Unmarshal(d.Unsigned, &notes) != nil || notes.LastSigned == nil {
		return LastSigned{}, false
	}
	return *notes.LastSigned, true
}

func (d *Document) setLastSigned(ls LastSigned) error {
	notes := map[string]json.RawMessage{}
	if len(d.Unsigned) > 0 {
		if err := json.Unmarshal(d.Unsigned, &notes); err != nil {
			notes = map[string]json.RawMessage{}
		}
	}
	b, err := json.Marshal(ls)
	if err != nil {
		return err
	}
	notes["last_signed"] = b
	d.Unsigned, err = json.Marshal(notes)
	return err
}

// Sign adds k's signature to d. It refuses an expired list, and a list whose
// serial was already signed with other content: servers would refuse it as
// a rollback, so it needs a bump first. It returns false when k had already
// signed this content (nothing to do).
func Sign(d *Document, k SecretKey, now time.Time) (bool, error) {
	if err := d.Validate(); err != nil {
		return false, err
	}
	if now.UnixMilli() >= d.ExpiresAt {
		return false, fmt.Errorf("serial %d expired at %s: run bump (which sets new issue and expiry times) before signing", d.Serial, formatMs(d.ExpiresAt))
	}
	hash, err := d.ContentHash()
	if err != nil {
		return false, err
	}
	if ls, ok := d.LastSigned(); ok && ls.Serial == d.Serial && ls.ContentHash != hash {
		return false, fmt.Errorf("serial %d was already signed with other content; servers that applied it would refuse this one as a rollback: run bump first", d.Serial)
	}
	sig, err := signContent(d, k)
	if err != nil {
		return false, err
	}
	if d.Signatures[k.Signer][k.KeyID] == sig {
		return false, nil
	}
	if d.Signatures == nil {
		d.Signatures = map[string]map[string]string{}
	}
	if d.Signatures[k.Signer] == nil {
		d.Signatures[k.Signer] = map[string]string{}
	}
	d.Signatures[k.Signer][k.KeyID] = sig
	return true, d.setLastSigned(LastSigned{Serial: d.Serial, ContentHash: hash})
}
