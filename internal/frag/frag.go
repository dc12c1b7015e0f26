// Package frag cuts datagrams too large for one tunnel packet into pieces and
// puts them back together on the far side. A datagram is delivered whole or not
// at all; reassembly is bounded in the number of datagrams in flight, in bytes
// and in time, so memory never grows with what arrives.
package frag

import (
	"sync"
	"time"

	"github.com/mptunnel/mptunnel/internal/wire"
)

// Plan returns how a datagram of total bytes is cut so that each piece's
// plaintext (fragment header included) fits in maxPlain bytes: the number of
// pieces and the size of each but the last. count is 1 when no cut is needed.
func Plan(total, maxPlain int) (count, chunk int) {
	if total+wire.DataHeaderLen <= maxPlain {
		return 1, total
	}
	per := maxPlain - wire.FragHeaderLen
	count = (total + per - 1) / per
	for {
		chunk = wire.ChunkLen(total, count)
		if total-chunk*(count-1) > 0 {
			return count, chunk
		}
		count++
	}
}

// Limits bound a Reassembler. Zero fields take the defaults.
type Limits struct {
	Datagrams int           // datagrams in flight at once (default 256)
	Bytes     int           // bytes held at once (default 4 MiB)
	Timeout   time.Duration // how long an incomplete datagram is kept (default 5s)
}

func (l Limits) withDefaults() Limits {
	if l.Datagrams <= 0 {
		l.Datagrams = 256
	}
	if l.Bytes <= 0 {
		l.Bytes = 4 << 20
	}
	if l.Timeout <= 0 {
		l.Timeout = 5 * time.Second
	}
	return l
}

type key struct{ flow, id uint32 }

type partial struct {
	key     key
	buf     []byte
	have    [4]uint64 // bitmap of received pieces
	got     int       // pieces received
	count   uint8
	total   uint16
	started time.Time
}

// Reassembler collects fragments of one sender. It is safe for concurrent use.
// The zero value is ready with default limits.
type Reassembler struct {
	mu      sync.Mutex
	limits  Limits
	inited  bool
	pending []*partial
	bytes   int
	free    [][]byte
	// Evicted counts incomplete datagrams dropped for age or room.
	evicted uint64
}

// SetLimits sets the bounds; call before use.
func (r *Reassembler) SetLimits(l Limits) {
	r.mu.Lock()
	r.limits = l.withDefaults()
	r.inited = true
	r.mu.Unlock()
}

// Add records one fragment received at now. When it completes a datagram, Add
// calls deliver with the whole datagram (valid only during the call) and
// returns true. A fragment that does not agree with earlier pieces of the same
// datagram, or a piece already held, is ignored.
func (r *Reassembler) Add(f wire.Fragment, body []byte, now time.Time, deliver func(flow uint32, datagram []byte)) bool {
	r.mu.Lock()
	if !r.inited {
		r.limits = r.limits.withDefaults()
		r.inited = true
	}
	r.expireLocked(now)
	k := key{f.Flow, f.ID}
	var p *partial
	for _, q := range r.pending {
		if q.key == k {
			p = q
			break
		}
	}
	if p == nil {
		for len(r.pending) >= r.limits.Datagrams || (len(r.pending) > 0 && r.bytes+int(f.Total) > r.limits.Bytes) {
			r.dropLocked(0)
			r.evicted++
		}
		if int(f.Total) > r.limits.Bytes {
			r.mu.Unlock()
			return false
		}
		p = &partial{key: k, buf: r.getBuf(int(f.Total)), count: f.Count, total: f.Total, started: now}
		r.pending = append(r.pending, p)
		r.bytes += int(f.Total)
	}
	if p.count != f.Count || p.total != f.Total {
		r.mu.Unlock()
		return false
	}
	word, bit := f.Index/64, uint64(1)<<(f.Index%64)
	if p.have[word]&bit != 0 {
		r.mu.Unlock()
		return false
	}
	p.have[word] |= bit
	p.got++
	copy(p.buf[int(f.Index)*wire.ChunkLen(int(f.Total), int(f.Count)):], body)
	if p.got < int(p.count) {
		r.mu.Unlock()
		return false
	}
	for i, q := range r.pending {
		if q == p {
			r.removeLocked(i)
			break
		}
	}
	r.mu.Unlock()
	deliver(f.Flow, p.buf)
	r.mu.Lock()
	r.putBuf(p.buf)
	r.mu.Unlock()
	return true
}

// Expire drops incomplete datagrams older than the timeout.
func (r *Reassembler) Expire(now time.Time) {
	r.mu.Lock()
	r.expireLocked(now)
	r.mu.Unlock()
}

// Evicted returns how many incomplete datagrams were dropped for age or room.
func (r *Reassembler) Evicted() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.evicted
}

// Pending returns the number of incomplete datagrams and the bytes they hold.
func (r *Reassembler) Pending() (datagrams, bytes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending), r.bytes
}

func (r *Reassembler) expireLocked(now time.Time) {
	for len(r.pending) > 0 && now.Sub(r.pending[0].started) > r.limits.Timeout {
		r.dropLocked(0)
		r.evicted++
	}
}

func (r *Reassembler) dropLocked(i int) {
	p := r.pending[i]
	r.removeLocked(i)
	r.putBuf(p.buf)
}

func (r *Reassembler) removeLocked(i int) {
	r.bytes -= int(r.pending[i].total)
	copy(r.pending[i:], r.pending[i+1:])
	r.pending[len(r.pending)-1] = nil
	r.pending = r.pending[:len(r.pending)-1]
}

// getBuf returns a buffer of n bytes, reusing a freed one when it is large enough.
func (r *Reassembler) getBuf(n int) []byte {
	for i := len(r.free) - 1; i >= 0; i-- {
		if b := r.free[i]; cap(b) >= n {
			r.free[i] = r.free[len(r.free)-1]
			r.free = r.free[:len(r.free)-1]
			return b[:n]
		}
	}
	return make([]byte, n, wire.MaxDatagram)
}

func (r *Reassembler) putBuf(b []byte) {
	if len(r.free) < 8 {
		r.free = append(r.free, b[:0])
	}
}
