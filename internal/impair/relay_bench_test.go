package impair

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/udpio"
)

// batchSink counts the datagrams it reads with batched reads until closed.
type batchSink struct {
	conn  udpio.Conn
	count atomic.Int64
	bytes atomic.Int64
	wg    sync.WaitGroup
}

func newBatchSink(tb testing.TB) *batchSink {
	tb.Helper()
	s := &batchSink{conn: listenBatch(tb)}
	s.wg.Go(func() {
		readBatches(s.conn, func(msgs []udpio.Msg) bool {
			var sum int64
			for _, m := range msgs {
				sum += int64(m.N)
			}
			s.bytes.Add(sum)
			s.count.Add(int64(len(msgs)))
			return true
		})
	})
	tb.Cleanup(func() {
		_ = s.conn.Close()
		s.wg.Wait()
	})
	return s
}

// listenBatch opens a batched socket on an ephemeral loopback port, closed
// when the test ends.
func listenBatch(tb testing.TB) udpio.Conn {
	tb.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	setBuffers(c)
	conn, err := udpio.NewConn(c, udpio.Options{})
	if err != nil {
		_ = c.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

// BenchmarkRelay pushes 1200-byte datagrams from a batched sender through
// a relay with no impairments to a batched sink, keeping a window of
// datagrams in flight, and reports the relay's throughput in packets per
// second. Datagrams the kernel drops on the way are counted in lost/op;
// the sender stops waiting for them once nothing arrives for a while.
func BenchmarkRelay(b *testing.B) {
	const (
		size   = 1200
		burst  = 64
		window = 1024
		stall  = 50 * time.Millisecond
	)
	s := newBatchSink(b)
	r, err := New(Options{Listen: "127.0.0.1:0", To: s.conn.LocalAddr().String()})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := r.Close(); err != nil {
			b.Error(err)
		}
	}()
	snd := listenBatch(b)
	to := r.Addr()
	if to.Addr().IsUnspecified() {
		to = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), to.Port())
	}
	payload := make([]byte, size)
	out := make([]udpio.Msg, burst)
	for i := range out {
		out[i] = udpio.Msg{Buf: payload, Addr: to}
	}

	// One datagram first, so that the peer and its upstream socket exist.
	if _, err := snd.WriteBatch(out[:1]); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(ioTimeout)
	for s.count.Load() < 1 {
		if time.Now().After(deadline) {
			b.Fatal("first datagram never arrived")
		}
		time.Sleep(time.Millisecond)
	}
	base := s.count.Load()

	var lost int64
	// settle waits until at most max datagrams are outstanding, writing
	// off the outstanding ones as lost when nothing arrives for a while.
	settle := func(sent, max int64) {
		last, since := s.count.Load()-base, time.Now()
		for {
			got := s.count.Load() - base
			if sent-got-lost <= max {
				return
			}
			if got != last {
				last, since = got, time.Now()
			} else if time.Since(since) > stall {
				lost = sent - got
				return
			}
			time.Sleep(20 * time.Microsecond)
		}
	}

	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	var sent int64
	for sent < int64(b.N) {
		settle(sent, window-burst)
		k := min(int64(burst), int64(b.N)-sent)
		n, err := snd.WriteBatch(out[:k])
		if err != nil {
			b.Fatal(err)
		}
		sent += int64(n)
	}
	settle(sent, 0)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
	b.ReportMetric(float64(lost)/float64(b.N), "lost/op")
	if got, bytes := s.count.Load(), s.bytes.Load(); bytes != got*size {
		b.Fatalf("sink read %d bytes in %d datagrams of %d bytes", bytes, got, size)
	}
}
