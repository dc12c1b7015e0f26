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
	// setDown takes path 1's relay down or brings it back, and checks that
	// the path is marked want within 3 s.
	setDown := func(down bool, want path.State, which string) {
		t.Helper()
		relays[1].SetDown(down)
		since := time.Now()
		if !eventually(5*time.Second, func() bool { return state(1) == want }) {
			t.Fatalf("%s path not marked %v", which, want)
		}
		t.Logf("marked %v after %v", want, time.Since(since).Round(time.Millisecond))
		if d := time.Since(since); d > 3*time.Second {
			t.Fatalf("%s path marked %v after %v, want within 3s", which, want, d)
		}
	}
	setDown(true, path.Down, "dead")
	pingPong(t, app, "one path", 20)
	if state(0) != path.Up {
		t.Fatalf("the live path is %v", state(0))
	}
	setDown(false, path.Up, "recovered")
	if rtt := cl.PathStates()[1].RTT; rtt < 10*time.Millisecond {
		t.Fatalf("path 1 RTT %v, want at least its 2 x 5 ms of delay", rtt)
	}
}
