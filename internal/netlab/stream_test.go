//go:build linux

package netlab

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/udptest"
)

func TestStreamPayload(t *testing.T) {
	sendTimes := []int64{time.Now().UnixNano(), time.Now().UnixNano() + 1234}
	for _, size := range []int{12, 13, 100, 1400} {
		b := make([]byte, size)
		fillStreamPayload(b, 1, sendTimes[1])
		if seq, ok := checkStreamPayload(b, size, sendTimes, 2); !ok || seq != 1 {
			t.Fatalf("size %d: check = %d, %v; want 1, true", size, seq, ok)
		}
		if _, ok := checkStreamPayload(b, size, sendTimes, 1); ok {
			t.Errorf("size %d: sequence number not yet sent accepted", size)
		}
		if _, ok := checkStreamPayload(b[:size-1], size, sendTimes, 2); ok {
			t.Errorf("size %d: short datagram accepted", size)
		}
		for i := range size {
			c := bytes.Clone(b)
			c[i] ^= 0x40
			if seq, ok := checkStreamPayload(c, size, sendTimes, 2); ok {
				t.Errorf("size %d: datagram with byte %d changed accepted as %d", size, i, seq)
			}
		}
	}
	a, b := make([]byte, 100), make([]byte, 100)
	fillStreamPayload(a, 7, 1)
	fillStreamPayload(b, 8, 1)
	if bytes.Equal(a[streamHeader:], b[streamHeader:]) {
		t.Error("fillers of different datagrams are equal")
	}
}

func TestStreamConfigDefaults(t *testing.T) {
	cfg, err := StreamConfig{Addr: "10.0.0.1:1", Duration: time.Second}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want := StreamConfig{Addr: "10.0.0.1:1", Rate: 500, Size: 100, Duration: time.Second, Linger: time.Second, GapMin: 50 * time.Millisecond}
	if cfg != want {
		t.Fatalf("defaults = %+v; want %+v", cfg, want)
	}
	if cfg, err := (StreamConfig{Addr: "x:1", Duration: time.Second, Linger: -1}).withDefaults(); err != nil || cfg.Linger != 0 {
		t.Fatalf("negative Linger: %+v, %v; want Linger 0", cfg, err)
	}
	for _, bad := range []StreamConfig{
		{Duration: time.Second},
		{Addr: "x:1"},
		{Addr: "x:1", Duration: time.Second, Size: 11},
		{Addr: "x:1", Duration: time.Second, Size: 65508},
		{Addr: "x:1", Duration: time.Second, Rate: -1},
		{Addr: "x:1", Duration: time.Second, GapMin: -1},
		{Addr: "x:1", Duration: time.Hour, Rate: 100000},
		{Addr: "x:1", Duration: 1000 * time.Hour},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if n := streamTotal(500, 2*time.Second); n != 1000 {
		t.Errorf("streamTotal(500, 2s) = %d; want 1000", n)
	}
	if n := streamTotal(3, 1001*time.Millisecond); n != 4 {
		t.Errorf("streamTotal(3, 1.001s) = %d; want 4", n)
	}
}

func TestFindGaps(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	g := func(from, to int) gapOffsets {
		if to < 0 {
			return gapOffsets{time.Duration(from) * time.Millisecond, -1}
		}
		return gapOffsets{time.Duration(from) * time.Millisecond, time.Duration(to) * time.Millisecond}
	}
	const gapMin = 50 * time.Millisecond
	for _, tc := range []struct {
		name         string
		echoes       []time.Duration
		end, stopped int
		want         []gapOffsets
	}{
		{"steady", ms(1, 3, 5, 7, 9, 11), 10, 1010, nil},
		{"middle", ms(1, 3, 200, 202), 202, 1202, []gapOffsets{g(3, 200)}},
		{"exactly gapMin", ms(1, 51, 60), 60, 1060, nil},
		{"leading", ms(80, 82), 82, 1082, []gapOffsets{g(0, 80)}},
		{"never resumed", ms(1, 3), 500, 1500, []gapOffsets{g(3, -1)}},
		{"no echo at all", nil, 500, 1500, []gapOffsets{g(0, -1)}},
		{"lost tail shorter than gapMin", ms(1, 3, 5), 40, 1040, nil},
		{"silence mostly after sending", ms(1, 3, 5, 480, 490, 600), 500, 1500, []gapOffsets{g(5, 480)}},
		{"late echo after sending", ms(1, 3, 490, 900), 500, 1500, []gapOffsets{g(3, 490)}},
		{"two gaps", ms(1, 100, 102, 300), 300, 1300, []gapOffsets{g(1, 100), g(102, 300)}},
		{"stopped early", ms(1, 3), 3, 4, nil},
	} {
		got := findGaps(tc.echoes, time.Duration(tc.end)*time.Millisecond, time.Duration(tc.stopped)*time.Millisecond, gapMin)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: gaps = %v; want %v", tc.name, got, tc.want)
		}
	}
}

