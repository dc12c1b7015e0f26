//go:build linux

package labtest

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/netlab"
	"github.com/mptunnel/mptunnel/internal/status"
	"github.com/mptunnel/mptunnel/internal/testlock"
)

// The relays on the bridges are this test binary run again: TestMain
// (netlab.Main, through MaybeRunEcho) runs that role.

const (
	// vpnDelay is each path's one-way delay, from a relay on each bridge.
	vpnDelay = 20 * time.Millisecond
	// vpnLoss is the random loss, in percent, each way on every bridge in
	// the lossy configurations.
	vpnLoss = 10
	// vpnRun is the length of each iperf3 run.
	vpnRun = 5 * time.Second
	// wgPort is WireGuard's port on both hosts.
	wgPort = 51820
	// wgServerIP is the server's address inside WireGuard.
	wgServerIP = "10.99.0.2"
)

// How a configuration loses packets on the bridges.
const (
	lossNone  = iota
	lossRule  // nftables on the bridges' interfaces (NS.SetLoss)
	lossRelay // the bridges' relays, datagram by datagram
)

// The bridges' relay ports: to mpserver or straight to the server's
// WireGuard, each without loss or losing vpnLoss percent each way.
const (
	portTunnel      = 4000
	portDirect      = 4001
	portTunnelLossy = 4002
	portDirectLossy = 4003
)

// vpnRow is one measured configuration.
type vpnRow struct {
	name string
	// paths is the number of mptunnel paths, 0 for WireGuard over the
	// first bridge without the tunnel.
	paths int
	loss  int      // lossNone, lossRule or lossRelay
	flags []string // for both tunnel ends
	res   netlab.IperfResult

	// Packets between the ends during the run, both ways, and how many of
	// them did not arrive: WireGuard's packets without the tunnel, the
	// tunnel's packets on its paths (every copy) with it. ruleDrops counts
	// the drops of the bridges' nftables loss rules.
	linkSent, linkLost, ruleDrops uint64
	// Through the tunnel: WireGuard datagrams taken in at one end and not
	// handed out at the other, each way; how many datagrams came up in
	// fragments; the per-path loss out/in the client measured.
	upIn, upLost, downIn, downLost uint64
	fragmented                     uint64
	pathLoss                       string
	// Repair, each way (up: the server asked, the client resent): packets
	// asked for, of them filled, given up, and resent; parity packets
	// sent and packets rebuilt from them.
	repair [2][4]uint64
	parity [2][2]uint64
	// ends names what either tunnel end dropped or gave up during the run
	// (client then server): its drop counters that moved.
	ends string
	// drops names what the hosts dropped during the run besides the loss:
	// full socket buffers, failed sends, WireGuard interface drops.
	drops string
}

