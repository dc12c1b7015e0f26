package stream

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/tcptest"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// TestEndpoints: a stream server and client over two packet conns: an
// allowed target is connected and echoes a megabyte each way with a
// half-close in between; a refused port, a target no rule allows and a
// name that does not resolve get the replies SOCKS5 needs.
func TestEndpoints(t *testing.T) {
	ap, err := netip.ParseAddrPort(tcptest.Echo(t))
	if err != nil {
		t.Fatal(err)
	}
	port := ap.Port()
	var k [32]byte
	rand.Read(k[:])
	secret := Secret(k, k)
	var srv *Server
	var mu sync.Mutex
	var done []byte
	cl := NewClient(secret, 1334, func(pkts [][]byte) { deliverAll(srv, pkts) }, nil)
	srv, err = NewServer(secret, func(pkts [][]byte) { deliverAll(cl, pkts) }, ServerConfig{
		PacketSize: 1334,
		Allowed: func(name string, addr netip.Addr, p uint16) bool {
			return addr == netip.MustParseAddr("127.0.0.1") || name == "nowhere.invalid"
		},
		Opened: func(_ wire.Target, code byte) {
			mu.Lock()
			done = append(done, code)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cl.Close()
		srv.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	st, code, err := cl.Open(ctx, wire.Target{Addr: netip.MustParseAddr("127.0.0.1"), Port: port})
	if err != nil || code != OK {
		t.Fatalf("open: %d %v", code, err)
	}
	big := make([]byte, 1<<20)
	rand.Read(big)
	go func() {
		st.Write(big)
		st.Close()
	}()
	back, err := io.ReadAll(st)
	if err != nil || !bytes.Equal(back, big) {
		t.Fatalf("echo: %d bytes back of %d, %v", len(back), len(big), err)
	}

	closed := freePort(t)
	for _, c := range []struct {
		tg   wire.Target
		want byte
	}{
		{wire.Target{Addr: netip.MustParseAddr("127.0.0.1"), Port: closed}, Refused},
		{wire.Target{Addr: netip.MustParseAddr("127.0.0.2"), Port: port}, NotAllowed},
		{wire.Target{Name: "nowhere.invalid", Port: 80}, NoName},
		{wire.Target{Name: "other.invalid", Port: 80}, NotAllowed},
	} {
		st, code, err := cl.Open(ctx, c.tg)
		if err != nil || code != c.want || st != nil {
			t.Errorf("%v: reply %d (%s), %v; want %d (%s)", c.tg, code, Reason(code), err, c.want, Reason(c.want))
		}
	}
	// The server told of each reply once. Not necessarily in turn: it
	// tells after the reply has gone, and the client may have opened the
	// next stream by then (or, for the last, read it).
	told := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(done)
	}
	for deadline := time.Now().Add(5 * time.Second); told() < 5 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(done)
	want := []byte{OK, Refused, NotAllowed, NoName, NotAllowed}
	slices.Sort(want)
	if !bytes.Equal(done, want) {
		t.Errorf("replies told: %v, want %v", done, want)
	}
}

// freePort returns a loopback TCP port nothing listens on.
func freePort(t *testing.T) uint16 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	return p
}
