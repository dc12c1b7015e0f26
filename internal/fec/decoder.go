package fec

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/klauspost/reedsolomon"
)

// Limits bound a Decoder. Zero fields take the defaults.
type Limits struct {
	// Groups is how many groups are buffered for repair at once (default
	// 64). To make room for a new group the oldest one is dropped: its
	// missing datagrams can no longer be rebuilt, though its data shards are
	// still delivered when they come.
	Groups int
	// History is how many recent group numbers are remembered so that no
	// datagram is delivered twice (default 1024). Shards of a group older
	// than that are dropped as too old.
	History int
	// Timeout is how long a group is buffered for repair after its first
	// shard (default 1s).
	Timeout time.Duration
	// Bytes bounds the shard bytes buffered at once (default 16 MiB); the
	// oldest groups are dropped to stay under it.
	Bytes int
}

func (l Limits) withDefaults() Limits {
	if l.Groups <= 0 {
		l.Groups = 64
	}
	if l.History <= 0 {
		l.History = 1024
	}
	l.History = max(l.History, l.Groups)
	if l.Timeout <= 0 {
		l.Timeout = time.Second
	}
	if l.Bytes <= 0 {
		l.Bytes = 16 << 20
	}
	return l
}

// Stats counts what a Decoder did with the shards it was given.
type Stats struct {
	Delivered uint64 // datagrams delivered from their own data shard
	Recovered uint64 // datagrams rebuilt from parity and delivered

	Duplicate uint64 // shards seen before in a group still open
	Unneeded  uint64 // shards of a group already complete, or parity of a group no longer buffered
	TooOld    uint64 // shards of a group older than the history

	// Shards that are dropped as malformed or inconsistent, by reason.
	BadShape     uint64 // Data < 1 or Data+Parity > 255
	BadIndex     uint64 // Index >= Data+Parity
	BadLength    uint64 // data body over MaxDatagram, parity body under 2 or over MaxShardBody bytes
	Inconsistent uint64 // disagrees with earlier shards of its group (k, k', m, lengths)
	BadPrefix    uint64 // rebuilt datagrams whose length prefix exceeds the shard
	RepairFailed uint64 // groups whose reconstruction failed, or was too large to try

	Evicted uint64 // incomplete groups dropped from the buffer to make room
	Expired uint64 // incomplete groups dropped from the buffer after Timeout

	// Lost counts the datagrams never delivered, neither received nor
	// rebuilt, of groups that have left the history: k' of a group (or, when
	// no parity shard told k', one more than its highest data index seen)
	// less those delivered. A group none of whose shards arrived is not seen
	// and not counted.
	Lost uint64
}

// Dropped returns the number of shards dropped as malformed or inconsistent.
func (s Stats) Dropped() uint64 {
	return s.BadShape + s.BadIndex + s.BadLength + s.Inconsistent
}

// group is what the decoder remembers of one group: a slot of the history.
type group struct {
	id       uint32
	used     bool
	done     bool // every data shard delivered: nothing more to do
	norepair bool // buffers dropped: data shards are still delivered, parity is not used
	k        uint8
	kp       uint8 // k', known from a parity shard (0: not yet)
	m        uint8
	maxIdx   int // largest data index delivered, -1 for none
	maxLen   int // longest data body received
	shardLen int // parity length, known from a parity shard (0: not yet)
	have     [4]uint64
	nData    int // data indices delivered
	nParity  int // parity shards buffered
	buf      int // index of the buffer in d.bufs, -1 for none
}

func (g *group) has(i uint8) bool { return g.have[i>>6]&(1<<(i&63)) != 0 }
func (g *group) set(i uint8)      { g.have[i>>6] |= 1 << (i & 63) }

// buffer holds the shard bodies of one group still open for repair.
type buffer struct {
	owner   int // history slot of the group, -1 when free
	created time.Time
	arena   []byte
	off     [MaxShards]int32
	n       [MaxShards]int32
}

func (b *buffer) body(i uint8) []byte { return b.arena[b.off[i] : b.off[i]+b.n[i]] }

