package e2e

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/server"
	"github.com/mptunnel/mptunnel/internal/status"
)

// lockedBuffer is a log sink tests read while the daemon writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestForwards: one client, one session, three local addresses: the
// default one to the server's target, and two forwards to two other
// targets the server allows, one by address and one by a CIDR rule. Each
// reaches its own target and no other.
func TestForwards(t *testing.T) {
	key := testKey(t)
	def, b, c := newEchoTarget(t), newEchoTarget(t), newEchoTarget(t)
	srv := startServer(t, server.Config{Target: def.addr(), Key: key,
		Allow: []string{b.addr(), "127.0.0.0/8:" + portOf(t, c.addr())}})
	paths, _ := startPaths(t, srv.Addr().String(), 61, impair.Config{}, impair.Config{Loss: 0.3})
	cl := startClient(t, client.Config{Paths: paths, Key: key,
		Forwards: []client.Forward{{Listen: "127.0.0.1:0", Target: b.addr()}, {Listen: "127.0.0.1:0", Target: c.addr()}}})
	fw := cl.ForwardAddrs()
	if len(fw) != 2 {
		t.Fatalf("%d forward addresses, want 2", len(fw))
	}
	pingPong(t, dial(t, cl), "default", 50)
	pingPong(t, dialAddr(t, fw[0]), "to b", 50)
	pingPong(t, dialAddr(t, fw[1]), "to c", 50)
	for name, e := range map[string]*echoTarget{"default": def, "b": b, "c": c} {
		if peers, got := e.stats(); peers != 1 || got < 50 || got > 60 {
			t.Fatalf("target %s: %d datagrams from %d peers, want its 50 (a few copies at most) from one", name, got, peers)
		}
	}
	if n := srv.Sessions(); n != 1 {
		t.Fatalf("%d sessions, want the one that carries all three", n)
	}
	if n := srv.Flows(); n != 3 {
		t.Fatalf("%d flows on the server, want 3", n)
	}
	// Status has each front and each target, with its flow and traffic. A
	// datagram is counted once its write returns, which may be just after
	// the application read it: wait for the counts.
	cs := cl.Status("test", time.Now()).Targets
	if len(cs) != 3 || cs[0].Target != "" || cs[1].Target != b.addr() || cs[2].Target != c.addr() {
		t.Fatalf("client targets: %+v", cs)
	}
	eventually(2*time.Second, func() bool {
		cs = cl.Status("test", time.Now()).Targets
		for _, tg := range cs {
			if tg.TxDatagrams < 50 || tg.RxDatagrams < 50 {
				return false
			}
		}
		return true
	})
	for _, tg := range cs {
		if tg.Flows != 1 || tg.TxDatagrams != 50 || tg.RxDatagrams != 50 {
			t.Fatalf("client target %+v: want 1 flow, 50 datagrams each way", tg)
		}
	}
	var ss []status.Target
	eventually(2*time.Second, func() bool {
		ss = srv.Status("test", time.Now()).Targets
		for _, tg := range ss {
			if tg.TxDatagrams < 50 || tg.RxDatagrams < 50 {
				return false
			}
		}
		return len(ss) == 3
	})
	if len(ss) != 3 {
		t.Fatalf("server targets: %+v", ss)
	}
	for _, tg := range ss {
		if tg.Flows != 1 || tg.TxDatagrams < 50 || tg.RxDatagrams < 50 || (tg.Name == def.addr()) != (tg.Target == "") {
			t.Fatalf("server target %+v: want 1 flow and 50 datagrams or more each way", tg)
		}
	}
}

// TestForwardRefused: a forward to a target the server does not allow gets
// nothing through; the target receives nothing, the client logs why, and a
// forward beside it in the same session works.
func TestForwardRefused(t *testing.T) {
	key := testKey(t)
	def, denied, ok := newEchoTarget(t), newEchoTarget(t), newEchoTarget(t)
	srv := startServer(t, server.Config{Target: def.addr(), Key: key, Allow: []string{ok.addr()}})
	paths, _ := startPaths(t, srv.Addr().String(), 62, impair.Config{}, impair.Config{})
	var logs lockedBuffer
	cl := startClient(t, client.Config{Paths: paths, Key: key, Listen: "none",
		Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
		Forwards: []client.Forward{{Listen: "127.0.0.1:0", Target: denied.addr()}, {Listen: "127.0.0.1:0", Target: ok.addr()}}})
	fw := cl.ForwardAddrs()
	app := dialAddr(t, fw[0])
	if !eventually(5*time.Second, func() bool {
		app.Write([]byte("let me in"))
		return strings.Contains(logs.String(), "target not allowed by the server")
	}) {
		t.Fatalf("the client did not log the refusal:\n%s", logs.String())
	}
	pingPong(t, dialAddr(t, fw[1]), "allowed", 20)
	if _, got := denied.stats(); got != 0 {
		t.Fatalf("the refused target received %d datagrams", got)
	}
	if n := srv.Counters().TargetRefused.Load() + cl.Counters().TargetRefused.Load(); n == 0 {
		t.Fatal("no datagram for the refused target was counted")
	}
	silent(t, app, 300*time.Millisecond, "the refused forward's application")
	var refused uint64
	for _, tg := range srv.Status("test", time.Now()).Targets {
		if tg.Name == denied.addr() {
			refused = tg.Refused
		}
	}
	for _, tg := range cl.Status("test", time.Now()).Targets {
		if tg.Target == denied.addr() {
			refused += tg.Refused
		}
	}
	if refused == 0 {
		t.Fatal("status shows no refused datagram for the refused target")
	}
}

