package federation

import (
	"net/url"
	"testing"
)

// The fallback's query is a copy: the query of the federation endpoint
// stays as it was.
func TestLegacyQueryCopies(t *testing.T) {
	q := url.Values{"timeout_ms": {"20000"}}
	legacy := legacyQuery(q)
	if q.Encode() != "timeout_ms=20000" {
		t.Errorf("the original query was changed: %s", q.Encode())
	}
	if legacy.Encode() != "allow_remote=false&timeout_ms=20000" {
		t.Errorf("legacy query: %s", legacy.Encode())
	}
}
