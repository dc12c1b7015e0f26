package impair

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/udpio"
	"github.com/mptunnel/mptunnel/internal/udptest"
)

// recordConn is a udpio.Conn that records every WriteBatch call and fails
// the datagrams whose payload is "bad".
type recordConn struct {
	mu    sync.Mutex
	calls [][]udpio.Msg // copies, payloads included
}

func (c *recordConn) ReadBatch([]udpio.Msg) (int, error) { return 0, net.ErrClosed }

func (c *recordConn) WriteBatch(msgs []udpio.Msg) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	call := make([]udpio.Msg, 0, len(msgs))
	defer func() { c.calls = append(c.calls, call) }()
	for i, m := range msgs {
		if string(m.Buf) == "bad" {
			return i, errors.New("refused")
		}
		call = append(call, udpio.Msg{Buf: bytes.Clone(m.Buf), Addr: m.Addr})
	}
	return len(msgs), nil
}

func (c *recordConn) LocalAddr() netip.AddrPort { return netip.AddrPort{} }

func (c *recordConn) Close() error { return nil }

// written returns the payloads of each call as strings.
func (c *recordConn) written() [][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [][]string
	for _, call := range c.calls {
		var ps []string
		for _, m := range call {
			ps = append(ps, string(m.Buf))
		}
		out = append(out, ps)
	}
	return out
}

// fakeRelay returns a relay with recording sockets and no goroutines: its
// listen socket and the upstream sockets of two peers.
func fakeRelay() (r *Relay, ln *recordConn, peers [2]*peer) {
	ln = &recordConn{}
	r = &Relay{
		ln:    ln,
		to:    netip.MustParseAddrPort("127.0.0.1:9"),
		epoch: time.Now(),
	}
	for i := range peers {
		peers[i] = &peer{
			addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(1000+i)),
			conn: &recordConn{},
		}
	}
	return r, ln, peers
}

func TestFastPathWritesOneBatchPerSocket(t *testing.T) {
	r, ln, peers := fakeRelay()
	up := newDirection(r, true, Config{}, 1, 2)
	dn := newDirection(r, false, Config{}, 3, 4)
	upOut, dnOut := outbox{d: up}, outbox{d: dn}
	for i, s := range []string{"a0", "b0", "a1", "a2", "b1"} {
		p := peers[0]
		if s[0] == 'b' {
			p = peers[1]
		}
		up.process([]byte(s), p, &upOut, up.clock())
		dn.process([]byte(s), p, &dnOut, dn.clock())
		if calls := len(ln.written()) + len(p.conn.(*recordConn).written()); calls != 0 {
			t.Fatalf("written before the end of the batch, after datagram %d", i)
		}
	}
	upOut.flush()
	dnOut.flush()

	for i, want := range [][]string{{"a0", "a1", "a2"}, {"b0", "b1"}} {
		got := peers[i].conn.(*recordConn).written()
		if len(got) != 1 || !equalStrings(got[0], want) {
			t.Errorf("peer %d upstream socket writes %q, want one batch %q", i, got, want)
		}
		for _, m := range peers[i].conn.(*recordConn).calls[0] {
			if m.Addr != r.to {
				t.Errorf("upstream datagram sent to %v, want %v", m.Addr, r.to)
			}
		}
	}
	got := ln.written()
	if len(got) != 1 || !equalStrings(got[0], []string{"a0", "b0", "a1", "a2", "b1"}) {
		t.Fatalf("listen socket writes %q, want one batch in order", got)
	}
	for i, m := range ln.calls[0] {
		want := peers[0].addr
		if m.Buf[0] == 'b' {
			want = peers[1].addr
		}
		if m.Addr != want {
			t.Errorf("reply %d sent to %v, want %v", i, m.Addr, want)
		}
	}
	for _, d := range []*direction{up, dn} {
		if st := d.stats.snapshot(); st != (DirStats{Received: 5, Forwarded: 5}) {
			t.Errorf("up=%v stats %+v", d.up, st)
		}
	}
	if upOut.pending() || dnOut.pending() {
		t.Error("outbox not empty after flush")
	}
}

func TestQueuedDatagramWaitsForDecidedBatch(t *testing.T) {
	r, _, peers := fakeRelay()
	d := newDirection(r, true, Config{Duplicate: 1}, 1, 2)
	out := outbox{d: d}
	conn := peers[0].conn.(*recordConn)
	d.process([]byte("first"), peers[0], &out, d.clock())
	if len(conn.written()) != 0 {
		t.Fatal("written before the end of the batch")
	}
	// A datagram that has to wait makes the datagrams decided before it
	// go out first, so that the scheduler cannot release it ahead of them.
	d.setConfig(Config{Delay: time.Hour})
	d.process([]byte("second"), peers[0], &out, d.clock())
	if got := conn.written(); len(got) != 1 || !equalStrings(got[0], []string{"first", "first"}) {
		t.Fatalf("writes %q, want the duplicated first datagram", got)
	}
	if len(d.q) != 1 || string(*d.q[0].buf) != "second" {
		t.Fatalf("delay line holds %d datagrams, want the second", len(d.q))
	}
	// Once something waits, later datagrams queue behind it.
	d.setConfig(Config{})
	d.process([]byte("third"), peers[0], &out, d.clock())
	if out.pending() || len(d.q) != 2 {
		t.Fatalf("third datagram took the fast path past a queued one (queued %d)", len(d.q))
	}
	if st := d.stats.snapshot(); st != (DirStats{Received: 3, Duplicated: 1, Forwarded: 2}) {
		t.Errorf("stats %+v", st)
	}
}

