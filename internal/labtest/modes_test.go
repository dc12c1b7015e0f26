//go:build linux

package labtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/netlab"
	"github.com/mptunnel/mptunnel/internal/status"
)

// startClientArgs starts mpclient with extra flags and the three bridges as
// paths.
func (tp *topology) startClientArgs(t *testing.T, extra ...string) *netlab.Proc {
	args := append([]string{"--key-file", tp.keyFile, "--control", tp.ctl("client")}, extra...)
	p := tp.client.Start(t, tp.bins["mpclient"], append(args, tp.conf)...)
	p.WaitOutput(t, "session up", 10*time.Second)
	return p
}

// startMode starts the echo target, the server, three socat bridges and a
// client in mode, and waits for an echo through the tunnel.
func (tp *topology) startMode(t *testing.T, mode string) {
	tp.server.StartEcho(t, "127.0.0.1:7")
	tp.startServer(t)
	for i := range tp.bridges {
		tp.startSocat(t, i)
		tp.bridges[i].WaitListening(t, "udp", 4000, 10*time.Second)
	}
	tp.startClientArgs(t, "--mode", mode)
	tp.client.WaitEcho(t, appAddr, 10*time.Second)
	st, err := tp.status(t, "server")
	if err != nil || len(st.Sessions) != 1 || st.Sessions[0].Mode != mode {
		t.Fatalf("server status: %+v %v; want one session in mode %s", st, err, mode)
	}
}

// TestLossyModes: the real binaries over three socat bridges, each losing
// 10% each way (nftables), in redundant and fec modes: a 500 datagrams/s
// echo stream comes back with at most 2% lost on the round trip.
func TestLossyModes(t *testing.T) {
	for _, mode := range []string{"redundant", "fec"} {
		t.Run(mode, func(t *testing.T) {
			tp := newTopology(t)
			tp.startMode(t, mode)
			for i, b := range tp.bridges {
				b.SetLoss(t, tp.bridgeUp[i], 10)
				b.SetLoss(t, tp.bridgeDown[i], 10)
			}
			r := tp.client.StartStream(t, netlab.StreamConfig{Addr: appAddr, Rate: 500, Size: 1000, Duration: 4 * time.Second}).Wait(t)
			lost := float64(r.LostCount) / float64(r.Sent)
			t.Logf("%s over three 10%%-lossy socat bridges: sent %d, lost %d (%.2f%%), corrupt %d", mode, r.Sent, r.LostCount, 100*lost, r.Corrupt)
			if r.Sent < 1500 || lost > 0.02 || r.Corrupt > 0 {
				t.Fatalf("%s: sent %d, lost %.2f%%, corrupt %d; want at most 2%% lost", mode, r.Sent, 100*lost, r.Corrupt)
			}
			if mode == "fec" {
				st, err := tp.status(t, "server")
				if err != nil || st.Counters["fec_recovered"] == 0 {
					t.Fatalf("server recovered nothing with fec: %v %v", st.Counters, err)
				}
			}
		})
	}
}

