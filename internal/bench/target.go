package bench

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mptunnel/mptunnel/internal/udpio"
)

const (
	// batchSize is how many datagrams the generator hands over at once.
	batchSize = 64
	// readBatch is how many datagrams a reader takes at once (several
	// coalesced GRO reads).
	readBatch = 512
)

// addNonZero adds n to a unless n is zero, sparing a shared cache line.
func addNonZero(a *atomic.Uint64, n uint64) {
	if n != 0 {
		a.Add(n)
	}
}

// counter is one throughput step as the target sees it. Only the target's
// goroutine touches seen; the totals are read by the measuring goroutine.
type counter struct {
	step uint32
	seen seqSet

	delivered  atomic.Uint64 // distinct sequence numbers received
	duplicates atomic.Uint64 // sequence numbers received again
	invalid    atomic.Uint64 // sequence numbers beyond what was sent
}

func newCounter(step uint32, limit uint64) *counter {
	return &counter{step: step, seen: newSeqSet(limit)}
}

// target is the far end of every measurement: it counts kindCount datagrams
// of the current step and sends kindEcho datagrams back where they came from.
type target struct {
	conn    udpio.Conn
	bufSize int
	cur     atomic.Pointer[counter]
	echoed  atomic.Uint64
	foreign atomic.Uint64 // datagrams without our header, or of old steps
	wg      sync.WaitGroup
}

func startTarget(size int, opts udpio.Options) (*target, error) {
	conn, err := listenBatch(opts)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	t := &target{conn: conn, bufSize: size + 1}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		t.loop()
	}()
	return t, nil
}

func (t *target) addr() string { return t.conn.LocalAddr().String() }

// count makes c the step the target counts.
func (t *target) count(c *counter) { t.cur.Store(c) }

func (t *target) loop() {
	out := make([]udpio.Msg, 0, readBatch)
	readBatches(t.conn, t.bufSize, func(msgs []udpio.Msg) {
		c := t.cur.Load()
		out = out[:0]
		var delivered, dups, invalid, foreign uint64
		for i := range msgs {
			m := &msgs[i]
			h, ok := parseHeader(m.Buf[:m.N])
			switch {
			case !ok:
				foreign++
			case h.kind == kindEcho:
				out = append(out, udpio.Msg{Buf: m.Buf[:m.N], Addr: m.Addr})
			case h.kind != kindCount || c == nil || h.step != c.step:
				foreign++
			default:
				isNew, inRange := c.seen.add(h.seq)
				switch {
				case !inRange:
					invalid++
				case isNew:
					delivered++
				default:
					dups++
				}
			}
		}
		if c != nil {
			addNonZero(&c.delivered, delivered)
			addNonZero(&c.duplicates, dups)
			addNonZero(&c.invalid, invalid)
		}
		addNonZero(&t.foreign, foreign)
		if len(out) > 0 {
			w, _ := t.conn.WriteBatch(out) // a lost echo shows as a lost sample
			t.echoed.Add(uint64(w))
		}
	})
}

// readBatches reads batches of datagrams of up to bufSize bytes from conn
// and hands each to handle until conn is closed. A transient error (an ICMP
// error queued on the socket) backs off a little rather than spin.
func readBatches(conn udpio.Conn, bufSize int, handle func(msgs []udpio.Msg)) {
	msgs := make([]udpio.Msg, readBatch)
	for i := range msgs {
		msgs[i].Buf = make([]byte, bufSize)
	}
	for {
		n, err := conn.ReadBatch(msgs)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(time.Millisecond)
			continue
		}
		handle(msgs[:n])
	}
}

// close stops the target and waits for its goroutine.
func (t *target) close() error {
	err := t.conn.Close()
	t.wg.Wait()
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	return nil
}
