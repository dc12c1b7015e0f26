package e2e

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/server"
	"github.com/mptunnel/mptunnel/internal/udptest"
)

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// echoTarget is a UDP echo server that records which peers it has seen.
type echoTarget struct {
	conn *net.UDPConn
	stop func()

	mu       sync.Mutex
	peers    map[netip.AddrPort]int
	received int
	keep     bool     // keep every payload in got
	got      [][]byte // the payloads received, when keep
}

func newEchoTarget(t *testing.T) *echoTarget {
	t.Helper()
	return newEchoTargetAt(t, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
}

// newEchoTargetAt is newEchoTarget on a given address.
func newEchoTargetAt(t *testing.T, addr *net.UDPAddr) *echoTarget {
	t.Helper()
	return newEcho(t, addr, false)
}

// newRecordTarget is an echo target on loopback that keeps every payload it
// receives.
func newRecordTarget(t *testing.T) *echoTarget {
	t.Helper()
	return newEcho(t, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, true)
}

func newEcho(t *testing.T, addr *net.UDPAddr, keep bool) *echoTarget {
	t.Helper()
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	e := &echoTarget{conn: conn, peers: make(map[netip.AddrPort]int), keep: keep}
	e.stop = udptest.Serve(t, conn, func(b []byte, from netip.AddrPort) {
		e.mu.Lock()
		e.peers[from]++
		e.received++
		if e.keep {
			e.got = append(e.got, append([]byte(nil), b...))
		}
		e.mu.Unlock()
		_, _ = conn.WriteToUDPAddrPort(b, from)
	})
	return e
}

// close stops the target; its port then answers with ICMP port unreachable.
func (e *echoTarget) close() { e.stop() }

func (e *echoTarget) addr() string { return e.conn.LocalAddr().String() }

func (e *echoTarget) stats() (peers, received int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.peers), e.received
}

func testKey(t testing.TB) handshake.Key {
	t.Helper()
	k, err := handshake.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// run starts a Serve-style function and stops it at cleanup.
func run(t testing.TB, serve func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
}

// startServer starts a server, on a loopback port of its own and quiet
// unless cfg says otherwise, and serves until the test ends.
func startServer(t testing.TB, cfg server.Config) *server.Server {
	t.Helper()
	setDefaults(&cfg.Listen, &cfg.Logger)
	return serve(t, server.Listen, cfg)
}

// setDefaults fills in an empty listen address, with a loopback port of its
// own, and a missing logger, with a quiet one.
func setDefaults(listen *string, logger **slog.Logger) {
	if *listen == "" {
		*listen = "127.0.0.1:0"
	}
	if *logger == nil {
		*logger = quietLogger()
	}
}

// serve makes a daemon of cfg with listen and serves it until the test ends.
func serve[C any, D interface{ Serve(context.Context) error }](t testing.TB, listen func(C) (D, error), cfg C) D {
	t.Helper()
	d, err := listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, d.Serve)
	return d
}

// echoServer starts an echo target and a server forwarding to it with a
// fresh key, which it returns for the clients.
func echoServer(t *testing.T) (handshake.Key, *echoTarget, *server.Server) {
	t.Helper()
	return echoServerWith(t, server.Config{})
}

// echoServerWith is echoServer with the server's configuration cfg, its
// Target and Key filled in.
func echoServerWith(t *testing.T, cfg server.Config) (handshake.Key, *echoTarget, *server.Server) {
	t.Helper()
	cfg.Key = testKey(t)
	echo := newEchoTarget(t)
	cfg.Target = echo.addr()
	return cfg.Key, echo, startServer(t, cfg)
}

// serveClient starts a client as startServer does a server, without
// waiting for its session.
func serveClient(t testing.TB, cfg client.Config) *client.Client {
	t.Helper()
	setDefaults(&cfg.Listen, &cfg.Logger)
	return serve(t, client.Listen, cfg)
}

// startClient starts a client and waits until its session is up.
func startClient(t testing.TB, cfg client.Config) *client.Client {
	t.Helper()
	c := serveClient(t, cfg)
	if !comesUp(c, 10*time.Second) {
		t.Fatal("client session did not come up within 10s")
	}
	return c
}

// comesUp reports whether c's session is up within d.
func comesUp(c *client.Client, d time.Duration) bool {
	select {
	case <-c.Up():
		return true
	case <-time.After(d):
		return false
	}
}

// dialAddr opens an application socket to a client address.
func dialAddr(t *testing.T, a netip.AddrPort) *net.UDPConn {
	t.Helper()
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(a))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// dial returns a local application socket talking to the client.
func dial(t *testing.T, c *client.Client) *net.UDPConn {
	t.Helper()
	conn := dialAddr(t, c.Addr())
	if err := conn.SetReadBuffer(8 << 20); err != nil {
		t.Fatal(err)
	}
	return conn
}
