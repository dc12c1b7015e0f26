package path

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

const ival = DefaultProbeInterval

// transition is one state change reported by Tick.
type transition struct {
	at       time.Time
	from, to State
	reason   string
}

type pendingReply struct {
	seq    uint32
	sentAt time.Time
	at     time.Time
}

// sim drives a Path over a simulated link, one probe interval per step, with
// explicit times only.
type sim struct {
	t   *testing.T
	p   *Path
	now time.Time

	rtt     time.Duration // round trip of the simulated link
	up      bool          // whether the link delivers anything
	dropSeq func(seq uint32) bool

	// Data traffic per interval in each direction and its loss fractions.
	perInterval   uint64
	lossIn        float64
	lossOut       float64
	accIn, accOut float64
	peerTx        uint64
	peerRx        uint64
	myTx          uint64
	myRx          uint64

	pending []pendingReply
	trans   []transition
}

func newSim(t *testing.T, par Params, rtt time.Duration) *sim {
	return &sim{t: t, p: New(par, t0), now: t0, rtt: rtt, up: true}
}

// step simulates one probe interval starting at s.now.
func (s *sim) step() {
	s.t.Helper()
	changed, from, to, reason := s.p.Tick(s.now)
	if changed {
		if reason == "" {
			s.t.Fatalf("%v: transition %v -> %v with empty reason", s.now.Sub(t0), from, to)
		}
		if from == to {
			s.t.Fatalf("%v: changed=true but from == to == %v", s.now.Sub(t0), from)
		}
		s.trans = append(s.trans, transition{s.now, from, to, reason})
	} else if from != to || reason != "" {
		s.t.Fatalf("no change reported but from=%v to=%v reason=%q", from, to, reason)
	}
	if s.p.State() != to {
		s.t.Fatalf("State() = %v, Tick said %v", s.p.State(), to)
	}

	// Data traffic for this interval.
	if s.perInterval > 0 {
		s.peerTx += s.perInterval
		s.myTx += s.perInterval
		if s.up {
			s.accIn += float64(s.perInterval) * (1 - s.lossIn)
			s.accOut += float64(s.perInterval) * (1 - s.lossOut)
			n := uint64(s.accIn)
			s.myRx += n
			s.accIn -= float64(n)
			n = uint64(s.accOut)
			s.peerRx += n
			s.accOut -= float64(n)
		}
	}

	if s.p.ProbeDue(s.now) {
		seq := s.p.NextProbe(s.now)
		if s.up && (s.dropSeq == nil || !s.dropSeq(seq)) {
			s.pending = append(s.pending, pendingReply{seq, s.now, s.now.Add(s.rtt)})
		}
	}
	end := s.now.Add(ival)
	for len(s.pending) > 0 && s.pending[0].at.Before(end) {
		r := s.pending[0]
		s.pending = s.pending[1:]
		s.p.OnHeard(r.at)
		s.p.OnPeerCounts(s.peerTx, s.peerRx, s.myTx, s.myRx, r.at)
		s.p.OnReply(r.seq, r.sentAt, r.at)
	}
	s.now = end
}

func (s *sim) run(n int) {
	s.t.Helper()
	for range n {
		s.step()
	}
}

// runUntil steps until the path is in state want, at most max steps, and
// returns the time of the Tick that entered it.
func (s *sim) runUntil(want State, max int) time.Time {
	s.t.Helper()
	for range max {
		s.step()
		if s.p.State() == want {
			return s.trans[len(s.trans)-1].at
		}
	}
	s.t.Fatalf("not %v after %d steps (state %v)", want, max, s.p.State())
	return time.Time{}
}

// transitionsSince returns the transitions at or after t.
func (s *sim) transitionsSince(t time.Time) []transition {
	var out []transition
	for _, tr := range s.trans {
		if !tr.at.Before(t) {
			out = append(out, tr)
		}
	}
	return out
}

func TestStateStrings(t *testing.T) {
	tests := []struct {
		s    State
		want string
	}{
		{Probing, "probing"},
		{Up, "up"},
		{Degraded, "degraded"},
		{Down, "down"},
	}
	for _, tc := range tests {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("String(%d) = %q, want %q", tc.s, got, tc.want)
		}
		b, err := tc.s.MarshalText()
		if err != nil || string(b) != tc.want {
			t.Errorf("MarshalText(%d) = %q, %v; want %q", tc.s, b, err, tc.want)
		}
	}
	if got := State(9).String(); got != "state(9)" {
		t.Errorf("String(9) = %q", got)
	}
	if _, err := State(9).MarshalText(); err == nil {
		t.Error("MarshalText(9) succeeded")
	}
}

