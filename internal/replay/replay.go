// Package replay implements the receive window that turns the many copies of
// a packet arriving over different paths into one, and that rejects replayed
// packets.
//
// Every tunnel packet carries a 64-bit counter. The sender seals a packet once
// and sends the same bytes over each path, so the receiver sees up to one copy
// per path, in any order. After a packet authenticates, the [Filter] decides:
// the first copy of a counter is [Accepted], later copies are [Duplicate], and
// counters too far behind the newest accepted counter are [TooOld].
//
// The filter is the sliding bitmap of RFC 6479: a ring of 64-bit blocks whose
// length is a power of two. Moving the window forward only clears the blocks
// it passes over, so each call costs O(1) amortized, never allocates, and the
// memory is fixed by the window size no matter how much traffic passes.
package replay

import (
	"fmt"
	"math/bits"
)

// Result is the verdict of a [Filter] on one counter.
type Result uint8

const (
	// Accepted means the counter is new and inside the window.
	Accepted Result = iota
	// Duplicate means the counter was already accepted.
	Duplicate
	// TooOld means the counter is too far behind the newest accepted counter
	// to tell whether it was seen before; it must be dropped.
	TooOld
)

// String returns the name of the result.
func (r Result) String() string {
	switch r {
	case Accepted:
		return "Accepted"
	case Duplicate:
		return "Duplicate"
	case TooOld:
		return "TooOld"
	default:
		return fmt.Sprintf("Result(%d)", uint8(r))
	}
}

const (
	// DefaultSize is the minimum window, in packets, that the zero Filter
	// and Init(0) guarantee.
	DefaultSize = 8192

	// MaxSize is the largest window, in packets, that Init accepts. It keeps
	// the ring at most a few megabytes.
	MaxSize = 1 << 24
)

const (
	blockBits  = 64 // bits per ring block
	blockShift = 6  // log2(blockBits)
	blockMask  = blockBits - 1
)

// Filter is an RFC 6479 anti-replay window. The zero value is ready to use
// with DefaultSize. Not safe for concurrent use; callers lock.
//
// The ring is allocated by Init, or by the first Update of a zero Filter;
// Check and Update never allocate after that.
//
// A counter c is inside the window when last-c < Window(), where last is the
// largest counter accepted so far (0 before any). Counters above last are
// always accepted and move the window forward. Counter 0 is an ordinary
// counter.
//
// A Filter must not be copied after first use: copies share the ring.
type Filter struct {
	ring   []uint64 // len is a power of two; nil until first Init or Update
	mask   uint64   // len(ring) - 1
	window uint64   // effective window: len(ring)*64 - 64
	last   uint64   // largest counter accepted so far
}

// ringBlocks returns the number of ring blocks for a window of at least
// size packets: the smallest power of two n with n*64-64 >= size.
func ringBlocks(size int) int {
	if size <= 0 {
		size = DefaultSize
	}
	if size > MaxSize {
		panic(fmt.Sprintf("replay: window size %d exceeds MaxSize %d", size, MaxSize))
	}
	need := (size+blockBits-1)/blockBits + 1 // >= 2
	return 1 << bits.Len(uint(need-1))
}

// Init sets the window to at least size packets and resets the state. The
// ring is rounded up to a power of two 64-bit blocks, and one block is kept
// as slack, so the effective window, reported by Window, is the ring's bit
// count minus 64. A size <= 0 means DefaultSize. Init panics if size exceeds
// MaxSize.
func (f *Filter) Init(size int) {
	n := ringBlocks(size)
	if len(f.ring) == n {
		clear(f.ring)
	} else {
		f.ring = make([]uint64, n)
	}
	f.mask = uint64(n - 1)
	f.window = uint64(n-1) * blockBits
	f.last = 0
}

// Window returns the effective window in packets: a counter is accepted
// only if it is less than Window() behind the largest accepted counter.
func (f *Filter) Window() int {
	if f.ring == nil {
		return (ringBlocks(DefaultSize) - 1) * blockBits
	}
	return int(f.window)
}

// Last returns the largest counter accepted so far (0 before any).
func (f *Filter) Last() uint64 { return f.last }

// Reset forgets every counter seen, keeping the window size.
func (f *Filter) Reset() {
	clear(f.ring)
	f.last = 0
}

// Check reports what Update would return for counter, without recording
// anything. It is meant to drop obvious duplicates before the more costly
// authentication of a packet.
func (f *Filter) Check(counter uint64) Result {
	if f.ring == nil {
		// Nothing has been recorded yet.
		return Accepted
	}
	if counter > f.last {
		return Accepted
	}
	if f.last-counter >= f.window {
		return TooOld
	}
	if f.ring[(counter>>blockShift)&f.mask]&(1<<(counter&blockMask)) != 0 {
		return Duplicate
	}
	return Accepted
}

// Update records counter and returns Accepted if it is new and inside the
// window, Duplicate if it was recorded before, or TooOld if it is too far
// behind the largest accepted counter. Only an Accepted counter changes the
// state. Call Update only for packets that have authenticated.
func (f *Filter) Update(counter uint64) Result {
	if f.ring == nil {
		f.Init(DefaultSize)
	}
	block := counter >> blockShift
	if counter > f.last {
		// Move the window forward, clearing the blocks it enters. Those
		// blocks last held counters at least a whole ring behind, which
		// are outside the new window.
		cur := f.last >> blockShift
		diff := block - cur
		if diff >= uint64(len(f.ring)) {
			clear(f.ring)
		} else {
			for i := cur + 1; i <= block; i++ {
				f.ring[i&f.mask] = 0
			}
		}
		f.last = counter
	} else if f.last-counter >= f.window {
		return TooOld
	}
	slot := &f.ring[block&f.mask]
	bit := uint64(1) << (counter & blockMask)
	if *slot&bit != 0 {
		return Duplicate
	}
	*slot |= bit
	return Accepted
}
