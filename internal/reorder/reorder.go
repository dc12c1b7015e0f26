// Package reorder puts a session's datagrams back in the order they were
// sent, waiting a bounded time for late ones: the receive side's optional
// reorder buffer, for modes that spread datagrams over paths of different
// delays (balance, fec).
//
// Sequence numbers are the transport counters, which start at 0 for each
// session and direction: every authentic packet,
// data or not, is pushed, so that a gap means a packet still on its way or
// lost. A datagram waits until the gap before it fills, or until it has
// waited Wait, whichever comes first; then every gap before it is given up.
// A datagram arriving after its place was given up is handed on at once,
// out of order, rather than dropped.
package reorder

import (
	"sync"
	"time"
)

// DefaultSize is the default number of sequence numbers a Buffer spans.
const DefaultSize = 4096

// MaxBytes bounds the datagram bytes a Buffer holds; a datagram that would
// take it past is handed on at once, out of order, and counted in Overflow.
const MaxBytes = 4 << 20

// keepBuf is the largest slot buffer kept after its datagram is handed on,
// so that a burst of large datagrams does not stay allocated.
const keepBuf = 2048

// Stats counts what a Buffer did.
type Stats struct {
	InOrder  uint64 // datagrams handed on in order without waiting
	Waited   uint64 // datagrams that waited for an earlier one
	Late     uint64 // datagrams handed on after their place was given up
	Skipped  uint64 // sequence numbers given up (lost, or late)
	Overflow uint64 // times the span was exceeded and waiting cut short
}

type slot struct {
	seq  uint64
	used bool
	data bool // a datagram, not a marker
	flow uint32
	at   time.Time
	buf  []byte
}

// Buffer reorders one direction of one session. It is safe for concurrent
// use; deliver functions are called with its lock held, in order.
type Buffer struct {
	wait time.Duration

	mu     sync.Mutex
	next   uint64 // the next sequence number to hand on; counters start at 0
	slots  []slot
	held   int       // slots in use
	bytes  int       // datagram bytes held
	oldest time.Time // arrival of the earliest held datagram (zero: none)
	// arrivals is a min-heap of held packets by arrival, with entries left
	// behind by packets since handed on (recomputeOldest drops them when
	// they surface), so finding the oldest costs no scan of the slots.
	arrivals []arrival
	stats    Stats
}

// arrival is when the packet seq arrived.
type arrival struct {
	at  time.Time
	seq uint64
}

// New returns a Buffer that holds a datagram at most wait, spanning size
// sequence numbers (DefaultSize when size <= 0).
func New(wait time.Duration, size int) *Buffer {
	if size <= 0 {
		size = DefaultSize
	}
	return &Buffer{wait: wait, slots: make([]slot, size), arrivals: make([]arrival, 0, 2*size)}
}

// Stats returns the counts so far.
func (b *Buffer) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// Push takes the packet with sequence number seq, received at now: a
// datagram of flow when data is not nil, otherwise only its place. It calls
// deliver for every datagram now in order; data is copied when it must wait.
// It returns when Expire is next due, zero when nothing waits.
func (b *Buffer) Push(seq uint64, flow uint32, data []byte, now time.Time, deliver func(flow uint32, d []byte)) time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case seq < b.next:
		// Its place was given up (or it is a copy the replay window let
		// through after a restart): hand it on rather than lose it.
		if data != nil {
			b.stats.Late++
			deliver(flow, data)
		}
		return b.oldest
	case seq == b.next:
		return b.inOrder(flow, data, deliver)
	}
	if span := uint64(len(b.slots)); seq-b.next >= span {
		// Too far ahead to hold: give up the oldest places.
		b.stats.Overflow++
		b.skipTo(seq-span+1, deliver)
		if seq == b.next {
			return b.inOrder(flow, data, deliver)
		}
	}
	s := &b.slots[seq%uint64(len(b.slots))]
	if s.used {
		return b.oldest // a copy of one already held
	}
	if data != nil && b.bytes+len(data) > MaxBytes {
		// No room to hold it: better out of order than late or lost.
		b.stats.Overflow++
		b.stats.Late++
		deliver(flow, data)
		data = nil // its place is still taken, so later ones wait for nothing
	}
	*s = slot{seq: seq, used: true, data: data != nil, flow: flow, at: now, buf: append(s.buf[:0], data...)}
	b.bytes += len(data)
	b.held++
	b.pushArrival(arrival{at: now, seq: seq})
	if b.oldest.IsZero() || now.Before(b.oldest) {
		b.oldest = now
	}
	return b.due()
}

// inOrder hands on the packet at next and what follows it.
func (b *Buffer) inOrder(flow uint32, data []byte, deliver func(flow uint32, d []byte)) time.Time {
	if data != nil {
		b.stats.InOrder++
		deliver(flow, data)
	}
	b.next++
	b.drain(deliver)
	return b.oldest
}

// Expire gives up the gaps before datagrams that have waited their time,
// handing those on, and returns when it is next due (zero: nothing waits).
func (b *Buffer) Expire(now time.Time, deliver func(flow uint32, d []byte)) time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.held > 0 && !b.oldest.IsZero() && !now.Before(b.oldest.Add(b.wait)) {
		// Skip to the first held packet and hand on what follows it.
		first := b.next
		for !b.slots[first%uint64(len(b.slots))].used || b.slots[first%uint64(len(b.slots))].seq != first {
			first++
		}
		b.skipTo(first, deliver)
	}
	return b.due()
}