func TestParamsDefaults(t *testing.T) {
	want := Params{
		ProbeInterval: 250 * time.Millisecond,
		DownAfter:     1500 * time.Millisecond,
		UpAfter:       3,
		DegradedLoss:  0.2,
		RecoverLoss:   0.1,
		LossWindow:    20,
	}
	tests := []struct {
		name string
		in   Params
		want Params
	}{
		{"zero", Params{}, want},
		{"negative", Params{ProbeInterval: -1, DownAfter: -1, UpAfter: -1, DegradedLoss: -1, RecoverLoss: -1, LossWindow: -1}, want},
		{"nan", Params{DegradedLoss: math.NaN(), RecoverLoss: math.NaN()}, want},
		{"recover clamped", Params{DegradedLoss: 0.3, RecoverLoss: 0.5},
			Params{250 * time.Millisecond, 1500 * time.Millisecond, 3, 0.3, 0.3, 20}},
		{"kept", Params{time.Second, 5 * time.Second, 5, 0.5, 0.25, 10},
			Params{time.Second, 5 * time.Second, 5, 0.5, 0.25, 10}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := New(tc.in, t0).Params(); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestNewStartsProbing(t *testing.T) {
	st := New(Params{}, t0).Stats()
	if st.State != Probing || !st.Since.Equal(t0) || !st.LastHeard.Equal(t0) ||
		st.RTT != 0 || st.LossIn != 0 || st.LossOut != 0 {
		t.Errorf("fresh stats = %+v", st)
	}
}

func TestProbeDue(t *testing.T) {
	p := New(Params{}, t0)
	if !p.ProbeDue(t0) {
		t.Fatal("first probe not due")
	}
	p.NextProbe(t0)
	tests := []struct {
		after time.Duration
		want  bool
	}{
		{0, false},
		{ival - time.Nanosecond, false},
		{ival, true},
		{3 * ival, true},
	}
	for _, tc := range tests {
		if got := p.ProbeDue(t0.Add(tc.after)); got != tc.want {
			t.Errorf("ProbeDue(+%v) = %v, want %v", tc.after, got, tc.want)
		}
	}
	a := p.NextProbe(t0.Add(ival))
	b := p.NextProbe(t0.Add(2 * ival))
	if b != a+1 {
		t.Errorf("sequence numbers %d then %d", a, b)
	}
}

// feedRTT sends one probe per interval and answers it after each delay.
func feedRTT(p *Path, now time.Time, rtts []time.Duration) time.Time {
	for _, r := range rtts {
		seq := p.NextProbe(now)
		p.OnReply(seq, now, now.Add(r))
		now = now.Add(ival)
	}
	return now
}

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

func near(a, b, tol time.Duration) bool {
	d := a - b
	return d <= tol && d >= -tol
}

func TestRTTFirstSample(t *testing.T) {
	p := New(Params{}, t0)
	feedRTT(p, t0, []time.Duration{80 * time.Millisecond})
	st := p.Stats()
	if st.RTT != 80*time.Millisecond || st.RTTVar != 40*time.Millisecond || st.Jitter != 0 {
		t.Errorf("after first sample: %+v", st)
	}
}

func TestRTTConvergesAndTracks(t *testing.T) {
	tests := []struct {
		name          string
		first, second time.Duration
	}{
		{"rises", 50 * time.Millisecond, 120 * time.Millisecond},
		{"falls", 200 * time.Millisecond, 20 * time.Millisecond},
		{"longer than probe interval", 300 * time.Millisecond, 600 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := New(Params{}, t0)
			now := feedRTT(p, t0, repeat(tc.first, 60))
			st := p.Stats()
			if !near(st.RTT, tc.first, time.Millisecond) {
				t.Errorf("RTT = %v, want ~%v", st.RTT, tc.first)
			}
			if st.RTTVar > time.Millisecond {
				t.Errorf("RTTVar = %v for constant RTT", st.RTTVar)
			}
			feedRTT(p, now, repeat(tc.second, 60))
			st = p.Stats()
			if !near(st.RTT, tc.second, time.Millisecond) {
				t.Errorf("RTT after change = %v, want ~%v", st.RTT, tc.second)
			}
		})
	}
}

func TestJitter(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]time.Duration, 200)
	for i := range random {
		random[i] = 50*time.Millisecond + time.Duration(rng.IntN(40))*time.Millisecond
	}
	alternating := make([]time.Duration, 200)
	for i := range alternating {
		alternating[i] = 40 * time.Millisecond
		if i%2 == 1 {
			alternating[i] = 60 * time.Millisecond
		}
	}
	tests := []struct {
		name     string
		rtts     []time.Duration
		min, max time.Duration
	}{
		{"constant", repeat(70*time.Millisecond, 200), 0, 0},
		{"alternating 40/60ms", alternating, 19 * time.Millisecond, 20 * time.Millisecond},
		{"uniform 50-90ms", random, 5 * time.Millisecond, 25 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := New(Params{}, t0)
			feedRTT(p, t0, tc.rtts)
			if j := p.Stats().Jitter; j < tc.min || j > tc.max {
				t.Errorf("Jitter = %v, want in [%v, %v]", j, tc.min, tc.max)
			}
		})
	}
}

