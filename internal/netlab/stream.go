//go:build linux

package netlab

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const (
	// StreamEnv, when set to a UDP address, makes MaybeRunEcho send a
	// steady stream of numbered datagrams there, count the echoes, print a
	// report and exit (see NS.StartStream).
	StreamEnv = "MPTUNNEL_NETLAB_STREAM"
	// streamRateEnv, streamSizeEnv, streamDurationEnv and streamLingerEnv
	// carry the rest of the stream's StreamConfig.
	streamRateEnv     = "MPTUNNEL_NETLAB_STREAM_RATE"
	streamSizeEnv     = "MPTUNNEL_NETLAB_STREAM_SIZE"
	streamDurationEnv = "MPTUNNEL_NETLAB_STREAM_DURATION"
	streamLingerEnv   = "MPTUNNEL_NETLAB_STREAM_LINGER"

	// streamReady is what the stream process prints just before its first
	// send.
	streamReady = "netlab stream: sending to "
	// streamReportMarker starts the stream process's one-line JSON report.
	streamReportMarker = "netlab stream report: "

	// Defaults and limits of StreamConfig.
	defaultStreamRate   = 500
	defaultStreamSize   = 100
	defaultStreamLinger = time.Second
	defaultStreamGapMin = 50 * time.Millisecond
	maxStreamRate       = 1_000_000
	maxStreamCount      = 1 << 24
	// streamHeader is the size of a datagram's sequence number (4 bytes)
	// and send time (8 bytes).
	streamHeader = 12
	// maxUDPPayload is the largest UDP payload over IPv4.
	maxUDPPayload = 65507
	// maxLostList bounds StreamReport.Lost; LostCount has the full count.
	maxLostList = 10000
	// streamWaitMargin is added to Duration and Linger when waiting for a
	// stream process to finish.
	streamWaitMargin = 15 * time.Second
)

// StreamConfig describes a stream of numbered UDP datagrams sent from a
// namespace by NS.StartStream.
type StreamConfig struct {
	// Addr is where to send, for example the tunnel client's listen
	// address. The echoes must come back to the sending socket.
	Addr string
	// Rate is the number of datagrams per second; 0 means 500.
	Rate int
	// Size is the number of bytes per datagram, at least 12: each carries
	// a sequence number, its send time and a filler derived from both.
	// 0 means 100.
	Size int
	// Duration is how long to send; it is required. The process then
	// waits Linger for late echoes, reports and exits.
	Duration time.Duration
	// Linger is how long to keep listening for echoes after the last
	// send; 0 means one second and a negative value means not at all.
	Linger time.Duration
	// GapMin is the shortest period without echoes that the report lists
	// as a Gap; 0 means 50 ms.
	GapMin time.Duration
}

// withDefaults returns cfg with defaults filled in, or an error if it is
// unusable.
func (cfg StreamConfig) withDefaults() (StreamConfig, error) {
	if cfg.Rate == 0 {
		cfg.Rate = defaultStreamRate
	}
	if cfg.Size == 0 {
		cfg.Size = defaultStreamSize
	}
	if cfg.Linger == 0 {
		cfg.Linger = defaultStreamLinger
	}
	if cfg.Linger < 0 {
		cfg.Linger = 0
	}
	if cfg.GapMin == 0 {
		cfg.GapMin = defaultStreamGapMin
	}
	switch {
	case cfg.Addr == "":
		return cfg, errors.New("no address")
	case cfg.Rate < 0 || cfg.Rate > maxStreamRate:
		return cfg, fmt.Errorf("rate %d not within 1..%d", cfg.Rate, maxStreamRate)
	case cfg.Size < streamHeader || cfg.Size > maxUDPPayload:
		return cfg, fmt.Errorf("size %d not within %d..%d", cfg.Size, streamHeader, maxUDPPayload)
	case cfg.Duration <= 0:
		return cfg, fmt.Errorf("duration %v is not positive", cfg.Duration)
	case cfg.GapMin < 0:
		return cfg, fmt.Errorf("negative GapMin %v", cfg.GapMin)
	case streamTotal(cfg.Rate, cfg.Duration) > maxStreamCount:
		return cfg, fmt.Errorf("%d datagrams/s for %v is more than %d datagrams", cfg.Rate, cfg.Duration, maxStreamCount)
	}
	return cfg, nil
}

