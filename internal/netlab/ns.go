//go:build linux

package netlab

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	// lossTable is the nftables table (family netdev) holding SetLoss chains.
	lossTable = "netlab"
	// linkUpWait bounds how long LinkUp and Link wait for a link to become
	// operational.
	linkUpWait = 3 * time.Second
)

// Command returns an unstarted command that runs name with args inside the
// namespace, for callers that need full control over it. The caller owns
// the process and must make sure it ends.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// RunE runs name with args to completion inside the namespace (at most one
// minute) and returns its combined output and any error.
func (n *NS) RunE(name string, args ...string) (string, error) {
	out, err := runCmd(context.Background(), nil, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	if err != nil {
		err = fmt.Errorf("in namespace %s: %w", n.Name, err)
	}
	return out, err
}

// Run runs name with args to completion inside the namespace (at most one
// minute) and returns its combined output. It fails the test, showing the
// output, if the command fails.
func (n *NS) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.RunE(name, args...)
	if err != nil {
		t.Fatalf("netlab: %v\n%s", err, out)
	}
	return out
}

// AddAddr adds an address in CIDR form to an interface of the namespace.
func (n *NS) AddAddr(t testing.TB, ifname, cidr string) {
	t.Helper()
	if _, err := netip.ParsePrefix(cidr); err != nil {
		t.Fatalf("netlab: address %q for %s in %s is not in CIDR form: %v", cidr, ifname, n.Name, err)
	}
	n.addAddr(t, ifname, cidr)
}

func (n *NS) addAddr(t testing.TB, ifname, cidr string) {
	t.Helper()
	args := []string{"-n", n.Name, "addr", "add", cidr, "dev", ifname}
	if strings.Contains(cidr, ":") {
		args = append(args, "nodad")
	}
	if out, err := runCmd(context.Background(), nil, "ip", args...); err != nil {
		t.Fatalf("netlab: %v\n%s", err, out)
	}
}

// LinkDown sets an interface of the namespace administratively down. For a
// veth end this also takes the carrier away from its peer, so neither side
// can send.
func (n *NS) LinkDown(t testing.TB, ifname string) {
	t.Helper()
	n.ipLink(t, ifname, "down")
}

// LinkUp sets an interface of the namespace up again and waits up to
// linkUpWait for it to become operational, which for a veth end also needs
// its peer to be up. The kernel applies carrier changes asynchronously, and
// until it has, packets sent on the link are lost.
func (n *NS) LinkUp(t testing.TB, ifname string) {
	t.Helper()
	n.ipLink(t, ifname, "up")
	n.waitOperUp(ifname, linkUpWait)
}

