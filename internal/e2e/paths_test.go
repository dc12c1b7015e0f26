package e2e

import (
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/path"
)

// TestPathDownAndUp: a path that dies is marked down within 3 s and up again
// within 3 s of coming back, while the other paths carry the traffic.
func TestPathDownAndUp(t *testing.T) {
	key, _, srv := echoServer(t)
	paths, relays := startPaths(t, srv.Addr().String(), 3, impair.Config{Delay: 2 * time.Millisecond}, impair.Config{Delay: 5 * time.Millisecond})
	cl := startClient(t, client.Config{Paths: paths, Key: key})
	app := dial(t, cl)
	state := func(i int) path.State { return cl.PathStates()[i].State }
	if !eventually(3*time.Second, func() bool { return state(0) == path.Up && state(1) == path.Up }) {
		t.Fatalf("paths not up: %v %v", state(0), state(1))
	}
	relays[1].SetDown(true)
	died := time.Now()
	if !eventually(5*time.Second, func() bool { return state(1) == path.Down }) {
		t.Fatal("dead path not marked down")
	}
	t.Logf("marked down after %v", time.Since(died).Round(time.Millisecond))
	if d := time.Since(died); d > 3*time.Second {
		t.Fatalf("dead path marked down after %v, want within 3s", d)
	}
	pingPong(t, app, "one path", 20)
	if state(0) != path.Up {
		t.Fatalf("the live path is %v", state(0))
	}
	relays[1].SetDown(false)
	back := time.Now()
	if !eventually(5*time.Second, func() bool { return state(1) == path.Up }) {
		t.Fatal("recovered path not marked up")
	}
	t.Logf("marked up after %v", time.Since(back).Round(time.Millisecond))
	if d := time.Since(back); d > 3*time.Second {
		t.Fatalf("recovered path marked up after %v, want within 3s", d)
	}
	if rtt := cl.PathStates()[1].RTT; rtt < 10*time.Millisecond {
		t.Fatalf("path 1 RTT %v, want at least its 2 x 5 ms of delay", rtt)
	}
}
