// Package repair recovers the packets that every path lost. The receiving
// end notes each counter it skipped, waits as long as the paths' delays say
// a copy may still come, and then asks for it; the sending end keeps its
// latest sealed packets and sends the asked-for bytes again, unchanged, so
// that the receiver's replay window takes a repair as it would have taken
// the first copy and drops any later one as a duplicate. This is the
// receiver-driven retransmission of live-video transports (SRT, RIST),
// bounded in memory and in tries.
//
// A Tracker is the receiver's side, a Ring the sender's. Neither does I/O:
// the session seals the requests and puts repairs on the paths.
package repair

import (
	"slices"
	"sync"
	"time"
)

// Limits of one direction of one session.
const (
	// MaxAsk is how many counters one request names.
	MaxAsk = 64
	// Tries is how many times a missing counter is asked for, and how many
	// times a Ring resends one packet.
	Tries = 3
	// MaxPending bounds the missing counters a Tracker watches; beyond it
	// the oldest is given up.
	MaxPending = 1024
	// MaxJump is how many counters before a new highest one a Tracker
	// watches at most: a longer run was lost on every path at once (an
	// outage), and asking for all of it would only add to the flood.
	MaxJump = 256
	// Share bounds repair, each way, to about one packet in Share of those
	// sent (requests: received), with bursts of up to Burst: loss that
	// copies and parity leave is rare, and a path that loses more is
	// congested, where sending more makes it worse.
	Share = 8
	Burst = 256
	// DefaultWait and DefaultRetry are the waits until SetDelays sets
	// others (before the paths have measured their round trips).
	DefaultWait  = 10 * time.Millisecond
	DefaultRetry = 200 * time.Millisecond
)

// Stats counts what a Tracker did.
type Stats struct {
	Asked   uint64 // requests for a counter (each try counts)
	Delayed uint64 // requests put off for want of budget (Share)
	Filled  uint64 // counters asked for that then arrived
	Lost    uint64 // counters given up after Tries requests, or for room
	Missed  uint64 // counters skipped in a jump too long to watch
}

// gap is a counter not received yet.
type gap struct {
	ctr   uint64
	due   time.Time // when to ask (again)
	tries uint8
}

// Tracker watches one direction of a session for counters that every path
// lost. It is safe for concurrent use. The zero value watches from counter 0
// with the default waits.
type Tracker struct {
	mu      sync.Mutex
	next    uint64 // one past the highest counter seen
	pending []gap  // by counter, ascending
	wait    time.Duration
	retry   time.Duration
	stats   Stats
	budget  budget
}

// budget is a token bucket counted in packets: each packet seen (or sent)
// adds 1/Share of a token, up to Burst; each request (or resend) takes one.
type budget struct {
	eighths int64 // tokens times Share
	primed  bool
}

// add adds one packet's share.
func (b *budget) add() {
	if !b.primed {
		b.eighths, b.primed = Burst*Share, true
	}
	if b.eighths < Burst*Share {
		b.eighths++
	}
}

// take takes a token, if there is one.
func (b *budget) take() bool {
	if !b.primed {
		b.eighths, b.primed = Burst*Share, true
	}
	if b.eighths < Share {
		return false
	}
	b.eighths -= Share
	return true
}

// SetDelays sets how long a skipped counter waits before it is asked for
// (wait: the spread of the paths' delays and their jitter) and between two
// requests for it (retry: a round trip of the slowest live path and wait).
// A wait or retry <= 0 means the default.
func (t *Tracker) SetDelays(wait, retry time.Duration) {
	t.mu.Lock()
	t.wait, t.retry = wait, retry
	t.mu.Unlock()
}

// Delays returns the waits in use (SetDelays, or the defaults).
func (t *Tracker) Delays() (wait, retry time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.delays()
}

// delays returns the waits in use; the caller holds t.mu.
func (t *Tracker) delays() (wait, retry time.Duration) {
	wait, retry = t.wait, t.retry
	if wait <= 0 {
		wait = DefaultWait
	}
	if retry <= 0 {
		retry = DefaultRetry
	}
	return wait, retry
}

// Stats returns the counts so far.
func (t *Tracker) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}

// Pending returns how many counters are being watched.
func (t *Tracker) Pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending)
}

