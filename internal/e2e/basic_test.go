package e2e

import (
	"bytes"
	"crypto/rand"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// TestSizes sends datagrams of every interesting size straight to the server
// over three paths and checks each comes back whole and once.
func TestSizes(t *testing.T) {
	key, echo, srv := echoServer(t)
	paths := []client.PathConfig{{Remote: srv.Addr().String()}, {Remote: srv.Addr().String()}, {Remote: srv.Addr().String()}}
	cl := startClient(t, client.Config{Paths: paths, Key: key})
	app := dial(t, cl)
	sizes := []int{0, 1, 2, 1300, 1334, 1335, 1336, 1400, 2000, 8000, 65000, wire.MaxDatagram}
	buf := make([]byte, 70000)
	for _, n := range sizes {
		msg := make([]byte, n)
		rand.Read(msg)
		if _, err := app.Write(msg); err != nil {
			t.Fatalf("size %d: %v", n, err)
		}
		app.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := app.Read(buf)
		if err != nil {
			t.Fatalf("size %d: no echo: %v", n, err)
		}
		if !bytes.Equal(buf[:got], msg) {
			t.Fatalf("size %d: echo differs (got %d bytes)", n, got)
		}
	}
	// Each datagram reached the target once, though sent on three paths.
	if _, rx := echo.stats(); rx != len(sizes) {
		t.Fatalf("target received %d datagrams, want %d", rx, len(sizes))
	}
	if d := srv.Counters().Duplicates.Load(); d == 0 {
		t.Fatal("server counted no duplicates over three paths")
	}
}

// TestOversize: a datagram larger than the tunnel carries is dropped and
// counted, and the flow keeps working. IPv6 loopback lets an application send
// up to 65,527 bytes, 20 more than the tunnel's limit.
func TestOversize(t *testing.T) {
	key, echo, srv := echoServer(t)
	cl := startClient(t, client.Config{Listen: "[::1]:0", Paths: []client.PathConfig{{Remote: srv.Addr().String()}}, Key: key})
	app := dial(t, cl)
	if _, err := app.Write(make([]byte, wire.MaxDatagram+1)); err != nil {
		t.Skipf("this system does not send %d-byte datagrams over IPv6 loopback: %v", wire.MaxDatagram+1, err)
	}
	if !eventually(2*time.Second, func() bool { return cl.Counters().Oversize.Load() == 1 }) {
		t.Fatalf("oversize datagram not counted (oversize=%d)", cl.Counters().Oversize.Load())
	}
	pingPong(t, app, "after", 3)
	if _, rx := echo.stats(); rx != 3 {
		t.Fatalf("target received %d datagrams, want 3", rx)
	}
}

// TestEarlyDatagrams: datagrams an application sends before the first
// session is up wait for it (bounded) instead of being lost.
func TestEarlyDatagrams(t *testing.T) {
	key, _, srv := echoServer(t)
	paths, relays := startPaths(t, srv.Addr().String(), 2, impair.Config{})
	relays[0].SetDown(true) // no handshake can finish yet
	cl := serveClient(t, client.Config{Paths: paths, Key: key, HandshakeRetry: 100 * time.Millisecond})
	app := dial(t, cl)
	for i := 0; i < 3; i++ {
		if _, err := app.Write([]byte{byte(i), 'e', 'a', 'r', 'l', 'y'}); err != nil {
			t.Fatal(err)
		}
	}
	// The datagrams are held until the path lets the handshake through.
	select {
	case <-cl.Up():
		t.Fatal("a session came up across a dead path")
	default:
	}
	relays[0].SetDown(false)
	buf := make([]byte, 64)
	for i := 0; i < 3; i++ {
		app.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := app.Read(buf)
		if err != nil || n != 6 || buf[0] != byte(i) {
			t.Fatalf("early datagram %d: %q %v", i, buf[:n], err)
		}
	}
	if n := cl.Counters().NoSession.Load(); n != 0 {
		t.Fatalf("%d early datagrams dropped", n)
	}
}