// countFeed reports counters once per interval. Each row gives the packets
// sent each way in that interval and how many arrived.
type countStep struct {
	peerSent, myRecv uint64 // inbound
	mySent, peerRecv uint64 // outbound
}

func steady(n int, in, inRecv, out, outRecv uint64) []countStep {
	s := make([]countStep, n)
	for i := range s {
		s[i] = countStep{in, inRecv, out, outRecv}
	}
	return s
}

func TestLoss(t *testing.T) {
	// skewed reports 10% loss both ways, but each report catches a varying
	// number of packets still in flight.
	rng := rand.New(rand.NewPCG(3, 4))
	var skewed []countStep
	for range 40 {
		skewed = append(skewed, countStep{100, 90, 100, 90})
	}
	tests := []struct {
		name             string
		steps            []countStep
		skew             func() uint64 // packets in flight at each report
		wantIn, wantOut  float64
		tolIn, tolOut    float64
		resetAfter       int // restart the peer's counters after this many steps (0: never)
		stepsAfterReset  []countStep
		wantInAfterReset float64
	}{
		{name: "none", steps: steady(30, 100, 100, 100, 100)},
		{name: "10% in", steps: steady(30, 100, 90, 100, 100), wantIn: 0.1, tolIn: 0.01},
		{name: "10% out", steps: steady(30, 100, 100, 100, 90), wantOut: 0.1, tolOut: 0.01},
		{name: "10% both skewed", steps: skewed, skew: func() uint64 { return uint64(rng.IntN(6)) },
			wantIn: 0.1, wantOut: 0.1, tolIn: 0.03, tolOut: 0.03},
		{name: "100% in", steps: steady(30, 100, 0, 100, 100), wantIn: 1},
		{name: "100% out", steps: steady(30, 100, 100, 100, 0), wantOut: 1},
		{name: "more received than sent", steps: steady(30, 100, 120, 100, 130)},
		{name: "too few packets", steps: steady(30, 0, 0, 0, 0)},
		{name: "old loss leaves window", steps: append(steady(20, 100, 0, 100, 0), steady(25, 100, 100, 100, 100)...)},
		{name: "counter reset", steps: steady(30, 100, 50, 100, 50), resetAfter: 30,
			stepsAfterReset: steady(30, 100, 80, 100, 100), wantInAfterReset: 0.2},
		{name: "counter reset then clean", steps: steady(30, 100, 50, 100, 50), resetAfter: 30,
			stepsAfterReset: steady(1, 100, 100, 100, 100)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := New(Params{}, t0)
			now := t0
			var peerTx, peerRx, myTx, myRx uint64
			feed := func(steps []countStep) {
				for _, s := range steps {
					peerTx += s.peerSent
					myRx += s.myRecv
					myTx += s.mySent
					peerRx += s.peerRecv
					var inflight uint64
					if tc.skew != nil {
						inflight = tc.skew()
					}
					p.OnPeerCounts(peerTx, peerRx-inflight, myTx, myRx-inflight, now)
					p.Tick(now)
					st := p.Stats()
					if st.LossIn < 0 || st.LossIn > 1 || st.LossOut < 0 || st.LossOut > 1 {
						t.Fatalf("loss out of range: %+v", st)
					}
					now = now.Add(ival)
				}
			}
			feed(tc.steps)
			check := func(wantIn, wantOut, tolIn, tolOut float64) {
				t.Helper()
				st := p.Stats()
				if math.Abs(st.LossIn-wantIn) > tolIn+1e-9 {
					t.Errorf("LossIn = %.4f, want %.4f±%.2f", st.LossIn, wantIn, tolIn)
				}
				if math.Abs(st.LossOut-wantOut) > tolOut+1e-9 {
					t.Errorf("LossOut = %.4f, want %.4f±%.2f", st.LossOut, wantOut, tolOut)
				}
			}
			if tc.resetAfter == 0 {
				check(tc.wantIn, tc.wantOut, tc.tolIn, tc.tolOut)
				return
			}
			// The peer restarts: its counters begin again from zero.
			peerTx, peerRx = 0, 0
			feed(tc.stepsAfterReset)
			check(tc.wantInAfterReset, 0, 0.01, 0.01)
		})
	}
}