// streamTotal returns how many datagrams a stream sends: one at the start
// and one every 1/rate seconds before duration has passed.
func streamTotal(rate int, d time.Duration) int64 {
	if d > 24*time.Hour {
		return maxStreamCount + 1
	}
	return (d.Nanoseconds()*int64(rate) + int64(time.Second) - 1) / int64(time.Second)
}

// Stream is a stream process started by NS.StartStream.
type Stream struct {
	cfg     StreamConfig
	proc    *Proc
	started time.Time // when the process said it was about to send
}

// StreamReport is what a stream process observed. Times are wall-clock
// times of the machine, comparable with time.Now() in the test.
type StreamReport struct {
	// Sent is the number of datagrams sent (sequence numbers 0..Sent-1),
	// including any whose send failed locally (see SendErrors).
	Sent int
	// Received is the number of sequence numbers echoed, each counted once.
	Received int
	// Duplicates counts echoes of sequence numbers already echoed.
	Duplicates int
	// Lost lists, in increasing order, the first 10000
	// sequence numbers never echoed; LostCount counts all of them.
	Lost      []uint32
	LostCount int
	// Corrupt counts datagrams received that are not the echo of one sent:
	// wrong length or content, or a sequence number never sent.
	Corrupt int
	// SendErrors counts sends that failed locally.
	SendErrors int
	// Start is the time of the first send, End that of the last, and
	// Stopped the time the process stopped listening for echoes.
	Start, End, Stopped time.Time
	// Echoes holds the receive time of every echo (duplicates included,
	// corrupt datagrams not), in arrival order, as an offset from Start
	// with microsecond resolution.
	Echoes []time.Duration
	// Gaps lists the periods in which no echo arrived for longer than
	// StreamConfig.GapMin while sending was going on, in order.
	Gaps []Gap
}

// Gap is a period in which no echo arrived. From is the time of the last
// echo before it (Start if there was none); To is the time of the first
// echo after it, or zero if no echo arrived after it.
type Gap struct{ From, To time.Time }

// FirstEchoAfter returns the receive time of the first echo received at or
// after t, and false if none was.
func (r StreamReport) FirstEchoAfter(t time.Time) (time.Time, bool) {
	d := t.Sub(r.Start)
	i := sort.Search(len(r.Echoes), func(i int) bool { return r.Echoes[i] >= d })
	if i == len(r.Echoes) {
		return time.Time{}, false
	}
	return r.Start.Add(r.Echoes[i]), true
}

// StartStream starts a process in the namespace that sends cfg.Rate
// datagrams per second of cfg.Size bytes to cfg.Addr for cfg.Duration from
// one UDP socket, and reads their echoes on the same socket. It returns
// once the process is about to send its first datagram. Like StartEcho it
// runs the test binary again, so TestMain must call MaybeRunEcho.
//
// The process paces its sends by elapsed time: when it falls behind it
// sends a burst to catch up, but never more datagrams than the rate allows
// for the time elapsed. After Duration it listens cfg.Linger longer for
// late echoes. On SIGTERM (Stream.Stop) it stops at once. Either way it
// prints its report and exits 0.
func (n *NS) StartStream(t testing.TB, cfg StreamConfig) *Stream {
	t.Helper()
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatalf("netlab: StartStream: %v", err)
	}
	env := reexecEnv(
		StreamEnv+"="+cfg.Addr,
		streamRateEnv+"="+strconv.Itoa(cfg.Rate),
		streamSizeEnv+"="+strconv.Itoa(cfg.Size),
		streamDurationEnv+"="+cfg.Duration.String(),
		streamLingerEnv+"="+cfg.Linger.String(),
	)
	p := n.start(t, "netlab stream to "+cfg.Addr, env, testBinary(t), []string{"-test.run=^$"})
	p.waitStarted(t, streamReady, fmt.Sprintf("stream to %s from %s", cfg.Addr, n.Name), 5*time.Millisecond)
	return &Stream{cfg: cfg, proc: p, started: time.Now()}
}

// Proc returns the stream's process.
func (s *Stream) Proc() *Proc { return s.proc }

