package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/reset"
	"github.com/mptunnel/mptunnel/internal/server"
	"github.com/mptunnel/mptunnel/internal/udptest"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// pacedStream sends numbered datagrams from app at rate a second until stop
// is called, and records when each echo came back.
type pacedStream struct {
	mu     sync.Mutex
	echoes []time.Time
	sent   atomic.Int64
	stop   func()
}

func startPacedStream(t *testing.T, app *net.UDPConn, rate int) *pacedStream {
	t.Helper()
	s := &pacedStream{}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tk := time.NewTicker(time.Second / time.Duration(rate))
		defer tk.Stop()
		var b [8]byte
		for seq := uint64(0); ; seq++ {
			select {
			case <-quit:
				return
			case <-tk.C:
			}
			binary.BigEndian.PutUint64(b[:], seq)
			if _, err := app.Write(b[:]); err == nil {
				s.sent.Add(1)
			}
		}
	})
	wg.Go(func() {
		buf := make([]byte, 64)
		for {
			app.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			_, err := app.Read(buf)
			now := time.Now()
			select {
			case <-quit:
				return
			default:
			}
			if err == nil {
				s.mu.Lock()
				s.echoes = append(s.echoes, now)
				s.mu.Unlock()
			}
		}
	})
	s.stop = sync.OnceFunc(func() { close(quit); wg.Wait() })
	t.Cleanup(s.stop)
	return s
}

// echoesAfter returns how many echoes came back after at.
func (s *pacedStream) echoesAfter(at time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.echoes {
		if e.After(at) {
			n++
		}
	}
	return n
}

// outage returns the time from the last echo before at to the first one
// after it.
func (s *pacedStream) outage(at time.Time) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var last time.Time
	for _, e := range s.echoes {
		if !e.After(at) {
			last = e
			continue
		}
		if last.IsZero() {
			return 0, false
		}
		return e.Sub(last), true
	}
	return 0, false
}

// TestServerRestartReset: the server is restarted (closed, and a new one
// started at once on the same port with the same key) while the client
// streams 200 datagrams a second. The new server answers the client's
// packets for the session it does not know with a stateless reset, and the
// client handshakes again at once: the stream stops for well under the
// 1.5 s the client's silence timeout took before.
func TestServerRestartReset(t *testing.T) {
	cfg, stop1, cl, app := restartPair(t)
	st := startPacedStream(t, app, 200)
	time.Sleep(time.Second)
	stop1()
	restart := time.Now()
	srv2 := startServer(t, cfg)
	if !eventually(5*time.Second, func() bool { return st.echoesAfter(restart) >= 200 }) {
		t.Fatalf("the stream did not resume within 5s of the restart (%d echoes since)", st.echoesAfter(restart))
	}
	st.stop()
	outage, ok := st.outage(restart)
	if !ok {
		t.Fatal("no echo before the restart")
	}
	lost := st.sent.Load() - int64(len(st.echoes))
	t.Logf("server restart: outage %v (last echo before to first after), %d of %d datagrams lost; resets: server sent %d, client accepted %d",
		outage.Round(time.Millisecond), lost, st.sent.Load(), srv2.Counters().ResetsSent.Load(), cl.Counters().ResetsAccepted.Load())
	if outage > 500*time.Millisecond {
		t.Fatalf("outage %v after the server restart, want under 500ms", outage)
	}
	if srv2.Counters().ResetsSent.Load() == 0 || cl.Counters().ResetsAccepted.Load() == 0 {
		t.Fatalf("resets: server sent %d, client accepted %d; want some of each", srv2.Counters().ResetsSent.Load(), cl.Counters().ResetsAccepted.Load())
	}
	if n := cl.Counters().HandshakeOK.Load(); n != 2 {
		t.Fatalf("client made %d handshakes, want 2 (one reset acted on once)", n)
	}
	if srv2.Sessions() != 1 {
		t.Fatalf("new server has %d sessions, want 1", srv2.Sessions())
	}
}