// upSim returns a sim whose path has just gone Up.
func upSim(t *testing.T, par Params, rtt time.Duration) *sim {
	t.Helper()
	s := newSim(t, par, rtt)
	s.runUntil(Up, 10)
	return s
}

func TestProbingToUp(t *testing.T) {
	for _, upAfter := range []int{1, 3, 5} {
		s := newSim(t, Params{UpAfter: upAfter}, 30*time.Millisecond)
		at := s.runUntil(Up, 20)
		// The n-th reply arrives during interval n-1; the next Tick sees it.
		if want := t0.Add(time.Duration(upAfter) * ival); !at.Equal(want) {
			t.Errorf("UpAfter=%d: Up at %v, want %v", upAfter, at.Sub(t0), want.Sub(t0))
		}
		if tr := s.trans[0]; tr.from != Probing || !strings.Contains(tr.reason, "in a row") {
			t.Errorf("UpAfter=%d: transition %+v", upAfter, tr)
		}
	}
}

func TestNeverAnsweredGoesDown(t *testing.T) {
	s := newSim(t, Params{}, 30*time.Millisecond)
	s.up = false
	at := s.runUntil(Down, 20)
	if at.Sub(t0) > DefaultDownAfter+ival {
		t.Errorf("Down after %v", at.Sub(t0))
	}
	if s.trans[0].from != Probing {
		t.Errorf("transition %+v", s.trans[0])
	}
}

func TestDeadPathDownAndBack(t *testing.T) {
	tests := []struct {
		name string
		par  Params
		rtt  time.Duration
	}{
		{"defaults fast link", Params{}, 10 * time.Millisecond},
		{"defaults slow link", Params{}, 180 * time.Millisecond},
		{"rtt above probe interval", Params{}, 400 * time.Millisecond},
		{"with traffic", Params{}, 40 * time.Millisecond},
		{"custom", Params{DownAfter: time.Second, UpAfter: 2}, 40 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := upSim(t, tc.par, tc.rtt)
			if tc.name == "with traffic" {
				s.perInterval = 50
			}
			s.run(20)
			par := s.p.Params()

			// The path dies.
			s.up = false
			downAt := s.runUntil(Down, 40)
			lastHeard := s.p.Stats().LastHeard // includes replies still in flight at the cut
			if d := downAt.Sub(lastHeard); d > par.DownAfter+par.ProbeInterval {
				t.Errorf("Down %v after last heard, want <= %v", d, par.DownAfter+par.ProbeInterval)
			}
			if tc.par == (Params{}) && downAt.Sub(lastHeard) > 3*time.Second {
				t.Errorf("Down %v after last heard, want within 3s", downAt.Sub(lastHeard))
			}
			tr := s.trans[len(s.trans)-1]
			if tr.reason != "no reply for "+par.DownAfter.String() {
				t.Errorf("down reason %q", tr.reason)
			}
			s.run(12)
			if s.p.State() != Down {
				t.Fatalf("state %v while dead", s.p.State())
			}

			// It comes back.
			s.up = true
			resumed := s.now
			upAt := s.runUntil(Up, 40)
			limit := time.Duration(par.UpAfter+1)*par.ProbeInterval + tc.rtt
			if d := upAt.Sub(resumed); d > limit || d > 3*time.Second {
				t.Errorf("Up %v after replies resumed, want <= %v", d, limit)
			}
			// And stays up, loss from the outage forgotten.
			since := s.now
			s.run(40)
			if got := s.transitionsSince(since); len(got) != 0 {
				t.Errorf("transitions after recovery: %+v", got)
			}
		})
	}
}

