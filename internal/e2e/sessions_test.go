package e2e

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/server"
)

// TestManySessionsAndFlows: two clients, three local flows each, one server.
// The target must see six distinct peers and every reply must reach the flow
// that asked.
func TestManySessionsAndFlows(t *testing.T) {
	key, echo, srv := echoServer(t)
	paths := []client.PathConfig{{Remote: srv.Addr().String()}, {Remote: srv.Addr().String()}}
	var apps []*net.UDPConn
	for c := 0; c < 2; c++ {
		cl := startClient(t, client.Config{Paths: paths, Key: key})
		for f := 0; f < 3; f++ {
			apps = append(apps, dial(t, cl))
		}
	}
	const rounds = 200
	buf := make([]byte, 2048)
	for r := 0; r < rounds; r++ {
		// All six flows send before any reads, so replies interleave.
		for i, a := range apps {
			if _, err := fmt.Fprintf(a, "flow %d round %d", i, r); err != nil {
				t.Fatal(err)
			}
		}
		for i, a := range apps {
			a.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := a.Read(buf)
			if err != nil {
				t.Fatalf("flow %d round %d: %v", i, r, err)
			}
			if want := fmt.Sprintf("flow %d round %d", i, r); string(buf[:n]) != want {
				t.Fatalf("flow %d got %q, want %q", i, buf[:n], want)
			}
		}
	}
	if peers, rx := echo.stats(); peers != 6 || rx != 6*rounds {
		t.Fatalf("target saw %d peers and %d datagrams, want 6 and %d", peers, rx, 6*rounds)
	}
	if n := srv.Sessions(); n != 2 {
		t.Fatalf("server has %d sessions, want 2", n)
	}
	if n := srv.Flows(); n != 6 {
		t.Fatalf("server has %d flows, want 6", n)
	}
}

// TestLimits: the server refuses sessions and flows past its limits (flows
// when every flow it has is busy, none idle to make room) and counts them,
// without disturbing the sessions it has.
func TestLimits(t *testing.T) {
	key, _, srv := echoServerWith(t, server.Config{MaxSessions: 1, MaxFlows: 2})
	paths := []client.PathConfig{{Remote: srv.Addr().String()}}
	cl := startClient(t, client.Config{Paths: paths, Key: key})
	var apps []*net.UDPConn
	for i := 0; i < 3; i++ {
		apps = append(apps, dial(t, cl))
	}
	buf := make([]byte, 64)
	for i, a := range apps {
		fmt.Fprintf(a, "hello %d", i)
		a.SetReadDeadline(time.Now().Add(time.Second))
		_, err := a.Read(buf)
		if i < 2 && err != nil {
			t.Fatalf("flow %d within the limit got no reply: %v", i, err)
		}
		if i == 2 && err == nil {
			t.Fatal("third flow got a reply past a flow limit of 2")
		}
	}
	if n := srv.Counters().FlowLimit.Load(); n == 0 {
		t.Fatal("flow limit not counted")
	}
	// A second client is refused: no session comes up.
	c2 := serveClient(t, client.Config{Paths: paths, Key: key, HandshakeRetry: 100 * time.Millisecond})
	if !eventually(5*time.Second, func() bool { return srv.Counters().SessionLimit.Load() > 0 }) {
		t.Fatal("session limit not counted")
	}
	select {
	case <-c2.Up():
		t.Fatal("a second session came up past a session limit of 1")
	default:
	}
}

// TestIdleTimeouts: a flow idle past the flow timeout is freed with its
// socket; a session that falls silent (its only path dies) is freed after the
// session timeout; a client that shuts down cleanly ends its session at once.
func TestIdleTimeouts(t *testing.T) {
	key, echo, srv := echoServerWith(t, server.Config{FlowTimeout: time.Second, SessionTimeout: 2 * time.Second})
	paths, relays := startPaths(t, srv.Addr().String(), 1, impair.Config{})
	cl := startClient(t, client.Config{Paths: paths, Key: key})
	app := dial(t, cl)
	pingPong(t, app, "flow", 3)
	if srv.Flows() != 1 {
		t.Fatalf("server has %d flows, want 1", srv.Flows())
	}
	if !eventually(5*time.Second, func() bool { return srv.Flows() == 0 }) {
		t.Fatal("idle flow not freed")
	}
	if srv.Sessions() != 1 {
		t.Fatal("probes did not keep the session alive")
	}
	relays[0].SetDown(true)
	if !eventually(6*time.Second, func() bool { return srv.Sessions() == 0 }) {
		t.Fatal("silent session not freed")
	}
	if srv.Counters().FlowsFreed.Load() != 1 || srv.Counters().SessionsFreed.Load() != 1 {
		t.Fatalf("freed counters: flows %d sessions %d", srv.Counters().FlowsFreed.Load(), srv.Counters().SessionsFreed.Load())
	}

	// A clean shutdown closes the session without waiting.
	srv2 := startServer(t, server.Config{Target: echo.addr(), Key: key})
	c2, err := client.Listen(client.Config{Listen: "127.0.0.1:0", Paths: []client.PathConfig{{Remote: srv2.Addr().String()}}, Key: key, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c2.Serve(ctx) }()
	<-c2.Up()
	if !eventually(2*time.Second, func() bool { return srv2.Sessions() == 1 }) {
		t.Fatal("no session on the second server")
	}
	cancel()
	<-done
	if !eventually(2*time.Second, func() bool { return srv2.Sessions() == 0 }) {
		t.Fatal("session not closed by the client's clean shutdown")
	}
}