// Wait waits for the stream to finish (Duration and Linger, plus a margin)
// and returns its report. It fails the test if the process does not finish
// in time, fails, or prints no report that can be parsed.
func (s *Stream) Wait(t testing.TB) StreamReport {
	t.Helper()
	limit := s.cfg.Duration + s.cfg.Linger + streamWaitMargin - time.Since(s.started)
	timer := time.NewTimer(max(limit, 0))
	defer timer.Stop()
	select {
	case <-s.proc.Done():
	case <-timer.C:
		_ = s.proc.Stop()
		t.Fatalf("netlab: %s in %s did not finish within %v; output:\n%s",
			s.proc.desc, s.proc.ns, s.cfg.Duration+s.cfg.Linger+streamWaitMargin, tail(s.proc.Output(), 8<<10))
	}
	return s.report(t)
}

// Stop sends SIGTERM to the stream process, which stops sending and
// listening at once, and returns its report. It fails the test like Wait.
func (s *Stream) Stop(t testing.TB) StreamReport {
	t.Helper()
	_ = s.proc.Stop()
	return s.report(t)
}

// report parses the report of the exited process.
func (s *Stream) report(t testing.TB) StreamReport {
	t.Helper()
	out := s.proc.Output()
	if err := s.proc.exitErr(); err != nil {
		t.Fatalf("netlab: %v; output:\n%s", err, tail(out, 8<<10))
	}
	r, err := parseStreamReport(out, s.cfg.GapMin)
	if err != nil {
		t.Fatalf("netlab: %s in %s: %v; output:\n%s", s.proc.desc, s.proc.ns, err, tail(out, 8<<10))
	}
	return r
}

// streamWire is the report as the stream process prints it. Offsets are
// microseconds from Start; EchoDeltas holds the difference of each echo's
// offset from the one before (the first from zero).
type streamWire struct {
	Sent       int       `json:"sent"`
	Received   int       `json:"received"`
	Duplicates int       `json:"duplicates"`
	LostCount  int       `json:"lost_count"`
	Lost       []uint32  `json:"lost"`
	Corrupt    int       `json:"corrupt"`
	SendErrors int       `json:"send_errors"`
	Start      time.Time `json:"start"`
	EndUs      int64     `json:"end_us"`
	StoppedUs  int64     `json:"stopped_us"`
	EchoDeltas []int64   `json:"echo_deltas_us"`
}

// parseStreamReport finds the report line in out and decodes it, computing
// gaps of more than gapMin.
func parseStreamReport(out string, gapMin time.Duration) (StreamReport, error) {
	i := strings.LastIndex(out, streamReportMarker)
	if i < 0 {
		return StreamReport{}, errors.New("no report in the output")
	}
	line := out[i+len(streamReportMarker):]
	if j := strings.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	var w streamWire
	if err := json.Unmarshal([]byte(line), &w); err != nil {
		return StreamReport{}, fmt.Errorf("bad report: %w", err)
	}
	r := StreamReport{
		Sent:       w.Sent,
		Received:   w.Received,
		Duplicates: w.Duplicates,
		Lost:       w.Lost,
		LostCount:  w.LostCount,
		Corrupt:    w.Corrupt,
		SendErrors: w.SendErrors,
		Start:      w.Start,
		End:        w.Start.Add(time.Duration(w.EndUs) * time.Microsecond),
		Stopped:    w.Start.Add(time.Duration(w.StoppedUs) * time.Microsecond),
		Echoes:     make([]time.Duration, 0, len(w.EchoDeltas)),
	}
	var off int64
	for _, d := range w.EchoDeltas {
		if d < 0 {
			return StreamReport{}, errors.New("bad report: echo times out of order")
		}
		off += d
		r.Echoes = append(r.Echoes, time.Duration(off)*time.Microsecond)
	}
	if r.Received+r.LostCount != r.Sent || len(r.Echoes) != r.Received+r.Duplicates {
		return StreamReport{}, fmt.Errorf("bad report: inconsistent counts in %s", line)
	}
	for _, g := range findGaps(r.Echoes, r.End.Sub(r.Start), r.Stopped.Sub(r.Start), gapMin) {
		gap := Gap{From: r.Start.Add(g.from)}
		if g.to >= 0 {
			gap.To = r.Start.Add(g.to)
		}
		r.Gaps = append(r.Gaps, gap)
	}
	return r, nil
}