func TestBatchWriteErrorsCountPerDatagram(t *testing.T) {
	r, _, peers := fakeRelay()
	d := newDirection(r, true, Config{}, 1, 2)
	out := outbox{d: d}
	for _, s := range []string{"a", "bad", "b", "bad", "bad", "c"} {
		d.process([]byte(s), peers[0], &out, d.clock())
	}
	out.flush()
	got := peers[0].conn.(*recordConn).written()
	var all []string
	for _, call := range got {
		all = append(all, call...)
	}
	if !equalStrings(all, []string{"a", "b", "c"}) {
		t.Errorf("written %q, want a b c", all)
	}
	if st := d.stats.snapshot(); st != (DirStats{Received: 6, Forwarded: 3, SendErrors: 3}) {
		t.Errorf("stats %+v", st)
	}

	// While the relay is down nothing is written.
	r.down.Store(true)
	d.process([]byte("x"), peers[1], &out, d.clock()) // dropped when decided
	r.down.Store(false)
	d.process([]byte("y"), peers[1], &out, d.clock())
	r.down.Store(true)
	out.flush() // dropped when written
	if got := peers[1].conn.(*recordConn).written(); len(got) != 0 {
		t.Errorf("written while down: %q", got)
	}
	if st := d.stats.snapshot(); st.DroppedDown != 2 || st.InFlight() != 0 {
		t.Errorf("stats %+v, want 2 dropped down and nothing in flight", st)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRelayBatchDoesNotAllocate(t *testing.T) {
	if testing.Short() {
		t.Skip("sends datagrams for a while")
	}
	const size, burst = 1200, 64
	s := newBatchSink(t)
	r := newRelay(t, Options{To: s.conn.LocalAddr().String()})
	snd := listenBatch(t)
	out := make([]udpio.Msg, burst)
	payload := make([]byte, size)
	for i := range out {
		out[i] = udpio.Msg{Buf: payload, Addr: r.Addr()}
	}
	var want int64
	relayBatch := func() {
		n, err := snd.WriteBatch(out)
		if err != nil {
			t.Fatal(err)
		}
		want += int64(n)
		deadline := time.Now().Add(ioTimeout)
		for s.count.Load() < want {
			if time.Now().After(deadline) {
				t.Fatalf("sink read %d datagrams, want %d", s.count.Load(), want)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	relayBatch() // creates the peer and warms up every buffer
	// The readers and the sink run in other goroutines, but AllocsPerRun
	// counts every allocation in the process: one per datagram would show
	// as 64 or more.
	if allocs := testing.AllocsPerRun(50, relayBatch); allocs >= 1 {
		t.Errorf("%v allocations per batch of %d datagrams relayed", allocs, burst)
	}
	if st := r.Stats().Up; st.Forwarded != uint64(want) {
		t.Errorf("stats %+v, want %d forwarded", st, want)
	}
}

func TestRepliesFromElsewhereAreIgnored(t *testing.T) {
	var tapped int
	var mu sync.Mutex
	r := newRelay(t, Options{
		To: newEcho(t),
		Tap: func(up bool, pkt []byte) {
			mu.Lock()
			defer mu.Unlock()
			if !up {
				tapped++
			}
		},
	})
	c := dial(t, r)
	buf := make([]byte, maxDatagram)
	send(t, c, []byte("hello"))
	recv(t, c, buf)

	r.mu.Lock()
	var upstream netip.AddrPort
	for _, p := range r.peers {
		upstream = p.conn.LocalAddr()
	}
	r.mu.Unlock()
	if upstream.Addr().IsUnspecified() {
		upstream = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), upstream.Port())
	}
	stranger := listen(t)
	t.Cleanup(func() { _ = stranger.Close() })
	if _, err := stranger.WriteToUDPAddrPort([]byte("spoof"), upstream); err != nil {
		t.Fatal(err)
	}
	expectNothing(t, c, 50*time.Millisecond)
	send(t, c, []byte("again"))
	if got := recv(t, c, buf); string(got) != "again" {
		t.Fatalf("got %q, want again", got)
	}
	waitFor(t, "counters", func() bool { return settled(r.Stats().Down) })
	if st := r.Stats().Down; st.Received != 2 || st.Forwarded != 2 {
		t.Errorf("down stats %+v, want 2 received and forwarded", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if tapped != 2 {
		t.Errorf("tap saw %d replies, want 2", tapped)
	}
}

func TestIPv6(t *testing.T) {
	echo, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	r := newRelay(t, Options{Listen: "[::1]:0", To: udptest.Echo(t, echo)})
	c := dial(t, r)
	buf := make([]byte, maxDatagram)
	for i := range 20 {
		msg := []byte{byte(i), 6}
		send(t, c, msg)
		if got := recv(t, c, buf); !bytes.Equal(got, msg) {
			t.Fatalf("got %v, want %v", got, msg)
		}
	}
}
