//go:build linux

package netlab

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	// wgSocketDir is where wireguard-go serves its configuration socket,
	// one per interface, NAME.sock. The directory is shared by every
	// namespace, so interface names must be unique on the machine.
	wgSocketDir = "/var/run/wireguard"
	// wgStartWait bounds the wait for wireguard-go's configuration socket.
	wgStartWait = 10 * time.Second
)

var (
	// wgCount numbers the WireGuard interfaces of this process.
	wgCount atomic.Int64
	// wgNameRE matches the interface names StartWireGuard gives.
	wgNameRE = regexp.MustCompile(`^mpt[0-9a-f]{5}wg[0-9]+$`)
)

// WireGuardConfig describes a userspace WireGuard interface.
type WireGuardConfig struct {
	// Address is the interface's address in CIDR form, such as
	// "10.99.0.1/24".
	Address string
	// MTU is the interface's MTU; 0 leaves wireguard-go's default (1420).
	MTU int
	// ListenPort is the UDP port WireGuard listens on; 0 lets it pick one.
	ListenPort int
}

// WireGuard is a userspace WireGuard interface in a namespace: wireguard-go
// in the foreground, configured with wg. Its peers are set with SetPeer.
type WireGuard struct {
	// Iface is the interface name, unique on the machine (wireguard-go's
	// configuration socket is named after it).
	Iface string
	// PublicKey is the interface's public key, base64 as wg prints it.
	PublicKey string

	ns   *NS
	proc *Proc
}

// StartWireGuard starts wireguard-go in the namespace with a new key pair
// (from `wg genkey` and `wg pubkey`), gives the interface its address, MTU
// and listen port and brings it up. It needs the programs wireguard-go and
// wg and /dev/net/tun; call Require(t, "wireguard-go", "wg") first. The lab
// stops wireguard-go at cleanup, which removes the interface.
func (n *NS) StartWireGuard(t testing.TB, cfg WireGuardConfig) *WireGuard {
	t.Helper()
	sweepWGSockets()
	iface := n.lab.prefix + "wg" + strconv.FormatInt(wgCount.Add(1), 10)
	if len(iface) > 15 {
		t.Fatalf("netlab: WireGuard interface name %q is too long", iface)
	}
	priv, pub := wgKeyPair(t)
	keyFile := filepath.Join(t.TempDir(), iface+".key")
	if err := os.WriteFile(keyFile, []byte(priv+"\n"), 0o600); err != nil {
		t.Fatalf("netlab: %v", err)
	}
	// -f keeps wireguard-go in the foreground, so the lab owns it;
	// WG_PROCESS_FOREGROUND=1 silences its warning that the kernel has its
	// own WireGuard.
	proc := n.StartEnv(t, []string{"WG_PROCESS_FOREGROUND=1", "LOG_LEVEL=error"}, "wireguard-go", "-f", iface)
	sock := filepath.Join(wgSocketDir, iface+".sock")
	t.Cleanup(func() {
		proc.terminate(syscall.SIGTERM, stopGrace)
		_ = os.Remove(sock) // left behind if wireguard-go was killed
	})
	deadline := time.Now().Add(wgStartWait)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if proc.Exited() || time.Now().After(deadline) {
			t.Fatalf("netlab: wireguard-go %s in %s did not start (%s); output:\n%s", iface, n.Name, proc.state(), tail(proc.Output(), 8<<10))
		}
		time.Sleep(20 * time.Millisecond)
	}
	args := []string{"set", iface, "private-key", keyFile}
	if cfg.ListenPort != 0 {
		args = append(args, "listen-port", strconv.Itoa(cfg.ListenPort))
	}
	n.Run(t, "wg", args...)
	if cfg.Address != "" {
		n.AddAddr(t, iface, cfg.Address)
	}
	link := []string{"-n", n.Name, "link", "set", iface}
	if cfg.MTU != 0 {
		link = append(link, "mtu", strconv.Itoa(cfg.MTU))
	}
	n.lab.ip(append(link, "up")...)
	return &WireGuard{Iface: iface, PublicKey: pub, ns: n, proc: proc}
}

// SetPeer adds the peer with public key pub, or changes it: the addresses
// it may use inside the tunnel (allowedIPs, such as "10.99.0.2/32") and,
// unless endpoint is empty, the UDP address its packets go to. A peer
// without an endpoint is answered where it last sent from.
func (w *WireGuard) SetPeer(t testing.TB, pub, allowedIPs, endpoint string) {
	t.Helper()
	args := []string{"set", w.Iface, "peer", pub, "allowed-ips", allowedIPs}
	if endpoint != "" {
		args = append(args, "endpoint", endpoint)
	}
	w.ns.Run(t, "wg", args...)
}

// LatestHandshake returns the time of the latest completed handshake with
// the peer pub, or the zero time if there was none.
func (w *WireGuard) LatestHandshake(t testing.TB, pub string) time.Time {
	t.Helper()
	out := w.ns.Run(t, "wg", "show", w.Iface, "latest-handshakes")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == pub {
			if s, err := strconv.ParseInt(f[1], 10, 64); err == nil && s > 0 {
				return time.Unix(s, 0)
			}
		}
	}
	return time.Time{}
}

// Transfer returns the bytes received from and sent to the peer pub, as wg
// counts them (WireGuard packets, headers included).
func (w *WireGuard) Transfer(t testing.TB, pub string) (rx, tx uint64) {
	t.Helper()
	out := w.ns.Run(t, "wg", "show", w.Iface, "transfer")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == pub {
			rx, _ = strconv.ParseUint(f[1], 10, 64)
			tx, _ = strconv.ParseUint(f[2], 10, 64)
		}
	}
	return rx, tx
}

// wgKeyPair makes a WireGuard key pair with `wg genkey` and `wg pubkey`.
func wgKeyPair(t testing.TB) (priv, pub string) {
	t.Helper()
	out, err := runCmd(t.Context(), nil, "wg", "genkey")
	if err != nil {
		t.Fatalf("netlab: %v\n%s", err, out)
	}
	priv = strings.TrimSpace(out)
	cmd := exec.CommandContext(t.Context(), "wg", "pubkey")
	cmd.Stdin = strings.NewReader(priv + "\n")
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("netlab: wg pubkey: %v", err)
	}
	return priv, strings.TrimSpace(string(b))
}

// sweepWGSockets removes configuration sockets of interfaces named like
// StartWireGuard's that nothing serves any more: wireguard-go killed
// without a chance to clean up leaves its socket behind.
func sweepWGSockets() {
	entries, err := os.ReadDir(wgSocketDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".sock")
		if !ok || !wgNameRE.MatchString(name) {
			continue
		}
		path := filepath.Join(wgSocketDir, e.Name())
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			continue
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			_ = os.Remove(path)
		}
	}
}
