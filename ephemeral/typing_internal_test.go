package ephemeral

import (
	"fmt"
	"testing"
	"time"

	"chappe/mxerr"
	"chappe/streams"
)

// TestTypingMemoryBounded: expired notifications and long-empty rooms leave
// nothing behind, and the number of notifications is capped.
func TestTypingMemoryBounded(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ty := NewTyping(nil, streams.NewHub(0), func() time.Time { return now })
	for i := 0; i < 100; i++ {
		if err := ty.Start(fmt.Sprintf("!r%d:x", i), "@u:x", 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if ty.entries != 100 || len(ty.rooms) != 100 {
		t.Fatalf("entries %d rooms %d", ty.entries, len(ty.rooms))
	}
	now = now.Add(11 * time.Second)
	ty.Sweep()
	if ty.entries != 0 || len(ty.rooms) != 100 {
		t.Fatalf("after expiry: entries %d rooms %d (empty rooms are kept a while)", ty.entries, len(ty.rooms))
	}
	now = now.Add(forgetTypingRoomAfter)
	ty.Sweep()
	if len(ty.rooms) != 0 || ty.horizon == 0 {
		t.Fatalf("after %s: %d rooms kept, horizon %d", forgetTypingRoomAfter, len(ty.rooms), ty.horizon)
	}

	// The cap: beyond maxTypingEntries live notifications, refused…
	for i := 0; i < maxTypingEntries; i++ {
		if err := ty.Start("!big:x", fmt.Sprintf("@u%d:x", i), 10*time.Second); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	err := ty.Start("!big:x", "@one-more:x", 10*time.Second)
	if e, ok := mxerr.As(err); !ok || e.Code != mxerr.LimitExceeded {
		t.Fatalf("beyond the cap: %v", err)
	}
	// …but refreshing an existing one is fine, and once they expire the
	// cap frees itself without waiting for the periodic sweep.
	if err := ty.Start("!big:x", "@u0:x", 10*time.Second); err != nil {
		t.Errorf("refresh at the cap: %v", err)
	}
	now = now.Add(11 * time.Second)
	if err := ty.Start("!big:x", "@one-more:x", 10*time.Second); err != nil {
		t.Errorf("after expiry: %v", err)
	}
	if ty.entries != 1 {
		t.Errorf("entries %d, want 1", ty.entries)
	}
}
