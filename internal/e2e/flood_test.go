package e2e

import (
	"crypto/rand"
	"encoding/binary"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/cookie"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/server"
	"github.com/mptunnel/mptunnel/internal/testlock"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// heap returns the live heap after a collection.
func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestFlood: 200,000 random datagrams and 50,000 replayed captured packets
// hit the server while a real session streams 1,000 datagrams a second: the
// stream loses nothing, the target gets the stream's datagrams and nothing
// else, the flooding address gets no byte back, and memory stays within
// twice its figure before the flood.
func TestFlood(t *testing.T) {
	testlock.Heavy(t)
	if testing.Short() {
		t.Skip("the flood takes a few seconds")
	}
	key, echo, srv := echoServer(t)
	cl, captured := tappedClient(t, srv, key, 5000)
	app := dial(t, cl)
	pingPong(t, app, "warm", 500)
	replays := captured()
	var index uint32
	for _, p := range replays {
		if h, err := wire.ParseHeader(p); err == nil {
			index = h.Receiver
		}
	}
	idle := heap()
	_, before := echo.stats()

	attacker, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	if err := attacker.SetWriteBuffer(4 << 20); err != nil {
		t.Fatal(err)
	}
	dst := net.UDPAddrFromAddrPort(srv.Addr())
	const randoms, replayed = 200000, 50000
	var sent int
	flood := make(chan struct{})
	go func() {
		defer close(flood)
		b := make([]byte, 1500)
		for i := 0; i < randoms+replayed; i++ {
			var p []byte
			if i%5 == 4 && i/5 < replayed {
				p = replays[i%len(replays)]
			} else {
				p = b[:i%1500]
				rand.Read(p)
				switch {
				case i%3 == 0 && len(p) >= wire.Overhead: // forged, for the live session
					p[0], p[1], p[2], p[3] = wire.TypeTransport, 0, 0, 0
					binary.LittleEndian.PutUint32(p[4:], index)
				case i%3 == 1 && len(p) > 4:
					p[0], p[1], p[2], p[3] = wire.TypeInit, 0, 0, 0
				}
			}
			if _, err := attacker.WriteToUDP(p, dst); err == nil {
				sent++
			}
			if i%2000 == 1999 {
				time.Sleep(time.Millisecond) // about 2 million a second at most: the kernel's buffers hold
			}
		}
	}()
	const n = 5000
	got := streamEchoEvery(t, app, n, 64, 1)
	<-flood
	peak := heap()
	t.Logf("flood: %d datagrams sent at the server; stream %d of %d back; heap %d KiB idle, %d KiB after", sent, got, n, idle>>10, peak>>10)
	if sent < (randoms+replayed)*9/10 {
		t.Fatalf("only %d flood datagrams were sent", sent)
	}
	if got != n {
		t.Fatalf("the session's stream lost %d of %d datagrams during the flood", n-got, n)
	}
	if _, after := echo.stats(); after-before != n {
		t.Fatalf("the target received %d datagrams, want the stream's %d only", after-before, n)
	}
	silent(t, attacker, 300*time.Millisecond, "the flooding address")
	if peak > 2*idle {
		t.Fatalf("heap grew from %d to %d bytes during the flood", idle, peak)
	}
	c := srv.Counters().Snapshot()
	if c.Malformed == 0 || c.AuthFailed == 0 || c.HandshakeBad == 0 || c.Duplicates+c.TooOld == 0 {
		t.Fatalf("some bad input was not counted: %+v", c)
	}
	if srv.Sessions() != 1 {
		t.Fatalf("%d sessions after the flood, want 1", srv.Sessions())
	}
}

// TestTargetDown: when the target goes away, what is sent to it is counted
// (the kernel's ICMP port unreachable surfaces on the flow's socket) and
// the session stays; when it comes back on the same port the same flow works
// again, with nothing restarted.
func TestTargetDown(t *testing.T) {
	key := testKey(t)
	echo := newEchoTarget(t)
	addr := echo.conn.LocalAddr().(*net.UDPAddr)
	srv := startServer(t, server.Config{Target: echo.addr(), Key: key})
	cl := startClient(t, client.Config{Paths: []client.PathConfig{{Remote: srv.Addr().String()}}, Key: key})
	app := dial(t, cl)
	pingPong(t, app, "up", 50)
	echo.close()
	errsBefore := srv.Counters().SendErrors.Load()
	for i := range 50 {
		if _, err := app.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	if !eventually(3*time.Second, func() bool { return srv.Counters().SendErrors.Load() > errsBefore }) {
		t.Fatal("the unreachable target was not counted")
	}
	drain(app)
	if srv.Sessions() != 1 || srv.Flows() != 1 {
		t.Fatalf("%d sessions, %d flows with the target down; want the session and its flow kept", srv.Sessions(), srv.Flows())
	}
	back := newEchoTargetAt(t, addr)
	pingPong(t, app, "back", 50)
	if _, rx := back.stats(); rx != 50 {
		t.Fatalf("the returned target got %d datagrams, want 50", rx)
	}
}

// TestHandshakeFlood: initiations whose mac1 is right (the worst case: only
// a key holder can make one; their Noise part is garbage, so each costs the
// server a full read) from many source ports at 20,000 a second put
// the server under load; it answers them with cookie replies, smaller than
// what it got, and does no handshake for them; the session already up keeps
// forwarding, and a new client, which proves its address with the cookie,
// connects within 2 s.
func TestHandshakeFlood(t *testing.T) {
	testlock.Heavy(t)
	if testing.Short() {
		t.Skip("the flood takes a few seconds")
	}
	key, _, srv := echoServer(t)
	paths := []client.PathConfig{{Remote: srv.Addr().String()}}
	old := startClient(t, client.Config{Paths: paths, Key: key})
	app := dial(t, old)
	pingPong(t, app, "before", 20)

	dst := net.UDPAddrFromAddrPort(srv.Addr())
	var socks []*net.UDPConn
	for range 64 {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		socks = append(socks, c)
	}
	jar, err := cookie.NewJar(key)
	if err != nil {
		t.Fatal(err)
	}
	var inits [][]byte
	for range 300 {
		noise := make([]byte, handshake.InitLen)
		rand.Read(noise)
		pkt := wire.AppendInit(nil, noise)
		jar.Sign(pkt, time.Now())
		inits = append(inits, pkt)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var flooded atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for range 20 { // 20,000 a second
				// Each one new (a server answers an initiation once):
				// a number in its Noise part, mac1 made again.
				pkt := inits[i%len(inits)]
				binary.LittleEndian.PutUint64(pkt[wire.InitPrefixLen:], uint64(i))
				jar.Sign(pkt, time.Now())
				socks[i%len(socks)].WriteToUDP(pkt, dst)
				flooded.Add(1)
				i++
			}
		}
	}()
	// The flood takes hold; the session carries on meanwhile.
	if !eventually(3*time.Second, func() bool { return srv.Counters().Cookies.Load() > 1000 }) {
		close(stop)
		wg.Wait()
		t.Fatalf("no cookies under a flood: %+v", srv.Counters().Snapshot())
	}
	pingPong(t, app, "during", 200)
	start := time.Now()
	fresh := serveClient(t, client.Config{Paths: paths, Key: key})
	if !comesUp(fresh, 2*time.Second) {
		close(stop)
		wg.Wait()
		t.Fatalf("a new client did not connect within 2 s of a handshake flood (%+v)", srv.Counters().Snapshot())
	}
	took := time.Since(start)
	pingPong(t, dial(t, fresh), "new", 20)
	close(stop)
	wg.Wait()
	c := srv.Counters().Snapshot()
	t.Logf("flood of %d initiations: %d cookie replies, %d handshakes done; new client up in %v, and took %d cookies",
		flooded.Load(), c.Cookies, c.HandshakeOK, took.Round(time.Millisecond), fresh.Counters().Cookies.Load())
	if c.HandshakeOK != 2 {
		t.Fatalf("%d handshakes completed, want the two clients'", c.HandshakeOK)
	}
	if srv.Sessions() != 2 {
		t.Fatalf("%d sessions after the flood, want 2", srv.Sessions())
	}
	if fresh.Counters().Cookies.Load() == 0 {
		t.Fatal("the new client connected without a cookie: the flood did not engage the defence")
	}
	// Cookie replies are smaller than initiations: the flooders got less than
	// they sent.
	buf := make([]byte, 2048)
	socks[0].SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _, err := socks[0].ReadFromUDP(buf); err == nil && n >= wire.InitPrefixLen+64+2*wire.MACLen {
		t.Fatalf("a %d-byte answer to an initiation", n)
	}
}
