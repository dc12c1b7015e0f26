package fec

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/klauspost/reedsolomon"
)

// DefaultFlushDelay is how long an Encoder's group stays open, waiting to
// fill, before its parity is due.
const DefaultFlushDelay = 5 * time.Millisecond

// Encoder cuts one direction's datagrams into groups and computes their
// parity. Its buffers are allocated as datagrams first need them and reused:
// once they have grown to the largest datagram, adding one allocates nothing.
type Encoder struct {
	p          Params
	flushDelay time.Duration

	group  uint32    // number of the open group
	stride uint32    // what the group number grows by (1)
	n      int       // datagrams in the open group
	opened time.Time // when the open group got its first datagram

	data   [][]byte // k buffers: 2-byte length, datagram, zero padding
	parity [][]byte // m buffers
	shards [][]byte // view of data[:n] and parity, passed to the code
	out    []Shard  // the parity shards returned by the last close
	codes  []reedsolomon.Encoder
}

// NewEncoder returns an Encoder for groups of shape p whose open group is due
// for flushing flushDelay after its first datagram (DefaultFlushDelay when
// flushDelay <= 0).
func NewEncoder(p Params, flushDelay time.Duration) (*Encoder, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("fec: new encoder: %w", err)
	}
	if flushDelay <= 0 {
		flushDelay = DefaultFlushDelay
	}
	e := &Encoder{
		p:          p,
		stride:     1,
		flushDelay: flushDelay,
		data:       make([][]byte, p.Data),
		parity:     make([][]byte, p.Parity),
		shards:     make([][]byte, 0, p.Data+p.Parity),
		out:        make([]Shard, p.Parity),
		codes:      make([]reedsolomon.Encoder, p.Data+1),
	}
	// The full shape is the one used all the time: make it now, so an error
	// shows here rather than on the first group.
	if p.Parity > 0 {
		if _, err := e.code(p.Data); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// SetGroups makes the encoder number its groups first, first+stride,
// first+2*stride and so on, so that several encoders can share one
// receiver's group numbers (interleaving). Call it before the first Add.
func (e *Encoder) SetGroups(first, stride uint32) {
	e.group, e.stride = first, max(stride, 1)
}

// Params returns the shape of the encoder's groups.
func (e *Encoder) Params() Params { return e.p }

// Pending returns the number of datagrams in the open group.
func (e *Encoder) Pending() int { return e.n }

// Deadline returns when the open group is due for flushing, and false when no
// group is open.
func (e *Encoder) Deadline() (time.Time, bool) {
	if e.n == 0 {
		return time.Time{}, false
	}
	return e.opened.Add(e.flushDelay), true
}

// Add puts a datagram in the open group and returns its data shard, to be sent
// at once; its Body is datagram itself. When the datagram fills the group,
// Add also returns the group's parity shards. The parity bodies are the
// encoder's own buffers: they stay valid until the next call to Add, Flush or
// FlushDue. now is when the datagram is sent; the first datagram of a group
// starts its flush delay.
//
// A datagram longer than MaxDatagram is refused with an error and changes
// nothing.
func (e *Encoder) Add(datagram []byte, now time.Time) (Shard, []Shard, error) {
	if len(datagram) > MaxDatagram {
		return Shard{}, nil, fmt.Errorf("fec: datagram of %d bytes: at most %d", len(datagram), MaxDatagram)
	}
	if e.n == 0 {
		e.opened = now
	}
	i := e.n
	b := grow(e.data[i], 2+len(datagram))
	binary.BigEndian.PutUint16(b, uint16(len(datagram)))
	copy(b[2:], datagram)
	e.data[i] = b
	e.n++
	s := Shard{Group: e.group, Index: uint8(i), Data: uint8(e.p.Data), Parity: uint8(e.p.Parity), Body: datagram}
	if e.n < e.p.Data {
		return s, nil, nil
	}
	parity, err := e.close()
	return s, parity, err
}

// Flush closes the open group, however few datagrams it holds, and returns its
// parity shards (computed over those datagrams alone). It returns nothing when
// no group is open. The bodies stay valid until the next call to Add, Flush
// or FlushDue.
func (e *Encoder) Flush() ([]Shard, error) {
	if e.n == 0 {
		return nil, nil
	}
	return e.close()
}

// FlushDue flushes the open group if its deadline (see Deadline) is at or
// before now, and otherwise returns nothing.
func (e *Encoder) FlushDue(now time.Time) ([]Shard, error) {
	if d, ok := e.Deadline(); !ok || now.Before(d) {
		return nil, nil
	}
	return e.close()
}

// close computes the open group's parity and starts the next group. The next
// group starts even when the parity fails, so the group numbers stay in step
// with what was sent.
func (e *Encoder) close() ([]Shard, error) {
	n, g := e.n, e.group
	e.n = 0
	e.group += e.stride
	if e.p.Parity == 0 {
		return nil, nil
	}
	size := 0
	for _, b := range e.data[:n] {
		size = max(size, len(b))
	}
	e.shards = e.shards[:0]
	for i, b := range e.data[:n] {
		l := len(b)
		b = grow(b, size)
		clear(b[l:])
		e.data[i] = b
		e.shards = append(e.shards, b)
	}
	for j, b := range e.parity {
		b = grow(b, size)
		e.parity[j] = b
		e.shards = append(e.shards, b)
	}
	code, err := e.code(n)
	if err != nil {
		return nil, err
	}
	if err := code.Encode(e.shards); err != nil {
		return nil, fmt.Errorf("fec: parity of group %d (%d+%d shards of %d bytes): %w", g, n, e.p.Parity, size, err)
	}
	for j := range e.out {
		e.out[j] = Shard{Group: g, Index: uint8(n + j), Data: uint8(n), Parity: uint8(e.p.Parity), Body: e.parity[j]}
	}
	return e.out, nil
}

// code returns the Reed-Solomon code for n data shards, made on first use:
// at most k of them, one for each size a flushed group can have.
func (e *Encoder) code(n int) (reedsolomon.Encoder, error) {
	if c := e.codes[n]; c != nil {
		return c, nil
	}
	c, err := newCode(n, e.p.Parity, false)
	if err != nil {
		return nil, err
	}
	e.codes[n] = c
	return c, nil
}

// newCode makes a Reed-Solomon code that runs on the caller's goroutine.
// GFNI is left out: for shards of a few kilobytes the other SIMD kernels are
// faster here, and its path allocates on every call. The inversion cache (one
// decoding matrix kept per loss pattern) is used only when asked: its size
// grows with the patterns met.
func newCode(k, m int, inversionCache bool) (reedsolomon.Encoder, error) {
	c, err := reedsolomon.New(k, m,
		reedsolomon.WithMaxGoroutines(1),
		reedsolomon.WithInversionCache(inversionCache),
		reedsolomon.WithGFNI(false),
		reedsolomon.WithAVXGFNI(false))
	if err != nil {
		return nil, fmt.Errorf("fec: reed-solomon code for %d+%d shards: %w", k, m, err)
	}
	return c, nil
}

// grow returns b resliced to n bytes, reallocated only when its capacity is
// short. The bytes past the old length are not cleared.
func grow(b []byte, n int) []byte {
	if cap(b) >= n {
		return b[:n]
	}
	nb := make([]byte, n, max(n, 2*cap(b)))
	copy(nb, b)
	return nb
}