// waitOperUp waits up to timeout for ifname's operational state to be UP
// and reports whether it is.
func (n *NS) waitOperUp(ifname string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		out, err := runCmd(context.Background(), nil, "ip", "-n", n.Name, "-o", "link", "show", "dev", ifname)
		if err == nil && strings.Contains(out, " state UP ") {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *NS) ipLink(t testing.TB, ifname, state string) {
	t.Helper()
	if out, err := runCmd(context.Background(), nil, "ip", "-n", n.Name, "link", "set", ifname, state); err != nil {
		t.Fatalf("netlab: %v\n%s", err, out)
	}
}

// SetLoss makes the namespace drop, at random, percent of the IPv4 and IPv6
// packets leaving ifname; 0 removes the rule and 100 drops them all. ARP is
// not dropped. The rule sits in an nftables netdev egress hook, so dropped
// packets vanish silently, as on a lossy wire: senders see no error (a drop
// in the IP output path would instead fail their send with EPERM).
// It needs nft and Linux 5.16 or later.
func (n *NS) SetLoss(t testing.TB, ifname string, percent int) {
	t.Helper()
	if percent < 0 || percent > 100 {
		t.Fatalf("netlab: SetLoss(%s, %d): percent must be within 0..100", ifname, percent)
	}
	if strings.ContainsAny(ifname, "\"\\ \t\n;") || ifname == "" {
		t.Fatalf("netlab: SetLoss: bad interface name %q", ifname)
	}
	chain := lossChain(ifname)
	script := fmt.Sprintf("add table netdev %s; add chain netdev %s %s { type filter hook egress device \"%s\" priority 0; }; ",
		lossTable, lossTable, chain, ifname)
	switch {
	case percent == 0:
		script += fmt.Sprintf("delete chain netdev %s %s", lossTable, chain)
	case percent == 100:
		script += fmt.Sprintf("flush chain netdev %s %s; add rule netdev %s %s meta protocol { ip, ip6 } counter drop",
			lossTable, chain, lossTable, chain)
	default:
		script += fmt.Sprintf("flush chain netdev %s %s; add rule netdev %s %s meta protocol { ip, ip6 } numgen random mod 100 < %d counter drop",
			lossTable, chain, lossTable, chain, percent)
	}
	n.Run(t, "nft", script)
}

// lossChain returns the nftables chain name used for ifname's loss rule.
func lossChain(ifname string) string {
	var b strings.Builder
	b.WriteString("loss_")
	for _, r := range ifname {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// SetRate limits the rate of packets leaving ifname to kbit kilobits per
// second with a token bucket filter; 0 removes the limit. It needs tc.
func (n *NS) SetRate(t testing.TB, ifname string, kbit int) {
	t.Helper()
	if kbit < 0 {
		t.Fatalf("netlab: SetRate(%s, %d): rate must not be negative", ifname, kbit)
	}
	if kbit == 0 {
		out, err := runCmd(context.Background(), nil, "tc", "-n", n.Name, "qdisc", "del", "dev", ifname, "root")
		if err != nil && !strings.Contains(out, "No such file") && !strings.Contains(out, "Cannot delete qdisc with handle of zero") {
			t.Fatalf("netlab: %v\n%s", err, out)
		}
		return
	}
	// A burst of at least one full-size packet (and about 20 ms of traffic)
	// keeps tbf from stalling at low rates.
	burst := max(kbit*1000/8/50, 4096)
	if out, err := runCmd(context.Background(), nil, "tc", "-n", n.Name, "qdisc", "replace", "dev", ifname, "root",
		"tbf", "rate", strconv.Itoa(kbit)+"kbit", "burst", strconv.Itoa(burst), "latency", "200ms"); err != nil {
		t.Fatalf("netlab: %v\n%s", err, out)
	}
}

// WaitListening waits up to timeout until a socket in the namespace is
// bound to the given local port, for proto "udp" or "tcp", and fails the
// test otherwise. It uses ss.
func (n *NS) WaitListening(t testing.TB, proto string, port int, timeout time.Duration) {
	t.Helper()
	var flag string
	switch proto {
	case "udp":
		flag = "-Hlnu"
	case "tcp":
		flag = "-Hlnt"
	default:
		t.Fatalf("netlab: WaitListening: unknown protocol %q", proto)
	}
	suffix := ":" + strconv.Itoa(port)
	deadline := time.Now().Add(timeout)
	var out string
	for {
		var err error
		out, err = n.RunE("ss", flag)
		if err == nil {
			for _, line := range strings.Split(out, "\n") {
				// Columns: State Recv-Q Send-Q Local:Port Peer:Port ...
				f := strings.Fields(line)
				if len(f) >= 4 && strings.HasSuffix(f[3], suffix) {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("netlab: nothing listening on %s port %d in %s after %v; ss says:\n%s", proto, port, n.Name, timeout, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Sysctl sets a kernel parameter of the namespace, such as
// "net.ipv4.ip_forward" to "1".
func (n *NS) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	if err := n.sysctl(key, value); err != nil {
		t.Fatalf("netlab: %v", err)
	}
}

func (n *NS) sysctl(key, value string) error {
	if key == "" || strings.Contains(key, "/") || strings.Contains(key, "..") {
		return fmt.Errorf("sysctl: bad key %q", key)
	}
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	out, err := n.RunE("sh", "-c", `printf '%s\n' "$2" > "$1"`, "sh", path, value)
	if err != nil {
		return fmt.Errorf("sysctl %s=%s: %w: %s", key, value, err, strings.TrimSpace(out))
	}
	return nil
}
