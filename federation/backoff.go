package federation

import (
	"fmt"
	"sync"
	"time"
)

// BackoffError refuses a request to a destination that failed recently: it
// is not called again before Until.
type BackoffError struct {
	Destination string
	Until       time.Time
}

func (e *BackoffError) Error() string {
	return fmt.Sprintf("federation: %s failed recently and is not retried before %s", e.Destination, e.Until.UTC().Format(time.RFC3339))
}

// maxBackoffEntries bounds the backoff table. Only destinations that passed
// the allowlist gate get in, so this is far above any real federation.
const maxBackoffEntries = 4096

// backoff is the per-destination exponential backoff: every connection
// failure, 5xx or 429 doubles the wait (from initial up to max); any other
// answer ends it and forgets the destination.
type backoff struct {
	initial, max time.Duration
	now          func() time.Time
	// allowed is the gate: entries of servers it no longer allows are
	// dropped when the table is full.
	allowed func(string) bool

	mu      sync.Mutex
	entries map[string]backoffEntry
}

type backoffEntry struct {
	failures int
	until    time.Time
}

func newBackoff(initial, max time.Duration, now func() time.Time, allowed func(string) bool) *backoff {
	return &backoff{initial: initial, max: max, now: now, allowed: allowed, entries: map[string]backoffEntry{}}
}

// check refuses dest while it is backed off.
func (b *backoff) check(dest string) error {
	if until := b.readyAt(dest); !until.IsZero() && b.now().Before(until) {
		return &BackoffError{Destination: dest, Until: until}
	}
	return nil
}

// readyAt is the end of dest's backoff, zero when it has none.
func (b *backoff) readyAt(dest string) time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.entries[dest].until
}

// failed extends dest's backoff.
func (b *backoff) failed(dest string) time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[dest]
	if !ok && len(b.entries) >= maxBackoffEntries {
		for name := range b.entries {
			if !b.allowed(name) {
				delete(b.entries, name)
			}
		}
		if len(b.entries) >= maxBackoffEntries {
			return time.Time{}
		}
	}
	e.failures++
	wait := b.initial
	for i := 1; i < e.failures && wait < b.max; i++ {
		wait *= 2
	}
	wait = min(wait, b.max)
	e.until = b.now().Add(wait)
	b.entries[dest] = e
	return e.until
}

// succeeded forgets dest's backoff.
func (b *backoff) succeeded(dest string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.entries, dest)
}
