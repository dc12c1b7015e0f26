package stream

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// orderUnder returns an order holding for hold, and what it handed on so
// far (each packet a one-byte or four-byte mark), safe to read while its
// timer runs.
func orderUnder(hold time.Duration) (*order, func() []uint32) {
	var mu sync.Mutex
	var got []uint32
	o := &order{hold: func() time.Duration { return hold }}
	o.deliver = func(b []byte) {
		mu.Lock()
		got = append(got, uint32(b[0])|uint32(b[1])<<8|uint32(b[2])<<16|uint32(b[3])<<24)
		mu.Unlock()
	}
	return o, func() []uint32 {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

func mark(seq uint32) []byte {
	return []byte{byte(seq), byte(seq >> 8), byte(seq >> 16), byte(seq >> 24)}
}

func seqs(from, to uint32) []uint32 {
	var s []uint32
	for i := from; i != to; i++ {
		s = append(s, i)
	}
	return s
}

// TestOrderFillsGap: packets after a missing one wait for it, and all go
// in sequence once it comes; a second copy of a held one is dropped.
func TestOrderFillsGap(t *testing.T) {
	o, got := orderUnder(time.Hour)
	defer o.close()
	now := time.Now()
	for _, s := range []uint32{0, 1, 3, 4, 4, 6, 2} {
		o.arrive(s, mark(s), now)
	}
	if want := []uint32{0, 1, 2, 3, 4}; !slices.Equal(got(), want) {
		t.Fatalf("handed on %v, want %v (6 held behind 5)", got(), want)
	}
	o.arrive(5, mark(5), now)
	if want := seqs(0, 7); !slices.Equal(got(), want) {
		t.Fatalf("handed on %v, want %v", got(), want)
	}
}

// TestOrderPassesOverLostPacket: a gap the session does not fill within
// the hold is passed over, and the packet, if it comes after all, goes on
// at once.
func TestOrderPassesOverLostPacket(t *testing.T) {
	o, got := orderUnder(20 * time.Millisecond)
	defer o.close()
	now := time.Now()
	for _, s := range []uint32{0, 2, 3} {
		o.arrive(s, mark(s), now)
	}
	if want := []uint32{0}; !slices.Equal(got(), want) {
		t.Fatalf("handed on %v before the hold passed, want %v", got(), want)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(got()) < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // the order's timer hands them on
	}
	if want := []uint32{0, 2, 3}; !slices.Equal(got(), want) {
		t.Fatalf("handed on %v after the hold, want %v", got(), want)
	}
	o.arrive(1, mark(1), time.Now())
	o.arrive(4, mark(4), time.Now())
	if want := []uint32{0, 2, 3, 1, 4}; !slices.Equal(got(), want) {
		t.Fatalf("handed on %v, want %v", got(), want)
	}
}

// TestOrderBounded: a packet too far ahead releases the oldest held, gaps
// passed over, so that no more than orderSize are ever held; sequence
// numbers wrap.
func TestOrderBounded(t *testing.T) {
	o, got := orderUnder(time.Hour)
	defer o.close()
	start := ^uint32(0) - 10 // wraps within the run
	o.next = start
	now := time.Now()
	// start is missing: everything after it is held, up to orderSize-1.
	for i := uint32(1); i < orderSize; i++ {
		o.arrive(start+i, mark(start+i), now)
	}
	if len(got()) != 0 || o.held != orderSize-1 {
		t.Fatalf("handed on %d, held %d; want 0 and %d", len(got()), o.held, orderSize-1)
	}
	// One more than the slots hold: start is passed over.
	o.arrive(start+orderSize, mark(start+orderSize), now)
	if want := seqs(start+1, start+orderSize+1); !slices.Equal(got(), want) {
		t.Fatalf("handed on %d packets (%v...), want %d from %d", len(got()), got()[:min(3, len(got()))], len(want), start+1)
	}
	if o.held != 0 {
		t.Errorf("%d still held", o.held)
	}
}

// TestOrderWithoutHold: with no hold (the session does not repair), every
// packet goes on as it comes.
func TestOrderWithoutHold(t *testing.T) {
	o, got := orderUnder(0)
	defer o.close()
	for _, s := range []uint32{0, 2, 1, 5, 3} {
		o.arrive(s, mark(s), time.Now())
	}
	if want := []uint32{0, 2, 1, 5, 3}; !slices.Equal(got(), want) {
		t.Fatalf("handed on %v, want %v", got(), want)
	}
}

// TestReadPaced: ReadFrom hands out readAhead packets and then waits for
// QUIC to write (or readWait) before each readStep more, so a run of
// packets larger than QUIC's queue does not reach it at once.
func TestReadPaced(t *testing.T) {
	c := NewPacketConn(func([]byte) error { return nil })
	defer c.Close()
	for i := range readAhead + 2*readStep {
		c.Deliver(append(mark(uint32(i)), mark(uint32(i))...))
	}
	buf := make([]byte, 64)
	read := func() {
		t.Helper()
		if _, _, err := c.ReadFrom(buf); err != nil {
			t.Fatal(err)
		}
	}
	for range readAhead {
		read()
	}
	// Past readAhead, without a write: the read waits readWait.
	start := time.Now()
	read()
	if d := time.Since(start); d < readWait {
		t.Fatalf("a read past readAhead without a write took %v, want at least %v", d, readWait)
	}
	for range readStep - 1 {
		read()
	}
	// Past the step, after a write: it goes on (a write wakes it).
	c.WriteTo([]byte("ack"), Addr{})
	read()
}