// injector is a path between a client and a server that relays both ways
// and can send the client anything from the path's address: what someone
// on the path, or spoofing it, could.
type injector struct {
	down   *net.UDPConn
	up     *net.UDPConn
	client atomic.Pointer[netip.AddrPort]
	index  atomic.Uint32 // the receiver index of the client's latest transport packet
	first  atomic.Pointer[[]byte]
}

func newInjector(t *testing.T, srv netip.AddrPort) *injector {
	t.Helper()
	lo := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	down, err := net.ListenUDP("udp", lo)
	if err != nil {
		t.Fatal(err)
	}
	up, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(srv))
	if err != nil {
		t.Fatal(err)
	}
	in := &injector{down: down, up: up}
	udptest.Serve(t, down, func(b []byte, from netip.AddrPort) {
		in.client.Store(&from)
		if h, err := wire.ParseHeader(b); err == nil {
			in.index.Store(h.Receiver)
			if in.first.Load() == nil {
				c := bytes.Clone(b)
				in.first.Store(&c)
			}
		}
		_, _ = up.Write(b)
	})
	udptest.Serve(t, up, func(b []byte, _ netip.AddrPort) { in.inject(b) })
	return in
}

func (in *injector) addr() string { return in.down.LocalAddr().String() }

// replay sends the server the client's first transport packet again.
func (in *injector) replay() {
	_, _ = in.up.Write(*in.first.Load())
}

// inject sends pkt to the client from the path's address.
func (in *injector) inject(pkt []byte) {
	if to := in.client.Load(); to != nil {
		_, _ = in.down.WriteToUDPAddrPort(pkt, *to)
	}
}

// scratch returns the handshakes a client made from scratch (not rekeys).
func scratch(cl *client.Client) uint64 {
	return cl.Counters().HandshakeOK.Load() - cl.Counters().Rekeys.Load()
}

// TestForgedResets: resets a client must not act on change nothing: a wrong
// token, a wrong size, one made with another key, and valid ones (made with
// the key) for another index: another session's, or the one a rekey
// replaced. The session stays and no handshake is made. A right one, for
// the index in use, makes a new session at once (the control).
func TestForgedResets(t *testing.T) {
	key, _, srv := echoServer(t)
	in := newInjector(t, srv.Addr())
	cl := startClient(t, client.Config{Paths: []client.PathConfig{{Remote: in.addr()}}, Key: key})
	app := dial(t, cl)
	pingPong(t, app, "before", 5)
	idx := in.index.Load()
	rk := reset.NewKey(key)
	good := rk.Append(nil, idx)
	var otherKey handshake.Key
	rand.Read(otherKey[:])
	token := make([]byte, wire.ResetTokenLen)
	rand.Read(token)
	forged := [][]byte{
		wire.AppendReset(nil, idx, token),                    // wrong token
		wire.AppendReset(nil, idx, make([]byte, 16)),         // zero token
		good[:wire.ResetLen-1],                               // short
		append(bytes.Clone(good), 0),                         // long
		append(bytes.Clone(good), make([]byte, 100)...),      // long, as a transport packet would be
		reset.NewKey(otherKey).Append(nil, idx),              // another key
		rk.Append(nil, idx^1),                                // valid, for another index
		rk.Append(nil, idx+1),                                // valid, for another index
		append([]byte{wire.TypeReset, 0, 0, 1}, good[4:]...), // a reserved byte set
	}
	for range 3 {
		for _, pkt := range forged {
			in.inject(pkt)
		}
	}
	want := uint64(3 * len(forged))
	if !eventually(3*time.Second, func() bool { return cl.Counters().ResetsRefused.Load() >= want }) {
		t.Fatalf("client refused %d resets, want %d", cl.Counters().ResetsRefused.Load(), want)
	}
	pingPong(t, app, "after forged", 20)
	if n := cl.Counters().ResetsAccepted.Load(); n != 0 {
		t.Fatalf("client accepted %d forged resets", n)
	}
	if n := scratch(cl); n != 1 {
		t.Fatalf("client made %d handshakes from scratch, want 1", n)
	}
	if got := in.index.Load(); got != idx {
		t.Fatalf("client now sends on index %08x, want %08x still", got, idx)
	}
	if n := srv.Counters().ResetsSent.Load(); n != 0 {
		t.Fatalf("server sent %d resets for a session it holds", n)
	}

	// The control: the right reset for the index in use is acted on.
	in.inject(good)
	if !eventually(3*time.Second, func() bool { return scratch(cl) == 2 }) {
		t.Fatalf("a right reset: %d handshakes from scratch, want 2 (accepted %d)", scratch(cl), cl.Counters().ResetsAccepted.Load())
	}
	pingPong(t, app, "after reset", 5)
	// A replay of it, for the session it ended, changes nothing now.
	before := cl.Counters().ResetsRefused.Load()
	in.inject(good)
	if !eventually(3*time.Second, func() bool { return cl.Counters().ResetsRefused.Load() == before+1 }) {
		t.Fatal("the replayed reset was not refused")
	}
	pingPong(t, app, "after replay", 5)
	if n := scratch(cl); n != 2 {
		t.Fatalf("a replayed reset: %d handshakes from scratch, want 2", n)
	}
}

