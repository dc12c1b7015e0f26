package e2e

import (
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/server"
	"github.com/mptunnel/mptunnel/internal/status"
)

// serverPaths returns the remotes the server has for its only session.
func serverPaths(srv *server.Server) []status.Path {
	st := srv.Status("test", time.Now())
	if len(st.Sessions) != 1 {
		return nil
	}
	return st.Sessions[0].Paths
}

// TestRoaming: a bridge restarted on a new upstream port (as after a NAT
// rebinding) is followed by the server after the first authentic probe from
// the new address; the session keeps one entry per path, not one per address.
func TestRoaming(t *testing.T) {
	key, _, srv := echoServer(t)
	paths, relays := startPaths(t, srv.Addr().String(), 5, impair.Config{}, impair.Config{})
	cl := startClient(t, client.Config{Paths: paths, Key: key})
	app := dial(t, cl)
	if !eventually(3*time.Second, func() bool { return len(serverPaths(srv)) == 2 }) {
		t.Fatalf("server has paths %+v, want 2", serverPaths(srv))
	}
	before := serverPaths(srv)

	// Restart relay 1 on the same listen port: its upstream port changes.
	listen := relays[1].Addr().String()
	relays[1].Close()
	moved, err := impair.New(impair.Options{Listen: listen, To: srv.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { moved.Close() })
	if !eventually(3*time.Second, func() bool {
		p := serverPaths(srv)
		return len(p) == 2 && p[1].Remote != before[1].Remote && p[0].Remote == before[0].Remote
	}) {
		t.Fatalf("server did not follow the moved path: before %s, now %+v", before[1].Remote, serverPaths(srv))
	}
	// Only path 0 carries traffic for a moment: then make it the dead one
	// and check the moved path carries everything.
	relays[0].SetDown(true)
	pingPong(t, app, "over the moved path", 20)
	if n := len(serverPaths(srv)); n != 2 {
		t.Fatalf("server has %d paths after the move, want 2", n)
	}
}

// TestStatusSnapshot: both ends report the session, its flows and per-path
// figures consistent with the traffic sent.
func TestStatusSnapshot(t *testing.T) {
	key, _, srv := echoServer(t)
	paths, _ := startPaths(t, srv.Addr().String(), 9, impair.Config{Delay: 3 * time.Millisecond}, impair.Config{Delay: 3 * time.Millisecond})
	cl := startClient(t, client.Config{Paths: paths, Key: key})
	app := dial(t, cl)
	pingPong(t, app, "status", 100)
	if !eventually(3*time.Second, func() bool {
		st := cl.Status("test", time.Now())
		return len(st.Sessions) == 1 && st.Sessions[0].Paths[0].State == "up" && st.Sessions[0].Paths[1].State == "up"
	}) {
		t.Fatalf("client paths not up: %+v", cl.Status("test", time.Now()))
	}
	cs := cl.Status("test", time.Now())
	ss := srv.Status("test", time.Now())
	if cs.Role != "client" || ss.Role != "server" || len(ss.Sessions) != 1 || cs.Sessions[0].ID != ss.Sessions[0].ID {
		t.Fatalf("sessions differ: client %+v server %+v", cs.Sessions, ss.Sessions)
	}
	if cs.Sessions[0].Flows != 1 || ss.Sessions[0].Flows != 1 {
		t.Fatalf("flows: client %d server %d, want 1", cs.Sessions[0].Flows, ss.Sessions[0].Flows)
	}
	var dups uint64
	for i, p := range cs.Sessions[0].Paths {
		if p.TxPackets < 100 || p.RxPackets < 100 || p.RTTms < 6 || p.LastSeen == "" {
			t.Fatalf("client path %d: %+v", i, p)
		}
		dups += p.Duplicates
	}
	// Every reply came on both paths: one copy of each was a duplicate.
	if dups < 90 {
		t.Fatalf("client counted %d duplicate replies over two paths, want about 100", dups)
	}
	// The client counts a datagram once its write to the application
	// returns, which may be just after the application has read it.
	if !eventually(2*time.Second, func() bool { return cl.Counters().Snapshot().Map()["delivered"] == 100 }) {
		t.Fatalf("client delivered %d, want 100", cl.Counters().Snapshot().Map()["delivered"])
	}
}
