package e2e

import (
	"context"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/server"
)

// TestCloseWithoutServe: Close frees every socket Listen bound when Serve
// never runs: the same ports can be bound again at once.
func TestCloseWithoutServe(t *testing.T) {
	key := testKey(t)
	echo := newEchoTarget(t)
	srv, err := server.Listen(server.Config{Listen: "127.0.0.1:0", Target: echo.addr(), Key: key, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.Listen(client.Config{Listen: "127.0.0.1:0", Paths: []client.PathConfig{{Remote: srv.Addr().String()}},
		Forwards: []client.Forward{{Listen: "127.0.0.1:0", Target: echo.addr()}}, Socks: "127.0.0.1:0", Key: key, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	udp := []string{srv.Addr().String(), cl.Addr().String(), cl.ForwardAddrs()[0].String()}
	socks := cl.SocksAddr().String()
	if err := cl.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	for _, a := range udp {
		c, err := net.ListenPacket("udp", a)
		if err != nil {
			t.Fatalf("%s still bound after Close: %v", a, err)
		}
		c.Close()
	}
	ln, err := net.Listen("tcp", socks)
	if err != nil {
		t.Fatalf("socks %s still bound after Close: %v", socks, err)
	}
	ln.Close()
	// Close again, and after nothing ran: no panic, no error.
	if err := cl.Close(); err != nil {
		t.Fatal(err)
	}
}

// pathReaders counts the goroutines reading a client's path sockets.
func pathReaders() int {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	return strings.Count(string(buf[:n]), "client.(*Client).pathLoop(")
}

// TestSetPathsBeforeServe: paths set before Serve runs get one reader each,
// not two (one from SetPaths, one from Serve).
func TestSetPathsBeforeServe(t *testing.T) {
	key, _, srv := echoServer(t)
	cl, err := client.Listen(client.Config{Listen: "127.0.0.1:0", Paths: []client.PathConfig{{Remote: srv.Addr().String()}}, Key: key, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	before := pathReaders()
	// A reload (SIGHUP) that comes while the client starts.
	if err := cl.SetPaths([]client.PathConfig{{Remote: srv.Addr().String()}, {Remote: "127.0.0.1:" + portOf(t, srv.Addr().String()), Priority: 1}}); err != nil {
		t.Fatal(err)
	}
	if n := pathReaders() - before; n != 0 {
		t.Fatalf("%d path readers before Serve, want none", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); cl.Serve(ctx) }()
	defer func() { cancel(); wg.Wait() }()
	if !comesUp(cl, 5*time.Second) {
		t.Fatal("no session")
	}
	if n := pathReaders() - before; n != 2 {
		t.Fatalf("%d path readers for 2 paths", n)
	}
	pingPong(t, dial(t, cl), "a", 10)
}
