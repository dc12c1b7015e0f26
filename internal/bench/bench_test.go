package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func checkThroughput(t *testing.T, th Throughput) {
	t.Helper()
	if !th.Found {
		t.Errorf("%s: no passing rate; probe %+v, steps %+v", th.Name, th.Probe, th.Steps)
		return
	}
	if th.GoodputMbps <= 0 || th.DeliveredPPS <= 0 {
		t.Errorf("%s: goodput %v Mbit/s, %v pkt/s", th.Name, th.GoodputMbps, th.DeliveredPPS)
	}
	if th.Loss < 0 || th.Loss >= LossLimit {
		t.Errorf("%s: loss %v of a passing step", th.Name, th.Loss)
	}
	if len(th.Steps) == 0 {
		t.Errorf("%s: no steps", th.Name)
	}
	for _, s := range append([]Step{th.Probe}, th.Steps...) {
		if s.Loss < 0 || s.Loss > 1 {
			t.Errorf("%s: loss fraction %v outside [0,1]", th.Name, s.Loss)
		}
		if s.Delivered > s.Sent {
			t.Errorf("%s: %d delivered of %d sent", th.Name, s.Delivered, s.Sent)
		}
	}
}

func checkLatency(t *testing.T, l Latency) {
	t.Helper()
	if l.Sent == 0 || l.Received == 0 || l.Received > l.Sent {
		t.Errorf("%s: %d echoes of %d", l.Name, l.Received, l.Sent)
	}
	if !(0 < l.MinUs && l.MinUs <= l.P50Us && l.P50Us <= l.P99Us && l.P99Us <= l.P999Us && l.P999Us <= l.MaxUs) {
		t.Errorf("%s: percentiles out of order: min %v p50 %v p99 %v p99.9 %v max %v",
			l.Name, l.MinUs, l.P50Us, l.P99Us, l.P999Us, l.MaxUs)
	}
}

// checkSamples: the samples hold one line per echo of each setup, and
// their round trips lie within that setup's minimum and maximum.
func checkSamples(t *testing.T, text string, lats []Latency) {
	t.Helper()
	count := make(map[string]uint64)
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("sample line %q: want SETUP SENT_US RTT_US", line)
		}
		var l *Latency
		for i := range lats {
			if strings.ReplaceAll(lats[i].Name, " ", "_") == f[0] {
				l = &lats[i]
			}
		}
		sent, err1 := strconv.ParseFloat(f[1], 64)
		rtt, err2 := strconv.ParseFloat(f[2], 64)
		if l == nil || err1 != nil || err2 != nil || sent <= 0 || rtt < l.MinUs-0.1 || rtt > l.MaxUs+0.1 {
			t.Fatalf("sample line %q does not match the report", line)
		}
		count[f[0]]++
	}
	for _, l := range lats {
		if n := count[strings.ReplaceAll(l.Name, " ", "_")]; n != l.Received {
			t.Errorf("%s: %d samples for %d echoes", l.Name, n, l.Received)
		}
	}
}

func TestRunShort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress, samples bytes.Buffer
	rep, err := Run(ctx, Config{Short: true, Paths: 2, Rate: 2000, Progress: &progress, Samples: &samples})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Throughput) != 3 || len(rep.Latency) != 3 {
		t.Fatalf("%d throughput and %d latency results, want 3 of each", len(rep.Throughput), len(rep.Latency))
	}
	wantNames := []string{"baseline", "tunnel 1 path", "tunnel 2 paths"}
	for i, th := range rep.Throughput {
		if th.Name != wantNames[i] || rep.Latency[i].Name != wantNames[i] {
			t.Errorf("result %d: names %q, %q; want %q", i, th.Name, rep.Latency[i].Name, wantNames[i])
		}
		checkThroughput(t, th)
		checkLatency(t, rep.Latency[i])
	}
	if tun := rep.Throughput[2]; tun.Client["forwarded"] == 0 || tun.Server["delivered"] == 0 {
		t.Errorf("tunnel counters did not move: client %v server %v", tun.Client, tun.Server)
	}
	checkSamples(t, samples.String(), rep.Latency)
	if rep.Throughput[0].VsBaseline != 1 {
		t.Errorf("baseline vs itself %v", rep.Throughput[0].VsBaseline)
	}
	if rep.Seconds <= 0 || rep.Machine.CPUs <= 0 {
		t.Errorf("seconds %v, cpus %d", rep.Seconds, rep.Machine.CPUs)
	}
	if n := strings.Count(progress.String(), "\n"); n == 0 || float64(n) > rep.Seconds+1 {
		t.Errorf("%d progress lines in %.1fs:\n%s", n, rep.Seconds, progress.String())
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Fatal(err)
	}
	checkWidth(t, writeTable(t, rep))
}

