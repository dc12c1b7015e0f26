// Package path keeps the measurements and health state of one tunnel path.
//
// A path is one way for datagrams to travel between client and server: a UDP
// relay or the server address itself. Both ends send probes on every path at a
// fixed interval and answer each probe at once. A Path records the probes it
// sends, turns replies into round-trip time, variance and jitter estimates,
// turns the packet counters exchanged in probes and replies into loss rates for
// each direction, and runs a small state machine with hysteresis:
//
//	Probing --UpAfter replies in a row--> Up
//	Up --loss above DegradedLoss--> Degraded
//	Degraded --loss below RecoverLoss--> Up
//	any --nothing heard for DownAfter--> Down
//	Down --UpAfter replies in a row--> Up
//
// The package is pure logic: it starts no goroutines, reads no clock and does
// no I/O. Every method takes the current time from the caller, which makes the
// behaviour deterministic and testable with a fake clock. A Path is not safe
// for concurrent use; its owner serialises access.
package path

import (
	"fmt"
	"strconv"
	"time"
)

// State is the health of a path.
type State uint8

// The states of a path.
const (
	// Probing is the initial state: probes are being sent but the path has
	// not yet answered enough of them to be trusted.
	Probing State = iota
	// Up means the path answers probes and loses little traffic.
	Up
	// Degraded means the path answers probes but loses too much traffic.
	Degraded
	// Down means nothing authentic has been heard on the path for a while.
	Down
)

// name returns the state's name and whether the state is a defined one.
func (s State) name() (string, bool) {
	switch s {
	case Probing:
		return "probing", true
	case Up:
		return "up", true
	case Degraded:
		return "degraded", true
	case Down:
		return "down", true
	}
	return "", false
}

