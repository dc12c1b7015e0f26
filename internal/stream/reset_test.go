package stream

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/mptunnel/mptunnel/internal/tcptest"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// pair starts a stream server (allowing everything, idle timeout idle) and
// a client over two packet conns.
func pair(t *testing.T, idle time.Duration) *Client {
	t.Helper()
	var k [32]byte
	rand.Read(k[:])
	secret := Secret(k, k)
	var srv *Server
	cl := NewClient(secret, 1334, func(p []byte) error { srv.Deliver(p); return nil })
	var err error
	srv, err = NewServer(secret, func(p []byte) error { cl.Deliver(p); return nil }, ServerConfig{
		PacketSize:  1334,
		IdleTimeout: idle,
		Allowed:     func(string, netip.Addr, uint16) bool { return true },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cl.Close()
		srv.Close()
	})
	return cl
}

// listen starts a TCP server on loopback that hands each connection to
// handle, and returns its target.
func listen(t *testing.T, handle func(*net.TCPConn)) wire.Target {
	t.Helper()
	ap := netip.MustParseAddrPort(tcptest.Serve(t, handle))
	return wire.Target{Addr: ap.Addr(), Port: ap.Port()}
}

// TestResetPassesThrough: a target that resets its connection resets the
// stream, and a local connection spliced to that stream is reset in turn.
func TestResetPassesThrough(t *testing.T) {
	cl := pair(t, 0)
	tg := listen(t, func(c *net.TCPConn) {
		io.ReadFull(c, make([]byte, 5))
		c.SetLinger(0) // a reset, not a FIN
	})
	st, code, err := cl.Open(context.Background(), tg)
	if err != nil || code != OK {
		t.Fatalf("open: %d %v", code, err)
	}
	// The local side: an application connection spliced to the stream.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	app, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	local, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Splice(local.(*net.TCPConn), st)
	}()
	app.Write([]byte("hello"))
	app.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(app)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the application read %v, want a reset", err)
	}
	<-done
}

// TestIdleStreamReset: a stream that carries nothing either way for the
// server's idle timeout is reset.
func TestIdleStreamReset(t *testing.T) {
	cl := pair(t, 200*time.Millisecond)
	held := make(chan struct{})
	tg := listen(t, func(c *net.TCPConn) {
		<-held // says nothing, closes nothing
	})
	defer close(held)
	st, code, err := cl.Open(context.Background(), tg)
	if err != nil || code != OK {
		t.Fatalf("open: %d %v", code, err)
	}
	start := time.Now()
	st.SetReadDeadline(start.Add(10 * time.Second))
	_, err = st.Read(make([]byte, 1))
	var se *quic.StreamError
	if !errors.As(err, &se) {
		t.Fatalf("an idle stream read %v, want a reset", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("reset after %v", d)
	}
}
