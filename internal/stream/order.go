package stream

import (
	"sync"
	"time"
)

// orderSize bounds the packets an order holds behind a gap; a packet
// further ahead than this releases the oldest, gaps and all.
const orderSize = 4096

// order hands the packets of a PacketConn to QUIC in the order they were
// sent. A packet lost on every path of the session comes later, repaired
// (session.Repairer) or rebuilt from parity; QUIC, handed the packets
// after it first, would count it lost, which its congestion control takes
// for a full queue and halves its rate for, although nothing was lost to
// congestion. Held behind the gap instead, the packets reach QUIC a little
// late and in order: a longer round trip, not a loss. A gap that the
// session does not fill within hold() (a packet lost for good) is passed
// over and QUIC recovers it as it would any loss.
type order struct {
	// hold returns how long a gap may hold the packets behind it: about
	// how long a repair takes. Zero hands every packet on as it comes.
	hold    func() time.Duration
	deliver func(b []byte) // hands a packet to QUIC; called under mu

	mu    sync.Mutex
	next  uint32 // the sequence number QUIC takes next
	held  int    // packets in slots
	slots [orderSize]slot
	timer *time.Timer
	// due is when the gap at next stops holding; zero when nothing is
	// held.
	due    time.Time
	closed bool
}

// slot is a held packet: ok when full.
type slot struct {
	b       []byte
	arrived time.Time
	ok      bool
}

// arrive takes packet seq, b (which it keeps), at now.
func (o *order) arrive(seq uint32, b []byte, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	d := int32(seq - o.next)
	if d >= orderSize {
		// Too far ahead to hold: release the oldest, gaps and all.
		o.skipTo(seq-orderSize+1, now)
		o.drain(now)
		d = int32(seq - o.next)
	}
	switch {
	case d < 0:
		// After its gap was passed over (or a copy the session let
		// through): QUIC sorts it out.
		o.deliver(b)
		return
	case d == 0:
		o.deliver(b)
		o.next++
		o.drain(now)
		return
	}
	first := o.held == 0
	if first {
		// A new gap: hold behind it, unless the session does not repair.
		var hold time.Duration
		if o.hold != nil {
			hold = o.hold()
		}
		if hold <= 0 {
			o.deliver(b)
			o.next = seq + 1
			return
		}
		o.due = now.Add(hold)
	}
	s := &o.slots[seq%orderSize]
	if s.ok {
		return // a second copy
	}
	*s = slot{b: b, arrived: now, ok: true}
	o.held++
	if first {
		o.arm(now)
	}
}

// skipTo passes over the packets before seq, handing on those held.
func (o *order) skipTo(seq uint32, now time.Time) {
	for int32(seq-o.next) > 0 {
		if o.held == 0 {
			o.next = seq
			break
		}
		if s := &o.slots[o.next%orderSize]; s.ok {
			o.deliver(s.b)
			*s = slot{}
			o.held--
		}
		o.next++
	}
	o.rearm(now)
}

// drain hands on the packets held in sequence from next.
func (o *order) drain(now time.Time) {
	for o.held > 0 {
		s := &o.slots[o.next%orderSize]
		if !s.ok {
			break
		}
		o.deliver(s.b)
		*s = slot{}
		o.held--
		o.next++
	}
	o.rearm(now)
}

// rearm sets when the gap now at next stops holding: the hold from the
// arrival of the first packet held behind it, which has waited since.
func (o *order) rearm(now time.Time) {
	if o.held == 0 {
		// Nothing held: stop the timer if a hold armed it (not for every
		// packet that comes in order).
		if !o.due.IsZero() {
			o.due = time.Time{}
			if o.timer != nil {
				o.timer.Stop()
			}
		}
		return
	}
	var first time.Time
	for i := uint32(0); i < orderSize; i++ {
		if s := &o.slots[(o.next+i)%orderSize]; s.ok {
			first = s.arrived
			break
		}
	}
	var hold time.Duration
	if o.hold != nil {
		hold = o.hold()
	}
	o.due = first.Add(hold)
	o.arm(now)
}

// arm starts the timer for due.
func (o *order) arm(now time.Time) {
	d := max(o.due.Sub(now), 0)
	if o.timer == nil {
		o.timer = time.AfterFunc(d, o.expire)
		return
	}
	o.timer.Reset(d)
}

// expire passes over the gap at next once its time has come.
func (o *order) expire() {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := time.Now()
	if o.closed || o.held == 0 || now.Before(o.due) {
		if !o.closed && o.held > 0 {
			o.arm(now)
		}
		return
	}
	for !o.slots[o.next%orderSize].ok {
		o.next++
	}
	o.drain(now)
}

// close stops the timer and drops what is held.
func (o *order) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	if o.timer != nil {
		o.timer.Stop()
	}
	clear(o.slots[:])
	o.held = 0
}
