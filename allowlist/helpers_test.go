package allowlist_test

import (
	"sync/atomic"
	"testing"
	"time"

	"chappe/allowlist"
	"chappe/sqlstore/sqltest"
)

func TestMain(m *testing.M) { sqltest.Main(m) }

// t0 is the tests' "now": lists are issued at t0 and valid for 30 days.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	testFederation = "etat.gouv.fr"
	self           = "interieur.gouv.fr"
	listValidity   = 30 * 24 * time.Hour
)

// officers are three security officers' keys, made once per test binary.
var officers = func() []allowlist.SecretKey {
	var keys []allowlist.SecretKey
	for _, name := range []string{"alice", "bob", "carol"} {
		k, err := allowlist.GenerateKey(name, "k1")
		if err != nil {
			panic(err)
		}
		keys = append(keys, k)
	}
	return keys
}()

// trusted is the public half of officers.
func trusted(keys ...allowlist.SecretKey) []allowlist.TrustedKey {
	var out []allowlist.TrustedKey
	for _, k := range keys {
		out = append(out, k.Trusted())
	}
	return out
}

// listSpec describes a list to build.
type listSpec struct {
	federation string
	serial     int64
	issued     time.Time
	validity   time.Duration
	servers    []string
	removed    map[string]string // server → reason
	signers    []allowlist.SecretKey
}

// build makes the document of spec, signed by spec.signers (all three
// officers when nil; none when empty but not nil).
func build(t testing.TB, spec listSpec) *allowlist.Document {
	t.Helper()
	if spec.federation == "" {
		spec.federation = testFederation
	}
	if spec.serial == 0 {
		spec.serial = 1
	}
	if spec.issued.IsZero() {
		spec.issued = t0
	}
	if spec.validity == 0 {
		spec.validity = listValidity
	}
	if spec.servers == nil {
		spec.servers = []string{self, "justice.gouv.fr", "armees.gouv.fr:8448"}
	}
	if spec.signers == nil {
		spec.signers = officers
	}
	d, err := allowlist.NewDocument(spec.federation, spec.issued, spec.validity)
	if err != nil {
		t.Fatal(err)
	}
	d.Serial = spec.serial
	for _, s := range spec.servers {
		d.Servers[s] = allowlist.Server{Organisation: "Org of " + s}
	}
	for s, reason := range spec.removed {
		d.Removed[s] = allowlist.Removal{RemovedAt: spec.issued.UnixMilli(), Reason: reason}
	}
	for _, k := range spec.signers {
		if _, err := allowlist.Sign(d, k, spec.issued); err != nil {
			t.Fatalf("signing: %v", err)
		}
	}
	return d
}

// encode is the document's file form.
func encode(t testing.TB, d *allowlist.Document) []byte {
	t.Helper()
	b, err := d.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakeClock is a clock tests move by hand.
type fakeClock struct{ ms atomic.Int64 }

func newClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ms.Store(t.UnixMilli())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.UnixMilli(c.ms.Load()) }
func (c *fakeClock) Set(t time.Time)         { c.ms.Store(t.UnixMilli()) }
func (c *fakeClock) Advance(d time.Duration) { c.ms.Add(d.Milliseconds()) }