// gapOffsets is a gap as offsets from the start; to is -1 if no echo
// ended it.
type gapOffsets struct{ from, to time.Duration }

// findGaps returns the periods without echoes (echoes is sorted, end is the
// last send and stopped the end of listening, all offsets from the first
// send) whose part before end lasts more than gapMin.
func findGaps(echoes []time.Duration, end, stopped, gapMin time.Duration) []gapOffsets {
	var gaps []gapOffsets
	during := func(from, to time.Duration) time.Duration {
		return min(to, end) - max(from, 0)
	}
	var prev time.Duration
	for _, e := range echoes {
		if during(prev, e) > gapMin {
			gaps = append(gaps, gapOffsets{prev, e})
		}
		prev = e
	}
	if during(prev, stopped) > gapMin {
		gaps = append(gaps, gapOffsets{prev, -1})
	}
	return gaps
}

// streamParams is the stream process's configuration.
type streamParams struct {
	addr             string
	rate, size       int
	duration, linger time.Duration
}

// runStreamFromEnv runs the stream process configured by the environment
// until it finishes or SIGTERM or SIGINT arrives.
func runStreamFromEnv(addr string) int {
	p := streamParams{addr: addr}
	var errs []error
	atoi := func(key string) int {
		v, err := strconv.Atoi(os.Getenv(key))
		errs = append(errs, err)
		return v
	}
	dur := func(key string) time.Duration {
		v, err := time.ParseDuration(os.Getenv(key))
		errs = append(errs, err)
		return v
	}
	p.rate, p.size = atoi(streamRateEnv), atoi(streamSizeEnv)
	p.duration, p.linger = dur(streamDurationEnv), dur(streamLingerEnv)
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(os.Stderr, "netlab stream: bad configuration: %v\n", err)
		return 1
	}
	if _, err := (StreamConfig{Addr: p.addr, Rate: p.rate, Size: p.size, Duration: p.duration, Linger: p.linger}).withDefaults(); err != nil {
		fmt.Fprintf(os.Stderr, "netlab stream: bad configuration: %v\n", err)
		return 1
	}
	return runStream(p, os.Stdout, os.Stderr, stopSignal())
}

// fillStreamPayload writes datagram seq, sent at unix nanoseconds sentAt,
// into b.
func fillStreamPayload(b []byte, seq uint32, sentAt int64) {
	binary.BigEndian.PutUint32(b[0:4], seq)
	binary.BigEndian.PutUint64(b[4:12], uint64(sentAt))
	x := seq*2654435761 ^ uint32(sentAt)
	for i := streamHeader; i < len(b); i++ {
		b[i] = byte(x >> 24)
		x = x*1664525 + 1013904223
	}
}

// checkStreamPayload returns the sequence number of datagram b if it is a
// faithful copy of one sent: size bytes, seq below sent, send time
// sendTimes[seq] and the matching filler.
func checkStreamPayload(b []byte, size int, sendTimes []int64, sent int) (uint32, bool) {
	if len(b) != size || len(b) < streamHeader {
		return 0, false
	}
	seq := binary.BigEndian.Uint32(b[0:4])
	if int64(seq) >= int64(sent) {
		return 0, false
	}
	sentAt := sendTimes[seq]
	if int64(binary.BigEndian.Uint64(b[4:12])) != sentAt {
		return 0, false
	}
	x := seq*2654435761 ^ uint32(sentAt)
	for i := streamHeader; i < len(b); i++ {
		if b[i] != byte(x>>24) {
			return 0, false
		}
		x = x*1664525 + 1013904223
	}
	return seq, true
}

