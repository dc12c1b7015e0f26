package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/mptunnel/mptunnel/internal/udpio"
)

// maxSendErrors bounds the failed writes one run of the generator tolerates
// before it gives up.
const maxSendErrors = 1000

// generator sends numbered, timestamped datagrams at a paced rate, in
// batches, so that a single goroutine can offer millions of datagrams a
// second.
type generator struct {
	conn  udpio.Conn
	size  int
	epoch time.Time
	msgs  []udpio.Msg
	// runTime is how much sending time a run of datagrams may cover: well
	// above the timer's slack for throughput, zero to space every datagram
	// on its own.
	runTime time.Duration
}

func newGenerator(conn udpio.Conn, size int, epoch time.Time, runTime time.Duration) *generator {
	g := &generator{conn: conn, size: size, epoch: epoch, msgs: make([]udpio.Msg, batchSize), runTime: runTime}
	for i := range g.msgs {
		b := make([]byte, size)
		for j := headerLen; j < size; j++ {
			b[j] = byte(j)
		}
		g.msgs[i].Buf = b
	}
	return g
}

// sendResult is what one run of the generator did.
type sendResult struct {
	sent    uint64
	elapsed time.Duration
	errors  uint64
}

// run sends datagrams of kind for step to dst at rate datagrams a second
// for d, or until limit datagrams are sent or ctx ends. Sequence numbers
// start at 0 and have no gaps: a failed write is retried with the same
// numbers.
func (g *generator) run(ctx context.Context, dst netip.AddrPort, kind byte, step uint32, rate float64, d time.Duration, limit uint64) (sendResult, error) {
	if rate <= 0 {
		return sendResult{}, errors.New("generator: rate must be positive")
	}
	for i := range g.msgs {
		g.msgs[i].Addr = dst
	}
	// Send in runs of at least this many datagrams, so that a run goes
	// out as one segmented (GSO) write, and sleep while fewer are due;
	// never more than a batch.
	burst := uint64(rate * g.runTime.Seconds())
	burst = max(1, min(burst, batchSize))
	sleep := time.Sleep
	if burst == 1 {
		// Every datagram on its own: pace precisely, or the runtime's
		// coarse sleeps would send them in bursts.
		p := newPacer(time.Duration(float64(time.Second) / rate))
		defer p.stop()
		sleep = p.sleep
	}
	var res sendResult
	done := ctx.Done()
	start := time.Now()
loop:
	for res.sent < limit {
		now := time.Since(start)
		if now >= d {
			break
		}
		select {
		case <-done:
			break loop
		default:
		}
		due := uint64(rate*now.Seconds()) + 1
		due = min(due, limit)
		if due < res.sent+burst && due < limit {
			next := time.Duration(float64(res.sent+burst-1) / rate * 1e9)
			if next >= d {
				// The run would end past the step: send what is due.
				if due <= res.sent {
					sleep(min(time.Millisecond, d-now))
					continue
				}
			} else {
				sleep(next - now)
				continue
			}
		}
		n := int(min(due-res.sent, batchSize))
		ts := int64(time.Since(g.epoch))
		for i := 0; i < n; i++ {
			header{kind: kind, step: step, seq: res.sent + uint64(i), sent: ts}.put(g.msgs[i].Buf)
		}
		w, err := g.conn.WriteBatch(g.msgs[:n])
		res.sent += uint64(w)
		if err != nil {
			res.errors++
			if res.errors > maxSendErrors {
				res.elapsed = time.Since(start)
				return res, fmt.Errorf("generator: %d failed writes to %s, last: %w", res.errors, dst, err)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	res.elapsed = time.Since(start)
	return res, ctx.Err()
}
