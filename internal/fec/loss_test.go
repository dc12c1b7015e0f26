package fec

import (
	"math"
	"math/rand/v2"
	"testing"
)

// binomialResidual is the expected share of datagrams lost for good with
// independent shard loss p: the data shard lost and at least m of the other
// k+m-1 shards lost.
func binomialResidual(k, m int, p float64) float64 {
	n := k + m - 1
	tail := 0.0
	for i := m; i <= n; i++ {
		tail += binom(n, i) * math.Pow(p, float64(i)) * math.Pow(1-p, float64(n-i))
	}
	return p * tail
}

func binom(n, k int) float64 {
	r := 1.0
	for i := 1; i <= k; i++ {
		r = r * float64(n-k+i) / float64(i)
	}
	return r
}

func TestRandomLoss(t *testing.T) {
	n := datagrams(100_000, 20_000)
	const p = 0.10
	for _, tc := range []struct{ k, m int }{{10, 4}, {8, 4}, {12, 4}} {
		rng := rand.New(rand.NewPCG(1, uint64(tc.k*100+tc.m)))
		r := run(t, Params{Data: tc.k, Parity: tc.m}, n, fixed(1000), 3, func(int, int) bool { return rng.Float64() < p })
		want := binomialResidual(tc.k, tc.m, p)
		wantOverhead := Params{Data: tc.k, Parity: tc.m}.Overhead(1000)
		t.Logf("k=%d m=%d: %d datagrams, residual loss %.3f%% (binomial %.3f%%), recovered %d, overhead %.4fx (expected %.4fx)",
			tc.k, tc.m, n, 100*r.residual(), 100*want, r.recovered, r.overhead(), wantOverhead)
		// The lost datagrams come in clumps (one bad group loses several),
		// so allow a wide band: about four standard deviations at 20,000.
		if got := r.residual(); math.Abs(got-want) > 0.35*want+0.0005 {
			t.Errorf("k=%d m=%d: residual %.4f%%, binomial expectation %.4f%%", tc.k, tc.m, 100*got, 100*want)
		}
		if tc.k == 10 && tc.m == 4 && r.residual() >= 0.01 {
			t.Errorf("residual %.3f%% >= 1%%", 100*r.residual())
		}
		if math.Abs(r.overhead()-wantOverhead) > 1e-3 {
			t.Errorf("overhead %.4f, want %.4f", r.overhead(), wantOverhead)
		}
	}
}

func TestOverheadFigures(t *testing.T) {
	if got := (Params{Data: 10, Parity: 4}).Overhead(1000); math.Abs(got-1.4106) > 1e-4 {
		t.Errorf("10/4 at 1000 bytes: %.4f, want 1.4106", got)
	}
	if got := DefaultParams().Overhead(1000); math.Abs(got-1.5115) > 1e-4 {
		t.Errorf("8/4 at 1000 bytes: %.4f, want 1.5115", got)
	}
	if got := (Params{}).Overhead(1000); got != 0 {
		t.Errorf("zero params: %v", got)
	}
}

// TestWholePathLoss spreads shards over three paths round-robin and loses one
// path entirely: every third shard.
func TestWholePathLoss(t *testing.T) {
	n := datagrams(12_000, 3_000)
	for _, tc := range []struct {
		k, m    int
		repairs bool
	}{
		{6, 3, true},   // 9 shards: 3 a path
		{8, 4, true},   // 12 shards: 4 a path
		{10, 5, true},  // 15 shards: 5 a path
		{12, 6, true},  // 18 shards: 6 a path
		{10, 4, false}, // 14 shards: 4 or 5 a path
		{9, 4, false},  // 13 shards: 4 or 5 a path
		{4, 2, true},   // 6 shards: 2 a path
	} {
		p := Params{Data: tc.k, Parity: tc.m}
		for dead := range 3 {
			if dead > 0 && p != DefaultParams() {
				break // the paths take turns; one is enough but for the default
			}
			r := run(t, p, n, fixed(1000), 3, func(_, path int) bool { return path == dead })
			if dead == 0 {
				t.Logf("k=%d m=%d: path %d of 3 lost: delivered %.2f%%, overhead %.4fx", tc.k, tc.m, dead, 100-100*r.residual(), r.overhead())
			}
			if tc.repairs && r.delivered != r.sent {
				t.Errorf("k=%d m=%d path %d lost: %d of %d delivered", tc.k, tc.m, dead, r.delivered, r.sent)
			}
			if !tc.repairs && r.delivered == r.sent {
				t.Errorf("k=%d m=%d path %d lost: all delivered, expected some loss", tc.k, tc.m, dead)
			}
		}
	}
}

// gilbert is a two-state loss model: no loss in the good state, all lost in
// the bad one.
type gilbert struct {
	rng        *rand.Rand
	pGB, pBG   float64
	bad        bool
	lost, seen int
}

func (g *gilbert) lose() bool {
	if g.bad {
		g.bad = g.rng.Float64() >= g.pBG
	} else {
		g.bad = g.rng.Float64() < g.pGB
	}
	g.seen++
	if g.bad {
		g.lost++
	}
	return g.bad
}

// TestBurstyLossOnePath loses packets of one path of three in bursts of 10
// on average, 10% of that path's packets in all.
func TestBurstyLossOnePath(t *testing.T) {
	n := datagrams(100_000, 20_000)
	for _, tc := range []struct {
		k, m int
		min  float64
	}{
		{8, 4, 0.99},
		{6, 3, 0.99},
		{10, 4, 0}, // reported only
	} {
		g := &gilbert{rng: rand.New(rand.NewPCG(7, uint64(tc.k))), pGB: 1.0 / 90, pBG: 1.0 / 10}
		r := run(t, Params{Data: tc.k, Parity: tc.m}, n, fixed(1000), 3, func(_, path int) bool {
			return path == 0 && g.lose()
		})
		t.Logf("k=%d m=%d: bursty loss %.2f%% on path 0 of 3: delivered %.3f%%, overhead %.4fx",
			tc.k, tc.m, 100*float64(g.lost)/float64(g.seen), 100-100*r.residual(), r.overhead())
		if lossRate := float64(g.lost) / float64(g.seen); lossRate < 0.07 || lossRate > 0.13 {
			t.Errorf("model lost %.2f%% of path 0, want about 10%%", 100*lossRate)
		}
		if got := 1 - r.residual(); got < tc.min {
			t.Errorf("k=%d m=%d: delivered %.3f%%, want at least %.1f%%", tc.k, tc.m, 100*got, 100*tc.min)
		}
	}
}

// TestBurstyLossAllPaths also loses bursts on each path independently (10%
// average each), the harder case, for the record.
func TestBurstyLossAllPaths(t *testing.T) {
	n := datagrams(50_000, 10_000)
	for _, tc := range []struct{ k, m int }{{8, 4}, {10, 4}} {
		var gs [3]*gilbert
		for i := range gs {
			gs[i] = &gilbert{rng: rand.New(rand.NewPCG(uint64(i), 9)), pGB: 1.0 / 90, pBG: 1.0 / 10}
		}
		r := run(t, Params{Data: tc.k, Parity: tc.m}, n, fixed(1000), 3, func(_, path int) bool { return gs[path].lose() })
		t.Logf("k=%d m=%d: bursty loss on all three paths: delivered %.3f%%", tc.k, tc.m, 100-100*r.residual())
		if r.residual() > 0.10 {
			t.Errorf("k=%d m=%d: residual %.2f%% above the raw loss", tc.k, tc.m, 100*r.residual())
		}
	}
}
