// Package ratelimit limits how often each source address may start a
// handshake or draw an answer: a token bucket per address (per /64 for
// IPv6), in a table of bounded size, and a single Bucket for a bound over
// all sources. A server consults a Limiter under load, for initiations that
// proved their source address with a cookie, and a Limiter and a Bucket
// before each stateless reset it sends.
package ratelimit

import (
	"net/netip"
	"sync"
	"time"
)

// Defaults, as WireGuard's: 20 handshakes a second per source, bursts of 5,
// at most 8,192 sources remembered.
const (
	DefaultRate  = 20
	DefaultBurst = 5
	DefaultMax   = 8192
)

type bucket struct {
	tokens float64
	last   time.Time
}

// take refills b for the time since its last use at rate, up to burst, and
// takes a token if there is one.
func (b *bucket) take(now time.Time, rate, burst float64) bool {
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Bucket is one token bucket, for a bound over every source. Rate and Burst
// must be positive; it starts full. It is safe for concurrent use.
type Bucket struct {
	Rate  float64 // tokens a second
	Burst float64 // bucket size

	mu      sync.Mutex
	b       bucket
	started bool
}

// Allow reports whether one more event may happen at now, and takes a
// token if so.
func (l *Bucket) Allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.started {
		l.b, l.started = bucket{tokens: l.Burst, last: now}, true
	}
	return l.b.take(now, l.Rate, l.Burst)
}

// Limiter is a per-source token bucket. Its zero value uses the defaults;
// it is safe for concurrent use.
type Limiter struct {
	Rate  float64 // tokens a second (DefaultRate)
	Burst float64 // bucket size (DefaultBurst)
	Max   int     // sources remembered (DefaultMax)

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
}

func key(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// Allow reports whether src may start a handshake at now, and takes a token
// if so.
func (l *Limiter) Allow(src netip.Addr, now time.Time) bool {
	rate, burst, maxN := l.Rate, l.Burst, l.Max
	if rate <= 0 {
		rate = DefaultRate
	}
	if burst <= 0 {
		burst = DefaultBurst
	}
	if maxN <= 0 {
		maxN = DefaultMax
	}
	k := key(src)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		l.buckets = make(map[netip.Addr]*bucket)
	}
	b := l.buckets[k]
	if b == nil {
		if len(l.buckets) >= maxN {
			// Forget sources whose buckets have refilled: they are as good
			// as new.
			full := time.Duration(burst / rate * float64(time.Second))
			for a, o := range l.buckets {
				if now.Sub(o.last) >= full {
					delete(l.buckets, a)
				}
			}
			if len(l.buckets) >= maxN {
				return false
			}
		}
		b = &bucket{tokens: burst, last: now}
		l.buckets[k] = b
	}
	return b.take(now, rate, burst)
}

// Len returns the number of sources remembered.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
