package e2e

import (
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/path"
	"github.com/mptunnel/mptunnel/internal/sched"
)

// relayed returns how many datagrams each relay carried toward the server.
func relayed(relays []*impair.Relay) []uint64 {
	var out []uint64
	for _, r := range relays {
		out = append(out, r.Stats().Up.Forwarded)
	}
	return out
}

// TestFailoverMode: data uses the first path only; when it dies traffic moves
// to the next, and the session reports its mode on both ends.
func TestFailoverMode(t *testing.T) {
	key, _, srv := echoServer(t)
	paths, relays := startPaths(t, srv.Addr().String(), 11, impair.Config{}, impair.Config{})
	cl := startClient(t, client.Config{Paths: paths, Key: key, Mode: sched.Failover})
	app := dial(t, cl)
	if !eventually(3*time.Second, func() bool { return cl.PathStates()[0].State.String() == "up" }) {
		t.Fatal("primary not up")
	}
	before := relayed(relays)
	pingPong(t, app, "primary", 200)
	after := relayed(relays)
	data0, data1 := after[0]-before[0], after[1]-before[1]
	// Probes go on both paths (a few a second); data only on the primary.
	if data0 < 200 || data1 > 20 {
		t.Fatalf("failover sent %d packets on the primary and %d on the backup, want all data on the primary", data0, data1)
	}
	if m := srv.Status("test", time.Now()).Sessions[0].Mode; m != "failover" {
		t.Fatalf("server reports mode %q", m)
	}
	relays[0].SetDown(true)
	// Each end sees the death on its own; replies move when the server does.
	if !eventually(5*time.Second, func() bool {
		sp := serverPaths(srv)
		return cl.PathStates()[0].State.String() == "down" && len(sp) == 2 && sp[0].State == "down"
	}) {
		t.Fatal("primary not marked down on both ends")
	}
	before = relayed(relays)
	pingPong(t, app, "backup", 100)
	after = relayed(relays)
	if after[1]-before[1] < 100 {
		t.Fatalf("backup carried %d packets after the primary died, want the 100 datagrams", after[1]-before[1])
	}
}

// TestBalanceMode: each datagram goes on one path, spread over all of them.
func TestBalanceMode(t *testing.T) {
	key, _, srv := echoServer(t)
	paths, relays := startPaths(t, srv.Addr().String(), 12, impair.Config{}, impair.Config{}, impair.Config{})
	cl := startClient(t, client.Config{Paths: paths, Key: key, Mode: sched.Balance})
	app := dial(t, cl)
	before := relayed(relays)
	const n = 600
	pingPong(t, app, "balanced", n)
	after := relayed(relays)
	var total uint64
	for i := range relays {
		d := after[i] - before[i]
		total += d
		// About a third each, probes included.
		if d < n/3-40 || d > n/3+60 {
			t.Fatalf("path %d carried %d packets of %d datagrams; want about a third", i, d, n)
		}
	}
	if total > n+100 {
		t.Fatalf("balance put %d packets on the paths for %d datagrams: copies were sent", total, n)
	}
	// Status shows each path's share of the traffic.
	for i, p := range cl.Status("test", time.Now()).Sessions[0].Paths {
		if p.Share < 0.25 || p.Share > 0.42 {
			t.Fatalf("status gives path %d a share of %.2f, want about a third", i, p.Share)
		}
	}
}

