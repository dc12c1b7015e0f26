//go:build linux

package labtest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/netlab"
)

// topology is a client, three bridges running socat, and a server with an
// echo target, every link its own veth pair:
//
//	client 10.77.N.1 -- 10.77.N.2 bridgeN 10.77.1N.1 -- 10.77.1N.2 server
type topology struct {
	lab     *netlab.Lab
	client  *netlab.NS
	bridges []*netlab.NS
	server  *netlab.NS
	// bridgeUp[i] and bridgeDown[i] are bridge i's interfaces toward the
	// server and toward the client.
	bridgeUp, bridgeDown []string
	bins                 map[string]string
	keyFile              string
	conf                 string
	dir                  string // for files and control sockets
}

func newTopology(t *testing.T) *topology {
	netlab.Require(t, "socat", "nft")
	tp := &topology{lab: netlab.New(t)}
	tp.bins = netlab.BuildBinaries(t, "./cmd/mpclient", "./cmd/mpserver", "./cmd/mptunnel")
	tp.client = tp.lab.Namespace("client")
	tp.server = tp.lab.Namespace("server")
	var conf strings.Builder
	conf.WriteString("# three bridges, as in the original README\n")
	for i := 1; i <= 3; i++ {
		b := tp.lab.Namespace(fmt.Sprintf("bridge%d", i))
		_, down := tp.lab.Link(tp.client, fmt.Sprintf("10.77.%d.1/24", i), b, fmt.Sprintf("10.77.%d.2/24", i))
		up, _ := tp.lab.Link(b, fmt.Sprintf("10.77.1%d.1/24", i), tp.server, fmt.Sprintf("10.77.1%d.2/24", i))
		tp.bridges = append(tp.bridges, b)
		tp.bridgeUp = append(tp.bridgeUp, up)
		tp.bridgeDown = append(tp.bridgeDown, down)
		fmt.Fprintf(&conf, "10.77.%d.2 4000\n", i)
	}
	tp.dir = t.TempDir()
	tp.keyFile, tp.conf = tp.writeKeyAndConf(t, conf.String())
	return tp
}

