package session

import (
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/mptunnel/mptunnel/internal/fec"
	"github.com/mptunnel/mptunnel/internal/metrics"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// fecOverhead is what a datagram gains as a data shard inside a sealed
// plaintext: the kind byte, the shard header and the flow. Parity shards are
// 2 bytes longer than the group's longest data shard body.
const fecOverhead = 1 + fec.HeaderLen + 4

// FECFits reports whether an n-byte datagram travels as an FEC shard: its
// data shard and the parity shards of its group each fit one packet whose
// plaintext holds at most maxPlain bytes. Larger datagrams are cut and sent
// on every path instead.
func FECFits(n, maxPlain int) bool { return fecOverhead+n+2 <= maxPlain }

// FECSender turns one direction of a session's datagrams into sealed FEC
// shards: each datagram leaves as a data shard, and every group's parity
// follows when the group fills or its flush delay passes. It is safe for
// concurrent use: Add seals under the sender's own lock, and Flush (or the
// flush timer) hands what was sealed to the send function EnableFEC was
// given, under the same lock, which is taken before any the send function
// takes.
type FECSender struct {
	mu      sync.Mutex
	encs    []*fec.Encoder // interleaved: datagram i goes to encs[i%len]
	turn    int
	bufs    [][]byte // packet buffers, reused from batch to batch
	scratch []byte   // flow and datagram, the encoder's input
	nonce   Nonce
	pkts    [][]byte // the packets sealed since the last flush, in order
	parity  uint64   // how many of pkts are parity

	send    func(pkts [][]byte, parity uint64)
	timer   *time.Timer // runs the flush when parity is due
	armed   time.Time   // the deadline the timer is set for
	stopped bool
}

// NewFECSender returns a sender for groups of shape p whose parity is due
// flushDelay after a group's first datagram. With depth D above 1, D groups
// are open at once and consecutive datagrams go to each in turn, so that a
// burst of losses on one path is shared among D groups. What it seals is
// dropped until EnableFEC gives it somewhere to go.
func NewFECSender(p fec.Params, flushDelay time.Duration, depth int) (*FECSender, error) {
	depth = max(depth, 1)
	f := &FECSender{}
	for j := range depth {
		enc, err := fec.NewEncoder(p, flushDelay)
		if err != nil {
			return nil, err
		}
		enc.SetGroups(uint32(j), uint32(depth))
		f.encs = append(f.encs, enc)
	}
	return f, nil
}

// deadline returns when the earliest open group's parity is due, and false
// when no group is open.
func (f *FECSender) deadline() (time.Time, bool) {
	var first time.Time
	ok := false
	for _, e := range f.encs {
		if d, open := e.Deadline(); open && (!ok || d.Before(first)) {
			first, ok = d, true
		}
	}
	return first, ok
}

// arm sets the flush timer for the open group's deadline if it is not set
// for it already; the caller holds the lock.
func (f *FECSender) arm(now time.Time) {
	d, ok := f.deadline()
	if !ok || f.timer == nil || f.stopped || d.Equal(f.armed) {
		return
	}
	f.armed = d
	f.timer.Reset(max(d.Sub(now), 0))
}

// Stop stops the flush timer for good; a flush already started may still
// run, and sends nothing once it has the lock.
func (f *FECSender) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = true
	if f.timer != nil {
		f.timer.Stop()
	}
}

// Add seals datagram, of flow, as a data shard, and the parity of its group
// if it fills it; they go at the next Flush. The datagram must fit (see
// FECFits).
func (f *FECSender) Add(st *State, flow uint32, datagram []byte, now time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.scratch = append(binary.BigEndian.AppendUint32(f.scratch[:0], flow), datagram...)
	enc := f.encs[f.turn]
	f.turn = (f.turn + 1) % len(f.encs)
	s, parity, err := enc.Add(f.scratch, now)
	if err != nil {
		return err
	}
	if err := f.seal(st, s); err != nil {
		return err
	}
	return f.sealParity(st, parity)
}

// Flush sends what Add sealed since the last flush and arms the flush timer
// for the parity of groups that are still open.
func (f *FECSender) Flush(now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushLocked(now)
}

// flushLocked is Flush with the lock held.
func (f *FECSender) flushLocked(now time.Time) {
	if len(f.pkts) > 0 && f.send != nil && !f.stopped {
		f.send(f.pkts, f.parity)
	}
	f.pkts = f.pkts[:0]
	f.parity = 0
	f.arm(now)
}