// TestResetAcrossRekeys: while a client rekeys every 300 ms, a valid reset
// for the index a rekey replaced is refused, and so are the server's resets
// for a late packet of a session it has freed (the client's first packet,
// sent again): no handshake from scratch, and the stream loses nothing.
func TestResetAcrossRekeys(t *testing.T) {
	key, _, srv := echoServerWith(t, server.Config{RekeyGrace: 200 * time.Millisecond})
	in := newInjector(t, srv.Addr())
	cl := startClient(t, client.Config{Paths: []client.PathConfig{{Remote: in.addr()}}, Key: key,
		RekeyAfter: 300 * time.Millisecond, HandshakeRetry: 100 * time.Millisecond})
	app := dial(t, cl)
	pingPong(t, app, "before", 5)
	first := in.index.Load()
	st := startPacedStream(t, app, 200)
	if !eventually(5*time.Second, func() bool { return cl.Counters().Rekeys.Load() >= 3 && in.index.Load() != first }) {
		t.Fatalf("%d rekeys, want 3", cl.Counters().Rekeys.Load())
	}
	rk := reset.NewKey(key)
	for range 10 {
		in.inject(rk.Append(nil, first))
	}
	if !eventually(3*time.Second, func() bool { return cl.Counters().ResetsRefused.Load() >= 10 }) {
		t.Fatalf("client refused %d resets for a replaced session, want 10", cl.Counters().ResetsRefused.Load())
	}
	// The first session is freed by now (the server keeps a replaced one
	// 200 ms): a late packet for it draws the server's reset.
	for range 10 {
		in.replay()
	}
	if !eventually(3*time.Second, func() bool {
		sent := srv.Counters().ResetsSent.Load()
		return sent > 0 && cl.Counters().ResetsRefused.Load() >= 10+sent
	}) {
		t.Fatalf("server sent %d resets for a freed session, client refused %d in all", srv.Counters().ResetsSent.Load(), cl.Counters().ResetsRefused.Load())
	}
	time.Sleep(time.Second) // more rekeys, with the stream going
	st.stop()
	if n := cl.Counters().ResetsAccepted.Load(); n != 0 {
		t.Fatalf("client accepted %d resets across rekeys", n)
	}
	if n := scratch(cl); n != 1 {
		t.Fatalf("client made %d handshakes from scratch across rekeys, want 1", n)
	}
	lost := st.sent.Load() - int64(len(st.echoes))
	t.Logf("%d rekeys; %d of %d datagrams lost; server sent %d resets", cl.Counters().Rekeys.Load(), lost, st.sent.Load(), srv.Counters().ResetsSent.Load())
	if lost > 2 {
		t.Fatalf("%d datagrams lost across rekeys", lost)
	}
}

