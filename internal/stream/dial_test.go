package stream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/mptunnel/mptunnel/internal/tcptest"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// TestDialFailures: what the server's dial of a target meets becomes the
// reply the client is told: a dial still going at DialTimeout is told as
// timed out (SOCKS 0x06) once the timeout passes, an unreachable host or
// network as unreachable (0x04). The kernel's own errors are met in the
// lab (internal/labtest TestStreamsOverLossyBridges), where the routes are
// the test's.
func TestDialFailures(t *testing.T) {
	const timeout = 300 * time.Millisecond
	opErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
	}
	for _, c := range []struct {
		name  string
		dial  func(ctx context.Context) error
		want  byte
		socks byte
	}{
		{"no answer", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }, TimedOut, 0x06},
		{"host unreachable", func(context.Context) error { return opErr(syscall.EHOSTUNREACH) }, Unreachable, 0x04},
		{"network unreachable", func(context.Context) error { return opErr(syscall.ENETUNREACH) }, Unreachable, 0x04},
		{"refused", func(context.Context) error { return opErr(syscall.ECONNREFUSED) }, Refused, 0x05},
		{"another error", func(context.Context) error { return opErr(syscall.EACCES) }, Failed, 0x01},
	} {
		t.Run(c.name, func(t *testing.T) {
			var dials atomic.Int32
			cl := pair(t, ServerConfig{DialTimeout: timeout, Dial: func(ctx context.Context, _ netip.AddrPort) (*net.TCPConn, error) {
				dials.Add(1)
				return nil, c.dial(ctx)
			}})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			st, code, err := cl.Open(ctx, wire.Target{Addr: netip.MustParseAddr("192.0.2.1"), Port: 22})
			if err != nil || st != nil || code != c.want || SocksReply(code) != c.socks {
				t.Fatalf("reply %d (%s, SOCKS %#x), %v; want %d (%s, SOCKS %#x)", code, Reason(code), SocksReply(code), err, c.want, Reason(c.want), c.socks)
			}
			if dials.Load() != 1 {
				t.Errorf("%d dials, want 1", dials.Load())
			}
			if c.want == TimedOut && time.Since(start) < timeout {
				t.Errorf("told of the timeout after %v, before the dial timeout of %v", time.Since(start), timeout)
			}
		})
	}
}

// TestSlowReader: a target that sends without pause to a client that reads
// nothing fills the stream's flow-control window and then waits: what it
// gets to send stays within the window and the sockets' buffers, which the
// test keeps small, so nothing in between grows with the target's will to
// send. Once the client reads, every byte comes, in order.
func TestSlowReader(t *testing.T) {
	const sockBuf = 64 << 10
	var sent atomic.Int64
	stop := make(chan struct{})
	tg := listen(t, func(c *net.TCPConn) {
		c.SetWriteBuffer(sockBuf)
		buf := make([]byte, 16<<10)
		var off int64
		for {
			for i := range buf {
				buf[i] = byte((off + int64(i)) % 251)
			}
			n, err := c.Write(buf)
			off += int64(n)
			sent.Store(off)
			if err != nil {
				return
			}
			select {
			case <-stop:
				c.Close()
				return
			default:
			}
		}
	})
	cl := pair(t, ServerConfig{Dial: func(ctx context.Context, addr netip.AddrPort) (*net.TCPConn, error) {
		c, err := dialTCP(ctx, addr)
		if err == nil {
			err = c.SetReadBuffer(sockBuf)
		}
		return c, err
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, code, err := cl.Open(ctx, tg)
	if err != nil || code != OK {
		t.Fatalf("open: %d %v", code, err)
	}
	defer st.CancelRead(0)

	// The target sends until the window (the initial one: it grows only as
	// the reader keeps up) is full: wait until its count
	// stands still for half a second.
	var last int64
	still := 0
	for still < 5 {
		select {
		case <-ctx.Done():
			t.Fatalf("the target still sends after 30 s: %d bytes, the window is %d", sent.Load(), streamWindow)
		case <-time.After(100 * time.Millisecond):
		}
		if n := sent.Load(); n == last {
			still++
		} else {
			last, still = n, 0
		}
	}
	// The stream's window, the socket buffers at the server (the kernel
	// may double what is asked and keeps some for itself) and what is on
	// its way through the copies and the packet conns.
	bound := int64(streamWindow + 8*sockBuf + 1<<20)
	t.Logf("a client reading nothing let the target send %d bytes (window %d, bound %d)", last, streamWindow, bound)
	if last > bound || last == 0 {
		t.Errorf("the target sent %d bytes to a client reading nothing, want some, and at most %d", last, bound)
	}

	// Now read: every byte the target sends comes, in order.
	close(stop)
	got := readPattern(t, st)
	if got != sent.Load() {
		t.Errorf("read %d bytes, the target sent %d", got, sent.Load())
	}
}

// readPattern reads st to its end and checks each byte is the target's
// pattern (offset mod 251); it returns the count.
func readPattern(t *testing.T, st *quic.Stream) int64 {
	t.Helper()
	st.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 64<<10)
	var off int64
	for {
		n, err := st.Read(buf)
		for i := range n {
			if buf[i] != byte((off+int64(i))%251) {
				t.Fatalf("byte %d is %d, want %d", off+int64(i), buf[i], (off+int64(i))%251)
			}
		}
		off += int64(n)
		if errors.Is(err, io.EOF) {
			return off
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", off, err)
		}
	}
}

// TestDialEachAddress: a name that resolves to several addresses is tried
// at each the rules allow, in turn, until one connects: the first refusing
// does not fail the stream, and an address no rule allows is not dialed.
func TestDialEachAddress(t *testing.T) {
	echo := netip.MustParseAddrPort(tcptest.Echo(t))
	v6, barred, v4 := netip.MustParseAddr("::1"), netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("127.0.0.1")
	var tried []netip.Addr
	cfg := ServerConfig{
		Lookup: func(_ context.Context, name string) ([]netip.Addr, error) {
			if name != "twice.example" {
				return nil, errors.New("no such host")
			}
			return []netip.Addr{v6, barred, v4}, nil
		},
		Dial: func(ctx context.Context, addr netip.AddrPort) (*net.TCPConn, error) {
			tried = append(tried, addr.Addr()) // one stream: its dials come one at a time
			if addr.Addr() == v6 {
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
			}
			return dialTCP(ctx, echo)
		},
	}
	cl := pairAllowing(t, cfg, func(_ string, a netip.Addr, _ uint16) bool { return a != barred })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, code, err := cl.Open(ctx, wire.Target{Name: "twice.example", Port: echo.Port()})
	if err != nil || code != OK {
		t.Fatalf("open: %d (%s) %v, after trying %v", code, Reason(code), err, tried)
	}
	st.Close()
	if want := []netip.Addr{v6, v4}; !slices.Equal(tried, want) {
		t.Errorf("tried %v, want %v", tried, want)
	}
}