// Decoder rebuilds one direction's datagrams from the shards that arrive. A
// data shard is delivered as soon as it arrives; a missing one as soon as
// enough shards of its group are in. Each datagram is delivered at most once.
// Memory is bounded by Limits, whatever arrives.
//
// Group numbers are compared with those seen before, so a Decoder goes with
// one Encoder: make a new one when the sending side starts over (a new
// session).
type Decoder struct {
	lim   Limits
	hist  []group
	bufs  []buffer
	free  []int
	bytes int // arena bytes in use, all buffers
	next  time.Time

	codes   map[uint16]reedsolomon.Encoder
	scratch []byte
	shards  [][]byte
	out     [][]byte
	stats   Stats
}

// maxCodes bounds the Reed-Solomon codes a Decoder keeps; a sender uses at
// most k shapes (one per size of a flushed group).
const maxCodes = 16

// inversionCacheBudget bounds, for one code, the decoding matrices its
// inversion cache can hold if every loss pattern of up to m shards shows up:
// the cache is used only for shapes under it (8/4: 127 KiB, 10/4: 311 KiB),
// which makes repair about 1.5 times faster.
const inversionCacheBudget = 512 << 10

// cacheable reports whether the inversion cache of a code for k+m shards stays
// within inversionCacheBudget: one k*k matrix and a tree node of about 8
// bytes a shard for each pattern of 1 to m missing shards.
func cacheable(k, m int) bool {
	n := k + m
	patterns, c := 0.0, 1.0
	for i := 1; i <= m; i++ {
		c = c * float64(n-i+1) / float64(i)
		patterns += c
	}
	return patterns*float64(k*k+8*n) <= inversionCacheBudget
}

// NewDecoder returns a Decoder bounded by lim.
func NewDecoder(lim Limits) *Decoder {
	lim = lim.withDefaults()
	d := &Decoder{
		lim:    lim,
		hist:   make([]group, lim.History),
		bufs:   make([]buffer, lim.Groups),
		free:   make([]int, 0, lim.Groups),
		codes:  make(map[uint16]reedsolomon.Encoder),
		shards: make([][]byte, MaxShards),
		out:    make([][]byte, 0, MaxShards),
	}
	for i := range d.bufs {
		d.bufs[i].owner = -1
		d.free = append(d.free, len(d.bufs)-1-i)
	}
	return d
}

// Stats returns the counters so far.
func (d *Decoder) Stats() Stats { return d.stats }

// InFlight returns the number of groups buffered for repair.
func (d *Decoder) InFlight() int { return len(d.bufs) - len(d.free) }

// Buffered returns the shard bytes buffered for repair.
func (d *Decoder) Buffered() int { return d.bytes }

// Add takes one shard that arrived at now and returns the datagrams to
// deliver now, in order: the shard's own datagram if it is a data shard not
// seen before, and any datagrams its group could be rebuilt with. The returned
// slices alias s.Body and the decoder's buffers: they stay valid until the
// next call to Add or Expire. Malformed, inconsistent, duplicate or late shards
// return nothing and are counted in Stats.
func (d *Decoder) Add(s Shard, now time.Time) [][]byte {
	d.out = d.out[:0]
	d.Expire(now)

	total := int(s.Data) + int(s.Parity)
	switch {
	case s.Data < 1 || total > MaxShards:
		d.stats.BadShape++
		return nil
	case int(s.Index) >= total:
		d.stats.BadIndex++
		return nil
	}
	parity := s.IsParity()
	if parity && (len(s.Body) < 2 || len(s.Body) > MaxShardBody) || !parity && len(s.Body) > MaxDatagram {
		d.stats.BadLength++
		return nil
	}

	slot := int(s.Group % uint32(len(d.hist)))
	g := &d.hist[slot]
	switch {
	case !g.used || int32(s.Group-g.id) > 0:
		d.reset(slot, s)
	case g.id != s.Group:
		d.stats.TooOld++
		return nil
	}
	if g.done {
		d.stats.Unneeded++
		return nil
	}
	if s.Parity != g.m {
		d.stats.Inconsistent++
		return nil
	}
	if parity {
		d.addParity(slot, g, s, now)
	} else {
		d.addData(slot, g, s, now)
	}
	return d.out
}

