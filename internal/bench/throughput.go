package bench

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

const (
	// maxStepDatagrams bounds one step's datagrams, and so the memory of
	// the target's sequence set (8 MiB).
	maxStepDatagrams = 1 << 26
	// probeRate is asked of the generator for the flat-out probe; it
	// sends as fast as it can.
	probeRate = 1e7
	// minSearchRate is the lowest rate a search tries.
	minSearchRate = 100
)

// throughput finds the highest passing rate to dst: a flat-out probe picks
// the first rate, then a bounded search refines it. tn, when set, is the
// tunnel whose paths and counters are reported.
func (b *bencher) throughput(ctx context.Context, name string, dst netip.AddrPort, tn *tunnel) (Throughput, error) {
	t := Throughput{Name: name, Paths: tn.paths()}
	before := tn.counters()
	probeDur := min(b.cfg.Duration, time.Second)
	b.prog.printf("%s throughput: probing flat out", name)
	probe, err := b.measure(ctx, dst, probeRate, probeDur)
	if err != nil {
		return t, fmt.Errorf("%s throughput probe: %w", name, err)
	}
	t.Probe = probe
	n := 0
	steps, best, err := searchRate(ctx, searchParams{
		Start:     max(probe.DeliveredPPS, minSearchRate),
		MinRate:   minSearchRate,
		MaxSteps:  b.cfg.MaxSteps,
		Tolerance: 0.05,
	}, func(ctx context.Context, rate float64) (Step, error) {
		n++
		b.prog.printf("%s throughput: step %d/%d at %.0f pkt/s", name, n, b.cfg.MaxSteps, rate)
		return b.measure(ctx, dst, rate, b.cfg.Duration)
	})
	t.Steps = steps
	if err != nil {
		return t, fmt.Errorf("%s throughput: %w", name, err)
	}
	if best >= 0 {
		s := steps[best]
		t.Found = true
		t.GoodputMbps = s.GoodputMbps
		t.DeliveredPPS = s.DeliveredPPS
		t.Loss = s.Loss
		t.CPUCores = s.CPUCores
		t.GeneratorLimited = s.OfferedPPS < 0.9*s.TargetPPS
		b.prog.printf("%s throughput: %.0f Mbit/s, %.0f pkt/s", name, s.GoodputMbps, s.DeliveredPPS)
	}
	t.Counters = tn.counters().since(before)
	return t, nil
}

// measure offers rate datagrams a second to dst for d and counts what the
// target received, or with BothWays the echoes that came back.
func (b *bencher) measure(ctx context.Context, dst netip.AddrPort, rate float64, d time.Duration) (Step, error) {
	limit := min(uint64(rate*d.Seconds())+batchSize, maxStepDatagrams)
	step := b.nextStep()
	gen, kind := b.gen, byte(kindCount)
	var delivered, duplicates func() uint64
	if b.cfg.BothWays {
		// A socket of its own each step, and a reader counting echoes.
		conn, err := listenBatch(b.sockOpts())
		if err != nil {
			return Step{}, fmt.Errorf("echo generator: %w", err)
		}
		r := &echoReader{conn: conn, epoch: b.epoch, step: step, seen: newSeqSet(limit)}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.loop(b.cfg.Size + 1)
		}()
		defer func() { conn.Close(); wg.Wait() }()
		gen, kind = newGenerator(conn, b.cfg.Size, b.epoch, genRunTime), kindEcho
		delivered, duplicates = r.received.Load, r.duplicates.Load
	} else {
		c := newCounter(step, limit)
		b.target.count(c)
		defer b.target.count(nil)
		delivered, duplicates = c.delivered.Load, c.duplicates.Load
	}
	cpu0 := cpuTime()
	res, err := gen.run(ctx, dst, kind, step, rate, d, limit)
	cpu := cpuTime() - cpu0
	if err != nil {
		return Step{}, err
	}
	b.drain(ctx, res.sent, func() uint64 { return delivered() + duplicates() })
	s := Step{
		TargetPPS:  rate,
		Sent:       res.sent,
		Delivered:  delivered(),
		Duplicates: duplicates(),
		Seconds:    res.elapsed.Seconds(),
	}
	if s.Seconds > 0 {
		s.OfferedPPS = float64(s.Sent) / s.Seconds
		s.DeliveredPPS = float64(s.Delivered) / s.Seconds
		s.GoodputMbps = float64(s.Delivered) * float64(b.cfg.Size) * 8 / s.Seconds / 1e6
		s.CPUCores = cpu.Seconds() / s.Seconds
	}
	if s.Sent > 0 {
		s.Loss = 1 - float64(min(s.Delivered, s.Sent))/float64(s.Sent)
	}
	s.Pass = s.Delivered > 0 && s.Loss < LossLimit
	return s, ctx.Err()
}

// drain waits until got reaches want, or stops moving for a while (the rest
// is lost), or a bound passes.
func (b *bencher) drain(ctx context.Context, want uint64, got func() uint64) {
	waitStill(ctx, got, want, 5*time.Millisecond, 100*time.Millisecond+2*b.cfg.Delay, 2*time.Second+4*b.cfg.Delay)
}

// waitStill reads count every interval until it reaches want or has not
// moved for quiet, ctx is done or bound has passed.
func waitStill(ctx context.Context, count func() uint64, want uint64, interval, quiet, bound time.Duration) {
	deadline := time.Now().Add(bound)
	last, moved := count(), time.Now()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for last < want {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if v := count(); v != last {
				last, moved = v, now
			} else if now.Sub(moved) >= quiet {
				return
			}
			if now.After(deadline) {
				return
			}
		}
	}
}

// delta returns after minus before for every counter that moved.
func delta(after, before map[string]uint64) map[string]uint64 {
	if after == nil {
		return nil
	}
	d := make(map[string]uint64)
	for k, v := range after {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	return d
}

// delivery streams at the configured rate through tn for one step and
// reports what arrived and what the client put on the paths for it.
func (b *bencher) delivery(ctx context.Context, tn *tunnel) (Delivery, error) {
	d := Delivery{Name: fmt.Sprintf("tunnel %d paths", tn.paths()), Paths: tn.paths()}
	before := tn.counters()
	b.prog.printf("%s: %d datagrams/s for %v", d.Name, b.cfg.Rate, b.cfg.Duration)
	s, err := b.measure(ctx, tn.addr(), float64(b.cfg.Rate), b.cfg.Duration)
	if err != nil {
		return d, fmt.Errorf("%s delivery: %w", d.Name, err)
	}
	d.Counters = tn.counters().since(before)
	d.RatePPS = s.OfferedPPS
	d.Sent, d.Delivered, d.Duplicates, d.Loss = s.Sent, s.Delivered, s.Duplicates, s.Loss
	d.AppBytes = s.Sent * uint64(b.cfg.Size)
	d.PathBytes = d.Client["tx_bytes"]
	if d.AppBytes > 0 {
		d.Bandwidth = float64(d.PathBytes) / float64(d.AppBytes)
	}
	return d, nil
}
