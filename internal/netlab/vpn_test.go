//go:build linux

package netlab

import (
	"os"
	"testing"
	"time"
)

// The relays StartRelay starts are this test binary run again.

func TestParseSNMP(t *testing.T) {
	in := "Ip: Forwarding DefaultTTL\nIp: 2 64\n" +
		"Tcp: RtoAlgorithm MaxConn RetransSegs\nTcp: 1 -1 42\n" +
		"Udp: InDatagrams RcvbufErrors SndbufErrors\nUdp: 100 7 3\n"
	m, err := parseSNMP(in)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]uint64{"Ip.DefaultTTL": 64, "Tcp.MaxConn": 0, "Tcp.RetransSegs": 42, "Udp.RcvbufErrors": 7, "Udp.SndbufErrors": 3} {
		if got, ok := m[k]; !ok || got != want {
			t.Errorf("%s = %d (present %v), want %d", k, got, ok, want)
		}
	}
	if _, err := parseSNMP("Udp: InDatagrams RcvbufErrors\nUdp: 1\n"); err == nil {
		t.Error("names and values of different lengths parsed")
	}
	if _, err := parseSNMP("Udp: InDatagrams\nTcp: 1\n"); err == nil {
		t.Error("names and values of different protocols parsed")
	}
}

func TestParseSSDrops(t *testing.T) {
	in := `UNCONN 0      0            0.0.0.0:51820      0.0.0.0:*    users:(("wireguard-go",pid=13619,fd=18))
	 skmem:(r0,rb212992,t0,tb212992,f0,w0,o0,bl0,d115)
UNCONN 0      0               [::]:51820         [::]:*    users:(("wireguard-go",pid=13619,fd=17))
	 skmem:(r0,rb212992,t0,tb212992,f0,w0,o0,bl0,d0)
ESTAB  0      0          127.0.0.1:40000  127.0.0.1:51820
	 skmem:(r0,rb212992,t0,tb212992,f0,w0,o0,bl0,d3)
`
	m, err := parseSSDrops(in)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{
		"0.0.0.0:51820 0.0.0.0:* wireguard-go": 115,
		"127.0.0.1:40000 127.0.0.1:51820":      3,
	}
	if len(m) != len(want) {
		t.Fatalf("got %v, want %v", m, want)
	}
	for k, v := range want {
		if m[k] != v {
			t.Fatalf("got %v, want %v", m, want)
		}
	}
	if _, err := parseSSDrops("\t skmem:(r0,d1)\n"); err == nil {
		t.Error("a skmem line without its socket parsed")
	}
}

// TestRelayDelay: a relay on a middle host adds its delay each way to a
// round trip through it and counts what it forwarded; one losing
// everything forwards nothing.
func TestRelayDelay(t *testing.T) {
	Require(t, "ss")
	lab := New(t)
	a, mid, b := lab.Namespace("a"), lab.Namespace("mid"), lab.Namespace("b")
	lab.Link(a, "10.77.51.1/24", mid, "10.77.51.2/24")
	lab.Link(mid, "10.77.52.1/24", b, "10.77.52.2/24")
	b.StartEcho(t, "10.77.52.2:7")
	r := mid.StartRelay(t, RelayConfig{Listen: ":4000", To: "10.77.52.2:7", Delay: 50 * time.Millisecond})
	a.WaitEcho(t, "10.77.51.2:4000", 10*time.Second)
	start := time.Now()
	if err := a.Probe(t, "10.77.51.2:4000", []byte("delayed"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt < 100*time.Millisecond {
		t.Fatalf("round trip through a relay delaying 50 ms each way took %v", rtt)
	}
	st, err := r.StopStats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Up.Forwarded < 2 || st.Down.Forwarded < 2 || st.Up.DroppedQueue+st.Down.DroppedQueue != 0 {
		t.Fatalf("relay counters %+v; want at least the two probes forwarded each way, none dropped", st)
	}

	lossy := mid.StartRelay(t, RelayConfig{Listen: ":4001", To: "10.77.52.2:7", Loss: 1})
	if err := a.Probe(t, "10.77.51.2:4001", []byte("lost"), 300*time.Millisecond); err == nil {
		t.Fatal("an echo came back through a relay losing everything")
	}
	if st, err := lossy.StopStats(); err != nil || st.Up.DroppedLoss == 0 || st.Up.Forwarded != 0 {
		t.Fatalf("relay losing everything: counters %+v, %v; want drops and nothing forwarded", st, err)
	}
}

// TestWireGuard: two userspace WireGuard interfaces carry an echo between
// their namespaces, after a handshake, and count the traffic.
func TestWireGuard(t *testing.T) {
	Require(t, "wireguard-go", "wg", "nft")
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("netlab: skipping, wireguard-go needs /dev/net/tun: %v", err)
	}
	lab := New(t)
	a, b := lab.Namespace("a"), lab.Namespace("b")
	aIf, _ := lab.Link(a, "10.77.53.1/24", b, "10.77.53.2/24")
	wa := a.StartWireGuard(t, WireGuardConfig{Address: "10.99.53.1/24", MTU: 1420, ListenPort: 51820})
	wb := b.StartWireGuard(t, WireGuardConfig{Address: "10.99.53.2/24", ListenPort: 51820})
	wa.SetPeer(t, wb.PublicKey, "10.99.53.2/32", "10.77.53.2:51820")
	wb.SetPeer(t, wa.PublicKey, "10.99.53.1/32", "")
	b.StartEcho(t, "10.99.53.2:7")
	a.WaitEcho(t, "10.99.53.2:7", 10*time.Second)
	if wa.LatestHandshake(t, wb.PublicKey).IsZero() || wb.LatestHandshake(t, wa.PublicKey).IsZero() {
		t.Fatal("an echo came back through WireGuard without a handshake")
	}
	if rx, tx := wa.Transfer(t, wb.PublicKey); rx == 0 || tx == 0 {
		t.Fatalf("WireGuard counted %d bytes received and %d sent", rx, tx)
	}
	if c := a.LinkCounters(t, wa.Iface); c.TxPackets == 0 || c.RxPackets == 0 {
		t.Fatalf("WireGuard interface counters %+v", c)
	}
	// Nothing passes once the link drops everything, and the loss rule
	// counts what it dropped.
	a.SetLoss(t, aIf, 100)
	if err := a.Probe(t, "10.99.53.2:7", []byte("lost"), 300*time.Millisecond); err == nil {
		t.Fatal("an echo came back through a link dropping everything")
	}
	if n := a.LossDrops(t, aIf); n == 0 {
		t.Fatal("the loss rule counted no drop")
	}
	if n := a.LossDrops(t, "no-such-if"); n != 0 {
		t.Fatalf("an interface without a loss rule counted %d drops", n)
	}
}
