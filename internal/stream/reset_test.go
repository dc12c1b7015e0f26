package stream

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/mptunnel/mptunnel/internal/tcptest"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// pair starts a stream server with cfg, allowing every target, and a
// client over two packet conns.
func pair(t testing.TB, cfg ServerConfig) *Client {
	t.Helper()
	return pairAllowing(t, cfg, func(string, netip.Addr, uint16) bool { return true })
}

// pairAllowing is pair with the server's rules.
func pairAllowing(t testing.TB, cfg ServerConfig, allowed func(string, netip.Addr, uint16) bool) *Client {
	t.Helper()
	var k [32]byte
	rand.Read(k[:])
	secret := Secret(k, k)
	var srv *Server
	cl := NewClient(secret, 1334, func(pkts [][]byte) { deliverAll(srv, pkts) }, nil)
	cfg.PacketSize = 1334
	cfg.Allowed = allowed
	var err error
	srv, err = NewServer(secret, func(pkts [][]byte) { deliverAll(cl, pkts) }, cfg)
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
	cl := pair(t, ServerConfig{})
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
		cl.Splice(local.(*net.TCPConn), st)
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
	cl := pair(t, ServerConfig{IdleTimeout: 200 * time.Millisecond})
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

// TestStreamLimit: with the server's streams all open, one more is refused
// at once as too many, and goes once one ends.
func TestStreamLimit(t *testing.T) {
	cl := pair(t, ServerConfig{MaxStreams: 3})
	tg := listen(t, func(c *net.TCPConn) { io.Copy(io.Discard, c) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var open []*quic.Stream
	for range 3 {
		st, code, err := cl.Open(ctx, tg)
		if err != nil || code != OK {
			t.Fatalf("open: %d %v", code, err)
		}
		open = append(open, st)
	}
	if st, code, err := cl.Open(ctx, tg); err != nil || code != TooManyStreams || st != nil {
		t.Fatalf("a fourth stream: %d (%s) %v, want %d", code, Reason(code), err, TooManyStreams)
	}
	open[0].Close()
	open[0].CancelRead(0)
	var code byte
	for code != OK && ctx.Err() == nil {
		var st *quic.Stream
		var err error
		st, code, err = cl.Open(ctx, tg)
		if err != nil {
			t.Fatal(err)
		}
		if code == OK {
			st.Close()
		} else {
			time.Sleep(5 * time.Millisecond) // the server's word that one ended is on its way
		}
	}
	if code != OK {
		t.Fatal("no stream once one ended")
	}
}

// deliverAll hands each packet to d.
func deliverAll(d interface{ Deliver([]byte) }, pkts [][]byte) {
	for _, p := range pkts {
		d.Deliver(p)
	}
}

// TestThousandStreams: 1,000 streams open at once on one connection, each
// to an echo target; every one gets its own bytes back.
func TestThousandStreams(t *testing.T) {
	cl := pair(t, ServerConfig{})
	ap := netip.MustParseAddrPort(tcptest.Echo(t))
	tg := wire.Target{Addr: ap.Addr(), Port: ap.Port()}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 1000
	streams := make([]*quic.Stream, n)
	for i := range streams {
		st, code, err := cl.Open(ctx, tg)
		if err != nil || code != OK {
			t.Fatalf("stream %d: %d (%s) %v", i, code, Reason(code), err)
		}
		streams[i] = st
	}
	// All open; now each carries its own message there and back.
	errs := make(chan error, n)
	for i, st := range streams {
		go func() {
			msg := []byte("stream " + strconv.Itoa(i))
			st.Write(msg)
			st.Close()
			st.SetReadDeadline(time.Now().Add(30 * time.Second))
			back, err := io.ReadAll(st)
			if err == nil && !bytes.Equal(back, msg) {
				err = errors.New("stream " + strconv.Itoa(i) + ": wrong bytes back")
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkThousandStreams opens 1,000 streams at once on one connection,
// each to an echo target, carries a message on each, and reports the heap
// and goroutine stacks they hold while all are open (both ends of the QUIC connection, the
// server's TCP connections to the target and the target's own), per stream.
func BenchmarkThousandStreams(b *testing.B) {
	const n = 1000
	cl := pair(b, ServerConfig{})
	ap := netip.MustParseAddrPort(tcptest.Echo(b))
	tg := wire.Target{Addr: ap.Addr(), Port: ap.Port()}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var held, stacks float64
	for b.Loop() {
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		streams := make([]*quic.Stream, n)
		for i := range streams {
			st, code, err := cl.Open(ctx, tg)
			if err != nil || code != OK {
				b.Fatalf("stream %d: %d (%s) %v", i, code, Reason(code), err)
			}
			streams[i] = st
		}
		msg := make([]byte, 100)
		for i, st := range streams {
			st.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := st.Write(msg); err != nil {
				b.Fatalf("stream %d: %v", i, err)
			}
			if _, err := io.ReadFull(st, msg); err != nil {
				b.Fatalf("stream %d: %v", i, err)
			}
		}
		var open runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&open)
		held = float64(open.HeapInuse) - float64(before.HeapInuse)
		stacks = float64(open.StackInuse) - float64(before.StackInuse)
		for _, st := range streams {
			st.Close()
			st.CancelRead(0)
		}
	}
	b.ReportMetric(held/n/1024, "heap-KiB/stream")
	b.ReportMetric(stacks/n/1024, "stack-KiB/stream")
	b.ReportMetric((held+stacks)/(1<<20), "MiB")
}