// reset makes slot the record of s's group, dropping the older group there.
func (d *Decoder) reset(slot int, s Shard) {
	g := &d.hist[slot]
	if g.used && g.buf >= 0 {
		d.stats.Evicted++
		d.release(g)
	}
	if g.used && !g.done {
		want := int(g.kp)
		if want == 0 {
			want = g.maxIdx + 1
		}
		if lost := want - g.nData; lost > 0 {
			d.stats.Lost += uint64(lost)
		}
	}
	*g = group{id: s.Group, used: true, m: s.Parity, maxIdx: -1, buf: -1}
}

func (d *Decoder) addData(slot int, g *group, s Shard, now time.Time) {
	switch {
	case g.k != 0 && s.Data != g.k,
		g.kp != 0 && s.Index >= g.kp,
		g.shardLen != 0 && len(s.Body)+2 > g.shardLen:
		d.stats.Inconsistent++
		return
	case g.has(s.Index):
		d.stats.Duplicate++
		return
	}
	g.k = s.Data
	g.set(s.Index)
	g.nData++
	g.maxIdx = max(g.maxIdx, int(s.Index))
	g.maxLen = max(g.maxLen, len(s.Body))
	d.out = append(d.out, s.Body)
	d.stats.Delivered++
	if d.complete(g) || g.m == 0 || g.norepair {
		return
	}
	if d.store(slot, g, s.Index, s.Body, now) {
		d.repair(g)
	}
}

func (d *Decoder) addParity(slot int, g *group, s Shard, now time.Time) {
	switch {
	case g.kp != 0 && s.Data != g.kp,
		g.k != 0 && s.Data > g.k,
		g.maxIdx >= int(s.Data),
		g.shardLen != 0 && len(s.Body) != g.shardLen,
		g.maxLen+2 > len(s.Body):
		d.stats.Inconsistent++
		return
	case g.has(s.Index):
		d.stats.Duplicate++
		return
	case g.norepair:
		d.stats.Unneeded++
		return
	}
	g.kp = s.Data
	g.shardLen = len(s.Body)
	g.set(s.Index)
	if d.complete(g) {
		return
	}
	g.nParity++
	if d.store(slot, g, s.Index, s.Body, now) {
		d.repair(g)
	}
}

// complete marks g done, and frees its buffer, once all its data shards are
// delivered.
func (d *Decoder) complete(g *group) bool {
	k := g.kp
	if k == 0 {
		k = g.k
	}
	if g.nData < int(k) {
		return false
	}
	g.done = true
	if g.buf >= 0 {
		d.release(g)
	}
	return true
}

// store copies a shard body into g's buffer, taking a buffer (and dropping the
// oldest group's) if g has none. It reports false when the body cannot be
// kept: g is then no longer repairable.
func (d *Decoder) store(slot int, g *group, i uint8, body []byte, now time.Time) bool {
	if g.buf < 0 {
		if len(d.free) == 0 {
			d.evictOldest(-1)
		}
		g.buf = d.free[len(d.free)-1]
		d.free = d.free[:len(d.free)-1]
		b := &d.bufs[g.buf]
		b.owner = slot
		b.created = now
		if d.next.IsZero() || now.Add(d.lim.Timeout).Before(d.next) {
			d.next = now.Add(d.lim.Timeout)
		}
	}
	for d.bytes+len(body) > d.lim.Bytes && d.InFlight() > 1 {
		d.evictOldest(g.buf)
	}
	if d.bytes+len(body) > d.lim.Bytes {
		d.stats.Evicted++
		d.release(g)
		g.norepair = true
		return false
	}
	b := &d.bufs[g.buf]
	b.off[i] = int32(len(b.arena))
	b.n[i] = int32(len(body))
	b.arena = append(b.arena, body...)
	d.bytes += len(body)
	return true
}

