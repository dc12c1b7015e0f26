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
// shards: each datagram leaves at once as a data shard, and every group's
// parity follows when the group fills or its flush delay passes. It is not
// safe for concurrent use: callers hold its lock (Lock, Unlock) from Add or
// FlushDue until they have sent Pkts and called Reset.
type FECSender struct {
	sync.Mutex
	encs    []*fec.Encoder // interleaved: datagram i goes to encs[i%len]
	turn    int
	bufs    [][]byte // packet buffers, reused from batch to batch
	scratch []byte   // flow and datagram, the encoder's input
	nonce   Nonce
	// Pkts are the sealed packets since the last Reset, in order.
	Pkts [][]byte
	// Parity counts the parity packets among Pkts, for the caller's
	// counters.
	Parity uint64

	timer   *time.Timer // runs the flush function when parity is due
	armed   time.Time   // the deadline the timer is set for
	stopped bool
}

// NewFECSender returns a sender for groups of shape p whose parity is due
// flushDelay after a group's first datagram. With depth D above 1, D groups
// are open at once and consecutive datagrams go to each in turn, so that a
// burst of losses on one path is shared among D groups.
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

// Deadline returns when the earliest open group's parity is due, and false
// when no group is open.
func (f *FECSender) Deadline() (time.Time, bool) {
	var first time.Time
	ok := false
	for _, e := range f.encs {
		if d, open := e.Deadline(); open && (!ok || d.Before(first)) {
			first, ok = d, true
		}
	}
	return first, ok
}

// SetFlush makes the sender call flush, in a goroutine of its own, when an
// open group's parity falls due after Arm; flush takes the lock and calls
// FlushDue. Call it once, before the first Arm.
func (f *FECSender) SetFlush(flush func()) {
	f.timer = time.AfterFunc(time.Hour, flush)
	f.timer.Stop()
}

// Arm sets the flush timer for the open group's deadline if it is not set
// for it already. Call it with the lock held, after Add or FlushDue.
func (f *FECSender) Arm(now time.Time) {
	d, ok := f.Deadline()
	if !ok || f.timer == nil || f.stopped || d.Equal(f.armed) {
		return
	}
	f.armed = d
	f.timer.Reset(max(d.Sub(now), 0))
}

// Stop stops the flush timer for good; a flush already started may still
// run. It takes the lock.
func (f *FECSender) Stop() {
	f.Lock()
	defer f.Unlock()
	f.stopped = true
	if f.timer != nil {
		f.timer.Stop()
	}
}

// Stopped reports whether Stop was called; a flush function checks it with
// the lock held.
func (f *FECSender) Stopped() bool { return f.stopped }

// Reset forgets the packets sealed so far; their buffers are reused.
func (f *FECSender) Reset() {
	f.Pkts = f.Pkts[:0]
	f.Parity = 0
}

// Add seals datagram, of flow, as a data shard, and the parity of its group
// if it fills it, appending the packets to Pkts. The datagram must fit (see
// FECFits).
func (f *FECSender) Add(st *State, flow uint32, datagram []byte, now time.Time) error {
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

// FlushDue seals the parity of the open groups whose flush delay has passed.
func (f *FECSender) FlushDue(st *State, now time.Time) error {
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
		f.Parity++
	}
	return nil
}

// seal seals one shard into the next packet buffer.
func (f *FECSender) seal(st *State, s fec.Shard) error {
	n := 1 + fec.HeaderLen + len(s.Body)
	i := len(f.Pkts)
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
	f.Pkts = append(f.Pkts, pkt)
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
// them, and a decoder bounded by FECRxBytes. When a group's parity falls due
// by the timer, send is called with the sender's lock held to put its
// packets on the paths; it must Reset the sender. Sealing errors go to fail.
func EnableFEC(st *State, p fec.Params, flushDelay time.Duration, depth int, send func(*FECSender), fail func(error)) error {
	if p == (fec.Params{}) {
		p = fec.DefaultParams()
	}
	tx, err := NewFECSender(p, flushDelay, depth)
	if err != nil {
		return err
	}
	tx.SetFlush(func() {
		tx.Lock()
		defer tx.Unlock()
		if tx.Stopped() {
			return
		}
		now := time.Now()
		if err := tx.FlushDue(st, now); err != nil {
			fail(err)
		}
		send(tx)
		tx.Arm(now)
	})
	st.FECTx = tx
	st.FECRx = NewFECReceiver(fec.Limits{Bytes: FECRxBytes})
	return nil
}
