package e2e

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/server"
	"github.com/mptunnel/mptunnel/internal/tcptest"
)

// echoThrough sends data on c in pieces, paced over about d, half-closes,
// and reads everything back.
func echoThrough(c net.Conn, data []byte, d time.Duration) ([]byte, error) {
	go func() {
		const pieces = 50
		step := max(1, len(data)/pieces)
		for i := 0; i < len(data); i += step {
			c.Write(data[i:min(i+step, len(data))])
			time.Sleep(d / pieces)
		}
		c.(*net.TCPConn).CloseWrite()
	}()
	return io.ReadAll(c)
}

// TestStreamSurvivesRekeysAndPathDeath: one TCP connection through a TCP
// forward, 4 MiB each way over about 3 s, while the session is rekeyed
// every 200 ms and one of its two paths goes dead halfway: every byte
// comes back, in order.
func TestStreamSurvivesRekeysAndPathDeath(t *testing.T) {
	echo := tcptest.Echo(t)
	key := testKey(t)
	udp := newEchoTarget(t)
	srv := startServer(t, server.Config{Target: udp.addr(), Key: key, Allow: []string{"tcp:" + echo}, RekeyGrace: 500 * time.Millisecond})
	d := impair.Config{Delay: 2 * time.Millisecond}
	paths, relays := startPaths(t, srv.Addr().String(), 74, d, d)
	cl := startClient(t, client.Config{Paths: paths, Key: key, Listen: "none", RekeyAfter: 200 * time.Millisecond,
		HandshakeRetry: 400 * time.Millisecond, Forwards: []client.Forward{{Listen: "127.0.0.1:0", Target: echo, TCP: true}}})
	c, err := net.Dial("tcp", cl.ForwardAddrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	data := make([]byte, 4<<20)
	rand.Read(data)
	kill := time.AfterFunc(1500*time.Millisecond, func() { relays[0].SetDown(true) })
	defer kill.Stop()
	back, err := echoThrough(c, data, 3*time.Second)
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("%d bytes back of %d (%v)", len(back), len(data), err)
	}
	if r := cl.Counters().Snapshot().Map()["rekeys"]; r < 3 {
		t.Fatalf("only %d rekeys during the stream", r)
	}
}

// TestStreamsServerRestart: the server restarts under a live TCP
// connection: that connection ends (reset or closed, never hung), and a new
// one through the same forward works within 2 s of the client's new
// session.
func TestStreamsServerRestart(t *testing.T) {
	echo := tcptest.Echo(t)
	key := testKey(t)
	udp := newEchoTarget(t)
	cfg := server.Config{Listen: "127.0.0.1:0", Target: udp.addr(), Key: key, Allow: []string{"tcp:" + echo}, Logger: quietLogger()}
	srv1, stop1 := startStoppable(t, cfg)
	addr := srv1.Addr().String()
	cl := startClient(t, client.Config{Paths: []client.PathConfig{{Remote: addr}}, Key: key, Listen: "none",
		Forwards: []client.Forward{{Listen: "127.0.0.1:0", Target: echo, TCP: true}}})
	fwd := cl.ForwardAddrs()[0].String()
	old, err := net.Dial("tcp", fwd)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	old.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := old.Write([]byte("before")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := io.ReadFull(old, buf[:6]); err != nil || string(buf[:n]) != "before" {
		t.Fatalf("before the restart: %q %v", buf[:n], err)
	}
	sessions := cl.Counters().Snapshot().Map()["handshakes"]

	stop1()
	cfg.Listen = addr
	startServer(t, cfg)
	// The old connection ends once the client has a new session.
	ended := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(old)
		ended <- err
	}()
	select {
	case <-ended:
	case <-time.After(20 * time.Second):
		t.Fatal("the connection through the old server did not end within 20 s")
	}
	// It ends when the old server's QUIC connection closes (its goodbye
	// may come through before the server's sockets close) or when the
	// client has a new session, whichever comes first: wait for the new
	// session too.
	if !eventually(20*time.Second, func() bool { return cl.Counters().Snapshot().Map()["handshakes"] > sessions }) {
		t.Fatal("the client made no new session with the restarted server within 20 s")
	}
	start := time.Now()
	var ok bool
	for !ok && time.Since(start) < 2*time.Second {
		c, err := net.Dial("tcp", fwd)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		back, err := echoThrough(c, []byte("after"), 0)
		c.Close()
		ok = err == nil && string(back) == "after"
	}
	if !ok {
		t.Fatal("no connection through the restarted server within 2 s of the client's new session")
	}
	t.Logf("a new connection worked %v after the client's new session", time.Since(start).Round(time.Millisecond))
}
