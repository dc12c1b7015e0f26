package session

import (
	"crypto/subtle"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mptunnel/mptunnel/internal/metrics"
	"github.com/mptunnel/mptunnel/internal/replay"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// Parity on top of copies: the sender XORs the plaintexts of a group of its
// packets (those repair keeps) into one parity packet, sent on every path;
// a receiver that lost one packet of the group on every path rebuilds it
// from the parity and the others at once, without the round trip a repair
// request takes. docs/PROTOCOL.md has the layout.

// ParitySpan is the most consecutive counters one parity covers.
const ParitySpan = 32

// ParityFlush is how long a group that does not fill waits before its
// parity goes with the packets it has.
const ParityFlush = 5 * time.Millisecond

// ParitySender makes a session's parity packets. Its group size is set by
// SetGroup (0: off, the default). It is safe for concurrent use.
type ParitySender struct {
	k     atomic.Int32 // packets a group, 0: off
	limit int          // the largest plaintext a group covers
	ready atomic.Bool  // some group's parity waits for Take
	cnt   *metrics.Counters

	mu      sync.Mutex
	open    bool
	base    uint64
	members uint32
	n       int
	xor     []byte
	lenXor  uint16
	started time.Time
	done    [][]byte // closed groups' parity plaintexts, at wire.HeaderLen in each, with room for the tag
	sent    uint64   // parity packets made

	timer   *time.Timer
	armed   bool // the timer will fire: it is reset only when it will not
	stopped bool
}

// SetGroup sets how many packets one parity covers, 2 to ParitySpan, or 0
// to send none.
func (ps *ParitySender) SetGroup(k int) {
	ps.k.Store(int32(min(max(k, 0), ParitySpan)))
}

// Group returns the group size in use, 0 when off.
func (ps *ParitySender) Group() int { return int(ps.k.Load()) }

// Sent returns how many parity packets were made.
func (ps *ParitySender) Sent() uint64 {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.sent
}

// add XORs the plaintext of the packet sealed with ctr into the open group.
func (ps *ParitySender) add(ctr uint64, plain []byte) {
	k := int(ps.k.Load())
	if k == 0 || len(plain) > ps.limit {
		return
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.open && ctr < ps.base {
		return // sealed before the group began, added after: not covered
	}
	if ps.open && ctr >= ps.base+ParitySpan {
		ps.closeLocked()
	}
	if !ps.open {
		ps.open, ps.base, ps.members, ps.n, ps.xor, ps.lenXor, ps.started = true, ctr, 0, 0, ps.xor[:0], 0, time.Now()
		if ps.timer != nil && !ps.stopped && !ps.armed {
			// One timer for all groups: when it fires it closes the
			// open group if that has waited long enough, or waits
			// for the rest.
			ps.armed = true
			ps.timer.Reset(ParityFlush)
		}
	}
	ps.members |= 1 << (ctr - ps.base)
	ps.n++
	if len(plain) > len(ps.xor) {
		ps.xor = append(ps.xor, make([]byte, len(plain)-len(ps.xor))...)
	}
	subtle.XORBytes(ps.xor[:len(plain)], ps.xor[:len(plain)], plain)
	ps.lenXor ^= uint16(len(plain))
	if ps.n >= k {
		ps.closeLocked()
	}
}

// closeLocked closes the open group, its parity plaintext made ready for
// take; the caller holds ps.mu.
func (ps *ParitySender) closeLocked() {
	ps.open = false
	b := make([]byte, wire.HeaderLen+wire.ParityHeaderLen+len(ps.xor)+wire.TagLen)
	wire.PutParity(b[wire.HeaderLen:], wire.Parity{Base: uint32(ps.base), Members: ps.members, LenXor: ps.lenXor})
	copy(b[wire.HeaderLen+wire.ParityHeaderLen:], ps.xor)
	ps.done = append(ps.done, b)
	ps.ready.Store(true)
	ps.sent++
}

// Take seals the parity of the groups closed so far under st and returns
// the packets, for the caller to put on every path: after the packets that
// closed them, so that the parity comes last.
func (ps *ParitySender) Take(st *State) [][]byte {
	if !ps.ready.Load() {
		return nil
	}
	ps.mu.Lock()
	done := ps.done
	ps.done = nil
	ps.ready.Store(false)
	ps.mu.Unlock()
	var nonce Nonce
	out := done[:0]
	for _, b := range done {
		if pkt, err := st.Seal(b, len(b)-wire.HeaderLen-wire.TagLen, &nonce); err == nil {
			out = append(out, pkt)
		}
	}
	ps.cnt.ParitySent.Add(uint64(len(out)))
	return out
}

// flush closes a group that has waited ParityFlush, and sends what Take
// gives with send.
func (ps *ParitySender) flush(st *State, send func(pkts [][]byte)) {
	ps.mu.Lock()
	ps.armed = false
	if ps.stopped {
		ps.mu.Unlock()
		return
	}
	if ps.open {
		if wait := ParityFlush - time.Since(ps.started); wait > 0 {
			ps.armed = true
			ps.timer.Reset(wait)
		} else {
			ps.closeLocked()
		}
	}
	ps.mu.Unlock()
	if pkts := ps.Take(st); len(pkts) > 0 {
		send(pkts)
	}
}

// stop stops the flush timer for good.
func (ps *ParitySender) stop() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.stopped = true
	if ps.timer != nil {
		ps.timer.Stop()
	}
}

// EnableParity gives st a ParitySender, off until SetGroup, covering
// plaintexts of up to maxPlain-wire.ParityHeaderLen bytes, whose flushed
// parity goes to send; and a ParityReceiver, which stores the peer's
// plaintexts once the peer sends parity.
func EnableParity(st *State, maxPlain int, cnt *metrics.Counters, send func(pkts [][]byte)) {
	ps := &ParitySender{limit: maxPlain - wire.ParityHeaderLen, cnt: cnt}
	ps.timer = time.AfterFunc(time.Hour, func() { ps.flush(st, send) })
	ps.timer.Stop()
	st.ParityTx = ps
	st.ParityRx = new(ParityReceiver)
}

// paritySlots is how many of the peer's latest plaintexts a ParityReceiver
// keeps, by counter.
const paritySlots = 256

// paritySlot is a stored plaintext.
type paritySlot struct {
	ctr uint64
	ok  bool
	buf []byte
}

// ParityReceiver rebuilds the peer's packets from its parity. It is safe for
// concurrent use.
type ParityReceiver struct {
	on        atomic.Bool // the peer sends parity: store its plaintexts
	waiting   atomic.Bool // some parity waits for more of its group
	mu        sync.Mutex
	slots     []paritySlot
	stash     []stashed
	recovered uint64
}

// stashed is a parity that came when more than one of its group was still
// missing: it may yet rebuild one when the others come.
type stashed struct {
	base    uint64
	members uint32
	lenXor  uint16
	body    []byte
}

// maxStash bounds the parities kept waiting.
const maxStash = 16

// Recovered returns how many packets parity rebuilt.
func (pr *ParityReceiver) Recovered() uint64 {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.recovered
}

// store keeps a copy of the plaintext of the peer's packet ctr, once the
// peer sends parity.
func (pr *ParityReceiver) store(ctr uint64, plain []byte) {
	if !pr.on.Load() {
		return
	}
	pr.mu.Lock()
	s := &pr.slots[ctr%paritySlots]
	s.ctr, s.ok = ctr, true
	s.buf = append(s.buf[:0], plain...)
	pr.mu.Unlock()
}

// fullCounter returns the counter nearest to last whose low 32 bits are low.
func fullCounter(low uint32, last uint64) uint64 {
	c := last&^0xffffffff | uint64(low)
	switch {
	case c > last && c-last > 1<<31 && c >= 1<<32:
		c -= 1 << 32
	case c < last && last-c > 1<<31:
		c += 1 << 32
	}
	return c
}

// Rebuild takes a parity message m from the peer: when exactly one packet
// of its group is missing and the others' plaintexts are stored, it
// rebuilds that packet's plaintext into dst, marks its counter received and
// returns both; when more are missing, it keeps the parity for Retry. The
// plaintext is the caller's to keep.
func (st *State) Rebuild(m wire.Message) (uint64, []byte, bool) {
	pr := st.ParityRx
	if pr == nil {
		return 0, nil, false
	}
	if !pr.on.Load() {
		pr.mu.Lock()
		if pr.slots == nil {
			pr.slots = make([]paritySlot, paritySlots)
		}
		pr.mu.Unlock()
		pr.on.Store(true)
	}
	st.mu.Lock()
	last := st.window.Last()
	st.mu.Unlock()
	p := stashed{base: fullCounter(m.Parity.Base, last), members: m.Parity.Members, lenXor: m.Parity.LenXor, body: m.Body}
	pr.mu.Lock()
	ctr, plain, ok, keep := st.rebuildLocked(&p)
	if keep {
		if len(pr.stash) == maxStash {
			pr.stash = pr.stash[1:]
		}
		p.body = append([]byte(nil), p.body...)
		pr.stash = append(pr.stash, p)
		pr.waiting.Store(true)
	}
	pr.mu.Unlock()
	return ctr, plain, ok
}

// Retry tries the parities waiting for more of their group, now that the
// peer's packet ctr came, and rebuilds at most one packet as Rebuild does.
func (st *State) Retry(ctr uint64) (uint64, []byte, bool) {
	pr := st.ParityRx
	if pr == nil || !pr.waiting.Load() {
		return 0, nil, false
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	for i := 0; i < len(pr.stash); i++ {
		p := &pr.stash[i]
		if ctr < p.base || ctr >= p.base+ParitySpan {
			continue
		}
		rc, plain, ok, keep := st.rebuildLocked(p)
		if !keep {
			pr.stash = append(pr.stash[:i], pr.stash[i+1:]...)
			i--
		}
		if ok {
			pr.waiting.Store(len(pr.stash) > 0)
			return rc, plain, true
		}
	}
	pr.waiting.Store(len(pr.stash) > 0)
	return 0, nil, false
}

// rebuildLocked rebuilds p's one missing packet, if it can; keep reports
// whether p may yet rebuild one (more than one missing, the others
// stored). The caller holds pr.mu.
func (st *State) rebuildLocked(p *stashed) (ctr uint64, plain []byte, ok, keep bool) {
	pr := st.ParityRx
	missing := -1
	st.mu.Lock()
	for i := range ParitySpan {
		if p.members&(1<<i) == 0 {
			continue
		}
		c := p.base + uint64(i)
		switch st.window.Check(c) {
		case replay.Accepted:
			if missing >= 0 {
				st.mu.Unlock()
				return 0, nil, false, true
			}
			missing = i
		case replay.TooOld:
			st.mu.Unlock()
			return 0, nil, false, false
		default:
			if s := &pr.slots[c%paritySlots]; !s.ok || s.ctr != c {
				st.mu.Unlock()
				return 0, nil, false, false // received, but not stored: no rebuilding
			}
		}
	}
	st.mu.Unlock()
	if missing < 0 {
		return 0, nil, false, false
	}
	dst := append([]byte(nil), p.body...)
	n := p.lenXor
	for i := range ParitySpan {
		if p.members&(1<<i) == 0 || i == missing {
			continue
		}
		s := &pr.slots[(p.base+uint64(i))%paritySlots]
		if len(s.buf) > len(dst) {
			return 0, nil, false, false // longer than the parity: not a group of the peer's
		}
		subtle.XORBytes(dst[:len(s.buf)], dst[:len(s.buf)], s.buf)
		n ^= uint16(len(s.buf))
	}
	if int(n) > len(dst) || n == 0 {
		return 0, nil, false, false
	}
	ctr = p.base + uint64(missing)
	st.mu.Lock()
	res := st.window.Update(ctr)
	st.mu.Unlock()
	if res != replay.Accepted {
		return 0, nil, false, false
	}
	pr.recovered++
	s := &pr.slots[ctr%paritySlots]
	s.ctr, s.ok = ctr, true
	s.buf = append(s.buf[:0], dst[:n]...)
	return ctr, dst[:n], true, false
}
