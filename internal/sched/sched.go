// Package sched decides which paths carry each datagram: the scheduling
// modes of a session. It is pure logic: it reads the paths' health as the
// caller gives it, keeps the little state a mode needs (the failover choice,
// the balance credits), does no I/O and reads no clock.
//
//   - redundant: every path that is not down (the original behaviour).
//   - failover: one path at a time, in priority order; away from a path as
//     soon as it is down or degraded, back to a better one only after it has
//     been up for ReturnAfter; while the path in use is suspect (its latest
//     probe overdue), the next path carries copies too.
//   - balance: one path per datagram, spread in proportion to each path's
//     weight (its capacity times its delivery rate), by smooth weighted
//     round robin.
//   - adaptive: the fewest best paths whose combined loss (the product of
//     their losses) stays under a target.
//
// When no path is usable, every mode falls back to all paths: a path may be
// back before its probes say so.
package sched

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/mptunnel/mptunnel/internal/path"
)

// Mode is a scheduling mode.
type Mode uint8

// The modes. Their values travel in the handshake.
const (
	Redundant Mode = iota
	Failover
	Balance
	Adaptive
	// FEC sends each packet (a data or parity shard) on one path, taking the
	// usable paths in turn, so a group's shards are spread evenly.
	FEC
)

var modeNames = [...]string{"redundant", "failover", "balance", "adaptive", "fec"}

// String returns the mode's name.
func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("mode(%d)", m)
}

// ParseMode reads a mode's name.
func ParseMode(s string) (Mode, error) {
	for i, n := range modeNames {
		if s == n {
			return Mode(i), nil
		}
	}
	return 0, fmt.Errorf("unknown mode %q: want redundant, failover, balance, adaptive or fec", s)
}

// Path is what the scheduler knows of one path.
type Path struct {
	State   path.State
	Since   time.Time // when the path entered State
	LossOut float64   // fraction of what we send on it that is lost, 0..1
	// SentOut is how many packets LossOut was measured over; adaptive
	// trusts a loss rate only as far as that many packets show it.
	SentOut float64
	// Weight is the path's share in balance mode (for example its measured
	// capacity in bytes per second); 0 or less counts as 1.
	Weight float64
	// Priority orders paths in failover mode: lower first; ties keep the
	// order of the path list.
	Priority int
	// Suspect means the path's latest probe is overdue: it may have just
	// died. Failover then sends on the next path as well until the doubt
	// clears, so a dying path loses at most what was in flight.
	Suspect bool
	// Preferred marks the path the peer chose last (the server follows the
	// client's failover choice); failover uses it while it is usable.
	Preferred bool
}

func (p Path) usable() bool { return p.State != path.Down }

// DefaultTargetLoss is the adaptive mode's combined loss to stay under
// unless told otherwise.
const DefaultTargetLoss = 0.001

// Options tune a Scheduler. Zero fields take the defaults given.
type Options struct {
	TargetLoss  float64       // adaptive: combined loss to stay under (0.001)
	ReturnAfter time.Duration // failover: a better path must be up this long before traffic returns (5s)
	MinLoss     float64       // adaptive: a path's loss is taken as at least this, since a short window can read 0 (0.001)
}

// Scheduler picks paths for one session's datagrams. It is not safe for
// concurrent use; its owner (the goroutine that sends) serialises calls.
type Scheduler struct {
	mode Mode
	opt  Options

	current int       // failover: the path in use, -1 before the first pick
	next    int       // fec: where the round robin resumes
	credit  []float64 // balance: smooth weighted round robin state
	order   []int     // adaptive: scratch for sorting
}

// ErrTargetLoss reports an adaptive target outside (0, 1).
var ErrTargetLoss = errors.New("target loss must be between 0 and 1")