// unknownPacket returns a transport packet of n bytes for a random session
// index, which no server holds.
func unknownPacket(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	b[0], b[1], b[2], b[3] = wire.TypeTransport, 0, 0, 0
	return b
}

// collectResets reads what conn receives until nothing comes for wait,
// and fails unless each is a valid reset (made with rk) smaller than the
// smallest packet that can draw one.
func collectResets(t *testing.T, conn *net.UDPConn, rk *reset.Key, wait time.Duration) int {
	t.Helper()
	buf := make([]byte, 2048)
	n := 0
	for {
		conn.SetReadDeadline(time.Now().Add(wait))
		k, err := conn.Read(buf)
		if err != nil {
			return n
		}
		idx, _, err := wire.ParseReset(buf[:k])
		if err != nil || k >= wire.Overhead || rk.Check(buf[:k], idx) != nil {
			t.Fatalf("got %d bytes back that are not a valid reset smaller than %d: %x", k, wire.Overhead, buf[:k])
		}
		n++
	}
}

// read waits until the server has read want packets for no session since
// from was started, and returns how long that took.
func read(t *testing.T, srv *server.Server, want uint64, from time.Time) time.Duration {
	t.Helper()
	if !eventually(5*time.Second, func() bool { return srv.Counters().UnknownSession.Load() >= want }) {
		t.Fatalf("server read %d packets for no session, want %d", srv.Counters().UnknownSession.Load(), want)
	}
	return time.Since(from)
}

// TestResetBounded: packets naming no session draw resets on the path they
// came by, each smaller than the smallest such packet, at most 10 a second
// (bursts of 5) to one source address and 1,000 a second (bursts of 100)
// in all.
func TestResetBounded(t *testing.T) {
	key, _, srv := echoServer(t)
	rk := reset.NewKey(key)
	dst := net.UDPAddrFromAddrPort(srv.Addr())

	// One source: 1,000 packets of the smallest size that parses.
	one, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	if err := one.SetReadBuffer(1 << 20); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range 1000 {
		one.WriteToUDP(unknownPacket(wire.Overhead), dst)
	}
	// Some may be dropped by the kernel on the way; those counted bound
	// the time.
	elapsed := read(t, srv, 900, start)
	got := collectResets(t, one, rk, 100*time.Millisecond)
	bound := 5 + int(10*elapsed.Seconds()) + 1
	t.Logf("one source: 1,000 packets read in %v drew %d resets (bound %d)", elapsed.Round(time.Millisecond), got, bound)
	if got == 0 || got > bound {
		t.Fatalf("one source drew %d resets, want 1 to %d", got, bound)
	}

	// 250 sources (127.0.1.x and 127.0.2.x), 5 packets each: each source
	// may draw its 5, but all of them together not more than the global
	// bound allows.
	var conns []*net.UDPConn
	for i := range 250 {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, byte(1+i/125), byte(1+i%125))})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	before := srv.Counters().UnknownSession.Load()
	sent := srv.Counters().ResetsSent.Load()
	start = time.Now()
	for range 5 {
		for _, c := range conns {
			c.WriteToUDP(unknownPacket(64), dst)
		}
	}
	elapsed = read(t, srv, before+1200, start)
	total := 0
	for i, c := range conns {
		wait := time.Millisecond
		if i == 0 {
			wait = 100 * time.Millisecond // the last resets on their way
		}
		total += collectResets(t, c, rk, wait)
	}
	bound = 100 + int(1000*elapsed.Seconds()) + 5 // and what the last packets read meanwhile refilled
	t.Logf("250 sources: 1,250 packets read in %v drew %d resets (bound %d; server counted %d)", elapsed.Round(time.Millisecond), total, bound, srv.Counters().ResetsSent.Load()-sent)
	if total == 0 || total > bound || total >= 250*5 {
		t.Fatalf("250 sources drew %d resets, want 1 to %d", total, bound)
	}
}
