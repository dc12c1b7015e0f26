package ratelimit

import (
	"net/netip"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	var l Limiter
	a := netip.MustParseAddr("192.0.2.1")
	now := time.Unix(100, 0)
	n := 0
	for range 100 {
		if l.Allow(a, now) {
			n++
		}
	}
	if n != DefaultBurst {
		t.Fatalf("allowed %d at once, want the burst of %d", n, DefaultBurst)
	}
	// A second later, 20 more.
	n = 0
	for range 100 {
		if l.Allow(a, now.Add(time.Second)) {
			n++
		}
	}
	if n != DefaultBurst {
		t.Fatalf("allowed %d after a second (the bucket holds %d), want %d", n, DefaultBurst, DefaultBurst)
	}
	// Another source is not affected; an IPv6 /64 is one source.
	if !l.Allow(netip.MustParseAddr("192.0.2.2"), now) {
		t.Fatal("another source was limited")
	}
	v6a, v6b := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	for range DefaultBurst {
		l.Allow(v6a, now)
	}
	if l.Allow(v6b, now) {
		t.Fatal("another address of the same /64 got its own bucket")
	}
}

func TestBounded(t *testing.T) {
	l := Limiter{Max: 100}
	now := time.Unix(100, 0)
	for i := range 1000 {
		l.Allow(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), now)
	}
	if l.Len() > 100 {
		t.Fatalf("remembers %d sources, more than 100", l.Len())
	}
	// Once their buckets refill, old sources make room.
	if !l.Allow(netip.MustParseAddr("10.9.9.9"), now.Add(time.Second)) {
		t.Fatal("a new source was refused once the table could be cleaned")
	}
}

func TestBucket(t *testing.T) {
	b := Bucket{Rate: 100, Burst: 10}
	now := time.Unix(100, 0)
	count := func(at time.Time) int {
		n := 0
		for range 1000 {
			if b.Allow(at) {
				n++
			}
		}
		return n
	}
	if n := count(now); n != 10 {
		t.Fatalf("allowed %d at once, want the burst of 10", n)
	}
	// 50 ms later, 5 more (100 a second).
	if n := count(now.Add(50 * time.Millisecond)); n != 5 {
		t.Fatalf("allowed %d after 50 ms, want 5", n)
	}
	// Long idle: never more than the burst.
	if n := count(now.Add(time.Hour)); n != 10 {
		t.Fatalf("allowed %d after an hour, want the burst of 10", n)
	}
}