// New returns a scheduler for mode.
func New(mode Mode, opt Options) (*Scheduler, error) {
	if int(mode) >= len(modeNames) {
		return nil, fmt.Errorf("sched: %v", mode)
	}
	if opt.TargetLoss == 0 {
		opt.TargetLoss = DefaultTargetLoss
	}
	if opt.TargetLoss <= 0 || opt.TargetLoss >= 1 {
		return nil, ErrTargetLoss
	}
	if opt.ReturnAfter <= 0 {
		opt.ReturnAfter = 5 * time.Second
	}
	if opt.MinLoss <= 0 {
		opt.MinLoss = 0.001
	}
	return &Scheduler{mode: mode, opt: opt, current: -1}, nil
}

// Mode returns the scheduler's mode.
func (s *Scheduler) Mode() Mode { return s.mode }

// Pick appends to dst the indexes of the paths the next datagram goes on and
// returns it. It never returns an empty set when there are paths.
func (s *Scheduler) Pick(paths []Path, now time.Time, dst []int) []int {
	dst = dst[:0]
	if len(paths) == 0 {
		return dst
	}
	usable := 0
	for _, p := range paths {
		if p.usable() {
			usable++
		}
	}
	if usable == 0 {
		for i := range paths {
			dst = append(dst, i)
		}
		return dst
	}
	switch s.mode {
	case Failover:
		cur := s.failover(paths, now)
		dst = append(dst, cur)
		if paths[cur].Suspect {
			if alt := s.alternate(paths, cur); alt >= 0 {
				dst = append(dst, alt)
			}
		}
		return dst
	case Balance:
		return append(dst, s.balance(paths))
	case Adaptive:
		return s.adaptive(paths, dst)
	case FEC:
		return append(dst, s.roundRobin(paths))
	}
	for i, p := range paths {
		if p.usable() {
			dst = append(dst, i)
		}
	}
	return dst
}

// healthy reports whether failover may use a path.
func healthy(p Path) bool { return p.State == path.Up || p.State == path.Probing }

// better reports whether path i comes before path j in failover order.
func better(paths []Path, i, j int) bool {
	if paths[i].Priority != paths[j].Priority {
		return paths[i].Priority < paths[j].Priority
	}
	return i < j
}

func (s *Scheduler) failover(paths []Path, now time.Time) int {
	if s.current >= len(paths) {
		s.current = -1
	}
	for i, p := range paths {
		if p.Preferred && p.usable() {
			s.current = i
			return i
		}
	}
	// Leave the current path as soon as it is not healthy.
	if s.current >= 0 && !healthy(paths[s.current]) {
		s.current = -1
	}
	best := -1
	for i, p := range paths {
		if !healthy(p) {
			continue
		}
		if best < 0 || better(paths, i, best) {
			best = i
		}
	}
	switch {
	case best < 0:
		// Nothing healthy: the least bad usable path, keeping the current one.
		if s.current >= 0 {
			return s.current
		}
		for i, p := range paths {
			if p.usable() && (best < 0 || better(paths, i, best)) {
				best = i
			}
		}
		return best
	case s.current < 0:
		s.current = best
	case best != s.current && better(paths, best, s.current):
		// Return to a better path only after it has been up a while.
		if paths[best].State == path.Up && now.Sub(paths[best].Since) >= s.opt.ReturnAfter {
			s.current = best
		}
	}
	return s.current
}

// alternate returns the best usable path other than cur, preferring healthy
// ones that are not suspect, or -1.
func (s *Scheduler) alternate(paths []Path, cur int) int {
	best, bestRank := -1, 3
	for i, p := range paths {
		if i == cur || !p.usable() {
			continue
		}
		rank := 2
		switch {
		case healthy(p) && !p.Suspect:
			rank = 0
		case healthy(p):
			rank = 1
		}
		if rank < bestRank || rank == bestRank && better(paths, i, best) {
			best, bestRank = i, rank
		}
	}
	return best
}