func TestNoFlap(t *testing.T) {
	tests := []struct {
		name string
		drop func(seq uint32) bool
	}{
		{"one lost probe", func(seq uint32) bool { return seq == 30 }},
		{"every third probe lost", func(seq uint32) bool { return seq%3 == 0 }},
		{"three lost in a row", func(seq uint32) bool { return seq >= 30 && seq < 33 }},
		{"five lost in a row", func(seq uint32) bool { return seq >= 30 && seq < 35 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := upSim(t, Params{}, 60*time.Millisecond)
			s.perInterval = 40
			s.dropSeq = tc.drop
			since := s.now
			s.run(80)
			if got := s.transitionsSince(since); len(got) != 0 {
				t.Errorf("transitions: %+v", got)
			}
		})
	}
}

func TestLostProbeWhileProbingDelaysUp(t *testing.T) {
	// Probe 1 is lost, so the first run of three replies is 2, 3, 4.
	s := newSim(t, Params{}, 20*time.Millisecond)
	s.dropSeq = func(seq uint32) bool { return seq == 1 }
	at := s.runUntil(Up, 20)
	if at.Before(t0.Add(5 * ival)) {
		t.Errorf("Up at %v despite a lost probe breaking the run", at.Sub(t0))
	}
}

func TestDownStaysDown(t *testing.T) {
	tests := []struct {
		name string
		// event is called once per interval while the path is Down.
		event func(s *sim, i int)
	}{
		{"one stray reply", func(s *sim, i int) {
			if i == 3 {
				seq := s.p.NextProbe(s.now)
				s.p.OnReply(seq, s.now, s.now.Add(20*time.Millisecond))
			}
		}},
		{"two stray replies", func(s *sim, i int) {
			if i == 3 || i == 4 {
				seq := s.p.NextProbe(s.now)
				s.p.OnReply(seq, s.now, s.now.Add(20*time.Millisecond))
			}
		}},
		{"peer probes heard", func(s *sim, i int) {
			s.p.OnHeard(s.now)
		}},
		{"every other probe answered", func(s *sim, i int) {
			if i%2 == 0 {
				seq := s.p.NextProbe(s.now)
				s.p.OnReply(seq, s.now, s.now.Add(20*time.Millisecond))
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := upSim(t, Params{}, 20*time.Millisecond)
			s.up = false
			s.runUntil(Down, 20)
			since := s.now
			for i := range 40 {
				tc.event(s, i)
				s.step()
			}
			if got := s.transitionsSince(since); len(got) != 0 {
				t.Errorf("transitions: %+v", got)
			}
		})
	}
}

func TestDegradedHysteresis(t *testing.T) {
	type phase struct {
		lossIn, lossOut float64
		steps           int
		want            State // state at the end of the phase
		maxTransitions  int   // allowed during the phase
	}
	tests := []struct {
		name   string
		phases []phase
	}{
		{"clean stays up", []phase{{0, 0, 60, Up, 0}}},
		{"between thresholds stays up", []phase{{0.15, 0.15, 80, Up, 0}}},
		{"loss out degrades, between keeps degraded, low recovers", []phase{
			{0, 0.35, 40, Degraded, 1},
			{0, 0.15, 80, Degraded, 0},
			{0, 0.05, 60, Up, 1},
			{0, 0.15, 80, Up, 0},
		}},
		{"loss in degrades", []phase{
			{0.5, 0, 40, Degraded, 1},
			{0.12, 0.18, 80, Degraded, 0},
			{0, 0, 60, Up, 1},
		}},
		{"total loss one way", []phase{{1, 0, 40, Degraded, 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := upSim(t, Params{}, 30*time.Millisecond)
			s.perInterval = 200
			for i, ph := range tc.phases {
				s.lossIn, s.lossOut = ph.lossIn, ph.lossOut
				since := s.now
				s.run(ph.steps)
				got := s.transitionsSince(since)
				if len(got) > ph.maxTransitions {
					t.Errorf("phase %d: %d transitions, want <= %d: %+v", i, len(got), ph.maxTransitions, got)
				}
				if s.p.State() != ph.want {
					t.Errorf("phase %d: state %v, want %v", i, s.p.State(), ph.want)
				}
				for _, tr := range got {
					if !strings.Contains(tr.reason, "loss") || !strings.Contains(tr.reason, "over 5s") {
						t.Errorf("phase %d: reason %q", i, tr.reason)
					}
				}
			}
		})
	}
}

func TestDegradedReason(t *testing.T) {
	s := upSim(t, Params{}, 30*time.Millisecond)
	s.perInterval = 100
	s.lossOut = 0.35
	s.runUntil(Degraded, 40)
	if r := s.trans[len(s.trans)-1].reason; !strings.HasPrefix(r, "loss out ") || !strings.HasSuffix(r, "% over 5s") {
		t.Errorf("reason %q", r)
	}
}

func TestDegradedGoesDown(t *testing.T) {
	s := upSim(t, Params{}, 30*time.Millisecond)
	s.perInterval = 100
	s.lossIn = 0.5
	s.runUntil(Degraded, 40)
	s.up = false
	s.runUntil(Down, 10)
	s.up = true
	s.lossIn = 0
	s.runUntil(Up, 10)
}

func TestIgnoredReplies(t *testing.T) {
	tests := []struct {
		name string
		// setup sends probes and returns a reply to deliver at now.
		setup func(p *Path) (seq uint32, sentAt, now time.Time)
	}{
		{"never sent", func(p *Path) (uint32, time.Time, time.Time) {
			p.NextProbe(t0)
			return 7, t0, t0.Add(50 * time.Millisecond)
		}},
		{"nothing sent", func(p *Path) (uint32, time.Time, time.Time) {
			return 0, t0, t0.Add(50 * time.Millisecond)
		}},
		{"duplicate", func(p *Path) (uint32, time.Time, time.Time) {
			seq := p.NextProbe(t0)
			p.OnReply(seq, t0, t0.Add(50*time.Millisecond))
			p.Tick(t0.Add(50 * time.Millisecond)) // Up already; must not change
			return seq, t0, t0.Add(90 * time.Millisecond)
		}},
		{"pushed out of the ring", func(p *Path) (uint32, time.Time, time.Time) {
			first := p.NextProbe(t0)
			now := t0
			for range ringSize {
				now = now.Add(time.Millisecond)
				p.NextProbe(now)
			}
			return first, t0, now
		}},
		{"timed out", func(p *Path) (uint32, time.Time, time.Time) {
			seq := p.NextProbe(t0)
			p.Tick(t0.Add(time.Second))
			return seq, t0, t0.Add(time.Second)
		}},
		{"wrong timestamp", func(p *Path) (uint32, time.Time, time.Time) {
			seq := p.NextProbe(t0)
			return seq, t0.Add(-time.Second), t0.Add(50 * time.Millisecond)
		}},
		{"before it was sent", func(p *Path) (uint32, time.Time, time.Time) {
			seq := p.NextProbe(t0)
			return seq, t0, t0.Add(-time.Millisecond)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := New(Params{UpAfter: 1}, t0)
			seq, sentAt, now := tc.setup(p)
			before := p.Stats()
			p.OnReply(seq, sentAt, now)
			after := p.Stats()
			if after != before {
				t.Errorf("stats changed: %+v -> %+v", before, after)
			}
			if changed, _, to, _ := p.Tick(now); changed && to == Up {
				t.Error("ignored reply brought the path up")
			}
		})
	}
}

func TestEchoWithinTolerance(t *testing.T) {
	p := New(Params{}, t0)
	seq := p.NextProbe(t0)
	// An echo rounded to the microsecond still names the probe; the RTT is
	// taken from the recorded send time.
	p.OnReply(seq, t0.Add(400*time.Nanosecond), t0.Add(50*time.Millisecond))
	if got := p.Stats().RTT; got != 50*time.Millisecond {
		t.Errorf("RTT = %v", got)
	}
}

func TestStatsSince(t *testing.T) {
	s := newSim(t, Params{}, 20*time.Millisecond)
	at := s.runUntil(Up, 10)
	if st := s.p.Stats(); !st.Since.Equal(at) || st.State != Up {
		t.Errorf("Stats = %+v, want Up since %v", st, at)
	}
}

func TestNoAllocs(t *testing.T) {
	p := New(Params{}, t0)
	now := t0
	var n uint64
	step := func() {
		seq := p.NextProbe(now)
		n += 100
		p.OnHeard(now.Add(20 * time.Millisecond))
		p.OnPeerCounts(n, n-n/20, n, n-n/30, now.Add(20*time.Millisecond))
		p.OnReply(seq, now, now.Add(20*time.Millisecond))
		p.Tick(now.Add(ival))
		_ = p.Stats()
		now = now.Add(ival)
	}
	for range 50 {
		step()
	}
	if p.State() != Up {
		t.Fatalf("state %v", p.State())
	}
	if a := testing.AllocsPerRun(200, step); a != 0 {
		t.Errorf("%v allocations per interval", a)
	}
}

func BenchmarkInterval(b *testing.B) {
	p := New(Params{}, t0)
	now := t0
	var n uint64
	b.ReportAllocs()
	for b.Loop() {
		seq := p.NextProbe(now)
		n += 100
		at := now.Add(20 * time.Millisecond)
		p.OnHeard(at)
		p.OnPeerCounts(n, n-n/20, n, n-n/30, at)
		p.OnReply(seq, now, at)
		now = now.Add(ival)
		p.Tick(now)
	}
}

func BenchmarkTick(b *testing.B) {
	p := New(Params{}, t0)
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		p.OnHeard(now)
		p.Tick(now)
		now = now.Add(time.Millisecond)
	}
}

func FuzzEvents(f *testing.F) {
	f.Add([]byte{0, 10, 1, 0, 2, 3, 4, 5})
	f.Add([]byte{0, 0, 0, 1, 50, 0, 4, 250, 0, 2, 1, 0, 3, 9, 9, 4, 255, 255})
	f.Add(slices.Repeat([]byte{0, 0, 1, 1, 0, 30, 3, 100, 90, 4, 250, 0}, 30))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := New(Params{}, t0)
		now := t0
		var sent []struct {
			seq uint32
			at  time.Time
		}
		var peerTx, peerRx, myTx, myRx uint64
		for len(data) >= 3 {
			op, a, b := data[0], data[1], data[2]
			data = data[3:]
			switch op % 6 {
			case 0: // probe
				seq := p.NextProbe(now)
				sent = append(sent, struct {
					seq uint32
					at  time.Time
				}{seq, now})
			case 1: // reply to a recent (or made-up) probe
				if len(sent) > 0 && b%8 != 0 {
					s := sent[len(sent)-1-int(a)%len(sent)]
					p.OnReply(s.seq, s.at, now)
				} else {
					p.OnReply(uint32(a)<<8|uint32(b), now.Add(-time.Duration(a)*time.Millisecond), now)
				}
			case 2:
				p.OnHeard(now)
			case 3: // counters, sometimes reset
				if a == 255 {
					peerTx, peerRx = 0, 0
				}
				peerTx += uint64(a)
				myRx += uint64(b)
				myTx += uint64(b)
				peerRx += uint64(a)
				p.OnPeerCounts(peerTx, peerRx, myTx, myRx, now)
			case 4: // time passes
				now = now.Add(time.Duration(a)*time.Duration(b+1)*time.Millisecond/4 + time.Duration(b)*time.Microsecond)
			case 5:
				changed, from, to, reason := p.Tick(now)
				if changed && (reason == "" || from == to) {
					t.Fatalf("bad transition %v -> %v %q", from, to, reason)
				}
			}
			st := p.Stats()
			if !(st.LossIn >= 0 && st.LossIn <= 1 && st.LossOut >= 0 && st.LossOut <= 1) {
				t.Fatalf("loss out of range: %+v", st)
			}
			if st.RTT < 0 || st.RTTVar < 0 || st.Jitter < 0 {
				t.Fatalf("negative estimate: %+v", st)
			}
			if st.State > Down {
				t.Fatalf("invalid state %d", st.State)
			}
		}
	})
}

