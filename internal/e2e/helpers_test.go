package e2e

import (
	"context"
	"errors"
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
)

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// echoTarget is a UDP echo server that records which peers it has seen.
type echoTarget struct {
	conn *net.UDPConn
	wg   sync.WaitGroup

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
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			e.mu.Lock()
			e.peers[from]++
			e.received++
			if e.keep {
				e.got = append(e.got, append([]byte(nil), buf[:n]...))
			}
			e.mu.Unlock()
			_, _ = conn.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(e.close)
	return e
}

// close stops the target; its port then answers with ICMP port unreachable.
func (e *echoTarget) close() {
	e.conn.Close()
	e.wg.Wait()
}

func (e *echoTarget) addr() string { return e.conn.LocalAddr().String() }

func (e *echoTarget) stats() (peers, received int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.peers), e.received
}

func testKeyErr() (handshake.Key, error) { return handshake.GenerateKey() }

func testKey(t *testing.T) handshake.Key {
	t.Helper()
	k, err := handshake.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// run starts a Serve-style function and stops it at cleanup.
func run(t *testing.T, serve func(context.Context) error) {
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

func startServer(t *testing.T, cfg server.Config) *server.Server {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	s, err := server.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, s.Serve)
	return s
}

// startClient starts a client and waits until its session is up.
func startClient(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	c, err := client.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, c.Serve)
	select {
	case <-c.Up():
	case <-time.After(10 * time.Second):
		t.Fatal("client session did not come up within 10s")
	}
	return c
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