func TestFirstEchoAfter(t *testing.T) {
	start := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	r := StreamReport{Start: start, Echoes: []time.Duration{time.Millisecond, time.Millisecond, 5 * time.Millisecond, 900 * time.Millisecond}}
	for _, tc := range []struct {
		at   time.Duration
		want time.Duration
		ok   bool
	}{
		{-time.Second, time.Millisecond, true},
		{0, time.Millisecond, true},
		{time.Millisecond, time.Millisecond, true},
		{time.Millisecond + 1, 5 * time.Millisecond, true},
		{100 * time.Millisecond, 900 * time.Millisecond, true},
		{900 * time.Millisecond, 900 * time.Millisecond, true},
		{901 * time.Millisecond, 0, false},
	} {
		// A time with a monotonic reading must compare by wall clock.
		at := time.Now()
		at = at.Add(start.Add(tc.at).Sub(at.Round(0)))
		got, ok := r.FirstEchoAfter(at)
		if ok != tc.ok || (ok && !got.Equal(start.Add(tc.want))) {
			t.Errorf("FirstEchoAfter(start%+v) = %v, %v; want start%+v, %v", tc.at, got, ok, tc.want, tc.ok)
		}
	}
	if _, ok := (StreamReport{Start: start}).FirstEchoAfter(start); ok {
		t.Error("FirstEchoAfter found an echo in an empty report")
	}
}

func TestParseStreamReportErrors(t *testing.T) {
	for _, out := range []string{
		"",
		"netlab stream: sending to 1.2.3.4:5\n",
		streamReportMarker + "{\n",
		streamReportMarker + `{"sent":3,"received":1,"lost_count":1,"echo_deltas_us":[1]}` + "\n",
		streamReportMarker + `{"sent":1,"received":1,"echo_deltas_us":[5,-1]}` + "\n",
	} {
		if r, err := parseStreamReport(out, time.Millisecond); err == nil {
			t.Errorf("parse of %q = %+v; want an error", out, r)
		}
	}
}

// faultyEcho serves UDP echo on a loopback socket with faults chosen by
// sequence number: it drops some, duplicates one, and adds a corrupted
// copy and a copy with an unknown sequence number of others.
func faultyEcho(t *testing.T, drop func(uint32) bool, dup, corrupt, unknown uint32) string {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	udptest.Serve(t, conn, func(b []byte, from netip.AddrPort) {
		seq := binary.BigEndian.Uint32(b)
		if drop(seq) {
			return
		}
		conn.WriteToUDPAddrPort(b, from)
		switch seq {
		case dup:
			conn.WriteToUDPAddrPort(b, from)
		case corrupt:
			c := bytes.Clone(b)
			c[len(c)-1] ^= 1
			conn.WriteToUDPAddrPort(c, from)
		case unknown:
			c := bytes.Clone(b)
			binary.BigEndian.PutUint32(c, 1<<30)
			conn.WriteToUDPAddrPort(c, from)
		}
	})
	return conn.LocalAddr().String()
}