// TestFailoverLab: in failover mode, taking the primary bridge's link down
// during a 1,000 datagrams/s echo stream loses at most one probe interval
// (250 datagrams), and the traffic goes back to the primary once it has
// been up again for a while.
func TestFailoverLab(t *testing.T) {
	tp := newTopology(t)
	tp.startMode(t, "failover")
	stream := tp.client.StartStream(t, netlab.StreamConfig{Addr: appAddr, Rate: 1000, Duration: 5 * time.Second})
	time.Sleep(time.Second)
	tp.bridges[0].LinkDown(t, tp.bridgeDown[0])
	r := stream.Wait(t)
	t.Logf("primary down during the stream: sent %d, lost %d", r.Sent, r.LostCount)
	if r.LostCount > 250 {
		t.Fatalf("lost %d datagrams at 1,000/s when the primary died; want at most 250 (one probe interval)", r.LostCount)
	}
	tp.bridges[0].LinkUp(t, tp.bridgeDown[0])
	waitFor(t, 10*time.Second, "primary back up", func() bool { return tp.pathState(t, 0) == "up" })
	// Traffic returns after the primary has been up for 5 s.
	txOn := func(id int) uint64 {
		st, err := tp.status(t, "client")
		if err != nil || len(st.Sessions) != 1 {
			return 0
		}
		for _, p := range st.Sessions[0].Paths {
			if p.ID == id {
				return p.TxPackets
			}
		}
		return 0
	}
	back := tp.client.StartStream(t, netlab.StreamConfig{Addr: appAddr, Rate: 500, Duration: 9 * time.Second})
	time.Sleep(7 * time.Second)
	p0, p1 := txOn(0), txOn(1)
	time.Sleep(time.Second)
	d0, d1 := txOn(0)-p0, txOn(1)-p1
	rb := back.Wait(t)
	t.Logf("after recovery: 1 s of traffic put %d packets on the primary and %d on the backup; stream lost %d of %d", d0, d1, rb.LostCount, rb.Sent)
	if d0 < 400 || d1 > 100 {
		t.Fatalf("after recovery the primary carried %d packets in a second and the backup %d; want the traffic back on the primary", d0, d1)
	}
}

