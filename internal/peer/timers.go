package peer

import (
	"log/slog"
	"time"

	pathpkg "github.com/mptunnel/mptunnel/internal/path"
	"github.com/mptunnel/mptunnel/internal/session"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// FastProbes is how many times a probe interval failover mode probes the
// paths that carry its data, so that a dead one is suspected, and copies
// start on the next, within about a fifth of a probe interval.
const FastProbes = 5

// Prober probes a session's paths and runs their state machines; it is one
// timer goroutine's, with that goroutine's sealer.
type Prober struct {
	W   Writer
	Log *slog.Logger
	sl  *session.Sealer
}

// NewProber returns a Prober that sends with w and logs path state changes
// to log.
func NewProber(w Writer, log *slog.Logger) *Prober {
	return &Prober{W: w, Log: log, sl: session.NewSealer()}
}

// probe sends a probe on p under st.
func (pr *Prober) probe(st *session.State, p *Path, now time.Time) {
	if pkt, err := pr.sl.SealProbe(st, wire.MsgProbe, p.Probe(now)); err == nil {
		pr.W.SendPath(p, pkt)
	}
}

// Fast probes, in failover mode, each path that sent anything but probes
// since the last round (it carries data); st nil probes nothing.
func (pr *Prober) Fast(st *session.State, paths []*Path, now time.Time) {
	for _, p := range paths {
		if st != nil && p.TxPackets.Load() != p.fastTx {
			pr.probe(st, p, now)
		}
		p.fastTx = p.TxPackets.Load()
	}
}

// Round is the once-a-probe-interval round: a probe on every path (all) or
// on each whose probe is due (st nil: none), then each path's state machine,
// each change logged with attrs (the session, say) and its reason.
func (pr *Prober) Round(st *session.State, paths []*Path, all bool, now time.Time, attrs ...any) {
	if st != nil && st.Repair != nil {
		st.Repair.Gaps.SetDelays(RepairDelays(paths, now))
	}
	if st != nil && st.ParityTx != nil {
		st.ParityTx.SetGroup(ParityGroup(paths))
	}
	for _, p := range paths {
		if st != nil && (all || p.ProbeDue(now)) {
			pr.probe(st, p, now)
		}
		if changed, from, to, reason := p.Tick(now); changed {
			a := append(attrs[:len(attrs):len(attrs)], "path", p.ID, "addr", p.Addr().String())
			if p.Name != "" {
				a = append(attrs[:len(attrs):len(attrs)], "path", p.Name)
			}
			pr.Log.Info("path state", append(a, "from", from.String(), "to", to.String(), "reason", reason)...)
		}
		p.fastTx = p.TxPackets.Load()
	}
}

// Repair's waits (see internal/repair): a counter skipped is asked for once
// the copies on the slower live paths had time to come, the spread of the
// live paths' one-way delays, plus repairMargin for jitter and the time a
// reader takes to get to a batch; it is asked for again after a round trip
// of the slowest live path and that wait.
const (
	repairMargin = 5 * time.Millisecond
	// repairMaxWait bounds the wait whatever the paths measure.
	repairMaxWait = 250 * time.Millisecond
)

// RepairDelays returns the repair waits for a session's paths at now: zero
// (the defaults) before any live path has measured a round trip.
func RepairDelays(paths []*Path, now time.Time) (wait, retry time.Duration) {
	var lo, hi time.Duration
	for _, p := range paths {
		s := p.Stats()
		if s.RTT == 0 || s.State == pathpkg.Down {
			continue
		}
		rtt := s.RTT + s.RTTVar
		if lo == 0 || s.RTT < lo {
			lo = s.RTT
		}
		hi = max(hi, rtt)
	}
	if hi == 0 {
		return 0, 0
	}
	wait = min((hi-lo)/2+repairMargin, repairMaxWait)
	return wait, hi + wait
}

// Parity on top of copies (session.ParitySender) goes only while the
// copies leave something to repair: while the product of the live paths'
// outbound losses, what every copy of a packet loses, is at least
// ParityFrom; then one parity covers ParityGroupSize packets. Not while a
// path's round trips show a queue (its capacity share below 1): its loss
// is then a full queue's, which more packets would make worse.
const (
	ParityFrom      = 1e-4
	ParityGroupSize = 16
	// parityMinSent is how many packets a path's outbound loss must be
	// measured over to count.
	parityMinSent = 100
)

// ParityGroup returns the parity group size for a session's paths in
// redundant mode: 0 (none) while their copies lose less than ParityFrom.
// A live path whose loss is not measured yet is left out: it may only
// make the copies lose less.
func ParityGroup(paths []*Path) int {
	residual, measured := 1.0, 0
	for _, p := range paths {
		s := p.Stats()
		if s.State == pathpkg.Down || s.SentOut < parityMinSent {
			continue
		}
		if s.Weight < 1 {
			return 0 // congested
		}
		measured++
		residual *= s.LossOut
	}
	if measured == 0 || residual < ParityFrom {
		return 0
	}
	return ParityGroupSize
}
