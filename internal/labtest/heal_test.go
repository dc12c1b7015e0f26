//go:build linux

package labtest

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/netlab"
	"github.com/mptunnel/mptunnel/internal/status"
)

const appAddr = "127.0.0.1:3000"

// startServer starts mpserver with its echo target; extra flags go first.
func (tp *topology) startServer(t *testing.T, extra ...string) *netlab.Proc {
	args := append(append([]string{"--key-file", tp.keyFile, "--control", tp.ctl("server")}, extra...), "2000", "127.0.0.1", "7")
	p := tp.server.Start(t, tp.bins["mpserver"], args...)
	tp.server.WaitListening(t, "udp", 2000, 10*time.Second)
	return p
}

// startClient starts mpclient with the three bridges as paths.
func (tp *topology) startClient(t *testing.T) *netlab.Proc {
	p := tp.client.Start(t, tp.bins["mpclient"], "--key-file", tp.keyFile, "--control", tp.ctl("client"), tp.conf)
	p.WaitOutput(t, "session up", 10*time.Second)
	return p
}

// startAll starts the echo target, the server, three socat bridges and the
// client, and waits until an echo comes back through the tunnel.
func (tp *topology) startAll(t *testing.T, serverFlags ...string) (srv, cl *netlab.Proc, socats []*netlab.Proc) {
	tp.server.StartEcho(t, "127.0.0.1:7")
	srv = tp.startServer(t, serverFlags...)
	for i := range tp.bridges {
		socats = append(socats, tp.startSocat(t, i))
		tp.bridges[i].WaitListening(t, "udp", 4000, 10*time.Second)
	}
	cl = tp.startClient(t)
	tp.client.WaitEcho(t, appAddr, 10*time.Second)
	return srv, cl, socats
}

// status runs `mptunnel status --json` against a role's control socket.
func (tp *topology) status(t *testing.T, role string) (status.Status, error) {
	out, err := exec.Command(tp.bins["mptunnel"], "status", "--json", "--control", tp.ctl(role)).Output()
	if err != nil {
		return status.Status{}, err
	}
	var st status.Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("status --json printed %q: %v", out, err)
	}
	return st, nil
}

// pathState returns the client's state of path id, or "" when unknown.
func (tp *topology) pathState(t *testing.T, id int) string {
	st, err := tp.status(t, "client")
	if err != nil || len(st.Sessions) != 1 {
		return ""
	}
	for _, p := range st.Sessions[0].Paths {
		if p.ID == id {
			return p.State
		}
	}
	return ""
}

// waitFor polls cond every 50 ms for up to d and returns how long it took.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// TestBridgeStopStart: a steady 500 packets/s stream keeps flowing, losing
// nothing, while one socat bridge is stopped and started again. Status shows
// the path down within 3 s and up within 3 s of its return; the restarted
// socat relays from a new upstream port and the server follows it.
func TestBridgeStopStart(t *testing.T) {
	tp := newTopology(t)
	_, cl, socats := tp.startAll(t)
	waitFor(t, 5*time.Second, "all paths up", func() bool {
		return tp.pathState(t, 0) == "up" && tp.pathState(t, 1) == "up" && tp.pathState(t, 2) == "up"
	})
	before, err := tp.status(t, "server")
	if err != nil {
		t.Fatal(err)
	}
	stream := tp.client.StartStream(t, netlab.StreamConfig{Addr: appAddr, Rate: 500, Duration: 10 * time.Second})
	time.Sleep(time.Second)

	if err := socats[0].Stop(); err != nil {
		t.Logf("socat stopped: %v", err)
	}
	down := waitFor(t, 5*time.Second, "path 0 down", func() bool { return tp.pathState(t, 0) == "down" })
	t.Logf("path 0 marked down %v after its bridge stopped", down.Round(time.Millisecond))
	if down > 3*time.Second {
		t.Fatalf("path 0 marked down after %v, want within 3s", down)
	}
	tp.startSocat(t, 0)
	tp.bridges[0].WaitListening(t, "udp", 4000, 10*time.Second)
	up := waitFor(t, 5*time.Second, "path 0 up", func() bool { return tp.pathState(t, 0) == "up" })
	t.Logf("path 0 marked up %v after its bridge returned", up.Round(time.Millisecond))
	if up > 3*time.Second {
		t.Fatalf("path 0 marked up after %v, want within 3s", up)
	}

	r := stream.Wait(t)
	t.Logf("stream: sent %d, received %d, lost %d, gaps %d", r.Sent, r.Received, r.LostCount, len(r.Gaps))
	// Each change is one log line with its reason.
	for _, change := range []string{"from=up to=down reason=", "from=down to=up reason="} {
		if n := strings.Count(cl.Output(), `msg="path state" path=10.77.1.2:4000 `+change); n != 1 {
			t.Fatalf("client logged %q %d times, want once:\n%s", change, n, cl.Output())
		}
	}
	if r.LostCount != 0 || r.Corrupt != 0 || r.Duplicates != 0 {
		t.Fatalf("stream lost %d, corrupt %d, duplicated %d; want none", r.LostCount, r.Corrupt, r.Duplicates)
	}
	after, err := tp.status(t, "server")
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Sessions) != 1 || len(after.Sessions[0].Paths) != 3 {
		t.Fatalf("server status after the bridge restart: %+v", after.Sessions)
	}
	if after.Sessions[0].Paths[0].Remote == before.Sessions[0].Paths[0].Remote {
		t.Fatalf("the restarted bridge relays from %s as before; want a new upstream port", after.Sessions[0].Paths[0].Remote)
	}
	t.Logf("server followed path 0 from %s to %s", before.Sessions[0].Paths[0].Remote, after.Sessions[0].Paths[0].Remote)
}

