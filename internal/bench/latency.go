package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mptunnel/mptunnel/internal/udpio"
)

// maxLatencySamples bounds the preallocated round-trip samples (64 MiB).
const maxLatencySamples = 1 << 23

// echoReader reads echoes on the generator's socket and keeps one
// round-trip time per distinct sequence number.
type echoReader struct {
	conn    udpio.Conn
	epoch   time.Time
	step    uint32
	seen    seqSet
	samples []time.Duration // preallocated; appended by the reader only
	sentAt  []int64         // each sample's send time, when kept

	received   atomic.Uint64
	duplicates atomic.Uint64
}

func (r *echoReader) loop(bufSize int) {
	readBatches(r.conn, bufSize, func(msgs []udpio.Msg) {
		now := int64(time.Since(r.epoch))
		for i := range msgs {
			h, ok := parseHeader(msgs[i].Buf[:msgs[i].N])
			if !ok || h.kind != kindEcho || h.step != r.step {
				continue
			}
			isNew, inRange := r.seen.add(h.seq)
			switch {
			case !inRange:
			case isNew:
				if len(r.samples) < cap(r.samples) {
					r.samples = append(r.samples, time.Duration(now-h.sent))
					if r.sentAt != nil {
						r.sentAt = append(r.sentAt, h.sent)
					}
				}
				r.received.Add(1)
			default:
				r.duplicates.Add(1)
			}
		}
	})
}

// latency sends echo requests to dst at the configured rate and reports the
// round-trip times. tn, when set, is the tunnel whose paths and counters are
// reported.
func (b *bencher) latency(ctx context.Context, name string, dst netip.AddrPort, tn *tunnel) (Latency, error) {
	l := Latency{Name: name, Paths: tn.paths()}
	conn, err := listenBatch(b.sockOpts())
	if err != nil {
		return l, fmt.Errorf("%s latency: %w", name, err)
	}
	rate, d := float64(b.cfg.Rate), b.cfg.Duration
	limit := min(uint64(rate*d.Seconds())+batchSize, maxLatencySamples)
	r := &echoReader{
		conn:    conn,
		epoch:   b.epoch,
		step:    b.nextStep(),
		seen:    newSeqSet(limit),
		samples: make([]time.Duration, 0, limit),
	}
	if b.cfg.Samples != nil {
		r.sentAt = make([]int64, 0, limit)
	}
	// What an earlier throughput search left queued in sockets must not
	// delay the echoes.
	b.settle(ctx, tn)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.loop(b.cfg.Size + 1)
	}()
	before := tn.counters()
	b.prog.printf("%s latency: %d echoes/s for %v", name, b.cfg.Rate, d)
	gen := newGenerator(conn, b.cfg.Size, b.epoch, 0)
	res, err := gen.run(ctx, dst, kindEcho, r.step, rate, d, limit)
	if err == nil {
		b.drain(ctx, res.sent, r.received.Load)
	}
	conn.Close()
	wg.Wait()
	if err != nil {
		return l, fmt.Errorf("%s latency: %w", name, err)
	}
	l.Counters = tn.counters().since(before)
	l.Sent = res.sent
	l.Received = r.received.Load()
	l.Duplicates = r.duplicates.Load()
	if l.Sent > l.Received {
		l.Lost = l.Sent - l.Received
	}
	if res.elapsed > 0 {
		l.RatePPS = float64(res.sent) / res.elapsed.Seconds()
	}
	if err := r.writeSamples(b.cfg.Samples, name); err != nil {
		return l, fmt.Errorf("%s latency: %w", name, err)
	}
	st := summarize(r.samples)
	l.MinUs, l.MeanUs, l.P50Us, l.P99Us, l.P999Us, l.MaxUs = st.min, st.mean, st.p50, st.p99, st.p999, st.max
	if len(r.samples) == 0 {
		return l, fmt.Errorf("%s latency: no echo came back of %d sent", name, l.Sent)
	}
	return l, ctx.Err()
}

// writeSamples writes each round trip as "SETUP SENT_US RTT_US" to w, in
// the order the echoes came back; nothing when w is nil.
func (r *echoReader) writeSamples(w io.Writer, name string) error {
	if w == nil {
		return nil
	}
	bw := bufio.NewWriter(w)
	setup := strings.ReplaceAll(name, " ", "_")
	for i, rtt := range r.samples {
		fmt.Fprintf(bw, "%s %.1f %.1f\n", setup, float64(r.sentAt[i])/1e3, float64(rtt)/1e3)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("samples: %w", err)
	}
	return nil
}

// stats are a sample's summary, in microseconds.
type stats struct {
	min, mean, p50, p99, p999, max float64
}

// summarize sorts samples in place and returns their summary; percentiles
// are nearest-rank.
func summarize(samples []time.Duration) stats {
	if len(samples) == 0 {
		return stats{}
	}
	slices.Sort(samples)
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(samples)))) - 1
		return us(samples[max(0, min(i, len(samples)-1))])
	}
	var sum time.Duration
	for _, s := range samples {
		sum += s
	}
	return stats{
		min:  us(samples[0]),
		mean: us(sum) / float64(len(samples)),
		p50:  rank(0.50),
		p99:  rank(0.99),
		p999: rank(0.999),
		max:  us(samples[len(samples)-1]),
	}
}

// settle waits until the tunnel has carried nothing for 200 ms (at most 10 s):
// its sockets and bridges hold no traffic of an earlier measurement.
func (b *bencher) settle(ctx context.Context, tn *tunnel) {
	if tn == nil {
		return
	}
	carried := func() uint64 {
		c := tn.counters() // delivered, not received: probes never stop
		return c.Client["delivered"] + c.Server["delivered"]
	}
	waitStill(ctx, carried, math.MaxUint64, 20*time.Millisecond, 200*time.Millisecond, 10*time.Second)
}
