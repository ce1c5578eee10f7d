package allowlist

import (
	"encoding/base64"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
)

// SignatureCheck is the verdict on one signature of a document.
type SignatureCheck struct {
	Signer string
	KeyID  string
	// Valid: made by a trusted key over exactly this content.
	Valid bool
	// Counted: valid and from a key and signer not already counted, so it
	// counts towards the threshold.
	Counted bool
	// Problem says why the signature is not valid or not counted.
	Problem string
}

// Name is "SIGNER ed25519:KEYID".
func (c SignatureCheck) Name() string { return c.Signer + " " + c.KeyID }

// Verification is the verdict on all the signatures of a document.
type Verification struct {
	Checks    []SignatureCheck // sorted by signer then key ID
	Counted   int
	Threshold int
}

// Met tells whether enough distinct trusted keys signed.
func (v Verification) Met() bool { return v.Threshold > 0 && v.Counted >= v.Threshold }

// Signers names the counted signatures ("SIGNER ed25519:KEYID"), sorted.
func (v Verification) Signers() []string {
	out := []string{}
	for _, c := range v.Checks {
		if c.Counted {
			out = append(out, c.Name())
		}
	}
	return out
}

// Summary says in one line why the threshold is or is not met.
func (v Verification) Summary() string {
	if v.Met() {
		return fmt.Sprintf("%d valid signatures from distinct trusted keys, %d required", v.Counted, v.Threshold)
	}
	var why []string
	for _, c := range v.Checks {
		if !c.Counted {
			why = append(why, c.Name()+": "+c.Problem)
		}
	}
	msg := fmt.Sprintf("%d valid signatures from distinct trusted keys, %d required", v.Counted, v.Threshold)
	if len(why) > 0 {
		msg += " (" + strings.Join(why, "; ") + ")"
	}
	return msg
}

// VerifySignatures checks every signature of the document raw (as received:
// the signatures cover its canonical form) against the trusted keys, with
// gomatrixserverlib's VerifyJSON. A signature counts towards the threshold
// only once per public key and once per signer: an officer with two keys,
// or one key configured under two names, still counts as one.
func VerifySignatures(raw []byte, d *Document, trusted []TrustedKey, threshold int) Verification {
	v := Verification{Threshold: threshold}
	byName := map[string]TrustedKey{}
	for _, k := range trusted {
		byName[k.Name()] = k
	}
	for _, signer := range sortedKeys(d.Signatures) {
		for _, keyID := range sortedKeys(d.Signatures[signer]) {
			c := SignatureCheck{Signer: signer, KeyID: keyID}
			k, ok := byName[signer+" "+keyID]
			sig, decodeErr := base64.RawStdEncoding.DecodeString(d.Signatures[signer][keyID])
			switch {
			case !ok:
				c.Problem = "unknown key: not among the trusted keys"
			case decodeErr != nil || len(sig) != 64:
				c.Problem = "malformed signature: not 64 bytes of unpadded base64"
			default:
				if err := gomatrixserverlib.VerifyJSON(signer, gomatrixserverlib.KeyID(keyID), k.Public, raw); err != nil {
					c.Problem = "bad signature: the content differs from what this key signed"
				} else {
					c.Valid = true
				}
			}
			v.Checks = append(v.Checks, c)
		}
	}
	// Count valid signatures, each public key and each signer once.
	usedKey := map[string]string{}
	usedSigner := map[string]string{}
	for i := range v.Checks {
		c := &v.Checks[i]
		if !c.Valid {
			continue
		}
		pub := string(byName[c.Name()].Public)
		if other, ok := usedKey[pub]; ok {
			c.Problem = "duplicate: the same public key already counted as " + other
			continue
		}
		if other, ok := usedSigner[c.Signer]; ok {
			c.Problem = "duplicate signer: " + c.Signer + " already counted with " + other
			continue
		}
		usedKey[pub] = c.Name()
		usedSigner[c.Signer] = c.KeyID
		c.Counted = true
		v.Counted++
	}
	return v
}

// Policy is what a server requires of a list.
type Policy struct {
	Federation  string
	TrustedKeys []TrustedKey
	Threshold   int
}

// Outcome is what to do with an offered list.
type Outcome string

const (
	// Apply: a valid list with a higher serial.
	Apply Outcome = "applied"
	// Unchanged: the list already applied (same content), nothing to do.
	Unchanged Outcome = "unchanged"
	// Refuse: see Verdict.Refusal and Verdict.Reason.
	Refuse Outcome = "refused"
)