// TestTCPInsideWireGuard measures TCP through a real VPN: userspace
// WireGuard (wireguard-go, MTU 1420) between the client and server hosts,
// and an iperf3 TCP run (cubic) through it, either over one bridge directly
// or over mptunnel (redundant mode, repair on unless a row turns it off)
// with one or three bridges as paths. Each bridge delays 20 ms each way (an
// internal/impair relay) and, in the lossy configurations, drops 10% each
// way, in one pair of runs by nftables on its interfaces and in the others
// by its relay. The two differ under bulk traffic: the relay sends runs of
// equal-size datagrams as one UDP GSO send, which nftables drops whole, so
// its losses come in bursts of up to 64 datagrams; the relay's own loss
// falls on each datagram alone. Three more rows repeat the relays' loss
// without parity, with a reorder buffer and without repair. It logs a table of the receiver's
// Mbit/s, TCP retransmits, the loss on the links, mptunnel's own loss and
// what repair did, and checks that every configuration carries TCP, that
// three lossy paths through mptunnel carry several times what one lossy
// bridge carries without it, and that with repair mptunnel loses next to
// nothing of what WireGuard gives it, where without repair it does lose.
// It asserts no throughput goal: docs/BENCHMARKS.md records the figures.
func TestTCPInsideWireGuard(t *testing.T) {
	testlock.Heavy(t)
	netlab.Require(t, "socat", "nft", "ss", "wireguard-go", "wg", "iperf3")
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("skipping, wireguard-go needs /dev/net/tun: %v", err)
	}
	started := time.Now()
	tp := newTopology(t)

	var relays []*netlab.Relay
	relay := func(b *netlab.NS, port int, to string, loss float64) {
		relays = append(relays, b.StartRelay(t, netlab.RelayConfig{Listen: fmt.Sprintf(":%d", port), To: to, Delay: vpnDelay, Loss: loss}))
	}
	for i, b := range tp.bridges {
		relay(b, portTunnel, fmt.Sprintf("10.77.1%d.2:2000", i+1), 0)
		relay(b, portTunnelLossy, fmt.Sprintf("10.77.1%d.2:2000", i+1), vpnLoss/100.0)
	}
	relay(tp.bridges[0], portDirect, fmt.Sprintf("10.77.11.2:%d", wgPort), 0)
	relay(tp.bridges[0], portDirectLossy, fmt.Sprintf("10.77.11.2:%d", wgPort), vpnLoss/100.0)

	wc := tp.client.StartWireGuard(t, netlab.WireGuardConfig{Address: "10.99.0.1/24", MTU: 1420, ListenPort: wgPort})
	ws := tp.server.StartWireGuard(t, netlab.WireGuardConfig{Address: wgServerIP + "/24", MTU: 1420, ListenPort: wgPort})
	ws.SetPeer(t, wc.PublicKey, "10.99.0.1/32", "")
	tp.server.StartEcho(t, wgServerIP+":7")
	// One iperf3 server a row: a server whose last test ended over a lossy
	// path may not have noticed yet, and refuses the next ("busy").
	iperfPort := func(i int) int { return 5201 + i }

	var srv *netlab.Proc
	var srvFlags []string
	startServer := func(flags []string) {
		if srv != nil {
			if slices.Equal(flags, srvFlags) {
				return
			}
			if err := srv.Stop(); err != nil {
				t.Errorf("mpserver: %v", err)
			}
		}
		args := append([]string{"--key-file", tp.keyFile, "--control", tp.ctl("server")}, flags...)
		srv = tp.server.Start(t, tp.bins["mpserver"], append(args, "2000", "127.0.0.1", fmt.Sprint(wgPort))...)
		srvFlags = flags
		tp.server.WaitListening(t, "udp", 2000, 10*time.Second)
	}
	conf := func(paths, port int) string {
		var b strings.Builder
		for i := 1; i <= paths; i++ {
			fmt.Fprintf(&b, "10.77.%d.2 %d\n", i, port)
		}
		f := filepath.Join(tp.dir, fmt.Sprintf("paths%d-%d.conf", paths, port))
		if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	setRule := func(percent int) {
		for i, b := range tp.bridges {
			b.SetLoss(t, tp.bridgeUp[i], percent)
			b.SetLoss(t, tp.bridgeDown[i], percent)
		}
	}

	rows := []*vpnRow{
		{name: "WireGuard, 1 bridge, no tunnel, clean"},
		{name: "WireGuard over mptunnel, 1 path, clean", paths: 1},
		{name: "WireGuard over mptunnel, 3 paths, clean", paths: 3},
		{name: "WireGuard, 1 bridge, no tunnel, 10% loss (nft)", loss: lossRule},
		{name: "WireGuard over mptunnel, 3 paths, 10% loss (nft)", paths: 3, loss: lossRule},
		{name: "WireGuard, 1 bridge, no tunnel, 10% loss (relay)", loss: lossRelay},
		{name: "WireGuard over mptunnel, 3 paths, 10% loss (relay)", paths: 3, loss: lossRelay},
		{name: "same, --no-parity", paths: 3, loss: lossRelay, flags: []string{"--no-parity"}},
		{name: "same, --reorder 100ms", paths: 3, loss: lossRelay, flags: []string{"--reorder", "100ms"}},
		{name: "same, --no-repair", paths: 3, loss: lossRelay, flags: []string{"--no-repair"}},
	}
	rule := 0
	for i := range rows {
		tp.server.StartIperfServer(t, wgServerIP, iperfPort(i))
	}
	for i, row := range rows {
		want := 0
		if row.loss == lossRule {
			want = vpnLoss
		}
		if want != rule {
			setRule(want)
			rule = want
		}
		tunnelPort, endpoint := portTunnel, fmt.Sprintf("10.77.1.2:%d", portDirect)
		if row.loss == lossRelay {
			tunnelPort, endpoint = portTunnelLossy, fmt.Sprintf("10.77.1.2:%d", portDirectLossy)
		}
		var cl *netlab.Proc
		if row.paths > 0 {
			startServer(row.flags)
			args := append([]string{"--key-file", tp.keyFile, "--control", tp.ctl("client")}, row.flags...)
			cl = tp.client.Start(t, tp.bins["mpclient"], append(args, conf(row.paths, tunnelPort))...)
			cl.WaitOutput(t, "session up", 10*time.Second)
			// A lossy path may be counted degraded from its first few
			// probes; it carries traffic all the same.
			waitFor(t, 15*time.Second, fmt.Sprintf("%d paths up", row.paths), func() bool {
				for id := range row.paths {
					if s := tp.pathState(t, id); s != "up" && s != "degraded" {
						return false
					}
				}
				return true
			})
			endpoint = appAddr
		}
		wc.SetPeer(t, ws.PublicKey, wgServerIP+"/32", endpoint)
		// The first datagram through starts WireGuard's handshake; iperf3
		// starts once an echo has come back through the VPN.
		tp.client.WaitEcho(t, wgServerIP+":7", 30*time.Second)
		if wc.LatestHandshake(t, ws.PublicKey).IsZero() {
			t.Fatalf("%s: an echo came back through WireGuard without a handshake", row.name)
		}

		before := tp.vpnSnapshot(t, row.paths > 0, wc, ws)
		// cubic, set on iperf3's data socket: the kernel's default may be
		// bbr, which ignores random loss, and a namespace may not make an
		// algorithm outside the allowed list its default.
		res, err := tp.client.RunIperf(t, netlab.IperfConfig{Server: wgServerIP, Port: iperfPort(i), Duration: vpnRun, Congestion: "cubic"})
		if err != nil {
			t.Errorf("%s: %v", row.name, err)
		}
		row.res = res
		time.Sleep(200 * time.Millisecond) // the last datagrams arrive
		row.figures(before, tp.vpnSnapshot(t, row.paths > 0, wc, ws))
		if cl != nil {
			if err := cl.Stop(); err != nil {
				t.Errorf("mpclient: %v", err)
			}
		}
		t.Logf("%s: %.2f Mbit/s, %d retransmits, %s; sender's Mbit/s each second %s", row.name,
			row.res.ReceivedBitsPerSecond/1e6, row.res.Retransmits, row.res.Congestion, mbits(row.res.Intervals))
	}

	for _, r := range relays {
		st, err := r.StopStats()
		if err != nil {
			t.Errorf("relay: %v", err)
			continue
		}
		if st.Up.DroppedQueue+st.Down.DroppedQueue+st.Up.SendErrors+st.Down.SendErrors > 0 {
			t.Logf("relay %s -> %s dropped %d+%d datagrams at a full delay line and failed %d+%d writes (up+down)",
				r.Config().Listen, r.Config().To, st.Up.DroppedQueue, st.Down.DroppedQueue, st.Up.SendErrors, st.Down.SendErrors)
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "TCP (iperf3, cubic, %v) inside WireGuard (MTU 1420), bridges delaying %v each way:\n", vpnRun, vpnDelay)
	fmt.Fprintf(&b, "%-52s %8s %7s  %-30s %s\n", "configuration", "Mbit/s", "retrans", "link: packets lost (nft drops)",
		"mptunnel: WireGuard datagrams lost up / down; up in fragments; path loss out/in")
	for _, r := range rows {
		fmt.Fprintf(&b, "%-52s %8.2f %7d  %-30s %s\n", r.name, r.res.ReceivedBitsPerSecond/1e6, r.res.Retransmits, r.linkSummary(), r.tunnelSummary())
	}
	b.WriteString("dropped by the hosts during each run, besides the loss:\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "%-52s %s\n", r.name, r.drops)
	}
	b.WriteString("dropped or given up by the tunnel's ends during each run:\n")
	for _, r := range rows {
		if r.paths > 0 {
			fmt.Fprintf(&b, "%-52s %s\n", r.name, cmp.Or(r.ends, "none"))
		}
	}
	fmt.Fprintf(&b, "(whole test %v)", time.Since(started).Round(time.Second))
	t.Log(b.String())

	// Every configuration carries TCP; one lossy bridge without the tunnel
	// only a trickle. 1 Mbit/s is far below what any other row carries.
	for _, r := range rows {
		if r.res.ReceivedBytes == 0 {
			t.Errorf("%s: no TCP payload received", r.name)
			continue
		}
		if r.res.Congestion != "cubic" {
			t.Errorf("%s: the sender used %q, want cubic", r.name, r.res.Congestion)
		}
		if (r.paths > 0 || r.loss == lossNone) && r.res.ReceivedBitsPerSecond < 1e6 {
			t.Errorf("%s: %.2f Mbit/s, want more than 1 Mbit/s", r.name, r.res.ReceivedBitsPerSecond/1e6)
		}
	}
	// Three lossy paths through mptunnel against one lossy bridge without
	// it, for either kind of loss (over eleven runs here, 39-82 against
	// 0.45-1.4 Mbit/s with nftables' loss, 5-33 against 0.1-0.7 with the
	// relays'): at least three times.
	for _, pair := range [][2]*vpnRow{{rows[3], rows[4]}, {rows[5], rows[6]}} {
		direct, tunnel := pair[0].res.ReceivedBitsPerSecond, pair[1].res.ReceivedBitsPerSecond
		if tunnel < 3*direct {
			t.Errorf("%s: %.2f Mbit/s, against %.2f over one lossy bridge without the tunnel; want at least three times as much",
				pair[1].name, tunnel/1e6, direct/1e6)
		}
	}
	// Repair: over three lossy paths, copies alone lose about 0.1% of the
	// packets (0.2% of WireGuard's full-size datagrams, which go in two
	// fragments); with repair and parity (the default) runs here lost at
	// most 1 of 46,000 to 85,000 datagrams each way. At most 0.05% (a
	// datagram whose every fragment and every repair was lost, or one lost
	// last of all, with nothing after it to show the gap), and some loss
	// without repair. Repair alone (--no-parity) is logged, not checked:
	// under the race detector on this machine it lost 0.3-0.7% in 2 runs
	// of about 10, its incomplete datagrams evicted while they waited.
	for _, r := range rows {
		if r.paths == 0 || r.loss == lossNone {
			continue
		}
		lost, in := r.upLost+r.downLost, r.upIn+r.downIn
		switch {
		case slices.Contains(r.flags, "--no-repair"):
			if lost == 0 {
				t.Errorf("%s: nothing lost of %d datagrams without repair; the paths lose too little for this comparison", r.name, in)
			}
		case len(r.flags) == 0 && 10000*lost > 5*in:
			t.Errorf("%s: %d of %d datagrams lost inside mptunnel (%.3f%%), want at most 0.05%% with repair and parity", r.name, lost, in, pct(lost, in))
		}
	}
}

// vpnSnapshot is what the figures of a run are taken from, before and after
// it: both ends' status when the tunnel runs, the bridges' loss-rule drops,
// the WireGuard interfaces' counters and the hosts' drops.
type vpnSnapshot struct {
	status    [2]status.Status // client, server
	ruleDrops uint64
	wg        [2]netlab.LinkCounters // client, server
	drops     map[string]uint64
}

// vpnSnapshot takes a snapshot; wc and ws are the client's and server's
// WireGuard.
func (tp *topology) vpnSnapshot(t *testing.T, tunnel bool, wc, ws *netlab.WireGuard) vpnSnapshot {
	var s vpnSnapshot
	if tunnel {
		for i, role := range []string{"client", "server"} {
			st, err := tp.status(t, role)
			if err != nil {
				t.Fatalf("%s status: %v", role, err)
			}
			s.status[i] = st
		}
	}
	for i, b := range tp.bridges {
		s.ruleDrops += b.LossDrops(t, tp.bridgeUp[i]) + b.LossDrops(t, tp.bridgeDown[i])
	}
	s.wg = [2]netlab.LinkCounters{tp.client.LinkCounters(t, wc.Iface), tp.server.LinkCounters(t, ws.Iface)}
	s.drops = tp.hostDrops(t, s.wg)
	return s
}

// hostDrops returns what the hosts have dropped so far besides the loss, by
// host and place: datagrams each UDP socket dropped at a full receive
// buffer, sends that failed (on a bridge, beyond those its loss rules
// dropped, which the kernel counts as failed sends too), and the WireGuard
// interfaces' drops (client, server).
func (tp *topology) hostDrops(t *testing.T, wg [2]netlab.LinkCounters) map[string]uint64 {
	m := map[string]uint64{}
	for _, ns := range append([]*netlab.NS{tp.client, tp.server}, tp.bridges...) {
		for sock, d := range ns.UDPSocketDrops(t) {
			m[ns.Role+" socket "+sock] = d
		}
		failed := ns.SNMP(t)["Udp.SndbufErrors"]
		if i := slices.Index(tp.bridges, ns); i >= 0 {
			rule := ns.LossDrops(t, tp.bridgeUp[i]) + ns.LossDrops(t, tp.bridgeDown[i])
			failed -= min(rule, failed)
		}
		m[ns.Role+" failed sends"] = failed
	}
	for i, role := range []string{"client", "server"} {
		m[role+" WireGuard interface rx dropped"] = wg[i].RxDropped
		m[role+" WireGuard interface tx dropped"] = wg[i].TxDropped
	}
	return m
}

// figures fills the row's figures from the snapshots before and after its
// run.
func (r *vpnRow) figures(before, after vpnSnapshot) {
	r.ruleDrops = after.ruleDrops - before.ruleDrops
	r.drops = dropsSince(before.drops, after.drops)
	lost := func(sent, got uint64) uint64 { return sent - min(got, sent) }
	if r.paths == 0 {
		// WireGuard's packets, each way: sent by one end, received by the
		// other.
		c, s := after.wg[0], after.wg[1]
		cb, sb := before.wg[0], before.wg[1]
		up, down := c.TxPackets-cb.TxPackets, s.TxPackets-sb.TxPackets
		r.linkSent = up + down
		r.linkLost = lost(up, s.RxPackets-sb.RxPackets) + lost(down, c.RxPackets-cb.RxPackets)
		return
	}
	d := func(i int, name string) uint64 {
		return after.status[i].Counters[name] - before.status[i].Counters[name]
	}
	// Up: taken from WireGuard by the client, handed to WireGuard by the
	// server; down the other way.
	r.upIn, r.downIn = d(0, "forwarded"), d(1, "forwarded")
	r.upLost, r.downLost = lost(r.upIn, d(1, "delivered")), lost(r.downIn, d(0, "delivered"))
	r.fragmented = d(1, "reassembled")
	for i, asker := range []int{1, 0} {
		r.repair[i] = [4]uint64{d(asker, "repair_asked"), d(asker, "repair_filled"), d(asker, "repair_lost"), d(1-asker, "repair_resent")}
		r.parity[i] = [2]uint64{d(1-asker, "parity_sent"), d(asker, "parity_recovered")}
	}
	var ends []string
	for i, role := range []string{"client", "server"} {
		for _, name := range []string{"fragments_evicted", "too_old", "queue_full", "send_errors", "malformed", "auth_failed", "oversize", "target_refused", "repair_missing"} {
			if n := d(i, name); n > 0 {
				ends = append(ends, fmt.Sprintf("%s %s %d", role, name, n))
			}
		}
	}
	r.ends = strings.Join(ends, ", ")
	// The tunnel's packets on each path, each way, from both ends' per-path
	// counters in the run's session (the server may still hold the one of
	// an earlier run, when the client's goodbye was lost).
	var session string
	if ss := after.status[0].Sessions; len(ss) == 1 {
		session = ss[0].ID
	}
	paths := func(st status.Status) map[int]status.Path {
		m := map[int]status.Path{}
		for _, s := range st.Sessions {
			if s.ID == session {
				for _, p := range s.Paths {
					m[p.ID] = p
				}
			}
		}
		return m
	}
	cb, ca, sb, sa := paths(before.status[0]), paths(after.status[0]), paths(before.status[1]), paths(after.status[1])
	var p []string
	for n := range r.paths {
		p = append(p, fmt.Sprintf("%.1f/%.1f%%", 100*ca[n].LossOut, 100*ca[n].LossIn))
		if _, ok := sa[n]; !ok {
			continue // not found at the server: no figures rather than wrong ones
		}
		up, down := ca[n].TxPackets-cb[n].TxPackets, sa[n].TxPackets-sb[n].TxPackets
		r.linkSent += up + down
		r.linkLost += lost(up, sa[n].RxPackets-sb[n].RxPackets) + lost(down, ca[n].RxPackets-cb[n].RxPackets)
	}
	r.pathLoss = strings.Join(p, " ")
}

// dropsSince renders the counters of hostDrops that grew.
func dropsSince(before, after map[string]uint64) string {
	var s []string
	for k, v := range after {
		if v > before[k] {
			s = append(s, fmt.Sprintf("%s %d", k, v-before[k]))
		}
	}
	if len(s) == 0 {
		return "none"
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}

// pct returns lost as a percentage of n.
func pct(lost, n uint64) float64 {
	if n == 0 {
		return 0
	}
	return 100 * float64(lost) / float64(n)
}

// linkSummary renders the row's link figures for the table.
func (r *vpnRow) linkSummary() string {
	s := fmt.Sprintf("%.1f%% of %d", pct(r.linkLost, r.linkSent), r.linkSent)
	if r.loss == lossRule {
		s += fmt.Sprintf(" (%d)", r.ruleDrops)
	}
	return s
}

// tunnelSummary renders the row's tunnel figures for the table.
func (r *vpnRow) tunnelSummary() string {
	if r.paths == 0 {
		return "-"
	}
	return fmt.Sprintf("%d of %d (%.2f%%) / %d of %d (%.2f%%); %d; %s; repair asked/filled/lost/resent %v / %v; parity sent/rebuilt %v / %v",
		r.upLost, r.upIn, pct(r.upLost, r.upIn), r.downLost, r.downIn, pct(r.downLost, r.downIn), r.fragmented, r.pathLoss,
		r.repair[0], r.repair[1], r.parity[0], r.parity[1])
}

// mbits renders per-interval bits per second as Mbit/s.
func mbits(bps []float64) string {
	s := make([]string, len(bps))
	for i, v := range bps {
		s[i] = fmt.Sprintf("%.1f", v/1e6)
	}
	return strings.Join(s, " ")
}