// outage returns the time from the last echo of r at or before at to the
// first one after it: how long the stream stopped around at.
func outage(r netlab.StreamReport, at time.Time) (time.Duration, bool) {
	d := at.Sub(r.Start)
	var last time.Duration = -1
	for _, e := range r.Echoes {
		if e <= d {
			last = e
			continue
		}
		if last < 0 {
			return 0, false
		}
		return e - last, true
	}
	return 0, false
}

// TestServerKill9: mpserver is killed (kill -9) and started again at once
// while a stream of 200 datagrams a second runs. The new server answers the
// client's packets for the session it does not know with stateless resets,
// so the client handshakes again at once: the stream stops for well under
// 500 ms (1,525 ms before resets, when the client waited 1.5 s of silence).
func TestServerKill9(t *testing.T) {
	tp := newTopology(t)
	srv, cl, _ := tp.startAll(t)
	stream := tp.client.StartStream(t, netlab.StreamConfig{Addr: appAddr, Rate: 200, Duration: 6 * time.Second})
	time.Sleep(2 * time.Second)
	killed := time.Now()
	srv.Kill9()
	tp.startServer(t)
	restarted := time.Now()
	r := stream.Wait(t)
	first, ok := r.FirstEchoAfter(restarted)
	if !ok {
		t.Fatalf("the stream never resumed after the server restart (client log:\n%s)", cl.Output())
	}
	gap, ok := outage(r, killed)
	if !ok {
		t.Fatal("no echo before the kill")
	}
	t.Logf("server kill -9 and restart: outage %v (the restart took %v; first echo %v after it), sent %d, lost %d",
		gap.Round(time.Millisecond), restarted.Sub(killed).Round(time.Millisecond), first.Sub(restarted).Round(time.Millisecond), r.Sent, r.LostCount)
	if gap > 500*time.Millisecond {
		t.Fatalf("the stream stopped for %v around the server restart, want under 500ms (client log:\n%s)", gap, cl.Output())
	}
	if !strings.Contains(cl.Output(), "the server does not hold our session") {
		t.Fatalf("the client did not act on a reset (client log:\n%s)", cl.Output())
	}
}

