package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// TCP is one setup's TCP figure: one connection sending as fast as it can
// for the step's length to a sink that counts what arrives.
type TCP struct {
	Name       string  `json:"name"`
	Paths      int     `json:"paths"`
	Mbps       float64 `json:"mbps"`
	Bytes      int64   `json:"bytes"`
	Seconds    float64 `json:"seconds"`
	VsBaseline float64 `json:"vs_baseline,omitempty"`
	Counters
}

// tcpSink accepts TCP connections on loopback and counts the bytes they
// bring, until closed.
type tcpSink struct {
	ln    net.Listener
	bytes atomic.Int64
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func startTCPSink() (*tcpSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("tcp sink: %w", err)
	}
	s := &tcpSink{ln: ln}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Go(func() {
				buf := make([]byte, 256<<10)
				for {
					n, err := c.Read(buf)
					s.bytes.Add(int64(n))
					if err != nil {
						return
					}
				}
			})
		}
	})
	return s, nil
}

func (s *tcpSink) addr() string { return s.ln.Addr().String() }

func (s *tcpSink) close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// tcpStep sends on one connection to addr (the sink, or a tunnel's TCP
// forward to it) for the step's length and reports what the sink counted.
func (b *bencher) tcpStep(ctx context.Context, name, addr string, tn *tunnel) (TCP, error) {
	b.prog.printf("tcp: %s", name)
	res := TCP{Name: name, Paths: tn.paths()}
	before := b.sink.bytes.Load()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return res, fmt.Errorf("tcp %s: %w", name, err)
	}
	defer c.Close()
	// The first bytes go through before the clock starts: the tunnel's
	// stream connection is made on the first.
	if _, err := c.Write([]byte{0}); err != nil {
		return res, fmt.Errorf("tcp %s: %w", name, err)
	}
	for b.sink.bytes.Load() == before {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	from := b.sink.bytes.Load()
	buf := make([]byte, 256<<10)
	c.SetWriteDeadline(start.Add(b.cfg.Duration))
	for time.Since(start) < b.cfg.Duration {
		if _, err := c.Write(buf); err != nil {
			break // the deadline
		}
	}
	elapsed := time.Since(start)
	res.Bytes = b.sink.bytes.Load() - from
	res.Seconds = elapsed.Seconds()
	res.Mbps = float64(res.Bytes) * 8 / elapsed.Seconds() / 1e6
	res.Counters = tn.counters()
	io.Copy(io.Discard, io.LimitReader(c, 0))
	return res, nil
}
