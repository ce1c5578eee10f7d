package allowlist

import (
	"fmt"
	"maps"
	"time"
)

// Mode is allowlist.mode.
type Mode string

const (
	// Enforce federates only with the servers of a valid list (the default).
	Enforce Mode = "enforce"
	// Open federates with any server: for conformance suites and
	// laboratories only. It is logged at every start and shown in the status.
	Open Mode = "open"
)

// snapshot is the state the gate reads: immutable once published, replaced
// whole (through an atomic pointer) when a list is applied, so lookups take
// no lock.
type snapshot struct {
	// doc is the list in force; nil when there is none we can trust.
	doc *Document
	// raw is doc as it was received and stored, signatures included: what we
	// serve to peers.
	raw []byte
	// applied is the serial and hash in force in the database, kept even when
	// doc could not be trusted (so a rollback is still refused).
	applied   Applied
	signers   []string
	source    string
	appliedAt time.Time
	// closed says why federation is closed whatever the time: no list, the
	// stored list does not verify any more, or we are not in it. Expiry is
	// checked at each lookup instead.
	closed string
}

// NotAllowedError says why federation with a server is refused. Its message
// is meant for people: the client API returns it with M_FORBIDDEN.
type NotAllowedError struct {
	Server string
	Reason string
}

func (e *NotAllowedError) Error() string {
	return fmt.Sprintf("federation with %s is refused: %s", e.Server, e.Reason)
}

// Allowed tells whether this server may exchange anything with the server
// named serverName (compared exactly). It takes no lock and allocates
// nothing.
func (s *Service) Allowed(serverName string) bool {
	if serverName == s.cfg.ServerName || s.cfg.Mode == Open {
		return true
	}
	snap := s.snap.Load()
	if snap.closed != "" {
		return false
	}
	if _, ok := snap.doc.Servers[serverName]; !ok {
		return false
	}
	return s.now().UnixMilli() < snap.doc.ExpiresAt
}

// Check is Allowed with the reason: nil, or a *NotAllowedError (for
// messages and logs; Allowed is the fast path). Our own server name is
// always allowed; in open mode every server is. Otherwise the list in force
// must exist, be unexpired and name both us and serverName.
func (s *Service) Check(serverName string) error {
	if serverName == s.cfg.ServerName || s.cfg.Mode == Open {
		return nil
	}
	snap := s.snap.Load()
	if reason := snap.closedReason(s.now()); reason != "" {
		return &NotAllowedError{Server: serverName, Reason: "federation is closed: " + reason}
	}
	if _, ok := snap.doc.Servers[serverName]; ok {
		return nil
	}
	if r, ok := snap.doc.Removed[serverName]; ok {
		return &NotAllowedError{Server: serverName, Reason: fmt.Sprintf("it was removed from the allowlist of federation %s on %s: %s",
			snap.doc.Federation, formatMs(r.RemovedAt), r.Reason)}
	}
	return &NotAllowedError{Server: serverName, Reason: fmt.Sprintf("it is not in the allowlist of federation %s (serial %d)",
		snap.doc.Federation, snap.doc.Serial)}
}

// closedReason is why federation is closed at now, "" if it is not.
func (snap *snapshot) closedReason(now time.Time) string {
	if snap.closed != "" {
		return snap.closed
	}
	if now.UnixMilli() >= snap.doc.ExpiresAt {
		return fmt.Sprintf("the allowlist (serial %d) expired at %s", snap.doc.Serial, formatMs(snap.doc.ExpiresAt))
	}
	return ""
}

// Pinned returns what the list pins for a listed server: its verify keys
// and endpoint (either may be empty). ok is false when the server is not in
// the list in force. It does not say whether federation is allowed: ask
// Allowed for that.
func (s *Service) Pinned(serverName string) (Server, bool) {
	snap := s.snap.Load()
	if snap.doc == nil {
		return Server{}, false
	}
	srv, ok := snap.doc.Servers[serverName]
	if srv.VerifyKeys != nil {
		// A copy: the snapshot is shared and must stay as it is.
		keys := make(map[string]string, len(srv.VerifyKeys))
		for id, k := range srv.VerifyKeys {
			keys[id] = k
		}
		srv.VerifyKeys = keys
	}
	return srv, ok
}

// Removed returns the removal record of a server the list in force shows
// as removed; ok is false otherwise. It never makes the server allowed:
// it only lets history it took part in be checked (see Removal).
func (s *Service) Removed(serverName string) (Removal, bool) {
	snap := s.snap.Load()
	if snap.doc == nil {
		return Removal{}, false
	}
	r, ok := snap.doc.Removed[serverName]
	if r.VerifyKeys != nil {
		r.VerifyKeys = maps.Clone(r.VerifyKeys) // the snapshot is shared
	}
	return r, ok
}

// Serial is the serial of the list in force, 0 if none. A peer showing a
// higher serial has a list worth fetching (see ShouldFetchFrom).
func (s *Service) Serial() int64 { return s.snap.Load().applied.Serial }

// ShouldFetchFrom tells whether to fetch the list of peer, which says its
// list has serial peerSerial: the peer must be allowed and its serial higher
// than ours. What the peer then sends goes through Offer, with every check.
func (s *Service) ShouldFetchFrom(peer string, peerSerial int64) bool {
	return peer != s.cfg.ServerName && peerSerial > s.Serial() && s.Allowed(peer)
}