func TestSuspect(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	p := New(Params{}, now)
	if p.Suspect(now) {
		t.Fatal("suspect before any probe")
	}
	// A few answered probes with a 10 ms RTT.
	for i := 0; i < 5; i++ {
		seq := p.NextProbe(now)
		p.OnReply(seq, now, now.Add(10*time.Millisecond))
		now = now.Add(250 * time.Millisecond)
		p.Tick(now)
	}
	seq := p.NextProbe(now)
	if p.Suspect(now.Add(15 * time.Millisecond)) {
		t.Fatal("suspect 15 ms after a probe on a 10 ms path")
	}
	if !p.Suspect(now.Add(100 * time.Millisecond)) {
		t.Fatal("not suspect 100 ms after an unanswered probe on a 10 ms path")
	}
	// A late answer clears the doubt.
	p.OnReply(seq, now, now.Add(120*time.Millisecond))
	if p.Suspect(now.Add(130 * time.Millisecond)) {
		t.Fatal("still suspect after the answer")
	}
	// A probe counted lost keeps it suspect until a new probe is answered.
	now = now.Add(250 * time.Millisecond)
	p.NextProbe(now)
	now = now.Add(time.Second)
	p.Tick(now)
	if !p.Suspect(now) {
		t.Fatal("not suspect after a lost probe")
	}
}

