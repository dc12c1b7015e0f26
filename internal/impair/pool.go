package impair

import (
	"math/bits"
	"sync"
)

// maxDatagram is the size of the read buffers; any UDP payload fits.
const maxDatagram = 65536

const (
	minClassShift = 8  // smallest pooled buffer: 256 bytes
	maxClassShift = 16 // largest pooled buffer: 64 KiB
	numClasses    = maxClassShift - minClassShift + 1
)

// bufPool hands out byte slices from power-of-two size classes so that a
// queued small datagram does not pin a 64 KiB buffer.
type bufPool struct {
	classes [numClasses]sync.Pool
}

func classOf(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassShift
}

// get returns a buffer of length n (n <= maxDatagram).
func (p *bufPool) get(n int) *[]byte {
	c := classOf(n)
	if v, ok := p.classes[c].Get().(*[]byte); ok {
		*v = (*v)[:n]
		return v
	}
	b := make([]byte, n, 1<<(c+minClassShift))
	return &b
}

// put returns a buffer obtained from get.
func (p *bufPool) put(b *[]byte) {
	c := classOf(cap(*b))
	if cap(*b) != 1<<(c+minClassShift) {
		return
	}
	p.classes[c].Put(b)
}