// TestAdaptiveMode: with one clean path and two lossy ones at a loose
// target, adaptive sends on the clean one only.
func TestAdaptiveMode(t *testing.T) {
	key, _, srv := echoServer(t)
	paths, relays := startPaths(t, srv.Addr().String(), 13, impair.Config{}, impair.Config{Loss: 0.3}, impair.Config{Loss: 0.3})
	cl := startClient(t, client.Config{Paths: paths, Key: key, Mode: sched.Adaptive})
	app := dial(t, cl)
	// Loss estimates need traffic: probes give some, a little stream the rest.
	buf := make([]byte, 64)
	if !eventually(15*time.Second, func() bool {
		// Some of these may be lost while losses are unknown: no checks.
		for range 10 {
			app.Write([]byte("warm"))
		}
		app.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		app.Read(buf)
		st := cl.PathStates()
		sp := serverPaths(srv)
		// Adaptive trusts a loss rate measured over 100 packets or more:
		// well over that, so that the window still holds 100 when the
		// oldest of these leave it during the ping-pong below.
		return st[0].SentOut >= 1000 && st[1].LossOut > 0.1 && st[2].LossOut > 0.1 &&
			len(sp) == 3 && sp[1].LossOut > 0.1 && sp[2].LossOut > 0.1
	}) {
		t.Fatalf("losses not measured: %+v", cl.PathStates())
	}
	// Adaptive follows the paths' health: on a machine so loaded that the
	// clean path's probes are answered late, it may leave "up" for a moment
	// and adaptive rightly spreads copies. Such a round proves nothing
	// either way and is run again; the clean path must stay up in one of
	// five rounds.
	for round := 1; ; round++ {
		drain(app)
		since := cl.PathStates()[0].Since
		before := relayed(relays)
		pingPong(t, app, "adaptive", 200)
		after := relayed(relays)
		if st := cl.PathStates()[0]; st.State != path.Up || !st.Since.Equal(since) {
			if round == 5 {
				t.Fatalf("the clean path did not stay up through any of 5 rounds of 200 datagrams: %+v", st)
			}
			t.Logf("round %d: the clean path changed state (%v since %v); again", round, st.State, st.Since.Format(time.StampMilli))
			continue
		}
		// The clean path carries the data; a datagram or two may go
		// elsewhere when a loaded machine delays the probe replies its
		// loss is measured by.
		if d := after[0] - before[0]; d < 190 {
			t.Fatalf("the clean path carried %d packets, want the 200 datagrams", d)
		}
		// Probes (4 a second) on the lossy ones, and no copies of data to
		// speak of (redundant would put all 200 on each).
		if d1, d2 := after[1]-before[1], after[2]-before[2]; d1 > 60 || d2 > 60 {
			t.Fatalf("the lossy paths carried %d and %d packets; adaptive should leave them out; %+v", d1, d2, cl.PathStates())
		}
		return
	}
}

// drain reads whatever is waiting on conn.
func drain(conn interface {
	SetReadDeadline(time.Time) error
	Read([]byte) (int, error)
}) {
	buf := make([]byte, 65536)
	for {
		conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := conn.Read(buf); err != nil {
			return
		}
	}
}

// TestFailoverLosesLittle: a 1,000 datagrams/s stream in failover mode loses
// about one probe interval of packets (250) when the primary path dies: while
// a path is suspect, its backup carries copies, and the server answers on the
// path the client's datagrams arrive by.
func TestFailoverLosesLittle(t *testing.T) {
	key, _, srv := echoServer(t)
	paths, relays := startPaths(t, srv.Addr().String(), 21, impair.Config{Delay: time.Millisecond}, impair.Config{Delay: time.Millisecond})
	cl := startClient(t, client.Config{Paths: paths, Key: key, Mode: sched.Failover})
	app := dial(t, cl)
	if !eventually(3*time.Second, func() bool { return cl.PathStates()[0].State.String() == "up" && len(serverPaths(srv)) == 2 }) {
		t.Fatal("paths not up")
	}
	const total = 3000
	got := make([]bool, total)
	done := make(chan int)
	go func() {
		buf := make([]byte, 64)
		n := 0
		for {
			app.SetReadDeadline(time.Now().Add(2 * time.Second))
			k, err := app.Read(buf)
			if err != nil {
				done <- n
				return
			}
			if k == 4 {
				if seq := int(buf[0])<<24 | int(buf[1])<<16 | int(buf[2])<<8 | int(buf[3]); seq < total && !got[seq] {
					got[seq] = true
					n++
				}
			}
		}
	}()
	tick := time.NewTicker(time.Millisecond)
	for seq := 0; seq < total; seq++ {
		<-tick.C
		if seq == 1000 {
			relays[0].SetDown(true)
		}
		app.Write([]byte{byte(seq >> 24), byte(seq >> 16), byte(seq >> 8), byte(seq)})
	}
	tick.Stop()
	received := <-done
	lost := total - received
	t.Logf("lost %d of %d datagrams when the primary died", lost, total)
	// The goal is at most one probe interval, 250 datagrams: the path in use
	// is probed every 50 ms, so its death is suspected within about 70 ms
	// and copies go on the backup from then (48 lost on an idle machine).
	// Without the fast probes it was 150 to 400; without the copies, the
	// 1.5 s it takes to declare the path down.
	if lost > 250 {
		t.Fatalf("lost %d datagrams at 1,000/s when the primary died; want no more than about one probe interval (250)", lost)
	}
}