// TestWeight: a path whose round trips show a queue gives up share, and
// takes it back once the queue is gone.
func TestWeight(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	p := New(Params{}, now)
	if w := p.Stats().Weight; w != 1 {
		t.Fatalf("new path weight %v, want 1", w)
	}
	reply := func(rtt time.Duration) {
		seq := p.NextProbe(now)
		now = now.Add(rtt)
		p.OnReply(seq, now.Add(-rtt), now)
		now = now.Add(250*time.Millisecond - rtt)
	}
	for range 4 {
		reply(2 * time.Millisecond)
	}
	if w := p.Stats().Weight; w != 1 {
		t.Fatalf("weight %v without a queue, want 1", w)
	}
	for range 3 {
		reply(50 * time.Millisecond) // 48 ms of queue
	}
	w := p.Stats().Weight
	if w > 0.4 || w < 0.3 {
		t.Fatalf("weight %v after three queued replies, want 0.343", w)
	}
	for range 30 {
		reply(3 * time.Millisecond)
	}
	if got := p.Stats().Weight; got != 1 {
		t.Fatalf("weight %v after the queue drained, want 1", got)
	}
	for range 30 { // 7.5 s: the base round trip is still the short one
		reply(time.Second)
	}
	if got := p.Stats().Weight; got < minWeight || got > minWeight*1.01 {
		t.Fatalf("weight %v under a standing queue, want the floor %v", got, minWeight)
	}
}