// TestRunShortBothWays: with BothWays the throughput steps count echoes, so
// the server forwards the target's replies back through the tunnel.
func TestRunShortBothWays(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Config{Short: true, Paths: 1, Measure: MeasureThroughput, BothWays: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Throughput) != 2 || !rep.Config.BothWays {
		t.Fatalf("%d throughput results, both ways %v; want 2, true", len(rep.Throughput), rep.Config.BothWays)
	}
	for _, th := range rep.Throughput {
		checkThroughput(t, th)
	}
	tun := rep.Throughput[1]
	if tun.Server["forwarded"] == 0 || tun.Client["delivered"] < tun.Server["forwarded"]/2 {
		t.Errorf("the replies did not come back through the tunnel: client %v server %v", tun.Client, tun.Server)
	}
	if table := writeTable(t, rep); !strings.Contains(table, "both ways") {
		t.Errorf("the table does not say the figures are both ways:\n%s", table)
	}
}

// TestRunTCP: --measure tcp reports one connection's rate directly and
// through the tunnel's TCP forward, whose bytes crossed the tunnel's paths.
func TestRunTCP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Config{Short: true, Paths: 2, Measure: MeasureTCP})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.TCP) != 3 {
		t.Fatalf("%d TCP results, want 3 (baseline, 1 path, 2 paths)", len(rep.TCP))
	}
	for _, r := range rep.TCP {
		if r.Mbps <= 0 || r.Bytes <= 0 {
			t.Errorf("%s: %.1f Mbit/s, %d bytes", r.Name, r.Mbps, r.Bytes)
		}
	}
	for _, r := range rep.TCP[1:] {
		if tx := r.Client["tx_bytes"]; tx < uint64(r.Bytes) {
			t.Errorf("%s: the sink counted %d bytes, yet the client put only %d on its paths", r.Name, r.Bytes, tx)
		}
	}
	if table := writeTable(t, rep); !strings.Contains(table, "TCP (one connection") {
		t.Errorf("the table has no TCP section:\n%s", table)
	}
}

func TestRunBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Size: 10},
		{Paths: 300},
		{Measure: "fast"},
		{Loss: 2},
		{Measure: MeasureMemory},
		{Sessions: 2},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}

// fakeMeasure passes every rate up to limit and loses 1% above it; the
// generator cannot go beyond genMax.
func fakeMeasure(limit, genMax float64, calls *int) func(context.Context, float64) (Step, error) {
	return func(_ context.Context, rate float64) (Step, error) {
		*calls++
		offered := math.Min(rate, genMax)
		s := Step{TargetPPS: rate, OfferedPPS: offered, DeliveredPPS: offered}
		if offered > limit {
			s.Loss = 0.01
			s.DeliveredPPS = offered * 0.99
		}
		s.Pass = s.Loss < LossLimit
		return s, nil
	}
}

func TestSearchConverges(t *testing.T) {
	for _, tc := range []struct {
		start, limit float64
	}{
		{1000, 123456},   // doubling up, then bisecting
		{1e6, 123456},    // halving down, then bisecting
		{123456, 123456}, // exactly right first
		{5000, 5001},
	} {
		calls := 0
		steps, best, err := searchRate(context.Background(), searchParams{
			Start: tc.start, MinRate: 1, MaxSteps: 30, Tolerance: 0.01,
		}, fakeMeasure(tc.limit, math.Inf(1), &calls))
		if err != nil {
			t.Fatal(err)
		}
		if best < 0 {
			t.Fatalf("start %v limit %v: nothing passed", tc.start, tc.limit)
		}
		got := steps[best].TargetPPS
		if got > tc.limit || got < tc.limit*0.99 {
			t.Errorf("start %v: best rate %v, want within 1%% below %v", tc.start, got, tc.limit)
		}
		if calls != len(steps) || calls > 30 {
			t.Errorf("%d calls, %d steps", calls, len(steps))
		}
	}
}

func TestSearchBounded(t *testing.T) {
	calls := 0
	steps, best, err := searchRate(context.Background(), searchParams{Start: 1000, MinRate: 1, MaxSteps: 4, Tolerance: 0.001},
		fakeMeasure(1e9, math.Inf(1), &calls))
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 4 || calls != 4 {
		t.Fatalf("%d steps, %d calls; want 4", len(steps), calls)
	}
	if steps[best].TargetPPS != 8000 {
		t.Errorf("best %v, want 8000 after doubling three times", steps[best].TargetPPS)
	}
}

func TestSearchNothingPasses(t *testing.T) {
	calls := 0
	steps, best, err := searchRate(context.Background(), searchParams{Start: 1000, MinRate: 100, MaxSteps: 20},
		fakeMeasure(10, math.Inf(1), &calls))
	if err != nil {
		t.Fatal(err)
	}
	if best != -1 {
		t.Errorf("best %d, want -1", best)
	}
	if len(steps) != 4 { // 1000, 500, 250, 125
		t.Errorf("%d steps, want 4 before going under the minimum rate", len(steps))
	}
}