// writeKeyAndConf writes a new key and the client's path file into tp.dir.
func (tp *topology) writeKeyAndConf(t *testing.T, conf string) (keyFile, confFile string) {
	key, err := handshake.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile = filepath.Join(tp.dir, "mptunnel.key")
	confFile = filepath.Join(tp.dir, "mpclient.conf")
	if err := os.WriteFile(keyFile, []byte(key.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return keyFile, confFile
}

// ctl is the control socket path of a role.
func (tp *topology) ctl(role string) string { return filepath.Join(tp.dir, role+".sock") }

// startSocat starts the original README's bridge in bridge i (0-based).
func (tp *topology) startSocat(t *testing.T, i int) *netlab.Proc {
	return tp.bridges[i].Start(t, "socat", "-T", "60", "udp-listen:4000,fork,reuseaddr", fmt.Sprintf("udp4:10.77.1%d.2:2000", i+1))
}

// TestRealBinariesWithSocat runs the original layout end to end: mpserver
// forwarding to an echo target, three socat bridges, mpclient with a HOST
// PORT file, and an application in the client namespace.
func TestRealBinariesWithSocat(t *testing.T) {
	tp := newTopology(t)
	tp.server.StartEcho(t, "127.0.0.1:7")
	srv := tp.server.Start(t, tp.bins["mpserver"], "--key-file", tp.keyFile, "--control", tp.ctl("server"), "2000", "127.0.0.1", "7")
	tp.server.WaitListening(t, "udp", 2000, 10*time.Second)
	for i := range tp.bridges {
		tp.startSocat(t, i)
		tp.bridges[i].WaitListening(t, "udp", 4000, 10*time.Second)
	}
	cl := tp.client.Start(t, tp.bins["mpclient"], "--key-file", tp.keyFile, "--control", tp.ctl("client"), tp.conf)
	cl.WaitOutput(t, "session up", 10*time.Second)
	const app = "127.0.0.1:3000"
	tp.client.WaitEcho(t, app, 10*time.Second)

	// Sizes from empty to fragmented; each must come back whole.
	for _, n := range []int{0, 1, 100, 1335, 1336, 1400, 8000, 30000, 65507} {
		payload := bytes.Repeat([]byte{byte(n % 251)}, n)
		if err := tp.client.Probe(t, app, payload, 5*time.Second); err != nil {
			t.Fatalf("%d-byte datagram: %v", n, err)
		}
	}

	// Two bridges dead: the third carries everything.
	tp.bridges[0].SetLoss(t, tp.bridgeUp[0], 100)
	tp.bridges[1].SetLoss(t, tp.bridgeUp[1], 100)
	for i := 0; i < 20; i++ {
		if err := tp.client.Probe(t, app, []byte(fmt.Sprintf("one path left %d", i)), 5*time.Second); err != nil {
			t.Fatalf("with one bridge left, datagram %d: %v", i, err)
		}
	}
	tp.bridges[0].SetLoss(t, tp.bridgeUp[0], 0)
	tp.bridges[1].SetLoss(t, tp.bridgeUp[1], 0)

	// 10% random loss on every bridge: losses multiply away.
	for i := range tp.bridges {
		tp.bridges[i].SetLoss(t, tp.bridgeUp[i], 10)
	}
	failed := 0
	const rounds = 60
	for i := 0; i < rounds; i++ {
		if err := tp.client.Probe(t, app, []byte(fmt.Sprintf("lossy %d", i)), 2*time.Second); err != nil {
			failed++
		}
	}
	// Each round trip crosses the lossy links twice: about 0.2% loss.
	if failed > 2 {
		t.Fatalf("%d of %d round trips lost through three paths at 10%% loss", failed, rounds)
	}

	// Clean shutdown on SIGTERM: exit status 0 for both ends.
	if err := cl.Stop(); err != nil {
		t.Fatalf("mpclient on SIGTERM: %v\n%s", err, cl.Output())
	}
	srv.WaitOutput(t, "session closed by client", 5*time.Second)
	if err := srv.Stop(); err != nil {
		t.Fatalf("mpserver on SIGTERM: %v\n%s", err, srv.Output())
	}
}

// TestBridgeCommand: mptunnel bridge in place of socat.
func TestBridgeCommand(t *testing.T) {
	tp := newTopology(t)
	tp.server.StartEcho(t, "127.0.0.1:7")
	tp.server.Start(t, tp.bins["mpserver"], "--key-file", tp.keyFile, "--control", tp.ctl("server"), "2000", "127.0.0.1", "7")
	tp.server.WaitListening(t, "udp", 2000, 10*time.Second)
	for i, b := range tp.bridges {
		b.Start(t, tp.bins["mptunnel"], "bridge", "--listen", ":4000", "--to", fmt.Sprintf("10.77.1%d.2:2000", i+1))
		b.WaitListening(t, "udp", 4000, 10*time.Second)
	}
	key, _ := os.ReadFile(tp.keyFile)
	// The key from the environment this time, and a non-default listen port.
	cl := tp.client.StartEnv(t, []string{"MPTUNNEL_KEY=" + strings.TrimSpace(string(key))}, tp.bins["mptunnel"], "client", "--control", tp.ctl("client"), "--listen", "127.0.0.1:3210", tp.conf)
	cl.WaitOutput(t, "session up", 10*time.Second)
	tp.client.WaitEcho(t, "127.0.0.1:3210", 10*time.Second)
	if err := tp.client.Probe(t, "127.0.0.1:3210", bytes.Repeat([]byte("x"), 20000), 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestUnresolvableHost: a path naming a host that does not resolve is one
// clear sentence and exit status 1. The namespace has no network at all, so
// the lookup fails at once without sending anything.
func TestUnresolvableHost(t *testing.T) {
	netlab.Require(t)
	lab := netlab.New(t)
	ns := lab.Namespace("alone")
	bins := netlab.BuildBinaries(t, "./cmd/mpclient")
	dir := t.TempDir()
	conf := filepath.Join(dir, "mpclient.conf")
	os.WriteFile(conf, []byte("no-such-host.invalid 4000\n"), 0o644)
	k, _ := handshake.GenerateKey()
	cmd := ns.Command(t.Context(), bins["mpclient"], "--control", "none", conf)
	cmd.Env = append(os.Environ(), "MPTUNNEL_KEY="+k.String())
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("want exit status 1, got %v: %s", err, out)
	}
	if !strings.Contains(string(out), "cannot resolve path no-such-host.invalid:4000") {
		t.Fatalf("unclear message: %s", out)
	}
}