// TestLossOutInFlight: a busy sender whose packets are still on their way
// when each reply arrives. Pairing the peer's received count with the count
// the answered probe carried measures no loss on a lossless path and the
// true loss on a lossy one; pairing it with the sender's count at the
// reply's arrival, as OnPeerCounts does, takes the packets in flight for
// lost.
func TestLossOutInFlight(t *testing.T) {
	for _, tc := range []struct {
		name string
		keep int // of every 100 packets, how many arrive
		want float64
	}{{"lossless", 100, 0}, {"5% lost", 95, 0.05}} {
		t.Run(tc.name, func(t *testing.T) {
			exact, naive := New(Params{}, t0), New(Params{}, t0)
			now := t0
			var tx, peerRx uint64
			for i := range 19 {
				// 100 packets, then a probe (counted in tx), then, while
				// it travels, a burst of 0 to 60 more that are in flight
				// when the reply comes back.
				tx += 100
				peerRx += uint64(tc.keep)
				tx++
				peerRx++
				seqE, seqN := exact.NextProbeTx(now, tx), naive.NextProbeTx(now, tx)
				rx := now.Add(2 * time.Millisecond)
				burst := uint64(i * 37 % 61)
				exact.OnReplyCounts(seqE, now, 0, peerRx, 0, rx)
				naive.OnReply(seqN, now, rx)
				naive.OnPeerCounts(0, peerRx, tx+burst, 0, rx)
				tx += burst
				peerRx += burst * uint64(tc.keep) / 100
				now = now.Add(ival)
			}
			if got := exact.Stats().LossOut; math.Abs(got-tc.want) > 0.005 {
				t.Fatalf("loss out %.4f measured against the probes' counts, want %.3f", got, tc.want)
			}
			if got := naive.Stats().LossOut; math.Abs(got-tc.want) <= 0.005 {
				t.Fatalf("loss out %.4f measured against the counts at the replies' arrival: the test no longer shows packets in flight", got)
			}
		})
	}
}