// TestSearchStall: a step that gets nothing through (the machine stalled)
// does not end the search; it goes on at a quarter of the rate.
func TestSearchStall(t *testing.T) {
	calls := 0
	fake := fakeMeasure(30000, math.Inf(1), &calls)
	steps, best, err := searchRate(context.Background(), searchParams{Start: 96000, MinRate: 100, MaxSteps: 4},
		func(ctx context.Context, rate float64) (Step, error) {
			if calls == 1 { // the second step stalls
				calls++
				return Step{TargetPPS: rate, OfferedPPS: rate, Loss: 1}, nil
			}
			return fake(ctx, rate)
		})
	if err != nil {
		t.Fatal(err)
	}
	if best < 0 {
		t.Fatalf("no passing rate after a stall: %+v", steps)
	}
}

func TestSearchGeneratorLimited(t *testing.T) {
	calls := 0
	steps, best, err := searchRate(context.Background(), searchParams{Start: 1000, MinRate: 1, MaxSteps: 20},
		fakeMeasure(1e9, 5000, &calls))
	if err != nil {
		t.Fatal(err)
	}
	if best < 0 || steps[best].OfferedPPS != 5000 || len(steps) != 4 { // 1000, 2000, 4000, 8000→5000
		t.Errorf("best %d of %+v", best, steps)
	}
}

func TestSearchNoSteps(t *testing.T) {
	calls := 0
	if _, _, err := searchRate(context.Background(), searchParams{Start: 1}, fakeMeasure(1, 1, &calls)); err == nil {
		t.Error("no error for a search of no steps")
	}
}

// writeTable returns rep's table.
func writeTable(t *testing.T, rep Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// checkWidth fails the test for every line of table wider than 80 columns,
// and logs the table.
func checkWidth(t *testing.T, table string) {
	t.Helper()
	for _, line := range strings.Split(table, "\n") {
		if n := utf8.RuneCountInString(line); n > 80 {
			t.Errorf("line of %d columns: %q", n, line)
		}
	}
	t.Logf("\n%s", table)
}

func TestTableFits80Columns(t *testing.T) {
	big := Throughput{Name: "tunnel 255 paths", Paths: 255, Found: true, GoodputMbps: 123456.7,
		DeliveredPPS: 98765432, Loss: 0.00099, CPUCores: 12.5, GeneratorLimited: true, VsBaseline: 10.5}
	lat := Latency{Name: "tunnel 255 paths", Paths: 255, P50Us: 1234567.8, P99Us: 2345678.9,
		P999Us: 3456789.1, MaxUs: 9999999.9, Lost: 1234567890, AddedP50Us: -1234567.8, AddedP99Us: 2345678.9, AddedP999Us: 3456789.1}
	rep := Report{
		Machine: Machine{CPUs: 256, CPUModel: strings.Repeat("Very Long CPU Model Name ", 5), OS: "linux",
			Kernel: "6.18.44-some-very-long-kernel-release-string", Go: "go1.26.8"},
		Config:     RunConfig{Paths: 255, Size: 65507, StepSecs: 3, Rate: 1000000, Loss: 0.123456, DelayMs: 1234.5, LossLimit: LossLimit},
		Throughput: []Throughput{big, {Name: "baseline"}, big},
		Latency:    []Latency{lat, lat},
		Memory:     &Memory{Sessions: 1000, Flows: 256, Paths: 255, FlowRate: 1000, SessionsUp: 1000, Sent: 1 << 40, Echoed: 1 << 40, RSSMiB: 123456.7, HWMMiB: 123456.7, SteadySecs: 3},
	}
	checkWidth(t, writeTable(t, rep))
}

func TestSummarize(t *testing.T) {
	var s []time.Duration
	for i := 1000; i >= 1; i-- {
		s = append(s, time.Duration(i)*time.Microsecond)
	}
	st := summarize(s)
	if st.min != 1 || st.p50 != 500 || st.p99 != 990 || st.p999 != 999 || st.max != 1000 || st.mean != 500.5 {
		t.Errorf("%+v", st)
	}
	if st := summarize(nil); st != (stats{}) {
		t.Errorf("empty: %+v", st)
	}
}

func TestParseStatus(t *testing.T) {
	text := "Name:\tmptunnel\nVmPeak:\t  900000 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t5\n"
	rss, hwm, err := parseStatus(strings.NewReader(text))
	if err != nil || rss != 10 || hwm != 20 {
		t.Errorf("rss %v hwm %v err %v", rss, hwm, err)
	}
	if _, _, err := parseStatus(strings.NewReader("Name:\tx\n")); err == nil {
		t.Error("no error without VmRSS")
	}
}

func TestSeqSet(t *testing.T) {
	s := newSeqSet(100)
	for _, c := range []struct {
		seq         uint64
		isNew, isOK bool
	}{{0, true, true}, {0, false, true}, {99, true, true}, {63, true, true}, {64, true, true}, {64, false, true}, {100, false, false}} {
		isNew, ok := s.add(c.seq)
		if isNew != c.isNew || ok != c.isOK {
			t.Errorf("add(%d) = %v, %v; want %v, %v", c.seq, isNew, ok, c.isNew, c.isOK)
		}
	}
}