// balance is smooth weighted round robin: each pick adds every usable
// path's weight to its credit, takes the path with the most credit and
// charges it the total.
func (s *Scheduler) balance(paths []Path) int {
	if len(s.credit) != len(paths) {
		s.credit = make([]float64, len(paths))
	}
	total := 0.0
	best := -1
	for i, p := range paths {
		if !p.usable() {
			s.credit[i] = 0
			continue
		}
		w := p.Weight
		if w <= 0 || math.IsNaN(w) || math.IsInf(w, 0) {
			w = 1
		}
		w *= 1 - min(max(p.LossOut, 0), 0.99)
		s.credit[i] += w
		total += w
		if best < 0 || s.credit[i] > s.credit[best] {
			best = i
		}
	}
	s.credit[best] -= total
	return best
}

// roundRobin returns the next usable path after the one it returned last.
func (s *Scheduler) roundRobin(paths []Path) int {
	for k := range paths {
		i := (s.next + k) % len(paths)
		if paths[i].usable() {
			s.next = i + 1
			return i
		}
	}
	return 0 // unreachable: Pick checks that a path is usable
}

// All appends to dst every usable path (every path when none is), as
// redundant mode sends: for what must not be lost whatever the mode, such as
// the pieces of a datagram cut for the MTU in fec mode.
func All(paths []Path, dst []int) []int {
	dst = dst[:0]
	for i, p := range paths {
		if p.usable() {
			dst = append(dst, i)
		}
	}
	if len(dst) == 0 {
		for i := range paths {
			dst = append(dst, i)
		}
	}
	return dst
}

// minLossSample is how many packets a loss rate must be measured over
// before adaptive trusts it.
const minLossSample = 100

// pessimistic is a path's loss rate as adaptive counts it: the measured
// rate, or 1 (unknown) while it covers fewer than minLossSample packets, so
// that a session does not start, nor a quiet path get relied on alone,
// before its loss is known.
func pessimistic(p Path) float64 {
	if p.SentOut < minLossSample {
		return 1
	}
	return p.LossOut
}

// adaptive picks the usable paths with the least loss, as few as keep the
// product of their losses under the target.
func (s *Scheduler) adaptive(paths []Path, dst []int) []int {
	s.order = s.order[:0]
	for i, p := range paths {
		if p.usable() {
			s.order = append(s.order, i)
		}
	}
	loss := func(i int) float64 { return min(max(pessimistic(paths[i]), s.opt.MinLoss), 1) }
	// Insertion sort: a handful of paths, stable, and no allocation.
	for a := 1; a < len(s.order); a++ {
		for b := a; b > 0 && loss(s.order[b]) < loss(s.order[b-1]); b-- {
			s.order[b], s.order[b-1] = s.order[b-1], s.order[b]
		}
	}
	combined := 1.0
	for _, i := range s.order {
		dst = append(dst, i)
		combined *= loss(i)
		if combined <= s.opt.TargetLoss*(1+1e-6) { // a target met exactly is met
			break
		}
	}
	return dst
}

// Spread picks paths for n packets in a row and returns, for each path i,
// the indexes of the packets that go on it in per[i]. per is the caller's
// scratch, reused from call to call; it must have len(paths) entries.
func (s *Scheduler) Spread(paths []Path, n int, now time.Time, per [][]int) [][]int {
	for i := range per {
		per[i] = per[i][:0]
	}
	var dst [16]int
	for k := 0; k < n; k++ {
		for _, i := range s.Pick(paths, now, dst[:0]) {
			per[i] = append(per[i], k)
		}
	}
	return per
}

// SpreadAll is Spread with every packet on every path All picks.
func SpreadAll(paths []Path, n int, per [][]int) [][]int {
	for i := range per {
		per[i] = per[i][:0]
	}
	var dst [16]int
	for _, i := range All(paths, dst[:0]) {
		for k := range n {
			per[i] = append(per[i], k)
		}
	}
	return per
}

// FromStats describes a path from its health estimates.
func FromStats(st path.Stats, suspect bool) Path {
	return Path{State: st.State, Since: st.Since, LossOut: st.LossOut, SentOut: st.SentOut, Weight: st.Weight, Suspect: suspect}
}
