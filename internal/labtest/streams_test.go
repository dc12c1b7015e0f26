//go:build linux

package labtest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/netlab"
	"github.com/mptunnel/mptunnel/internal/testlock"
)

// TestSocksOverLossySocatBridges: curl, pointed at mpclient's SOCKS5 front
// with --socks5-hostname, fetches a 16 MiB file from an HTTP server behind
// mpserver over the original README's three socat bridges, each losing 10%
// each way (nftables), and its SHA-256 matches. The kernel's own answers
// come back as the RFC's replies: an address the server has no route to
// is unreachable (0x04), a port whose SYNs are dropped times out (0x06, at
// the server's --dial-timeout), a closed port is refused (0x05).
func TestSocksOverLossySocatBridges(t *testing.T) {
	netlab.Require(t, "curl", "python3")
	tp := newTopology(t)
	const size = 16 << 20
	web := t.TempDir()
	blob := make([]byte, size)
	rand.Read(blob)
	if err := os.WriteFile(filepath.Join(web, "blob"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(blob)
	// Dual-stack, so that localhost answers at whichever address the
	// server's resolver gives first.
	tp.server.Start(t, "python3", "-m", "http.server", "8080", "--bind", "::", "--directory", web)
	tp.server.WaitListening(t, "tcp", 8080, 10*time.Second)
	// SYNs to port 9999 vanish: a dial there can only time out.
	tp.server.Run(t, "nft", "add table inet blackhole; add chain inet blackhole out { type filter hook output priority 0; }; add rule inet blackhole out tcp dport 9999 drop")

	tp.startAll(t, "--dial-timeout", "1s", "--allow", "tcp:localhost:8080", "--allow", "tcp:10.200.0.1:80",
		"--allow", "tcp:127.0.0.1:9999", "--allow", "tcp:127.0.0.1:9998")
	for i, b := range tp.bridges {
		b.SetLoss(t, tp.bridgeUp[i], 10)
		b.SetLoss(t, tp.bridgeDown[i], 10)
	}
	// A second client on the same paths, the SOCKS front its only door.
	tp.client.Start(t, tp.bins["mpclient"], "--key-file", tp.keyFile, "--control", tp.ctl("socks"),
		"--listen", "none", "--socks", "127.0.0.1:1080", tp.conf).WaitOutput(t, "session up", 10*time.Second)

	out := filepath.Join(t.TempDir(), "blob")
	start := time.Now()
	if s, err := tp.client.RunE("curl", "-sS", "--max-time", "55", "--socks5-hostname", "127.0.0.1:1080",
		"-o", out, "http://localhost:8080/blob"); err != nil {
		t.Fatalf("curl: %v\n%s", err, s)
	}
	took := time.Since(start)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(got); !bytes.Equal(sum[:], want[:]) {
		t.Fatalf("fetched %d bytes, SHA-256 %s; want %d bytes, %s", len(got), hex.EncodeToString(sum[:]), size, hex.EncodeToString(want[:]))
	}
	t.Logf("16 MiB through the SOCKS front over three 10%%-lossy socat bridges in %v (%.1f Mbit/s), SHA-256 matches",
		took.Round(time.Millisecond), float64(8*size)/took.Seconds()/1e6)

	// curl names the reply code in its message: "... (4)".
	for _, c := range []struct {
		url, code string
	}{
		{"http://10.200.0.1/", "(4)"},
		{"http://127.0.0.1:9999/", "(6)"},
		{"http://127.0.0.1:9998/", "(5)"},
		{"http://127.0.0.1:9997/", "(2)"},
	} {
		s, err := tp.client.RunE("curl", "-sS", "--max-time", "20", "--socks5-hostname", "127.0.0.1:1080", c.url)
		if err == nil || !strings.Contains(s, "SOCKS5") || !strings.Contains(s, c.code) {
			t.Errorf("curl %s: %v, %q; want a SOCKS5 failure with reply %s", c.url, err, strings.TrimSpace(s), c.code)
		}
	}
}

// TestStreamsOverLossyPaths measures one TCP connection carried as a
// stream (a tcp: forward of mpclient, iperf3 through it to a server behind
// mpserver) over three bridges that delay 20 ms each way, with and without
// 10% loss each way on each (the bridges' relays), against TCP (cubic)
// inside WireGuard over one such lossy bridge without the tunnel: TCP's
// own figure over one lossy path. It checks that each carries data and that
// the lossy paths through the tunnel carry several times what one lossy
// path does without it; docs/BENCHMARKS.md records the figures.
func TestStreamsOverLossyPaths(t *testing.T) {
	testlock.Heavy(t)
	netlab.Require(t, "wireguard-go", "wg", "iperf3")
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("skipping, wireguard-go needs /dev/net/tun: %v", err)
	}
	tp := newTopology(t)
	const run = 8 * time.Second
	for i, b := range tp.bridges {
		to := fmt.Sprintf("10.77.1%d.2:2000", i+1)
		b.StartRelay(t, netlab.RelayConfig{Listen: fmt.Sprintf(":%d", portTunnel), To: to, Delay: vpnDelay})
		b.StartRelay(t, netlab.RelayConfig{Listen: fmt.Sprintf(":%d", portTunnelLossy), To: to, Delay: vpnDelay, Loss: vpnLoss / 100.0})
	}
	tp.bridges[0].StartRelay(t, netlab.RelayConfig{Listen: fmt.Sprintf(":%d", portDirectLossy),
		To: fmt.Sprintf("10.77.11.2:%d", wgPort), Delay: vpnDelay, Loss: vpnLoss / 100.0})

	// The baseline: TCP inside WireGuard over the first lossy bridge.
	wc := tp.client.StartWireGuard(t, netlab.WireGuardConfig{Address: "10.99.0.1/24", MTU: 1420, ListenPort: wgPort})
	ws := tp.server.StartWireGuard(t, netlab.WireGuardConfig{Address: wgServerIP + "/24", MTU: 1420, ListenPort: wgPort})
	ws.SetPeer(t, wc.PublicKey, "10.99.0.1/32", "")
	wc.SetPeer(t, ws.PublicKey, wgServerIP+"/32", fmt.Sprintf("10.77.1.2:%d", portDirectLossy))
	tp.server.StartEcho(t, wgServerIP+":7")
	tp.server.StartEcho(t, "127.0.0.1:7")
	tp.client.WaitEcho(t, wgServerIP+":7", 30*time.Second)

	type row struct {
		name string
		port int // the bridges' relay port; 0 for the baseline
		mbps float64
	}
	rows := []*row{
		{name: "TCP inside WireGuard, 1 bridge, no tunnel, 10% loss"},
		{name: "stream (tcp: forward), 3 paths, 10% loss", port: portTunnelLossy},
		{name: "stream (tcp: forward), 3 paths, no loss", port: portTunnel},
	}
	srv := tp.startServer(t, "--allow", "tcp:127.0.0.1:5201-5210")
	defer srv.Stop()
	for i, r := range rows {
		port := 5201 + i
		server := wgServerIP
		if r.port != 0 {
			server = "127.0.0.1" // in both namespaces: the forward, and behind it the iperf3 server
		}
		tp.server.StartIperfServer(t, server, port)
		if r.port != 0 {
			conf := filepath.Join(tp.dir, fmt.Sprintf("streams%d.conf", r.port))
			var b strings.Builder
			for n := 1; n <= 3; n++ {
				fmt.Fprintf(&b, "10.77.%d.2 %d\n", n, r.port)
			}
			if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			cl := tp.client.Start(t, tp.bins["mpclient"], "--key-file", tp.keyFile, "--control", tp.ctl(fmt.Sprintf("client%d", i)),
				"--listen", "none", "-L", fmt.Sprintf("tcp:127.0.0.1:%d=127.0.0.1:%d", port, port), conf)
			cl.WaitOutput(t, "session up", 10*time.Second)
			defer cl.Stop()
		}
		counters := func() (m [2]map[string]uint64) {
			if r.port == 0 {
				return m
			}
			for j, role := range []string{fmt.Sprintf("client%d", i), "server"} {
				st, err := tp.status(t, role)
				if err != nil {
					t.Fatalf("%s status: %v", role, err)
				}
				m[j] = st.Counters
			}
			return m
		}
		before := counters()
		res, err := tp.client.RunIperf(t, netlab.IperfConfig{Server: server, Port: port, Duration: run, Congestion: "cubic"})
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		r.mbps = res.ReceivedBitsPerSecond / 1e6
		t.Logf("%s: %.2f Mbit/s; sender's Mbit/s each second %s", r.name, r.mbps, mbits(res.Intervals))
		if after := counters(); r.port != 0 {
			// What repair, parity and the ends did during the run.
			var moved []string
			for j, role := range []string{"client", "server"} {
				for _, name := range []string{"repair_asked", "repair_filled", "repair_lost", "repair_resent", "parity_sent", "parity_recovered",
					"fragments_evicted", "too_old", "queue_full", "send_errors", "duplicates"} {
					if d := after[j][name] - before[j][name]; d > 0 {
						moved = append(moved, fmt.Sprintf("%s %s %d", role, name, d))
					}
				}
			}
			t.Logf("%s: %s", r.name, strings.Join(moved, ", "))
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "one TCP connection (iperf3 %v), bridges delaying %v each way:\n", run, vpnDelay)
	for _, r := range rows {
		fmt.Fprintf(&b, "%-55s %8.2f Mbit/s  %6.1fx the first row\n", r.name, r.mbps, r.mbps/rows[0].mbps)
	}
	fmt.Fprintf(&b, "lossy paths against clean: %.0f%%", 100*rows[1].mbps/rows[2].mbps)
	t.Log(b.String())
	for _, r := range rows {
		if r.mbps <= 0 {
			t.Errorf("%s: no TCP payload received", r.name)
		}
	}
	if rows[1].mbps < 3*rows[0].mbps {
		t.Errorf("%s: %.2f Mbit/s, against %.2f over one lossy path without the tunnel; want at least three times as much",
			rows[1].name, rows[1].mbps, rows[0].mbps)
	}
}
