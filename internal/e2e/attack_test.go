package e2e

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/server"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// eventually waits up to d for cond to hold.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// pingPong sends n numbered datagrams from app one at a time and fails unless
// each comes back.
func pingPong(t *testing.T, app *net.UDPConn, tag string, n int) {
	t.Helper()
	buf := make([]byte, 256)
	for i := 0; i < n; i++ {
		want := fmt.Sprintf("%s %d", tag, i)
		if _, err := app.Write([]byte(want)); err != nil {
			t.Fatal(err)
		}
		app.SetReadDeadline(time.Now().Add(3 * time.Second))
		got, err := app.Read(buf)
		if err != nil || string(buf[:got]) != want {
			t.Fatalf("%s: datagram %d lost or wrong (%q, %v)", tag, i, buf[:got], err)
		}
	}
}

// silent fails if conn receives anything within d.
func silent(t *testing.T, conn *net.UDPConn, d time.Duration, who string) {
	t.Helper()
	buf := make([]byte, 65536)
	conn.SetReadDeadline(time.Now().Add(d))
	if n, _, err := conn.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("%s received %d bytes; it must receive nothing", who, n)
	}
}

// TestWrongKey: a client with another key gets nothing through and nothing
// back, and a right-key client beside it loses nothing.
func TestWrongKey(t *testing.T) {
	key, echo, srv := echoServer(t)
	paths := []client.PathConfig{{Remote: srv.Addr().String()}, {Remote: srv.Addr().String()}}
	good := startClient(t, client.Config{Paths: paths, Key: key})
	goodApp := dial(t, good)

	bad := serveClient(t, client.Config{Paths: paths, Key: testKey(t), HandshakeRetry: 50 * time.Millisecond})
	badApp := dial(t, bad)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 500; i++ {
			fmt.Fprintf(badApp, "intruder %d", i)
			time.Sleep(time.Millisecond)
		}
	}()
	pingPong(t, goodApp, "good", 500)
	wg.Wait()
	silent(t, badApp, 300*time.Millisecond, "the wrong-key application")
	select {
	case <-bad.Up():
		t.Fatal("a session came up with the wrong key")
	default:
	}
	if _, rx := echo.stats(); rx != 500 {
		t.Fatalf("target received %d datagrams, want exactly the 500 of the right-key client", rx)
	}
	if n := srv.Counters().HandshakeBad.Load(); n == 0 {
		t.Fatal("server counted no failed handshakes")
	}
	if n := srv.Sessions(); n != 1 {
		t.Fatalf("server has %d sessions, want 1", n)
	}
}

// tappedClient starts a client whose one path goes through a relay that
// keeps a copy of every packet the client sends (the first limit, or all
// when limit is 0); captured returns those kept so far.
func tappedClient(t *testing.T, srv *server.Server, key handshake.Key, limit int) (cl *client.Client, captured func() [][]byte) {
	t.Helper()
	var mu sync.Mutex
	var pkts [][]byte
	tap, err := impair.New(impair.Options{Listen: "127.0.0.1:0", To: srv.Addr().String(), Tap: func(up bool, pkt []byte) {
		mu.Lock()
		defer mu.Unlock()
		if up && (limit == 0 || len(pkts) < limit) {
			pkts = append(pkts, append([]byte(nil), pkt...))
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tap.Close() })
	cl = startClient(t, client.Config{Paths: []client.PathConfig{{Remote: tap.Addr().String()}}, Key: key})
	return cl, func() [][]byte {
		mu.Lock()
		defer mu.Unlock()
		return pkts
	}
}

// TestReplayAndGarbage: packets captured on a path and replayed from another
// address deliver nothing twice and get no answer; neither do garbage,
// truncated or forged packets. The real session keeps working throughout.
func TestReplayAndGarbage(t *testing.T) {
	key, echo, srv := echoServer(t)

	cl, captured := tappedClient(t, srv, key, 0)
	app := dial(t, cl)
	pingPong(t, app, "before", 200)
	_, before := echo.stats()

	attacker, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	dst := net.UDPAddrFromAddrPort(srv.Addr())
	replays := captured()
	var inits int
	for _, p := range replays {
		if wire.Type(p) == wire.TypeInit {
			inits++
		}
		attacker.WriteToUDP(p, dst)
	}
	if inits == 0 {
		t.Fatal("no handshake initiation was captured")
	}
	// Garbage, truncated and forged packets.
	var sessionIndex uint32
	for _, p := range replays {
		if h, err := wire.ParseHeader(p); err == nil {
			sessionIndex = h.Receiver
		}
	}
	for i := 0; i < 2000; i++ {
		b := make([]byte, 1+i%1500)
		rand.Read(b)
		switch i % 5 {
		case 0: // a transport packet for the live session with a forged body
			if len(b) >= wire.Overhead {
				b[0], b[1], b[2], b[3] = wire.TypeTransport, 0, 0, 0
				binary.LittleEndian.PutUint32(b[4:], sessionIndex)
			}
		case 1: // a handshake initiation of the right size
			b = make([]byte, wire.InitLen)
			rand.Read(b)
			b[0], b[1], b[2], b[3] = wire.TypeInit, 0, 0, 0
		case 2: // a truncated captured packet
			p := replays[i%len(replays)]
			b = append([]byte(nil), p[:i%len(p)]...)
		}
		attacker.WriteToUDP(b, dst)
	}
	pingPong(t, app, "during", 200)
	silent(t, attacker, 500*time.Millisecond, "the attacker")
	if _, after := echo.stats(); after != before+200 {
		t.Fatalf("target received %d datagrams after the attack, want %d (the session's 200 only)", after-before, 200)
	}
	c := srv.Counters().Snapshot()
	t.Logf("server counters: %+v", c)
	if c.HandshakeReplay == 0 || c.Duplicates == 0 || c.AuthFailed == 0 || c.Malformed == 0 || c.HandshakeBad == 0 {
		t.Fatal("some kind of bad input was not counted")
	}
	if n := srv.Sessions(); n != 1 {
		t.Fatalf("server has %d sessions, want 1", n)
	}
	// Replayed probes did not move the path to the attacker.
	for _, p := range serverPaths(srv) {
		if p.Remote == attacker.LocalAddr().String() {
			t.Fatalf("a replayed packet moved path %d to the attacker's address", p.ID)
		}
	}
}