// TestReloadPaths: the real client, configured by a TOML file, gets SIGHUP
// after its file drops one bridge and adds another while a stream flows:
// nothing is lost, since the bridge that stays carries everything, and the
// new bridge carries traffic afterwards.
func TestReloadPaths(t *testing.T) {
	tp := newTopology(t)
	tp.server.StartEcho(t, "127.0.0.1:7")
	tp.startServer(t)
	for i := range tp.bridges {
		tp.startSocat(t, i)
		tp.bridges[i].WaitListening(t, "udp", 4000, 10*time.Second)
	}
	file := filepath.Join(tp.dir, "client.toml")
	write := func(bridges ...int) {
		var b strings.Builder
		fmt.Fprintf(&b, "listen = %q\nkey_file = %q\ncontrol = %q\n", appAddr, tp.keyFile, tp.ctl("client"))
		for _, i := range bridges {
			fmt.Fprintf(&b, "[[path]]\nremote = \"10.77.%d.2:4000\"\n", i)
		}
		if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(1, 2)
	cl := tp.client.Start(t, tp.bins["mptunnel"], "client", "-c", file)
	cl.WaitOutput(t, "session up", 10*time.Second)
	tp.client.WaitEcho(t, appAddr, 10*time.Second)
	stream := tp.client.StartStream(t, netlab.StreamConfig{Addr: appAddr, Rate: 500, Duration: 4 * time.Second})
	time.Sleep(1500 * time.Millisecond)
	write(2, 3)
	cl.Signal(syscall.SIGHUP)
	cl.WaitOutput(t, "configuration reloaded", 5*time.Second)
	r := stream.Wait(t)
	t.Logf("stream across the reload: sent %d, lost %d", r.Sent, r.LostCount)
	if r.LostCount != 0 || r.Sent < 1500 {
		t.Fatalf("sent %d, lost %d across the reload; want nothing lost", r.Sent, r.LostCount)
	}
	st, err := tp.status(t, "client")
	if err != nil || len(st.Sessions) != 1 {
		t.Fatalf("status: %v %+v", err, st)
	}
	var remotes []string
	for _, p := range st.Sessions[0].Paths {
		remotes = append(remotes, p.Remote)
		if p.Remote == "10.77.3.2:4000" && p.TxPackets < 500 {
			t.Fatalf("the added path sent %d packets", p.TxPackets)
		}
	}
	if strings.Join(remotes, " ") != "10.77.2.2:4000 10.77.3.2:4000" {
		t.Fatalf("paths after the reload: %v", remotes)
	}
	// A change that cannot be applied live is refused whole.
	if err := os.WriteFile(file, []byte(fmt.Sprintf("listen = \"127.0.0.1:3999\"\nkey_file = %q\ncontrol = %q\n[[path]]\nremote = \"10.77.1.2:4000\"\n", tp.keyFile, tp.ctl("client"))), 0o644); err != nil {
		t.Fatal(err)
	}
	cl.Signal(syscall.SIGHUP)
	cl.WaitOutput(t, "reload refused", 5*time.Second)
	if st, _ := tp.status(t, "client"); len(st.Sessions) != 1 || len(st.Sessions[0].Paths) != 2 {
		t.Fatalf("a refused reload changed the paths: %+v", st)
	}
}

// TestThreeTargets: one client, one session over three socat bridges each
// losing 10% each way, reaching three echo targets in the server's
// namespace at once: the server's default target by the client's default
// address, one target allowed by address through a forward, and one
// allowed by a CIDR rule and named by host name (resolved by the server).
// Each stream of 300 datagrams/s loses at most 2%, and the server's status
// shows each target's flows and datagrams.
func TestThreeTargets(t *testing.T) {
	tp := newTopology(t)
	tp.server.StartEcho(t, "127.0.0.1:7")
	tp.server.StartEcho(t, "127.0.0.1:8")
	tp.server.StartEcho(t, "127.0.0.1:9")
	tp.startServer(t, "--allow", "127.0.0.1:8", "--allow", "127.0.0.0/8:9")
	for i := range tp.bridges {
		tp.startSocat(t, i)
		tp.bridges[i].WaitListening(t, "udp", 4000, 10*time.Second)
	}
	tp.startClientArgs(t, "-L", "127.0.0.1:3001=127.0.0.1:8", "-L", "127.0.0.1:3002=localhost:9")
	for _, a := range []string{appAddr, "127.0.0.1:3001", "127.0.0.1:3002"} {
		tp.client.WaitEcho(t, a, 10*time.Second)
	}
	for i, b := range tp.bridges {
		b.SetLoss(t, tp.bridgeUp[i], 10)
		b.SetLoss(t, tp.bridgeDown[i], 10)
	}
	var streams []*netlab.Stream
	addrs := []string{appAddr, "127.0.0.1:3001", "127.0.0.1:3002"}
	for _, a := range addrs {
		streams = append(streams, tp.client.StartStream(t, netlab.StreamConfig{Addr: a, Rate: 300, Size: 500, Duration: 4 * time.Second}))
	}
	for i, s := range streams {
		r := s.Wait(t)
		lost := float64(r.LostCount) / float64(r.Sent)
		t.Logf("%s over three 10%%-lossy bridges: sent %d, lost %d (%.2f%%), corrupt %d", addrs[i], r.Sent, r.LostCount, 100*lost, r.Corrupt)
		if r.Sent < 1000 || lost > 0.02 || r.Corrupt > 0 {
			t.Fatalf("%s: sent %d, lost %.2f%%, corrupt %d; want at most 2%% lost", addrs[i], r.Sent, 100*lost, r.Corrupt)
		}
	}
	st, err := tp.status(t, "server")
	if err != nil || len(st.Sessions) != 1 {
		t.Fatalf("server status: %+v %v; want one session", st, err)
	}
	// Each target had the stream's flow and the first echo's, and its
	// datagrams.
	seen := map[string]status.Target{}
	for _, tg := range st.Targets {
		seen[tg.Name] = tg
	}
	for _, name := range []string{"127.0.0.1:7", "127.0.0.1:8", "localhost:9"} {
		if tg := seen[name]; tg.Flows != 2 || tg.TxDatagrams < 1176 || tg.RxDatagrams < 1176 {
			t.Fatalf("server target %s: %+v; want 2 flows and 1,176 datagrams or more each way (targets %+v)", name, tg, st.Targets)
		}
	}
}