// TestClientKill9: mpclient is killed (kill -9) and started again at once
// while a stream of 200 datagrams a second runs: the new session works at
// once and, after the session timeout, the server shows one session, not
// two.
func TestClientKill9(t *testing.T) {
	tp := newTopology(t)
	_, cl, _ := tp.startAll(t, "--session-timeout", "5s")
	stream := tp.client.StartStream(t, netlab.StreamConfig{Addr: appAddr, Rate: 200, Duration: 6 * time.Second})
	time.Sleep(2 * time.Second)
	killed := time.Now()
	cl.Kill9()
	restarted := time.Now()
	tp.startClient(t)
	r := stream.Wait(t)
	first, ok := r.FirstEchoAfter(restarted)
	if !ok {
		t.Fatal("the stream never resumed after the client restart")
	}
	gap, ok := outage(r, killed)
	if !ok {
		t.Fatal("no echo before the kill")
	}
	t.Logf("client kill -9 and restart: outage %v (first echo %v after the restart), sent %d, lost %d",
		gap.Round(time.Millisecond), first.Sub(restarted).Round(time.Millisecond), r.Sent, r.LostCount)
	if gap > 2*time.Second {
		t.Fatalf("the stream stopped for %v around the client restart, want within 2s", gap)
	}
	sessions := func() int {
		st, err := tp.status(t, "server")
		if err != nil {
			return -1
		}
		return len(st.Sessions)
	}
	waitFor(t, 10*time.Second, "the old session freed", func() bool { return sessions() == 1 })
}

// TestPathLossMeasured: with 10% random loss each way on each of three
// bridges, the per-path loss that status reports is within 10 +- 3%, in both
// directions, on both ends.
func TestPathLossMeasured(t *testing.T) {
	tp := newTopology(t)
	tp.startAll(t)
	for i, b := range tp.bridges {
		b.SetLoss(t, tp.bridgeUp[i], 10)
		b.SetLoss(t, tp.bridgeDown[i], 10)
	}
	// The loss window is 5 s; stream for longer so it holds only lossy traffic.
	stream := tp.client.StartStream(t, netlab.StreamConfig{Addr: appAddr, Rate: 500, Duration: 8 * time.Second})
	time.Sleep(7 * time.Second)
	for _, role := range []string{"client", "server"} {
		st, err := tp.status(t, role)
		if err != nil || len(st.Sessions) != 1 || len(st.Sessions[0].Paths) != 3 {
			t.Fatalf("%s status: %+v %v", role, st, err)
		}
		for _, p := range st.Sessions[0].Paths {
			t.Logf("%s path %d %s: loss out %.1f%%, in %.1f%%", role, p.ID, p.Remote, 100*p.LossOut, 100*p.LossIn)
			for _, l := range []float64{p.LossOut, p.LossIn} {
				if l < 0.07 || l > 0.13 {
					t.Errorf("%s path %d: measured loss %.1f%%, want 10 +- 3%%", role, p.ID, 100*l)
				}
			}
		}
	}
	r := stream.Wait(t)
	t.Logf("stream through three 10%%-lossy paths: sent %d, lost %d (%.2f%%)", r.Sent, r.LostCount, 100*float64(r.LostCount)/float64(r.Sent))
}

// twoLinks builds a client namespace with two links to a server namespace
// (subnets 10.77.N1.0/24 and 10.77.N2.0/24), the server reached at one
// address on its loopback routed over both, and a client file with one path
// bound to each link; the server's echo target runs. It returns the
// topology and the client's two interfaces.
func twoLinks(t *testing.T, n int) (tp *topology, if1, if2 string) {
	netlab.Require(t)
	lab := netlab.New(t)
	bins := netlab.BuildBinaries(t, "./cmd/mpclient", "./cmd/mpserver", "./cmd/mptunnel")
	cns, sns := lab.Namespace("client"), lab.Namespace("server")
	net := func(k int) string { return fmt.Sprintf("10.77.%d%d", n, k) }
	if1, _ = lab.Link(cns, net(1)+".1/24", sns, net(1)+".2/24")
	if2, _ = lab.Link(cns, net(2)+".1/24", sns, net(2)+".2/24")
	srv := fmt.Sprintf("10.77.4%d.1", n)
	sns.AddAddr(t, "lo", srv+"/32")
	cns.Run(t, "ip", "route", "add", srv+"/32", "via", net(1)+".2", "dev", if1, "metric", "10")
	cns.Run(t, "ip", "route", "add", srv+"/32", "via", net(2)+".2", "dev", if2, "metric", "20")
	tp = &topology{lab: lab, client: cns, server: sns, bins: bins, dir: t.TempDir()}
	tp.keyFile, tp.conf = tp.writeKeyAndConf(t, srv+" 2000 dev "+if1+"\n"+srv+" 2000 dev "+if2+"\n")
	sns.StartEcho(t, "127.0.0.1:7")
	return tp, if1, if2
}