// Refusal classifies why a list was refused.
type Refusal string

const (
	RefusedMalformed  Refusal = "malformed"
	RefusedFederation Refusal = "wrong_federation"
	RefusedSignatures Refusal = "signatures"
	RefusedExpired    Refusal = "expired"
	RefusedRollback   Refusal = "rollback"
)

// Applied is what a judgement compares an offered list with: the serial and
// content hash of the list in force (zero values when there is none).
type Applied struct {
	Serial      int64
	ContentHash string
}

// Verdict is the judgement on an offered list.
type Verdict struct {
	Outcome Outcome
	Refusal Refusal // set when Outcome is Refuse
	Reason  string  // a sentence for people, set when Outcome is Refuse
	// Doc, ContentHash and Verification are set as far as the judgement got.
	Doc          *Document
	ContentHash  string
	Verification Verification
}

// Judge decides whether a server with policy p, whose list in force is
// current, applies the document raw at time now. The checks, in order:
// well formed; the same content as current (Unchanged); right federation; at
// least Threshold valid signatures from distinct trusted keys; not expired;
// serial above current (an equal serial with other content, or a lower one,
// is a rollback).
func (p Policy) Judge(raw []byte, current Applied, now time.Time) Verdict {
	refuse := func(v Verdict, r Refusal, format string, args ...any) Verdict {
		v.Outcome, v.Refusal, v.Reason = Refuse, r, string(r)+": "+fmt.Sprintf(format, args...)
		return v
	}
	d, err := Parse(raw)
	if err != nil {
		return refuse(Verdict{ContentHash: hashHex(raw)}, RefusedMalformed, "%v", err)
	}
	v := Verdict{Doc: d}
	if v.ContentHash, err = d.ContentHash(); err != nil {
		return refuse(Verdict{ContentHash: hashHex(raw)}, RefusedMalformed, "%v", err)
	}
	if current.ContentHash != "" && v.ContentHash == current.ContentHash {
		v.Outcome = Unchanged
		return v
	}
	if d.Federation != p.Federation {
		return refuse(v, RefusedFederation, "the list is for federation %q, this server belongs to %q", d.Federation, p.Federation)
	}
	v.Verification = VerifySignatures(raw, d, p.TrustedKeys, p.Threshold)
	if !v.Verification.Met() {
		return refuse(v, RefusedSignatures, "%s", v.Verification.Summary())
	}
	if nowMs := now.UnixMilli(); nowMs >= d.ExpiresAt {
		return refuse(v, RefusedExpired, "serial %d expired at %s", d.Serial, formatMs(d.ExpiresAt))
	}
	switch {
	case d.Serial < current.Serial:
		return refuse(v, RefusedRollback, "serial %d is below the serial in force, %d", d.Serial, current.Serial)
	case d.Serial == current.Serial:
		return refuse(v, RefusedRollback, "serial %d is the serial in force, with other content; a new list needs a higher serial", d.Serial)
	}
	v.Outcome = Apply
	return v
}

// formatMs writes a millisecond timestamp as RFC 3339 UTC.
func formatMs(ms int64) string {
	return time.UnixMilli(ms).UTC().Format(time.RFC3339)
}

// Changes is what changed between two lists.
type Changes struct {
	Added   []string // listed in new, not in old
	Removed []string // listed in old, not in new
	Changed []string // listed in both with another organisation, endpoint or keys
}

// Diff compares the servers of two lists; old may be nil.
func Diff(old, new *Document) Changes {
	c := Changes{Added: []string{}, Removed: []string{}, Changed: []string{}}
	var oldServers map[string]Server
	if old != nil {
		oldServers = old.Servers
	}
	for name, s := range new.Servers {
		o, ok := oldServers[name]
		switch {
		case !ok:
			c.Added = append(c.Added, name)
		case !sameServer(o, s):
			c.Changed = append(c.Changed, name)
		}
	}
	for name := range oldServers {
		if _, ok := new.Servers[name]; !ok {
			c.Removed = append(c.Removed, name)
		}
	}
	sort.Strings(c.Added)
	sort.Strings(c.Removed)
	sort.Strings(c.Changed)
	return c
}

func sameServer(a, b Server) bool {
	if a.Organisation != b.Organisation || a.Endpoint != b.Endpoint || len(a.VerifyKeys) != len(b.VerifyKeys) {
		return false
	}
	for id, k := range a.VerifyKeys {
		if b.VerifyKeys[id] != k {
			return false
		}
	}
	return true
}