// flushDue seals the parity of the open groups whose flush delay has passed;
// the caller holds the lock.
func (f *FECSender) flushDue(st *State, now time.Time) error {
	for _, e := range f.encs {
		parity, err := e.FlushDue(now)
		if err != nil {
			return err
		}
		if err := f.sealParity(st, parity); err != nil {
			return err
		}
	}
	return nil
}

func (f *FECSender) sealParity(st *State, parity []fec.Shard) error {
	for _, p := range parity {
		if err := f.seal(st, p); err != nil {
			return err
		}
		f.parity++
	}
	return nil
}

// seal seals one shard into the next packet buffer.
func (f *FECSender) seal(st *State, s fec.Shard) error {
	n := 1 + fec.HeaderLen + len(s.Body)
	i := len(f.pkts)
	if i == len(f.bufs) {
		f.bufs = append(f.bufs, nil)
	}
	need := wire.HeaderLen + n + wire.TagLen
	if cap(f.bufs[i]) < need {
		f.bufs[i] = make([]byte, need)
	}
	buf := f.bufs[i][:need]
	buf[wire.HeaderLen] = wire.MsgFEC
	s.AppendTo(buf[wire.HeaderLen+1 : wire.HeaderLen+1 : need])
	pkt, err := st.Seal(buf, n, &f.nonce)
	if err != nil {
		return err
	}
	f.pkts = append(f.pkts, pkt)
	return nil
}

// FECReceiver rebuilds one direction of a session's datagrams from the FEC
// shards that arrive; it is safe for concurrent use.
type FECReceiver struct {
	mu   sync.Mutex
	dec  *fec.Decoder
	last fec.Stats // what was counted so far
}

// NewFECReceiver returns a receiver bounded by lim.
func NewFECReceiver(lim fec.Limits) *FECReceiver {
	return &FECReceiver{dec: fec.NewDecoder(lim)}
}

// errShard reports an FEC shard or rebuilt datagram that does not parse.
var errShard = errors.New("malformed fec shard")

// receive takes the body of an MsgFEC message and calls deliver with each
// datagram it gives, valid during the call only. It counts recovered and
// lost datagrams and dropped shards in cnt.
func (r *FECReceiver) receive(body []byte, now time.Time, cnt *metrics.Counters, deliver func(flow uint32, datagram []byte)) error {
	s, err := fec.ParseShard(body)
	if err != nil {
		cnt.Malformed.Add(1)
		return errShard
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range r.dec.Add(s, now) {
		if len(d) < 4 {
			cnt.Malformed.Add(1)
			continue
		}
		deliver(binary.BigEndian.Uint32(d), d[4:])
	}
	st := r.dec.Stats()
	if n := st.Recovered - r.last.Recovered; n > 0 {
		cnt.FECRecovered.Add(n)
	}
	if n := st.Lost - r.last.Lost; n > 0 {
		cnt.FECLost.Add(n)
	}
	if n := st.Dropped() - r.last.Dropped(); n > 0 {
		cnt.Malformed.Add(n)
	}
	r.last = st
	return nil
}

// Expire frees the buffers of groups waiting too long for repair.
func (r *FECReceiver) Expire(now time.Time) {
	r.mu.Lock()
	r.dec.Expire(now)
	r.mu.Unlock()
}

// FECRxBytes bounds the shard bytes a session's fec decoder buffers for
// repair (64 groups of 12 full-size shards fit).
const FECRxBytes = 2 << 20

// EnableFEC gives st the fec mode's sender and receiver: groups of shape p
// (fec.DefaultParams when zero), flushDelay and depth as NewFECSender takes
// them, and a decoder bounded by FECRxBytes. The sealed packets go to send,
// called with the sender's lock held, at each Flush and when a group's
// parity falls due by the timer: it puts them on the paths (parity of them
// are parity shards) and must not keep them. Sealing errors go to fail.
func EnableFEC(st *State, p fec.Params, flushDelay time.Duration, depth int, send func(pkts [][]byte, parity uint64), fail func(error)) error {
	if p == (fec.Params{}) {
		p = fec.DefaultParams()
	}
	tx, err := NewFECSender(p, flushDelay, depth)
	if err != nil {
		return err
	}
	tx.send = send
	tx.timer = time.AfterFunc(time.Hour, func() {
		tx.mu.Lock()
		defer tx.mu.Unlock()
		if tx.stopped {
			return
		}
		now := time.Now()
		if err := tx.flushDue(st, now); err != nil {
			fail(err)
		}
		tx.flushLocked(now)
	})
	tx.timer.Stop()
	st.FECTx = tx
	st.FECRx = NewFECReceiver(fec.Limits{Bytes: FECRxBytes})
	return nil
}