// evictOldest drops the buffer of the group that has had one longest, other
// than the buffer keep.
func (d *Decoder) evictOldest(keep int) {
	oldest := -1
	for i := range d.bufs {
		b := &d.bufs[i]
		if b.owner < 0 || i == keep {
			continue
		}
		if oldest < 0 || b.created.Before(d.bufs[oldest].created) {
			oldest = i
		}
	}
	if oldest < 0 {
		return
	}
	g := &d.hist[d.bufs[oldest].owner]
	d.stats.Evicted++
	d.release(g)
	g.norepair = true
}

// release frees g's buffer.
func (d *Decoder) release(g *group) {
	b := &d.bufs[g.buf]
	d.bytes -= len(b.arena)
	b.arena = b.arena[:0]
	if cap(b.arena) > 2*d.lim.Bytes/d.lim.Groups {
		b.arena = nil // keep what stays allocated near the limit when idle
	}
	b.owner = -1
	d.free = append(d.free, g.buf)
	g.buf = -1
}

// Expire drops the buffers of the groups open for repair longer than the
// timeout. Add calls it; call it also when no shards come, to free memory.
func (d *Decoder) Expire(now time.Time) {
	if d.next.IsZero() || now.Before(d.next) {
		return
	}
	d.next = time.Time{}
	for i := range d.bufs {
		b := &d.bufs[i]
		if b.owner < 0 {
			continue
		}
		if end := b.created.Add(d.lim.Timeout); !now.Before(end) {
			g := &d.hist[b.owner]
			d.stats.Expired++
			d.release(g)
			g.norepair = true
		} else if d.next.IsZero() || end.Before(d.next) {
			d.next = end
		}
	}
}

// repair rebuilds g's missing data shards once enough shards are buffered, and
// appends their datagrams to d.out.
func (d *Decoder) repair(g *group) {
	kp, m, size := int(g.kp), int(g.m), g.shardLen
	if kp == 0 || g.nData+g.nParity < kp {
		return
	}
	if kp*size > d.lim.Bytes {
		d.giveUp(g)
		return
	}
	code, err := d.code(kp, m)
	if err != nil {
		d.giveUp(g)
		return
	}
	buf := &d.bufs[g.buf]
	d.scratch = grow(d.scratch, kp*size)
	shards := d.shards[:kp+m]
	for i := range kp {
		sb := d.scratch[i*size : (i+1)*size : (i+1)*size]
		if !g.has(uint8(i)) {
			shards[i] = sb[:0]
			continue
		}
		body := buf.body(uint8(i))
		binary.BigEndian.PutUint16(sb, uint16(len(body)))
		copy(sb[2:], body)
		clear(sb[2+len(body):])
		shards[i] = sb
	}
	for i := kp; i < kp+m; i++ {
		shards[i] = nil
		if g.has(uint8(i)) {
			shards[i] = buf.body(uint8(i))
		}
	}
	if err := code.ReconstructData(shards); err != nil {
		d.giveUp(g)
		return
	}
	for i := range kp {
		if g.has(uint8(i)) {
			continue
		}
		g.set(uint8(i))
		g.nData++
		sb := shards[i]
		if len(sb) != size {
			d.stats.BadPrefix++
			continue
		}
		l := int(binary.BigEndian.Uint16(sb))
		if l > size-2 {
			d.stats.BadPrefix++
			continue
		}
		d.out = append(d.out, sb[2:2+l])
		d.stats.Recovered++
	}
	d.complete(g)
}

func (d *Decoder) giveUp(g *group) {
	d.stats.RepairFailed++
	d.release(g)
	g.norepair = true
}

// code returns the Reed-Solomon code for k data and m parity shards, keeping
// at most maxCodes of them.
func (d *Decoder) code(k, m int) (reedsolomon.Encoder, error) {
	key := uint16(k)<<8 | uint16(m)
	if c, ok := d.codes[key]; ok {
		return c, nil
	}
	if len(d.codes) >= maxCodes {
		for old := range d.codes {
			delete(d.codes, old)
			break
		}
	}
	c, err := newCode(k, m, cacheable(k, m))
	if err != nil {
		return nil, fmt.Errorf("fec: decoder: %w", err)
	}
	d.codes[key] = c
	return c, nil
}
