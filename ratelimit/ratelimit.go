// Package ratelimit is a token-bucket limiter keyed by user or address, with
// a bounded number of keys: idle buckets are swept and, at the cap, the
// oldest-looking ones are evicted, so a flood of addresses cannot grow it
// without end.
package ratelimit

import (
	"math"
	"sync"
	"time"
)

// Limiter allows Rate events per second per key, with bursts of Burst.
type Limiter struct {
	rate    float64
	burst   float64
	maxKeys int
	now     func() time.Time

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// DefaultMaxKeys bounds the number of tracked keys.
const DefaultMaxKeys = 100_000

// New returns a limiter; maxKeys <= 0 means DefaultMaxKeys.
func New(rate float64, burst int, maxKeys int) *Limiter {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	return &Limiter{rate: rate, burst: float64(burst), maxKeys: maxKeys, now: time.Now, buckets: map[string]*bucket{}}
}

// Allow takes one token from key's bucket. When the bucket is empty it
// returns false and how long until a token is available.
func (l *Limiter) Allow(key string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.maybeSweep(now)
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.maxKeys {
			l.evict(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return false, wait
}

// Len is the number of tracked keys (for tests and metrics).
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// fullAfter is how long a bucket takes to refill completely: after that it is
// indistinguishable from a new one and can be dropped.
func (l *Limiter) fullAfter() time.Duration {
	return time.Duration(l.burst / l.rate * float64(time.Second))
}

func (l *Limiter) maybeSweep(now time.Time) {
	if now.Sub(l.lastSweep) < time.Minute {
		return
	}
	l.lastSweep = now
	idle := l.fullAfter()
	for k, b := range l.buckets {
		if now.Sub(b.last) >= idle {
			delete(l.buckets, k)
		}
	}
}

// evict makes room at the cap: first the buckets that have refilled, then, if
// none, a tenth of the keys (map order is random, so no key is favoured).
func (l *Limiter) evict(now time.Time) {
	idle := l.fullAfter()
	for k, b := range l.buckets {
		if now.Sub(b.last) >= idle {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) < l.maxKeys {
		return
	}
	n := l.maxKeys / 10
	if n < 1 {
		n = 1
	}
	for k := range l.buckets {
		if n == 0 {
			break
		}
		delete(l.buckets, k)
		n--
	}
}
