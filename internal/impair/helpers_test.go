package impair

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mptunnel/mptunnel/internal/udptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ioTimeout bounds every blocking read and every wait in these tests.
const ioTimeout = 10 * time.Second

// arrival is one datagram read by a sink.
type arrival struct {
	data []byte
	at   time.Duration // since the sink's epoch
}

// sink is a UDP server that records every datagram it reads.
type sink struct {
	conn  *net.UDPConn
	count atomic.Int64

	mu   sync.Mutex
	pkts []arrival
}

func newSink(t *testing.T, epoch time.Time) *sink {
	t.Helper()
	s := &sink{conn: listen(t)}
	udptest.Serve(t, s.conn, func(b []byte, _ netip.AddrPort) {
		a := arrival{data: append([]byte(nil), b...), at: time.Since(epoch)}
		s.mu.Lock()
		s.pkts = append(s.pkts, a)
		s.mu.Unlock()
		s.count.Add(1)
	})
	return s
}

func (s *sink) addr() string { return s.conn.LocalAddr().String() }

func (s *sink) received() []arrival {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]arrival(nil), s.pkts...)
}

// newEcho starts a UDP server that sends every datagram back to its sender.
func newEcho(t *testing.T) string {
	t.Helper()
	return udptest.Echo(t, listen(t))
}

func listen(t *testing.T) *net.UDPConn {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	setBuffers(conn)
	return conn
}

// newRelay starts a relay on loopback and closes it when the test ends.
func newRelay(t *testing.T, opts Options) *Relay {
	t.Helper()
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

// dial returns a client socket connected to the relay.
func dial(t *testing.T, r *Relay) *net.UDPConn {
	t.Helper()
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	setBuffers(conn)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// waitFor polls cond until it holds, failing the test after ioTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func send(t *testing.T, c *net.UDPConn, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// recv reads one datagram, failing the test after ioTimeout.
func recv(t *testing.T, c *net.UDPConn, buf []byte) []byte {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return buf[:n]
}

// expectNothing checks that no datagram arrives within d.
func expectNothing(t *testing.T, c *net.UDPConn, d time.Duration) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, maxDatagram)
	n, err := c.Read(buf)
	if err == nil {
		t.Fatalf("unexpected datagram of %d bytes", n)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v", err)
	}
}

// seqPacket builds a datagram of size bytes (at least 16) carrying seq and
// the send time relative to epoch.
func seqPacket(seq uint64, size int, epoch time.Time) []byte {
	b := make([]byte, max(size, 16))
	binary.BigEndian.PutUint64(b, seq)
	binary.BigEndian.PutUint64(b[8:], uint64(time.Since(epoch)))
	return b
}

func packetSeq(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

func packetSent(b []byte) time.Duration { return time.Duration(binary.BigEndian.Uint64(b[8:])) }

// settled reports whether every datagram counted as received has been
// written or dropped.
func settled(st DirStats) bool { return st.InFlight() == 0 }

// pump sends n sequence-numbered datagrams through r to s in batches. After
// each batch it waits until the relay has read, and written or dropped,
// every datagram and the sink has read everything written, so socket
// buffers never overflow and every loss seen is the relay's doing.
func pump(t *testing.T, c *net.UDPConn, r *Relay, s *sink, n, size, batch int, epoch time.Time) {
	t.Helper()
	for sent := 0; sent < n; {
		for i := 0; i < batch && sent < n; i++ {
			send(t, c, seqPacket(uint64(sent), size, epoch))
			sent++
		}
		waitFor(t, "relay and sink to catch up", func() bool {
			st := r.Stats().Up
			return st.Received == uint64(sent) && settled(st) && uint64(s.count.Load()) == st.Forwarded
		})
	}
}

// drain waits until nothing is left in the up direction's delay line and
// the sink has read everything written.
func drain(t *testing.T, r *Relay, s *sink) {
	t.Helper()
	waitFor(t, "delay line to drain", func() bool {
		st := r.Stats().Up
		return settled(st) && uint64(s.count.Load()) == st.Forwarded
	})
}

// inversions counts pairs that arrived out of order.
func inversions(seqs []uint64) int {
	n := 0
	for i := range seqs {
		for j := i + 1; j < len(seqs); j++ {
			if seqs[i] > seqs[j] {
				n++
			}
		}
	}
	return n
}

func seqsOf(as []arrival) []uint64 {
	out := make([]uint64, len(as))
	for i, a := range as {
		out[i] = packetSeq(a.data)
	}
	return out
}