// String returns the lower-case name of the state, or "state(N)" for a value
// outside the defined states.
func (s State) String() string {
	if n, ok := s.name(); ok {
		return n
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// MarshalText encodes the state as its name. It fails for a value outside the
// defined states.
func (s State) MarshalText() ([]byte, error) {
	n, ok := s.name()
	if !ok {
		return nil, fmt.Errorf("path: invalid state %d", uint8(s))
	}
	return []byte(n), nil
}

// Default parameter values, used for zero fields of Params.
const (
	DefaultProbeInterval = 250 * time.Millisecond
	DefaultDownAfter     = 1500 * time.Millisecond
	DefaultUpAfter       = 3
	DefaultDegradedLoss  = 0.2
	DefaultRecoverLoss   = 0.1
	DefaultLossWindow    = 20
)

// Params tune a Path; zero (or negative) fields take defaults.
type Params struct {
	// ProbeInterval is how often a probe is sent (default 250ms).
	ProbeInterval time.Duration
	// DownAfter is how long the path may stay silent (nothing authentic
	// heard on it) before it is Down (default 1.5s).
	DownAfter time.Duration
	// UpAfter is how many consecutive probe replies take a Probing or Down
	// path Up (default 3).
	UpAfter int
	// DegradedLoss is the loss rate, in either direction over the loss
	// window, above which an Up path becomes Degraded (default 0.2).
	DegradedLoss float64
	// RecoverLoss is the loss rate, in both directions over the loss
	// window, below which a Degraded path is Up again (default 0.1). It is
	// clamped to DegradedLoss so that the two thresholds form a hysteresis
	// band.
	RecoverLoss float64
	// LossWindow is how many recent probe intervals the loss rates cover
	// (default 20).
	LossWindow int
}

// withDefaults returns p with every unset field filled in.
func (p Params) withDefaults() Params {
	if p.ProbeInterval <= 0 {
		p.ProbeInterval = DefaultProbeInterval
	}
	if p.DownAfter <= 0 {
		p.DownAfter = DefaultDownAfter
	}
	if p.UpAfter <= 0 {
		p.UpAfter = DefaultUpAfter
	}
	if !(p.DegradedLoss > 0) || p.DegradedLoss > 1 {
		p.DegradedLoss = DefaultDegradedLoss
	}
	if !(p.RecoverLoss > 0) || p.RecoverLoss > 1 {
		p.RecoverLoss = DefaultRecoverLoss
	}
	if p.RecoverLoss > p.DegradedLoss {
		p.RecoverLoss = p.DegradedLoss
	}
	if p.LossWindow <= 0 {
		p.LossWindow = DefaultLossWindow
	}
	return p
}

const (
	// ringSize is how many outstanding probes are remembered. A reply to a
	// probe that has left the ring is ignored.
	ringSize = 64
	// minLossPackets is the least number of packets that must have been
	// sent in a direction over the loss window before its loss rate is
	// reported as anything but zero; fewer give no useful evidence.
	minLossPackets = 10
	// echoTolerance is how far the timestamp echoed in a reply may differ
	// from the recorded send time of the probe it names.
	echoTolerance = time.Millisecond
)

// probeSlot remembers one probe sent.
type probeSlot struct {
	seq         uint32
	sentAt      time.Time
	tx          uint64 // this end's packets sent on the path, the probe included, as it left
	outstanding bool
	lost        bool
}

// counts are the packets one end sent on the path and the other received.
type counts struct {
	sent, received uint64
}

// The directions of the loss accounting: dirIn is the traffic towards us (the
// peer's tx, our rx), dirOut the traffic away from us (our tx, the peer's rx).
const (
	dirIn = iota
	dirOut
)

// bucket holds the counter deltas seen during one probe interval, by
// direction.
type bucket [2]counts

// baseline is where a direction's counters stood at its last report.
type baseline struct {
	have bool
	at   counts
}

// Path holds one path's measurements and health state. The zero value is not
// usable; create one with New. A Path is not safe for concurrent use.
type Path struct {
	par Params

	state State
	since time.Time

	// Probes.
	nextSeq   uint32
	lastProbe time.Time
	probed    bool
	ring      [ringSize]probeSlot

	// Liveness and the run of consecutive replies.
	lastHeard   time.Time
	streak      int
	streakStart time.Time // send time of the first probe in the streak

	// Round-trip estimators.
	haveRTT bool
	srtt    time.Duration
	rttvar  time.Duration
	jitter  time.Duration
	lastRTT time.Duration

	// Capacity share for balance mode: shrinks while the path's round
	// trips show a queue, grows back while they do not.
	minRTT   [2]time.Duration // least sample of the current and the previous 10 s
	minSince time.Time        // when the current 10 s began
	weight   float64

	// Loss accounting.
	origin time.Time
	// Each direction has its own baseline: loss out is measured only
	// from replies, against this end's count as the probe left.
	base         [2]baseline // by direction
	buckets      []bucket
	curInterval  int64
	windowString string // the window length, for reasons

	// Precomputed reasons for transitions whose wording is fixed.
	reasonDown string
	reasonUp   string
}

// New returns a Path in the Probing state with parameters p (defaults filled
// in), created at now. Silence is measured from now until something is heard.
func New(p Params, now time.Time) *Path {
	p = p.withDefaults()
	return &Path{
		par:          p,
		state:        Probing,
		since:        now,
		lastHeard:    now,
		origin:       now,
		buckets:      make([]bucket, p.LossWindow),
		windowString: (time.Duration(p.LossWindow) * p.ProbeInterval).String(),
		reasonDown:   "no reply for " + p.DownAfter.String(),
		reasonUp:     strconv.Itoa(p.UpAfter) + " replies in a row",
		weight:       1,
	}
}

// Bounds of the capacity share (see Stats.Weight).
const (
	minWeight      = 0.02
	weightGrow     = 0.05 // added per reply without a queue
	weightShrink   = 0.7  // factor per reply with a queue
	minQueue       = 5 * time.Millisecond
	minRTTLifetime = 10 * time.Second
)

// weigh updates the capacity share with a round-trip sample r taken at now.
// The path's base round trip is the least sample of the last 10 to 20
// seconds; a sample more than max(5 ms, half the base) above it means packets
// wait in a queue on the path, which is full: its share shrinks. Otherwise it
// grows back toward 1. A queue that stands for more than 20 seconds becomes
// part of the base.
func (p *Path) weigh(r time.Duration, now time.Time) {
	if p.minSince.IsZero() || now.Sub(p.minSince) > minRTTLifetime {
		p.minRTT[1], p.minRTT[0], p.minSince = p.minRTT[0], r, now
	}
	p.minRTT[0] = min(p.minRTT[0], r)
	base := p.minRTT[0]
	if p.minRTT[1] > 0 {
		base = min(base, p.minRTT[1])
	}
	if r-base > max(minQueue, base/2) {
		p.weight = max(p.weight*weightShrink, minWeight)
	} else {
		p.weight = min(p.weight+weightGrow, 1)
	}
}

// Params returns the parameters in effect, with defaults filled in.
func (p *Path) Params() Params { return p.par }

// State returns the current state.
func (p *Path) State() State { return p.state }

// ProbeDue reports whether a probe should be sent at now: none has been sent
// yet, or at least one probe interval has passed since the last one.
func (p *Path) ProbeDue(now time.Time) bool {
	return !p.probed || now.Sub(p.lastProbe) >= p.par.ProbeInterval
}

// NextProbe records a probe sent at now and returns its sequence number. If the
// ring slot it takes still held an unanswered probe, that probe counts as lost.
func (p *Path) NextProbe(now time.Time) (seq uint32) {
	return p.NextProbeTx(now, 0)
}

// NextProbeTx is NextProbe for a probe that reports tx packets sent on the
// path, itself included: OnReplyCounts measures loss out against it.
func (p *Path) NextProbeTx(now time.Time, tx uint64) (seq uint32) {
	seq = p.nextSeq
	p.nextSeq++
	s := &p.ring[seq%ringSize]
	if s.outstanding {
		p.lose(s)
	}
	*s = probeSlot{seq: seq, sentAt: now, tx: tx, outstanding: true}
	p.lastProbe = now
	p.probed = true
	return seq
}

// OnReply handles a reply to probe seq echoing send time sentAt, arriving at
// now. The reply is ignored unless seq names a probe that is still outstanding
// (not answered, not timed out, not pushed out of the ring) and sentAt matches
// the send time recorded for it; otherwise it yields one round-trip sample,
// counts towards the run of consecutive replies and proves the path alive.
func (p *Path) OnReply(seq uint32, sentAt time.Time, now time.Time) {
	p.onReply(seq, sentAt, now)
}

// OnReplyCounts is OnReply for a reply that also carries the peer's counters
// (peerTx sent, peerRx received on the path) as it answered; myRx is this
// end's received count as the reply arrived. Loss in is measured as with
// OnPeerCounts. Loss out pairs peerRx with the count the answered probe
// carried (NextProbeTx), so packets sent since the probe left, still on
// their way, are not taken for lost: the measure is exact on a path that
// keeps order, however busy. A reply too late to pair gives no loss-out
// sample.
func (p *Path) OnReplyCounts(seq uint32, sentAt time.Time, peerTx, peerRx, myRx uint64, now time.Time) {
	p.advance(now)
	p.addCounts(dirIn, counts{peerTx, myRx})
	if tx, ok := p.onReply(seq, sentAt, now); ok && tx > 0 {
		p.addCounts(dirOut, counts{tx, peerRx})
	}
}

// onReply is OnReply; it returns the count the answered probe carried and
// whether the reply matched an outstanding probe.
func (p *Path) onReply(seq uint32, sentAt time.Time, now time.Time) (tx uint64, ok bool) {
	s := &p.ring[seq%ringSize]
	if !s.outstanding || s.seq != seq {
		return 0, false
	}
	if d := sentAt.Sub(s.sentAt); d > echoTolerance || d < -echoTolerance {
		return 0, false
	}
	rtt := now.Sub(s.sentAt)
	if rtt < 0 {
		return 0, false
	}
	s.outstanding = false
	p.sample(rtt)
	p.weigh(rtt, now)
	if p.streak == 0 {
		p.streakStart = s.sentAt
	}
	p.streak++
	p.OnHeard(now)
	return s.tx, true
}

// sample feeds one round-trip time into the estimators: smoothed RTT and RTT
// variance as in RFC 6298, jitter as RFC 3550's interarrival jitter applied to
// successive RTT samples.
func (p *Path) sample(r time.Duration) {
	if !p.haveRTT {
		p.haveRTT = true
		p.srtt = r
		p.rttvar = r / 2
		p.lastRTT = r
		return
	}
	dev := p.srtt - r
	if dev < 0 {
		dev = -dev
	}
	p.rttvar += (dev - p.rttvar) / 4
	p.srtt += (r - p.srtt) / 8
	d := r - p.lastRTT
	if d < 0 {
		d = -d
	}
	p.jitter += (d - p.jitter) / 16
	p.lastRTT = r
}

// OnHeard records that an authentic packet (probe, reply or data) arrived on
// the path at now, proving it alive.
func (p *Path) OnHeard(now time.Time) {
	if now.After(p.lastHeard) {
		p.lastHeard = now
	}
}

// OnPeerCounts takes the packet counters the peer reported in a probe or reply
// (peerTx sent, peerRx received on this path) together with this end's own
// counters at the moment it arrived (myTx, myRx), at now. Deltas since the
// previous report are added to the current probe interval of the loss window:
// the peer's tx against our rx gives loss in, our tx against the peer's rx
// gives loss out. If any counter goes backwards (an end restarted) the
// baseline restarts and the window is cleared.
func (p *Path) OnPeerCounts(peerTx, peerRx uint64, myTx, myRx uint64, now time.Time) {
	p.advance(now)
	p.addCounts(dirIn, counts{peerTx, myRx})
	p.addCounts(dirOut, counts{myTx, peerRx})
}

// OnProbeCounts takes the counters of the peer's probe: the peer's packets
// sent on the path (peerTx, the probe included) against ours received as it
// arrived (myRx) give loss in. Its received count is not used: it misses
// what we sent that was still on its way, and loss out comes from the
// replies to our probes (OnReplyCounts).
func (p *Path) OnProbeCounts(peerTx, myRx uint64, now time.Time) {
	p.advance(now)
	p.addCounts(dirIn, counts{peerTx, myRx})
}

// addCounts adds direction dir's traffic since its last report to the
// current interval. A counter that goes backwards (an end restarted)
// restarts the baselines and clears the window.
func (p *Path) addCounts(dir int, c counts) {
	base := &p.base[dir]
	if base.have && (c.sent < base.at.sent || c.received < base.at.received) {
		p.restartCounts()
	}
	if base.have {
		b := &p.buckets[p.curInterval%int64(len(p.buckets))][dir]
		b.sent += c.sent - base.at.sent
		b.received += c.received - base.at.received
	}
	*base = baseline{have: true, at: c}
}

func (p *Path) restartCounts() {
	p.clearWindow()
	p.base = [2]baseline{}
}

// advance moves the loss window forward to the probe interval containing now,
// clearing the intervals it passes.
func (p *Path) advance(now time.Time) {
	d := now.Sub(p.origin)
	if d < 0 {
		return
	}
	idx := int64(d / p.par.ProbeInterval)
	if idx <= p.curInterval {
		return
	}
	n := int64(len(p.buckets))
	if idx-p.curInterval >= n {
		p.clearWindow()
	} else {
		for i := p.curInterval + 1; i <= idx; i++ {
			p.buckets[i%n] = bucket{}
		}
	}
	p.curInterval = idx
}

func (p *Path) clearWindow() {
	clear(p.buckets)
}

// losses returns the loss rates in and out over the window, each in [0, 1].
func (p *Path) losses() (in, out, sent float64) {
	var sum [2]struct{ sent, received float64 }
	for i := range p.buckets {
		for dir, c := range p.buckets[i] {
			sum[dir].sent += float64(c.sent)
			sum[dir].received += float64(c.received)
		}
	}
	return lossRate(sum[dirIn].sent, sum[dirIn].received), lossRate(sum[dirOut].sent, sum[dirOut].received), sum[dirOut].sent
}

// lossRate is the fraction of sent that was not received, clamped to [0, 1];
// too small a sample counts as no loss.
func lossRate(sent, received float64) float64 {
	if sent < minLossPackets {
		return 0
	}
	l := 1 - received/sent
	switch {
	case l < 0:
		return 0
	case l > 1:
		return 1
	}
	return l
}

// probeTimeout is how long a probe may stay unanswered before it counts as
// lost: two probe intervals, or the RFC 6298 retransmission timeout if longer.
func (p *Path) probeTimeout() time.Duration {
	t := 2 * p.par.ProbeInterval
	if p.haveRTT {
		if rto := p.srtt + 4*p.rttvar; rto > t {
			t = rto
		}
	}
	return t
}

// lose marks an outstanding probe lost. A lost probe sent after the first
// probe of the current run of replies breaks the run; one sent before it (for
// example during an outage the path has since recovered from) does not.
func (p *Path) lose(s *probeSlot) {
	s.outstanding = false
	s.lost = true
	if p.streak > 0 && !s.sentAt.Before(p.streakStart) {
		p.streak = 0
	}
}

// expire marks lost every outstanding probe older than the probe timeout.
func (p *Path) expire(now time.Time) {
	limit := now.Add(-p.probeTimeout())
	for i := range p.ring {
		s := &p.ring[i]
		if s.outstanding && !s.sentAt.After(limit) {
			p.lose(s)
		}
	}
}

// Tick evaluates the state machine at now and should be called once per probe
// interval. If the state changes it returns changed=true, the old and new
// states and a short human-readable reason such as "no reply for 1.5s",
// "3 replies in a row" or "loss out 35% over 5s"; otherwise it returns
// changed=false, from and to both the current state and an empty reason.
// Tick does not allocate, except to build the reason of a transition driven by
// loss, whose figures are measured.
func (p *Path) Tick(now time.Time) (changed bool, from, to State, reason string) {
	p.advance(now)
	p.expire(now)
	from = p.state
	to, reason = p.next(now)
	if to == from {
		return false, from, from, ""
	}
	p.state = to
	p.since = now
	if to == Down {
		// Losses from before and during the outage say nothing about the
		// path once it answers again; nor does a run of replies.
		p.streak = 0
		p.restartCounts()
	}
	return true, from, to, reason
}

// next returns the state the path should be in at now and the reason for a
// change.
func (p *Path) next(now time.Time) (State, string) {
	if p.state != Down && now.Sub(p.lastHeard) >= p.par.DownAfter {
		return Down, p.reasonDown
	}
	switch p.state {
	case Probing, Down:
		if p.streak >= p.par.UpAfter {
			return Up, p.reasonUp
		}
	case Up:
		in, out, _ := p.losses()
		if in > p.par.DegradedLoss || out > p.par.DegradedLoss {
			if out >= in {
				return Degraded, "loss out " + pct(out) + " over " + p.windowString
			}
			return Degraded, "loss in " + pct(in) + " over " + p.windowString
		}
	case Degraded:
		in, out, _ := p.losses()
		if in < p.par.RecoverLoss && out < p.par.RecoverLoss {
			return Up, "loss in " + pct(in) + ", out " + pct(out) + " over " + p.windowString
		}
	}
	return p.state, ""
}

// pct formats a fraction as a whole percentage.
func pct(f float64) string {
	return strconv.Itoa(int(f*100+0.5)) + "%"
}

// Stats is a snapshot of a path's measurements and state.
type Stats struct {
	// State is the current state.
	State State
	// RTT is the smoothed round-trip time (RFC 6298 SRTT); zero before the
	// first sample.
	RTT time.Duration
	// RTTVar is the round-trip time variation (RFC 6298 RTTVAR).
	RTTVar time.Duration
	// Jitter is the smoothed mean difference between successive round-trip
	// samples (RFC 3550 interarrival jitter applied to RTT).
	Jitter time.Duration
	// LossIn is the fraction of the peer's packets that did not arrive here
	// over the loss window, in [0, 1].
	LossIn float64
	// LossOut is the fraction of this end's packets that did not arrive at
	// the peer over the loss window, in [0, 1].
	LossOut float64
	// SentOut is how many of this end's packets LossOut is measured over:
	// a loss rate from a handful of packets says little.
	SentOut float64
	// LastHeard is when something authentic was last heard on the path (the
	// creation time if nothing has been).
	LastHeard time.Time
	// Since is when the path entered its current state.
	Since time.Time
	// Weight is the path's capacity share for balance mode, in (0, 1]: 1
	// while its round trips show no queue, less while they do (see weigh).
	Weight float64
}

// Stats returns a snapshot of the path's measurements and state. Loss rates
// cover the window as of the last call to Tick or OnPeerCounts.
func (p *Path) Stats() Stats {
	in, out, sent := p.losses()
	return Stats{
		State:     p.state,
		RTT:       p.srtt,
		RTTVar:    p.rttvar,
		Jitter:    p.jitter,
		LossIn:    in,
		LossOut:   out,
		SentOut:   sent,
		LastHeard: p.lastHeard,
		Since:     p.since,
		Weight:    p.weight,
	}
}

// suspectFloor is the least time the latest probe may go unanswered before
// the path is suspect, so that scheduling noise on a fast path is no alarm.
const suspectFloor = 20 * time.Millisecond

// Suspect reports whether a probe sent since the latest answered one has
// gone unanswered for longer than the retransmission timeout (smoothed RTT
// plus four variances, at least 20 ms; two probe intervals before any RTT is
// known): the path may have just died, long before it is declared down. A
// failover sender uses it to send on the next path too until the doubt
// clears. A newer probe does not clear the doubt an older one raised; only an
// answer does.
func (p *Path) Suspect(now time.Time) bool {
	if !p.probed || p.state == Down {
		return false
	}
	rto := 2 * p.par.ProbeInterval
	if p.haveRTT {
		rto = max(p.srtt+4*p.rttvar, suspectFloor)
	}
	for k := uint32(1); k <= ringSize; k++ {
		s := &p.ring[(p.nextSeq-k)%ringSize]
		switch {
		case s.seq != p.nextSeq-k || s.sentAt.IsZero():
			return false // before the first probe
		case s.lost:
			return true
		case !s.outstanding:
			return false // answered: nothing older counts
		case now.Sub(s.sentAt) > rto:
			return true
		}
	}
	return false
}
