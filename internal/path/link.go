package path

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/mptunnel/mptunnel/internal/wire"
)

// Link is a path as a tunnel end keeps it: the path's packet counters, which
// the hot path updates without locks, and its Path estimator behind a lock.
// Both ends hold one Link per path and drive it the same way: Probe when a
// probe is due, OnProbe for the peer's probes (whose answer goes back on the
// same path), OnProbeReply for answers to ours, Tick every probe interval.
type Link struct {
	// ID is the client's index of the path, carried in every probe.
	ID uint8

	TxPackets, TxBytes atomic.Uint64 // tunnel packets sent on the path
	RxPackets, RxBytes atomic.Uint64 // tunnel packets received from the path
	Duplicates         atomic.Uint64 // copies from this path that another path delivered first

	down atomic.Bool // the estimator's state is Down; read on every send

	// heard is when an authentic packet was last heard, as time since
	// epoch (which keeps the monotonic clock): set by OnHeard without the
	// lock, handed to the estimator when the lock is next taken.
	epoch time.Time
	heard atomic.Int64

	mu     sync.Mutex
	health *Path
}

// NewLink returns a Link in the Probing state.
func NewLink(id uint8, p Params, now time.Time) *Link {
	return &Link{ID: id, health: New(p, now), epoch: now}
}

// CountTx records a packet of n bytes sent on the path.
func (l *Link) CountTx(n int) {
	l.TxPackets.Add(1)
	l.TxBytes.Add(uint64(n))
}

// CountRx records a packet of n bytes received from the path.
func (l *Link) CountRx(n int) {
	l.RxPackets.Add(1)
	l.RxBytes.Add(uint64(n))
}

// Down reports whether the path is down.
func (l *Link) Down() bool { return l.down.Load() }

// ProbeDue reports whether it is time to probe the path.
func (l *Link) ProbeDue(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.health.ProbeDue(now)
}

// Probe records a probe sent now and returns its body. The counts include the
// probe itself, which the caller must send (and count with CountTx).
func (l *Link) Probe(now time.Time) wire.Probe {
	tx := l.TxPackets.Load() + 1
	l.mu.Lock()
	seq := l.health.NextProbeTx(now, tx)
	l.mu.Unlock()
	return wire.Probe{Path: l.ID, Seq: seq, Sent: now.UnixNano(), Tx: tx, Rx: l.RxPackets.Load()}
}

// OnProbe takes the peer's probe (already counted with CountRx) and returns
// the body of the reply to send back on the same path.
func (l *Link) OnProbe(pr wire.Probe, now time.Time) wire.Probe {
	tx, rx := l.TxPackets.Load(), l.RxPackets.Load()
	l.mu.Lock()
	l.health.OnHeard(now)
	l.health.OnProbeCounts(pr.Tx, rx, now)
	l.mu.Unlock()
	pr.Tx, pr.Rx = tx+1, rx
	return pr
}

// OnProbeReply takes the peer's answer to one of our probes.
func (l *Link) OnProbeReply(pr wire.Probe, now time.Time) {
	rx := l.RxPackets.Load()
	l.mu.Lock()
	l.health.OnReplyCounts(pr.Seq, time.Unix(0, pr.Sent), pr.Tx, pr.Rx, rx, now)
	l.mu.Unlock()
}

// OnHeard records any other authentic packet from the path. It takes no
// lock: readers call it for every batch.
func (l *Link) OnHeard(now time.Time) {
	d := int64(now.Sub(l.epoch))
	for {
		old := l.heard.Load()
		if d <= old || l.heard.CompareAndSwap(old, d) {
			return
		}
	}
}

// syncHeard hands the estimator the latest OnHeard; the caller holds l.mu.
func (l *Link) syncHeard() {
	if d := l.heard.Load(); d > 0 {
		l.health.OnHeard(l.epoch.Add(time.Duration(d)))
	}
}

// Tick runs the state machine; see Path.Tick.
func (l *Link) Tick(now time.Time) (changed bool, from, to State, reason string) {
	l.mu.Lock()
	l.syncHeard()
	changed, from, to, reason = l.health.Tick(now)
	l.down.Store(l.health.State() == Down)
	l.mu.Unlock()
	return changed, from, to, reason
}

// Stats returns the path's estimates.
func (l *Link) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.syncHeard()
	return l.health.Stats()
}

// CountTxBatch records packets sent on the path, bytes in all.
func (l *Link) CountTxBatch(packets, bytes int) {
	l.TxPackets.Add(uint64(packets))
	l.TxBytes.Add(uint64(bytes))
}

// Suspect reports whether the path's latest probe is overdue; see Path.Suspect.
func (l *Link) Suspect(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.health.Suspect(now)
}
