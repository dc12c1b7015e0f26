package sched

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/path"
)

var t0 = time.Unix(1_800_000_000, 0)

// up is a path up for an hour whose loss is measured over many packets.
func up(loss float64) Path {
	return Path{State: path.Up, Since: t0.Add(-time.Hour), LossOut: loss, SentOut: 1e9}
}

func mustNew(t testing.TB, m Mode, o Options) *Scheduler {
	t.Helper()
	s, err := New(m, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseMode(t *testing.T) {
	for _, m := range []Mode{Redundant, Failover, Balance, Adaptive, FEC} {
		got, err := ParseMode(m.String())
		if err != nil || got != m {
			t.Fatalf("%v: %v %v", m, got, err)
		}
	}
	if _, err := ParseMode("fastest"); err == nil {
		t.Fatal("an unknown mode was accepted")
	}
	if _, err := New(Adaptive, Options{TargetLoss: 1.5}); err == nil {
		t.Fatal("a target loss of 150% was accepted")
	}
}

// TestFEC: shards go on one path each, the usable paths in turn, so twelve
// shards over three paths put four on each; a down path is skipped.
func TestFEC(t *testing.T) {
	s := mustNew(t, FEC, Options{})
	paths := []Path{up(0), up(0.3), up(0)}
	count := make([]int, len(paths))
	for range 12 {
		got := s.Pick(paths, t0, nil)
		if len(got) != 1 {
			t.Fatalf("picked %v, want one path", got)
		}
		count[got[0]]++
	}
	if !slices.Equal(count, []int{4, 4, 4}) {
		t.Fatalf("12 shards went %v, want 4 on each path", count)
	}
	paths[1].State = path.Down
	for range 10 {
		if got := s.Pick(paths, t0, nil); got[0] == 1 {
			t.Fatal("a shard went on the down path")
		}
	}
	if got := All(paths, nil); !slices.Equal(got, []int{0, 2}) {
		t.Fatalf("All picked %v, want the usable paths", got)
	}
	if got := All([]Path{{State: path.Down}}, nil); !slices.Equal(got, []int{0}) {
		t.Fatalf("All with every path down picked %v", got)
	}
	per := SpreadAll(paths, 2, make([][]int, 3))
	if !slices.Equal(per[0], []int{0, 1}) || len(per[1]) != 0 || !slices.Equal(per[2], []int{0, 1}) {
		t.Fatalf("SpreadAll: %v", per)
	}
}

func TestRedundant(t *testing.T) {
	s := mustNew(t, Redundant, Options{})
	paths := []Path{up(0), {State: path.Down}, up(0.5)}
	if got := s.Pick(paths, t0, nil); !slices.Equal(got, []int{0, 2}) {
		t.Fatalf("picked %v, want the two usable paths", got)
	}
	// All down: all of them.
	all := []Path{{State: path.Down}, {State: path.Down}}
	if got := s.Pick(all, t0, nil); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("all down: picked %v", got)
	}
	if got := s.Pick(nil, t0, nil); len(got) != 0 {
		t.Fatalf("no paths: %v", got)
	}
}

func TestFailover(t *testing.T) {
	s := mustNew(t, Failover, Options{ReturnAfter: 5 * time.Second})
	paths := []Path{up(0), up(0), up(0)}
	pick := func(now time.Time) int {
		got := s.Pick(paths, now, nil)
		if len(got) != 1 {
			t.Fatalf("failover picked %v", got)
		}
		return got[0]
	}
	if p := pick(t0); p != 0 {
		t.Fatalf("first pick %d, want the first path", p)
	}
	// The primary dies: the next one at once.
	paths[0] = Path{State: path.Down, Since: t0}
	if p := pick(t0); p != 1 {
		t.Fatalf("after the primary died: %d", p)
	}
	// It comes back: not yet...
	paths[0] = Path{State: path.Up, Since: t0.Add(time.Second)}
	if p := pick(t0.Add(3 * time.Second)); p != 1 {
		t.Fatalf("returned to the primary after 2s up: %d", p)
	}
	// ...but after ReturnAfter.
	if p := pick(t0.Add(6 * time.Second)); p != 0 {
		t.Fatalf("did not return to the primary after 5s up: %d", p)
	}
	// Degraded counts as leaving.
	paths[0].State = path.Degraded
	if p := pick(t0.Add(7 * time.Second)); p != 1 {
		t.Fatalf("stayed on a degraded primary: %d", p)
	}
	// Priorities override list order.
	s2 := mustNew(t, Failover, Options{})
	pr := []Path{up(0), up(0)}
	pr[0].Priority, pr[1].Priority = 2, 1
	if got := s2.Pick(pr, t0, nil); got[0] != 1 {
		t.Fatalf("priority ignored: %v", got)
	}
	// Nothing healthy but something usable: keep going on it.
	s3 := mustNew(t, Failover, Options{})
	deg := []Path{{State: path.Down}, {State: path.Degraded}}
	if got := s3.Pick(deg, t0, nil); got[0] != 1 {
		t.Fatalf("only a degraded path: %v", got)
	}
}

func TestBalanceShares(t *testing.T) {
	s := mustNew(t, Balance, Options{})
	paths := []Path{up(0), up(0), up(0)}
	paths[0].Weight, paths[1].Weight, paths[2].Weight = 50, 50, 20
	count := make([]int, 3)
	var dst []int
	const n = 12000
	for range n {
		dst = s.Pick(paths, t0, dst)
		count[dst[0]]++
	}
	for i, w := range []float64{50, 50, 20} {
		want := n * w / 120
		if math.Abs(float64(count[i])-want) > 2 {
			t.Fatalf("path %d got %d datagrams, want %.0f (weights 50:50:20)", i, count[i], want)
		}
	}
	// Loss lowers a path's share; a down path gets none.
	paths[2].LossOut = 0.5
	paths[1].State = path.Down
	count = make([]int, 3)
	for range n {
		dst = s.Pick(paths, t0, dst)
		count[dst[0]]++
	}
	if count[1] != 0 || math.Abs(float64(count[2])-n*10.0/60) > 3 {
		t.Fatalf("shares %v, want 0 on the down path and 1/6 on the lossy one", count)
	}
}

func TestAdaptive(t *testing.T) {
	s := mustNew(t, Adaptive, Options{TargetLoss: 0.001})
	cases := []struct {
		loss []float64
		want []int
	}{
		{[]float64{0.1, 0.1, 0.1}, []int{0, 1, 2}}, // 0.1^3 = 0.001
		{[]float64{0.3, 0.01, 0.05}, []int{1, 2}},  // 0.01*0.05 = 0.0005
		{[]float64{0.2, 0.0001, 0.3}, []int{1}},    // one clean path is enough... floored at MinLoss 0.001
		{[]float64{0.5, 0.5, 0.5}, []int{0, 1, 2}}, // never enough: all
	}
	for _, c := range cases {
		var paths []Path
		for _, l := range c.loss {
			paths = append(paths, up(l))
		}
		if got := s.Pick(paths, t0, nil); !slices.Equal(got, c.want) {
			t.Fatalf("losses %v: picked %v, want %v", c.loss, got, c.want)
		}
	}
	// Losses measured over few packets, or none (a new session), are not
	// trusted: 0 of 0 or 0 of 20 lost does not make a path clean.
	fresh := []Path{up(0), up(0), up(0)}
	for i := range fresh {
		fresh[i].SentOut = 0
	}
	if got := s.Pick(fresh, t0, nil); !slices.Equal(got, []int{0, 1, 2}) {
		t.Fatalf("unmeasured paths: picked %v, want all", got)
	}
	for i := range fresh {
		fresh[i].SentOut = 20
	}
	if got := s.Pick(fresh, t0, nil); len(got) < 3 {
		t.Fatalf("paths measured over 20 packets: picked %v, want all", got)
	}
	fresh[1].SentOut = 500
	if got := s.Pick(fresh, t0, nil); !slices.Equal(got, []int{1}) {
		t.Fatalf("one path measured clean over 500 packets: picked %v, want it alone", got)
	}
}

// TestAdaptiveResidual simulates independent losses and checks the residual
// loss of adaptive mode against its target and its cost against redundant.
func TestAdaptiveResidual(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	losses := []float64{0.02, 0.05, 0.1}
	s := mustNew(t, Adaptive, Options{TargetLoss: 0.001})
	var paths []Path
	for _, l := range losses {
		paths = append(paths, up(l))
	}
	const n = 200000
	lost, sent := 0, 0
	var dst []int
	for range n {
		dst = s.Pick(paths, t0, dst)
		delivered := false
		for _, i := range dst {
			sent++
			if rng.Float64() >= losses[i] {
				delivered = true
			}
		}
		if !delivered {
			lost++
		}
	}
	residual := float64(lost) / n
	if residual > 0.0015 {
		t.Fatalf("residual loss %.4f%%, target 0.1%%", 100*residual)
	}
	if cost := float64(sent) / n; cost >= 3 {
		t.Fatalf("adaptive sent %.2f copies per datagram, no better than redundant", cost)
	}
}

func TestPickAllocates(t *testing.T) {
	paths := []Path{up(0.1), up(0.05), up(0.2)}
	dst := make([]int, 0, 8)
	for _, m := range []Mode{Redundant, Failover, Balance, Adaptive, FEC} {
		s := mustNew(t, m, Options{})
		s.Pick(paths, t0, dst)
		if n := testing.AllocsPerRun(100, func() { dst = s.Pick(paths, t0, dst) }); n != 0 {
			t.Fatalf("%v allocates %.1f times per pick", m, n)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	paths := []Path{up(0.1), up(0.05), up(0.2)}
	for _, m := range []Mode{Redundant, Failover, Balance, Adaptive, FEC} {
		b.Run(m.String(), func(b *testing.B) {
			s := mustNew(b, m, Options{})
			dst := make([]int, 0, 8)
			b.ReportAllocs()
			for b.Loop() {
				dst = s.Pick(paths, t0, dst)
			}
		})
	}
}

func TestFailoverHedgesWhenSuspect(t *testing.T) {
	s := mustNew(t, Failover, Options{})
	paths := []Path{up(0), up(0), up(0)}
	if got := s.Pick(paths, t0, nil); !slices.Equal(got, []int{0}) {
		t.Fatalf("picked %v", got)
	}
	paths[0].Suspect = true
	if got := s.Pick(paths, t0, nil); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("suspect primary: picked %v, want it and the next path", got)
	}
	paths[1].Suspect = true
	if got := s.Pick(paths, t0, nil); !slices.Equal(got, []int{0, 2}) {
		t.Fatalf("suspect primary and backup: picked %v, want the clear one", got)
	}
	paths[0].Suspect, paths[1].Suspect = false, false
	if got := s.Pick(paths, t0, nil); !slices.Equal(got, []int{0}) {
		t.Fatalf("doubt cleared: picked %v", got)
	}
}