// Seen notes that the packet sealed with counter ctr arrived (its first
// copy) at now. It returns when the earliest request falls due if ctr opened
// the first gap, so that the caller arms its timer; zero otherwise.
func (t *Tracker) Seen(ctr uint64, now time.Time) (arm time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.budget.add()
	if ctr < t.next {
		// Late, or a repair: it fills its gap.
		if i, ok := slices.BinarySearchFunc(t.pending, ctr, func(g gap, c uint64) int { return cmpU64(g.ctr, c) }); ok {
			if t.pending[i].tries > 0 {
				t.stats.Filled++
			}
			t.pending = slices.Delete(t.pending, i, i+1)
		}
		return time.Time{}
	}
	from := t.next
	t.next = ctr + 1
	if ctr == from {
		return time.Time{}
	}
	if ctr-from > MaxJump {
		t.stats.Missed += ctr - from - MaxJump
		from = ctr - MaxJump
	}
	was := len(t.pending)
	wait, _ := t.delays()
	due := now.Add(wait)
	for c := from; c < ctr; c++ {
		if len(t.pending) == MaxPending {
			t.stats.Lost++
			t.pending = slices.Delete(t.pending, 0, 1)
			if was > 0 {
				was--
			}
		}
		t.pending = append(t.pending, gap{ctr: c, due: due})
	}
	if was == 0 {
		return due
	}
	return time.Time{}
}

// Due appends to out the counters to ask for at now (at most MaxAsk),
// gives up those asked for Tries times, and returns out and when the next
// request falls due (zero: nothing is pending).
func (t *Tracker) Due(now time.Time, out []uint64) ([]uint64, time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var next time.Time
	_, retry := t.delays()
	keep := t.pending[:0]
	for _, g := range t.pending {
		if !g.due.After(now) && len(out) < MaxAsk {
			if g.tries == Tries {
				t.stats.Lost++
				continue
			}
			if !t.budget.take() {
				// Asked for later, as packets come; given up when
				// pushed out of MaxPending.
				t.stats.Delayed++
				g.due = now.Add(retry)
				if next.IsZero() || g.due.Before(next) {
					next = g.due
				}
				keep = append(keep, g)
				continue
			}
			out = append(out, g.ctr)
			g.tries++
			t.stats.Asked++
			g.due = now.Add(retry)
		}
		if next.IsZero() || g.due.Before(next) {
			next = g.due
		}
		keep = append(keep, g)
	}
	clear(t.pending[len(keep):])
	t.pending = keep
	return out, next
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// entry is one kept packet.
type entry struct {
	ctr    uint64
	kept   bool
	resent uint8
	buf    []byte
}

// keepBuf is the largest slot buffer kept when a smaller packet takes the
// slot, so that a burst of large packets does not stay allocated.
const keepBuf = 2048

// Ring keeps the latest sealed packets of one direction of a session, by
// counter, for a while: until as many newer ones took their slots. It is
// safe for concurrent use. Make one with NewRing.
type Ring struct {
	mu     sync.Mutex
	slots  []entry
	stats  RingStats
	budget budget
}

// RingStats counts what a Ring did.
type RingStats struct {
	Resent  uint64 // packets handed out again
	Missing uint64 // packets asked for and no longer kept (or resent Tries times)
	Refused uint64 // packets asked for beyond the budget (Share)
}

// NewRing returns a Ring keeping the latest n packets (n rounded up to a
// power of two, at least 64). Slot buffers are made as packets come.
func NewRing(n int) *Ring {
	size := 64
	for size < n {
		size *= 2
	}
	return &Ring{slots: make([]entry, size)}
}

// Size returns how many packets the Ring keeps.
func (r *Ring) Size() int { return len(r.slots) }

// Stats returns the counts so far.
func (r *Ring) Stats() RingStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Put keeps a copy of pkt, sealed with counter ctr.
func (r *Ring) Put(ctr uint64, pkt []byte) {
	r.mu.Lock()
	e := &r.slots[ctr&uint64(len(r.slots)-1)]
	if cap(e.buf) > keepBuf && len(pkt) <= keepBuf {
		e.buf = nil
	}
	e.ctr, e.kept, e.resent = ctr, true, 0
	e.buf = append(e.buf[:0], pkt...)
	r.budget.add()
	r.mu.Unlock()
}

// Take appends the packet sealed with ctr to dst, if it is still kept and
// has been handed out fewer than Tries times, and reports whether it was.
func (r *Ring) Take(ctr uint64, dst []byte) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := &r.slots[ctr&uint64(len(r.slots)-1)]
	if !e.kept || e.ctr != ctr || e.resent >= Tries {
		r.stats.Missing++
		return dst, false
	}
	if !r.budget.take() {
		r.stats.Refused++
		return dst, false
	}
	e.resent++
	r.stats.Resent++
	return append(dst, e.buf...), true
}
