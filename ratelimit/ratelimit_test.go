package ratelimit

import (
	"fmt"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestLimiter(rate float64, burst, maxKeys int) (*Limiter, *clock) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := New(rate, burst, maxKeys)
	l.now = c.now
	return l, c
}

func TestBurstThenRefuse(t *testing.T) {
	l, c := newTestLimiter(2, 3, 0)
	for i := 0; i < 3; i++ {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	ok, wait := l.Allow("a")
	if ok {
		t.Fatal("fourth request allowed beyond the burst")
	}
	if wait <= 0 || wait > 500*time.Millisecond {
		t.Fatalf("retry after %v, want (0, 500ms] at 2/s", wait)
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key must have its own bucket")
	}
	c.advance(500 * time.Millisecond)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("a token must be back after 1/rate")
	}
}

func TestIdleBucketsAreSwept(t *testing.T) {
	l, c := newTestLimiter(10, 10, 0)
	for i := 0; i < 100; i++ {
		l.Allow(fmt.Sprintf("ip-%d", i))
	}
	if l.Len() != 100 {
		t.Fatalf("Len = %d, want 100", l.Len())
	}
	c.advance(2 * time.Minute)
	l.Allow("late")
	if l.Len() != 1 {
		t.Fatalf("after the sweep Len = %d, want 1", l.Len())
	}
}

func TestKeyCountIsBounded(t *testing.T) {
	l, _ := newTestLimiter(1, 5, 1000)
	for i := 0; i < 50_000; i++ {
		l.Allow(fmt.Sprintf("ip-%d", i))
		if l.Len() > 1000 {
			t.Fatalf("limiter grew to %d keys, cap is 1000", l.Len())
		}
	}
}
