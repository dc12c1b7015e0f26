package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/server"
)

// TestMultiHomedServer: a server listening on all addresses is reached at
// three of its addresses (two IPv4, one IPv6). It must answer each path from
// the address that path wrote to, or the client would not recognise the
// answers (and the path would never come up).
func TestMultiHomedServer(t *testing.T) {
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	key := testKey(t)
	echo := newEchoTarget(t)
	srv := startServer(t, server.Config{Listen: ":0", Target: echo.addr(), Key: key})
	port := srv.Addr().Port()
	var paths []client.PathConfig
	for _, a := range []string{"127.0.0.1", "127.0.0.2", "::1"} {
		paths = append(paths, client.PathConfig{Remote: netip.AddrPortFrom(netip.MustParseAddr(a), port).String()})
	}
	cl := startClient(t, client.Config{Paths: paths, Key: key})
	app := dial(t, cl)
	pingPong(t, app, "multi-homed", 10)
	if !eventually(3*time.Second, func() bool {
		for _, p := range cl.Status("test", time.Now()).Sessions[0].Paths {
			if p.State != "up" {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("not every path is up: %+v", cl.Status("test", time.Now()).Sessions[0].Paths)
	}
	// The server reports which of its addresses each path arrives at.
	got := map[string]bool{}
	for _, p := range srv.Status("test", time.Now()).Sessions[0].Paths {
		got[p.Local] = true
	}
	for _, want := range []string{"127.0.0.2", "[::1]"} {
		found := false
		for l := range got {
			if len(l) > len(want) && l[:len(want)] == want {
				found = true
			}
		}
		if !found {
			t.Fatalf("server paths' local addresses %v lack %s", got, want)
		}
	}
}

// TestSourceAddress: a path with a source address (`from`) leaves from it.
func TestSourceAddress(t *testing.T) {
	key, _, srv := echoServer(t)
	cl := startClient(t, client.Config{Paths: []client.PathConfig{
		{Remote: srv.Addr().String(), From: "127.0.0.3"},
		{Remote: srv.Addr().String(), From: "127.0.0.4"},
	}, Key: key})
	pingPong(t, dial(t, cl), "from", 5)
	if !eventually(3*time.Second, func() bool { return len(serverPaths(srv)) == 2 }) {
		t.Fatalf("server paths: %+v", serverPaths(srv))
	}
	for i, p := range serverPaths(srv) {
		want := fmt.Sprintf("127.0.0.%d:", i+3)
		if !strings.HasPrefix(p.Remote, want) {
			t.Fatalf("path %d arrives from %s, want from %s*", p.ID, p.Remote, want)
		}
	}
}