func (b *Buffer) due() time.Time {
	if b.held == 0 {
		return time.Time{}
	}
	return b.oldest.Add(b.wait)
}

// skipTo gives up every place before seq, handing on what is held there.
func (b *Buffer) skipTo(seq uint64, deliver func(flow uint32, d []byte)) {
	for b.next < seq {
		s := &b.slots[b.next%uint64(len(b.slots))]
		if s.used && s.seq == b.next {
			b.release(s, deliver)
		} else {
			b.stats.Skipped++
		}
		b.next++
		if b.held == 0 && b.next < seq {
			b.stats.Skipped += seq - b.next
			b.next = seq
		}
	}
	b.drain(deliver)
	b.recomputeOldest()
}

// drain hands on held packets from next onward while they follow on.
func (b *Buffer) drain(deliver func(flow uint32, d []byte)) {
	released := false
	for b.held > 0 {
		s := &b.slots[b.next%uint64(len(b.slots))]
		if !s.used || s.seq != b.next {
			break
		}
		b.release(s, deliver)
		b.next++
		released = true
	}
	if released || b.held == 0 {
		b.recomputeOldest()
	}
}

func (b *Buffer) release(s *slot, deliver func(flow uint32, d []byte)) {
	if s.data {
		b.stats.Waited++
		deliver(s.flow, s.buf)
	}
	b.bytes -= len(s.buf)
	if cap(s.buf) > keepBuf {
		s.buf = nil
	}
	s.used = false
	b.held--
}

// recomputeOldest finds the earliest arrival among held packets: the top
// of the arrivals heap once the entries of packets handed on are dropped.
func (b *Buffer) recomputeOldest() {
	b.oldest = time.Time{}
	if b.held == 0 {
		b.arrivals = b.arrivals[:0]
		return
	}
	for len(b.arrivals) > 0 && !b.holds(b.arrivals[0]) {
		b.popArrival()
	}
	if len(b.arrivals) > 0 {
		b.oldest = b.arrivals[0].at
	}
}

// holds reports whether the packet an arrival entry stands for is still
// held.
func (b *Buffer) holds(a arrival) bool {
	s := &b.slots[a.seq%uint64(len(b.slots))]
	return s.used && s.seq == a.seq && s.at.Equal(a.at)
}

// pushArrival adds a to the heap. When entries of packets handed on have
// piled up, the heap is rebuilt from the held slots first, so it stays
// within twice the span.
func (b *Buffer) pushArrival(a arrival) {
	if len(b.arrivals) == cap(b.arrivals) {
		b.arrivals = b.arrivals[:0]
		for i := range b.slots {
			if s := &b.slots[i]; s.used && s.seq != a.seq {
				b.arrivals = append(b.arrivals, arrival{at: s.at, seq: s.seq})
			}
		}
		for i := len(b.arrivals)/2 - 1; i >= 0; i-- {
			b.down(i)
		}
	}
	b.arrivals = append(b.arrivals, a)
	// Up from the new leaf.
	h := b.arrivals
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !h[i].at.Before(h[p].at) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

// popArrival removes the heap's top.
func (b *Buffer) popArrival() {
	n := len(b.arrivals) - 1
	b.arrivals[0] = b.arrivals[n]
	b.arrivals = b.arrivals[:n]
	b.down(0)
}

// down restores the heap below i.
func (b *Buffer) down(i int) {
	h := b.arrivals
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h[r].at.Before(h[l].at) {
			m = r
		}
		if !h[m].at.Before(h[i].at) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

// Timed is a Buffer that expires itself: a timer hands on, through deliver,
// the datagrams whose wait is over when no packet comes to push them out.
// deliver is called from the pushing goroutines and from the timer's, one at
// a time.
type Timed struct {
	*Buffer
	deliver func(flow uint32, d []byte)
	timer   *time.Timer
	armMu   sync.Mutex // guards armed and stopped
	armed   time.Time  // when the timer fires; zero when it is not set
	stopped bool
}

// NewTimed returns a Timed buffer handing datagrams to deliver.
func NewTimed(wait time.Duration, size int, deliver func(flow uint32, d []byte)) *Timed {
	t := &Timed{Buffer: New(wait, size), deliver: deliver}
	t.timer = time.AfterFunc(time.Hour, t.expire)
	t.timer.Stop()
	return t
}

// Push is Buffer.Push with the Timed buffer's deliver, arming the timer for
// what is left waiting.
func (t *Timed) Push(seq uint64, flow uint32, data []byte, now time.Time) {
	t.arm(t.Buffer.Push(seq, flow, data, now, t.deliver), now)
}

func (t *Timed) expire() {
	now := time.Now()
	t.armMu.Lock()
	t.armed = time.Time{}
	stopped := t.stopped
	t.armMu.Unlock()
	if stopped {
		return
	}
	t.arm(t.Buffer.Expire(now, t.deliver), now)
}

func (t *Timed) arm(due, now time.Time) {
	if due.IsZero() {
		return
	}
	t.armMu.Lock()
	defer t.armMu.Unlock()
	if t.stopped || (!t.armed.IsZero() && !due.Before(t.armed)) {
		return // a timer at or before due is set
	}
	t.armed = due
	t.timer.Reset(max(due.Sub(now), 0))
}

// Stop stops the timer for good; datagrams still held are not handed on.
func (t *Timed) Stop() {
	t.armMu.Lock()
	t.stopped = true
	t.armMu.Unlock()
	t.timer.Stop()
}