func TestRunStreamInProcess(t *testing.T) {
	t.Parallel()
	addr := faultyEcho(t, func(seq uint32) bool { return seq >= 100 && seq < 150 }, 50, 60, 70)
	var out, errOut strings.Builder
	p := streamParams{addr: addr, rate: 200, size: 64, duration: time.Second, linger: 200 * time.Millisecond}
	before := time.Now()
	if code := runStream(p, &out, &errOut, make(chan struct{})); code != 0 {
		t.Fatalf("runStream = %d; stderr:\n%s", code, errOut.String())
	}
	after := time.Now()
	if !strings.HasPrefix(out.String(), streamReady+addr) {
		t.Errorf("output does not start with the ready line:\n%.300s", out.String())
	}
	// The dropped run lasts 250 ms; a GapMin above scheduling hiccups
	// keeps it the only gap.
	r, err := parseStreamReport(out.String(), 120*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	wantLost := make([]uint32, 0, 50)
	for seq := uint32(100); seq < 150; seq++ {
		wantLost = append(wantLost, seq)
	}
	if r.Sent != 200 || r.Received != 150 || r.Duplicates != 1 || r.Corrupt != 2 || r.LostCount != 50 ||
		!slices.Equal(r.Lost, wantLost) || len(r.Echoes) != 151 || r.SendErrors != 0 {
		t.Errorf("report = sent %d received %d dups %d corrupt %d lost %d %v echoes %d send errors %d; want 200 150 1 2 50 [100..149] 151 0",
			r.Sent, r.Received, r.Duplicates, r.Corrupt, r.LostCount, r.Lost, len(r.Echoes), r.SendErrors)
	}
	if r.Start.Before(before) || r.End.After(after) || r.Stopped.After(after) || !r.End.After(r.Start) || r.Stopped.Before(r.End) {
		t.Errorf("times out of order: before %v start %v end %v stopped %v after %v", before, r.Start, r.End, r.Stopped, after)
	}
	if d := r.End.Sub(r.Start); d < 990*time.Millisecond || d > 1500*time.Millisecond {
		t.Errorf("sending lasted %v; want about 1s", d)
	}
	if len(r.Gaps) != 1 {
		t.Fatalf("gaps = %v; want one", r.Gaps)
	}
	g := r.Gaps[0]
	if d := g.To.Sub(g.From); d < 200*time.Millisecond || d > time.Second {
		t.Errorf("gap lasted %v; want about 250ms (50 datagrams at 200/s)", d)
	}
	if at, ok := r.FirstEchoAfter(g.From.Add(time.Microsecond)); !ok || !at.Equal(g.To) {
		t.Errorf("FirstEchoAfter(inside the gap) = %v, %v; want the gap's end %v", at, ok, g.To)
	}
}

func TestRunStreamStop(t *testing.T) {
	t.Parallel()
	addr := faultyEcho(t, func(uint32) bool { return false }, 1<<31, 1<<31, 1<<31)
	var out, errOut strings.Builder
	p := streamParams{addr: addr, rate: 1000, size: 12, duration: time.Minute, linger: time.Minute}
	stop := make(chan struct{})
	time.AfterFunc(300*time.Millisecond, func() { close(stop) })
	start := time.Now()
	if code := runStream(p, &out, &errOut, stop); code != 0 {
		t.Fatalf("runStream = %d; stderr:\n%s", code, errOut.String())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("runStream took %v after stop", d)
	}
	r, err := parseStreamReport(out.String(), 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent < 100 || r.Sent > 400 || r.LostCount > 5 || r.Corrupt != 0 || r.Duplicates != 0 {
		t.Errorf("report after stop = sent %d received %d lost %d corrupt %d dups %d; want about 300 sent, all but the last few echoed",
			r.Sent, r.Received, r.LostCount, r.Corrupt, r.Duplicates)
	}
}

func TestRunStreamBadAddress(t *testing.T) {
	var out, errOut strings.Builder
	p := streamParams{addr: "no port", rate: 10, size: 12, duration: time.Second}
	if code := runStream(p, &out, &errOut, make(chan struct{})); code == 0 || errOut.Len() == 0 {
		t.Fatalf("runStream with a bad address = %d, stderr %q", code, errOut.String())
	}
}

// streamLab returns a two-namespace lab with an echo server in b, the
// interface of a towards b and the echo address.
func streamLab(t *testing.T) (a *NS, aIf, target string) {
	Require(t, "nft")
	a, b, aIf, _ := linked(t, "10.77.1.1/24", "10.77.1.2/24")
	b.StartEcho(t, "0.0.0.0:2000")
	target = "10.77.1.2:2000"
	a.WaitEcho(t, target, 10*time.Second)
	return a, aIf, target
}

func TestStreamSteady(t *testing.T) {
	t.Parallel()
	a, _, target := streamLab(t)
	before := time.Now()
	s := a.StartStream(t, StreamConfig{Addr: target, Duration: 2 * time.Second, Linger: 300 * time.Millisecond})
	r := s.Wait(t)
	if r.Sent != 1000 || r.Received != r.Sent || r.LostCount != 0 || len(r.Lost) != 0 || r.Duplicates != 0 || r.Corrupt != 0 || r.SendErrors != 0 {
		t.Errorf("report = sent %d received %d lost %d %v dups %d corrupt %d send errors %d; want 1000 sent, all echoed once",
			r.Sent, r.Received, r.LostCount, r.Lost, r.Duplicates, r.Corrupt, r.SendErrors)
	}
	if len(r.Gaps) != 0 {
		t.Errorf("gaps = %v; want none", r.Gaps)
	}
	if len(r.Echoes) != r.Received {
		t.Errorf("%d echo times for %d echoes", len(r.Echoes), r.Received)
	}
	if r.Start.Before(before) || r.Start.After(time.Now()) {
		t.Errorf("start %v not between %v and now", r.Start, before)
	}
	if d := r.End.Sub(r.Start); d < 1990*time.Millisecond || d > 2500*time.Millisecond {
		t.Errorf("sending lasted %v; want about 2s", d)
	}
}

func TestStreamOutage(t *testing.T) {
	t.Parallel()
	a, aIf, target := streamLab(t)
	s := a.StartStream(t, StreamConfig{Addr: target, Duration: 3 * time.Second, Linger: 300 * time.Millisecond})
	time.Sleep(time.Second)
	lossOn0 := time.Now()
	a.SetLoss(t, aIf, 100)
	lossOn1 := time.Now()
	time.Sleep(time.Second)
	lossOff0 := time.Now()
	a.SetLoss(t, aIf, 0)
	lossOff1 := time.Now()
	r := s.Wait(t)
	t.Logf("loss set %v..%v, removed %v..%v; report: sent %d received %d lost %d gaps %v",
		lossOn0.Format(time.StampMicro), lossOn1.Format(time.StampMicro), lossOff0.Format(time.StampMicro), lossOff1.Format(time.StampMicro),
		r.Sent, r.Received, r.LostCount, r.Gaps)

	if r.Sent != 1500 || r.Corrupt != 0 || r.Duplicates != 0 || r.Received+r.LostCount != r.Sent {
		t.Errorf("report = sent %d received %d lost %d corrupt %d dups %d; want 1500 sent, no corruption or duplicates",
			r.Sent, r.Received, r.LostCount, r.Corrupt, r.Duplicates)
	}
	if r.LostCount < 400 || r.LostCount > 600 || len(r.Lost) != r.LostCount {
		t.Errorf("lost %d (%d listed); want 500 ± 100", r.LostCount, len(r.Lost))
	}
	if len(r.Lost) > 0 && int(r.Lost[len(r.Lost)-1]-r.Lost[0])+1 != len(r.Lost) {
		t.Errorf("lost sequence numbers %d..%d are not one run of %d", r.Lost[0], r.Lost[len(r.Lost)-1], len(r.Lost))
	}
	if len(r.Gaps) != 1 {
		t.Fatalf("gaps = %v; want one", r.Gaps)
	}
	g := r.Gaps[0]
	// Echoes already on their way when the rule took effect may arrive a
	// little after SetLoss returned.
	if g.From.Before(lossOn0.Add(-50*time.Millisecond)) || g.From.After(lossOn1.Add(20*time.Millisecond)) {
		t.Errorf("gap starts at %v; want between %v and %v, when the loss was set", g.From, lossOn0, lossOn1)
	}
	if g.To.Before(lossOff0) || g.To.After(lossOff1.Add(200*time.Millisecond)) {
		t.Errorf("gap ends at %v; want soon after the loss was removed between %v and %v", g.To, lossOff0, lossOff1)
	}
	at, ok := r.FirstEchoAfter(lossOff1)
	if !ok || at.Before(lossOff1) || at.Sub(lossOff1) > time.Second {
		t.Errorf("FirstEchoAfter(%v) = %v, %v; want within 1s", lossOff1, at, ok)
	}
}

func TestStreamStop(t *testing.T) {
	t.Parallel()
	a, _, target := streamLab(t)
	s := a.StartStream(t, StreamConfig{Addr: target, Duration: time.Minute, Size: 1200})
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	r := s.Stop(t)
	if d := time.Since(start); d > stopGrace {
		t.Errorf("Stop took %v", d)
	}
	// What is lost is what was in flight at the stop: the tail, and no
	// more than 50 ms of traffic.
	if r.Sent < 200 || r.Sent > 400 || r.LostCount > 25 || r.Corrupt != 0 {
		t.Errorf("report after Stop = sent %d received %d lost %d corrupt %d; want about 250 sent, all but the last few echoed",
			r.Sent, r.Received, r.LostCount, r.Corrupt)
	}
	for i, seq := range r.Lost {
		if want := uint32(r.Sent - r.LostCount + i); seq != want {
			t.Errorf("lost %v: want only the tail of the stream", r.Lost)
			break
		}
	}
	if err := s.Proc().Stop(); err != nil {
		t.Errorf("stream process did not exit 0 on SIGTERM: %v", err)
	}
}

// Wait and Stop must fail the test when the process reports nothing.
func TestStreamReportMissing(t *testing.T) {
	t.Parallel()
	Require(t)
	lab := New(t)
	a := lab.Namespace("a")
	s := &Stream{cfg: StreamConfig{Duration: time.Second, GapMin: time.Millisecond}, proc: a.Start(t, "sh", "-c", "echo "+streamReady+"x"), started: time.Now()}
	<-s.proc.Done()
	ft := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Wait(ft)
	}()
	<-done
	if !ft.failed || !strings.Contains(ft.msg, "no report") {
		t.Fatalf("Wait on a process without a report: failed %v, %q", ft.failed, ft.msg)
	}
}

// fatalRecorder records a Fatalf and ends the goroutine that called it.
type fatalRecorder struct {
	testing.TB
	failed bool
	msg    string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.failed = true
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