// runStream sends the stream described by p, reads the echoes, and writes
// the report line to out. Closing stop ends sending and listening at once.
// Problems go to errOut. It returns the process exit status.
func runStream(p streamParams, out, errOut io.Writer, stop <-chan struct{}) int {
	raddr, err := net.ResolveUDPAddr("udp", p.addr)
	if err != nil {
		fmt.Fprintf(errOut, "netlab stream: %v\n", err)
		return 1
	}
	network := "udp6"
	if raddr.IP.To4() != nil {
		network = "udp4"
	}
	conn, err := net.ListenUDP(network, nil)
	if err != nil {
		fmt.Fprintf(errOut, "netlab stream: %v\n", err)
		return 1
	}
	_ = conn.SetReadBuffer(4 << 20)
	_ = conn.SetWriteBuffer(4 << 20)

	total := int(streamTotal(p.rate, p.duration))
	// sendTimes[i] is written before sent is raised past i, and read only
	// for indexes below sent.
	sendTimes := make([]int64, total)
	var sent atomic.Int64

	fmt.Fprintf(out, "%s%s from %s\n", streamReady, raddr, conn.LocalAddr())
	start := time.Now()

	// The sender.
	var last time.Duration // offset of the last send
	var sendErrors int
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		interval := max(time.Second/time.Duration(p.rate), time.Millisecond)
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		buf := make([]byte, p.size)
		next := 0
		for {
			elapsed := time.Since(start)
			target := total
			if elapsed < p.duration {
				target = min(total, int(elapsed.Nanoseconds()*int64(p.rate)/int64(time.Second))+1)
			}
			for ; next < target; next++ {
				select {
				case <-stop:
					return
				default:
				}
				now := time.Now()
				if next == 0 {
					now = start
				}
				at := now.UnixNano()
				fillStreamPayload(buf, uint32(next), at)
				sendTimes[next] = at
				last = now.Sub(start)
				// Publish before sending: the echo may beat the return.
				sent.Store(int64(next + 1))
				if _, err := conn.WriteToUDP(buf, raddr); err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					if sendErrors < 5 {
						fmt.Fprintf(errOut, "netlab stream: send %d: %v\n", next, err)
					}
					sendErrors++
				}
			}
			if next >= total {
				return
			}
			select {
			case <-stop:
				return
			case <-ticker.C:
			}
		}
	}()

	// The receiver.
	var (
		echoes              []time.Duration
		received, dups, bad int
		readErrors          int
	)
	seen := make([]bool, total)
	receiverDone := make(chan struct{})
	go func() {
		defer close(receiverDone)
		buf := make([]byte, maxDatagram)
		for {
			n, _, err := conn.ReadFromUDP(buf)
			at := time.Since(start)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				readErrors++
				time.Sleep(time.Millisecond)
				continue
			}
			seq, ok := checkStreamPayload(buf[:n], p.size, sendTimes, int(sent.Load()))
			if !ok {
				bad++
				continue
			}
			if seen[seq] {
				dups++
			} else {
				seen[seq] = true
				received++
			}
			echoes = append(echoes, at)
		}
	}()

	select {
	case <-senderDone:
		if p.linger > 0 {
			timer := time.NewTimer(p.linger)
			select {
			case <-timer.C:
			case <-stop:
				timer.Stop()
			}
		}
	case <-stop:
	}
	stopped := time.Since(start)
	conn.Close()
	<-senderDone
	<-receiverDone

	nsent := int(sent.Load())
	w := streamWire{
		Sent:       nsent,
		Received:   received,
		Duplicates: dups,
		Corrupt:    bad,
		SendErrors: sendErrors,
		Start:      start.Round(0),
		EndUs:      last.Microseconds(),
		StoppedUs:  stopped.Microseconds(),
		EchoDeltas: make([]int64, 0, len(echoes)),
	}
	for seq, ok := range seen[:nsent] {
		if !ok {
			if len(w.Lost) < maxLostList {
				w.Lost = append(w.Lost, uint32(seq))
			}
			w.LostCount++
		}
	}
	var prev int64
	for _, e := range echoes {
		us := e.Microseconds()
		w.EchoDeltas = append(w.EchoDeltas, us-prev)
		prev = us
	}
	if readErrors > 0 {
		fmt.Fprintf(errOut, "netlab stream: %d read errors\n", readErrors)
	}
	line, err := json.Marshal(w)
	if err != nil {
		fmt.Fprintf(errOut, "netlab stream: %v\n", err)
		return 1
	}
	if _, err := fmt.Fprintf(out, "%s%s\n", streamReportMarker, line); err != nil {
		return 1
	}
	return 0
}
