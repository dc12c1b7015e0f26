package session

import (
	"sync"
	"time"

	"github.com/mptunnel/mptunnel/internal/metrics"
	"github.com/mptunnel/mptunnel/internal/repair"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// keeps reports whether a packet whose plaintext starts with kind is kept
// for repair: what carries datagrams and flow state. Probes are sealed for
// one path and answered on it; a close, a rekey and a repair request have
// their own retries.
func keeps(kind byte) bool {
	switch kind {
	case wire.MsgData, wire.MsgFragment, wire.MsgFEC, wire.MsgDataTo, wire.MsgOpen, wire.MsgFlow, wire.MsgStream:
		return true
	}
	return false
}

// RingSize returns how many sealed packets a session keeps for repair at
// path MTU mtu: 4 MiB of them, between 256 and 4,096 (repair.NewRing then
// rounds it up to a power of two).
func RingSize(mtu int) int {
	return min(4096, max(256, (4<<20)/max(mtu, 1)))
}

// Repairer is a session's repair state: the packets it keeps for the peer
// to ask for again, and the peer's counters it watches for gaps.
type Repairer struct {
	// Keep holds this end's latest sealed packets.
	Keep *repair.Ring
	// Gaps watches the peer's counters.
	Gaps *repair.Tracker

	st      *State
	cnt     *metrics.Counters
	send    func(pkts [][]byte)
	mu      sync.Mutex // the timer's work, in turn
	timer   *time.Timer
	stopped bool
	told    repair.Stats // what cnt has been told of Gaps' counts
	due     []uint64
	buf     []byte
	pkts    [][]byte
}

// EnableRepair gives st a Repairer keeping ringSize packets, whose requests
// are sealed under st and given to send (to go on every path), and whose
// counts go to cnt.
func EnableRepair(st *State, ringSize int, cnt *metrics.Counters, send func(pkts [][]byte)) {
	r := &Repairer{Keep: repair.NewRing(ringSize), Gaps: new(repair.Tracker), st: st, cnt: cnt, send: send}
	r.timer = time.AfterFunc(time.Hour, r.ask)
	r.timer.Stop()
	st.Repair = r
}

// RepairHold returns about how long a packet the peer sent and every path
// lost takes to come after all, asked for again: the wait before the
// request and a round trip of the slowest path, with the wait again to
// spare. Zero when st does not repair.
func (st *State) RepairHold() time.Duration {
	if st == nil || st.Repair == nil {
		return 0
	}
	wait, retry := st.Repair.Gaps.Delays()
	return wait + retry
}

// seen notes the peer's counter ctr, arriving at now.
func (r *Repairer) seen(ctr uint64, now time.Time) {
	if due := r.Gaps.Seen(ctr, now); !due.IsZero() {
		r.mu.Lock()
		if !r.stopped {
			r.timer.Reset(due.Sub(now))
		}
		r.mu.Unlock()
	}
}

// ask sends the requests that are due and arms the timer for the next.
func (r *Repairer) ask() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	now := time.Now()
	var next time.Time
	r.due, next = r.Gaps.Due(now, r.due[:0])
	if len(r.due) > 0 {
		r.buf = append(r.buf[:0], make([]byte, wire.HeaderLen)...)
		r.buf = wire.AppendRepair(r.buf, r.due)
		n := len(r.buf) - wire.HeaderLen
		r.buf = append(r.buf, make([]byte, wire.TagLen)...)
		var nonce Nonce
		if pkt, err := r.st.Seal(r.buf, n, &nonce); err == nil {
			r.pkts = append(r.pkts[:0], pkt)
			r.send(r.pkts)
		}
	}
	r.report()
	if !next.IsZero() {
		r.timer.Reset(max(next.Sub(now), time.Millisecond))
	}
}

// report tells cnt what Gaps counted since the last report; the caller
// holds r.mu.
func (r *Repairer) report() {
	s := r.Gaps.Stats()
	r.cnt.RepairAsked.Add(s.Asked - r.told.Asked)
	r.cnt.RepairFilled.Add(s.Filled - r.told.Filled)
	r.cnt.RepairLost.Add(s.Lost + s.Missed - r.told.Lost - r.told.Missed)
	r.told = s
}

// stop stops the timer for good.
func (r *Repairer) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	r.timer.Stop()
	r.report()
}