// TestMultiHomedClient: a client with two interfaces to the server, each path
// bound to one with `dev`, uses both; taking one interface down loses
// nothing. The server is reached at one address on its loopback, routed over
// both links, so only the binding decides which link a path takes.
func TestMultiHomedClient(t *testing.T) {
	tp, if1, _ := twoLinks(t, 2)
	cns := tp.client
	tp.startServer(t)
	tp.startClient(t)
	cns.WaitEcho(t, appAddr, 10*time.Second)
	waitFor(t, 5*time.Second, "both paths up", func() bool { return tp.pathState(t, 0) == "up" && tp.pathState(t, 1) == "up" })

	stream := cns.StartStream(t, netlab.StreamConfig{Addr: appAddr, Rate: 500, Duration: 5 * time.Second})
	time.Sleep(2 * time.Second)
	st, err := tp.status(t, "client")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Sessions[0].Paths {
		if p.RxPackets < 100 {
			t.Fatalf("path %d carried %d packets back; both interfaces should carry traffic", p.ID, p.RxPackets)
		}
	}
	// Each path left by its own interface, so with that interface's address.
	sst, err := tp.status(t, "server")
	if err != nil || len(sst.Sessions) != 1 || len(sst.Sessions[0].Paths) != 2 {
		t.Fatalf("server status: %+v %v", sst, err)
	}
	for i, p := range sst.Sessions[0].Paths {
		if want := fmt.Sprintf("10.77.2%d.1:", i+1); !strings.HasPrefix(p.Remote, want) {
			t.Fatalf("server sees path %d from %s, want from %s* (its bound interface)", p.ID, p.Remote, want)
		}
	}
	cns.LinkDown(t, if1)
	r := stream.Wait(t)
	t.Logf("stream with one interface taken down: sent %d, lost %d", r.Sent, r.LostCount)
	if r.LostCount != 0 {
		t.Fatalf("lost %d datagrams when one of two interfaces went down", r.LostCount)
	}
	waitFor(t, 5*time.Second, "path 0 down", func() bool { return tp.pathState(t, 0) == "down" })
}

// TestJammedPath: one of two paths leaves by an interface that takes a
// trickle (tbf at 8 kbit/s with a deep queue), so its socket's small send
// buffer fills at once. A write that finds it full drops and counts the
// packets instead of waiting, so the other path keeps carrying a 500
// packets/s stream without a loss; a client that waited for room would stall
// both paths behind the jammed one.
func TestJammedPath(t *testing.T) {
	tp, if1, _ := twoLinks(t, 3)
	cns := tp.client
	tp.startServer(t)
	cl := cns.Start(t, tp.bins["mpclient"], "--key-file", tp.keyFile, "--control", tp.ctl("client"), "--send-buffer", "32768", tp.conf)
	cl.WaitOutput(t, "session up", 10*time.Second)
	cns.WaitEcho(t, appAddr, 10*time.Second)
	waitFor(t, 5*time.Second, "both paths up", func() bool { return tp.pathState(t, 0) == "up" && tp.pathState(t, 1) == "up" })

	// From now on path 0's packets queue in the qdisc faster than it sends
	// them, holding its socket's send buffer.
	cns.Run(t, "tc", "qdisc", "add", "dev", if1, "root", "tbf", "rate", "8kbit", "burst", "1600", "limit", "50000000")
	r := cns.StartStream(t, netlab.StreamConfig{Addr: appAddr, Rate: 500, Duration: 4 * time.Second}).Wait(t)
	st, err := tp.status(t, "client")
	if err != nil {
		t.Fatal(err)
	}
	full := st.Counters["queue_full"]
	t.Logf("stream beside a jammed path: sent %d, lost %d; %d packets dropped at the jammed path's full send buffer", r.Sent, r.LostCount, full)
	if r.LostCount != 0 {
		t.Fatalf("lost %d of %d datagrams: the jammed path held up the other", r.LostCount, r.Sent)
	}
	if full == 0 {
		t.Fatal("no packet counted as dropped at a full send buffer: the path was not jammed, so this test proves nothing")
	}
	if !strings.Contains(cl.Output(), "path send buffer full") {
		t.Fatalf("the client did not log the full send buffer:\n%s", cl.Output())
	}
}