// TestForwardDNS: a DNS query through a forward whose target the server
// knows by name: the server resolves the name, the query reaches the DNS
// server and its answer comes back to a real resolver.
func TestForwardDNS(t *testing.T) {
	key := testKey(t)
	echo := newEchoTarget(t)
	target := newFakeDNS(t, netip.MustParseAddr("192.0.2.7")) // the DNS server behind the tunnel
	names := newFakeDNS(t, netip.MustParseAddr("127.0.0.1"))  // the server's own resolver
	port := strconv.Itoa(target.conn.LocalAddr().(*net.UDPAddr).Port)
	srv := startServer(t, server.Config{Target: echo.addr(), Key: key, Resolver: names.resolver(),
		Allow: []string{"dns.mptunnel.test:" + port}})
	paths, _ := startPaths(t, srv.Addr().String(), 63, impair.Config{}, impair.Config{})
	cl := startClient(t, client.Config{Paths: paths, Key: key,
		Forwards: []client.Forward{{Listen: "127.0.0.1:0", Target: "dns.mptunnel.test:" + port}}})
	fwd := cl.ForwardAddrs()[0].String()
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", fwd)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addrs, err := r.LookupNetIP(ctx, "ip4", "www.example.test")
	if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("192.0.2.7") {
		t.Fatalf("lookup through the forward: %v %v, want 192.0.2.7", addrs, err)
	}
}

func portOf(t *testing.T, hostPort string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(hostPort)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestNoDefaultTarget: a server with allow rules and no target refuses the
// flows that name none, and the client says why; a forward works.
func TestNoDefaultTarget(t *testing.T) {
	key := testKey(t)
	ok := newEchoTarget(t)
	srv := startServer(t, server.Config{Key: key, Allow: []string{ok.addr()}})
	paths, _ := startPaths(t, srv.Addr().String(), 64, impair.Config{})
	var logs lockedBuffer
	cl := startClient(t, client.Config{Paths: paths, Key: key, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Forwards: []client.Forward{{Listen: "127.0.0.1:0", Target: ok.addr()}}})
	app := dial(t, cl)
	if !eventually(5*time.Second, func() bool {
		app.Write([]byte("anyone?"))
		return strings.Contains(logs.String(), "the server has no default target")
	}) {
		t.Fatalf("the client did not log the refusal:\n%s", logs.String())
	}
	pingPong(t, dialAddr(t, cl.ForwardAddrs()[0]), "forward", 10)
	if _, err := server.Listen(server.Config{Listen: "127.0.0.1:0", Key: key}); err == nil {
		t.Fatal("a server with no target and no rules started")
	}
}

// TestForwardServerRestart: after the server restarts and the client makes
// a new session, a forward's flow names its target again, so its datagrams
// reach that target and not the new server's default one.
func TestForwardServerRestart(t *testing.T) {
	key := testKey(t)
	def, b := newEchoTarget(t), newEchoTarget(t)
	cfg := server.Config{Listen: "127.0.0.1:0", Target: def.addr(), Allow: []string{b.addr()}, Key: key, Logger: quietLogger()}
	srv1, stop1 := startStoppable(t, cfg)
	addr := srv1.Addr().String()
	cl := startClient(t, client.Config{Paths: []client.PathConfig{{Remote: addr}}, Key: key,
		Forwards: []client.Forward{{Listen: "127.0.0.1:0", Target: b.addr()}}})
	app := dialAddr(t, cl.ForwardAddrs()[0])
	pingPong(t, app, "first server", 5)
	stop1()
	cfg.Listen = addr
	startServer(t, cfg)
	if !eventually(10*time.Second, func() bool { return cl.Counters().HandshakeOK.Load() == 2 }) {
		t.Fatal("no new session with the restarted server")
	}
	drain(app)
	pingPong(t, app, "second server", 20)
	if _, got := def.stats(); got != 0 {
		t.Fatalf("the default target received %d datagrams meant for the forward's target", got)
	}
}
