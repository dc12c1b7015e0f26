//go:build linux

package netlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// namePrefix starts the name of every namespace a lab creates.
	namePrefix = "mpt"
	// maxRoleLen keeps namespace names within IFNAMSIZ-1 (15) characters:
	// "mpt" + 5 hex digits + role.
	maxRoleLen = 7
	// staleAge is how old an empty namespace with a lab name must be before
	// a later run deletes it as a leftover.
	staleAge = 15 * time.Minute
	// netnsDir is where `ip netns` keeps its named namespaces.
	netnsDir = "/run/netns"
	// cmdTimeout bounds every short command the lab runs.
	cmdTimeout = 60 * time.Second
)

var (
	roleRE      = regexp.MustCompile(`^[a-z0-9]{1,7}$`)
	labNSNameRE = regexp.MustCompile(`^mpt[0-9a-f]{5}[a-z0-9]{1,7}$`)
)

// rootCheck caches whether this process can create namespaces, so Require
// probes at most once per test binary.
var rootCheck struct {
	once sync.Once
	err  error
}

// Require skips the test unless it runs as root, the ip command is on PATH,
// network namespaces can be created, and every named extra tool (for
// example "socat", "nft", "tc") is on PATH.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netlab: skipping, network-namespace tests need root")
	}
	var missing []string
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		t.Skipf("netlab: skipping, missing tools on PATH: %s", strings.Join(missing, ", "))
	}
	rootCheck.once.Do(func() { rootCheck.err = probeNetns() })
	if rootCheck.err != nil {
		t.Skipf("netlab: skipping, cannot create network namespaces: %v", rootCheck.err)
	}
}

// probeNetns creates and deletes one namespace to check the privileges.
func probeNetns() error {
	prefix, err := newPrefix()
	if err != nil {
		return err
	}
	name := prefix + "probe"
	if _, err := runCmd(context.Background(), nil, "ip", "netns", "add", name); err != nil {
		return err
	}
	_, err = runCmd(context.Background(), nil, "ip", "netns", "del", name)
	return err
}

// sweepOnce deletes leftovers from crashed runs at most once per process.
var sweepOnce sync.Once

// Lab owns network namespaces, the veth links between them and the
// processes started in them. Create one with New; a t.Cleanup registered by
// New removes everything.
type Lab struct {
	t      testing.TB
	prefix string

	mu     sync.Mutex
	nss    []*NS
	procs  []*Proc
	closed bool
}

// NS is one network namespace of a lab.
type NS struct {
	// Name is the namespace name as `ip netns` knows it.
	Name string
	// Role is the short role given to Lab.Namespace.
	Role string

	lab *Lab

	mu      sync.Mutex
	ifnames map[string]bool
}

// New creates an empty lab with a unique name prefix and registers its
// cleanup on t. It calls Require(t) first, so it skips when not root.
// On first use in a process it also deletes namespaces left by earlier
// crashed runs: only ones named like a lab's, older than 15 minutes and
// with no process inside.
func New(t testing.TB) *Lab {
	t.Helper()
	Require(t)
	sweepOnce.Do(func() {
		for _, err := range sweepStale(time.Now(), namePrefix) {
			t.Logf("netlab: removing stale namespace: %v", err)
		}
	})
	var prefix string
	for range 10 {
		p, err := newPrefix()
		if err != nil {
			t.Fatalf("netlab: %v", err)
		}
		if !prefixInUse(p) {
			prefix = p
			break
		}
	}
	if prefix == "" {
		t.Fatal("netlab: could not pick an unused namespace prefix")
	}
	l := &Lab{t: t, prefix: prefix}
	t.Cleanup(l.close)
	return l
}

// Prefix returns the lab's unique name prefix; every namespace of the lab
// is named Prefix()+role.
func (l *Lab) Prefix() string { return l.prefix }

// Namespaces returns the lab's namespaces in creation order.
func (l *Lab) Namespaces() []*NS {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*NS(nil), l.nss...)
}

// Namespace creates a network namespace for role, brings its loopback up
// and makes IPv6 addresses survive the link going down. role must be 1 to 7
// characters of lower-case letters and digits and unique in the lab; the
// namespace is named Prefix()+role.
func (l *Lab) Namespace(role string) *NS {
	l.t.Helper()
	if !roleRE.MatchString(role) {
		l.t.Fatalf("netlab: namespace role %q must be 1 to %d characters of [a-z0-9]", role, maxRoleLen)
	}
	n := &NS{Name: l.prefix + role, Role: role, lab: l, ifnames: map[string]bool{}}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.t.Fatalf("netlab: Namespace(%q) called after the lab was cleaned up", role)
	}
	for _, other := range l.nss {
		if other.Role == role {
			l.mu.Unlock()
			l.t.Fatalf("netlab: namespace role %q used twice in one lab", role)
		}
	}
	l.mu.Unlock()

	if out, err := runCmd(context.Background(), nil, "ip", "netns", "add", n.Name); err != nil {
		l.t.Fatalf("netlab: create namespace for %q: %v\n%s", role, err, out)
	}
	l.mu.Lock()
	l.nss = append(l.nss, n)
	l.mu.Unlock()

	l.ip("-n", n.Name, "link", "set", "lo", "up")
	// Static IPv6 addresses are flushed when a link goes down unless
	// keep_addr_on_down is set; DAD would keep new addresses tentative for
	// a while. Both settings are best effort: IPv6 may be disabled.
	for _, kv := range [][2]string{
		{"net.ipv6.conf.all.keep_addr_on_down", "1"},
		{"net.ipv6.conf.default.keep_addr_on_down", "1"},
		{"net.ipv6.conf.all.accept_dad", "0"},
		{"net.ipv6.conf.default.accept_dad", "0"},
	} {
		_ = n.sysctl(kv[0], kv[1])
	}
	return n
}

// Link joins namespaces a and b with a veth pair, gives the a end the
// address aAddr and the b end bAddr (CIDR form such as "10.77.1.1/24" or
// "fd00:77:1::1/64"; an empty string assigns none), brings both ends up and
// returns the interface names in a and in b. Interfaces are named
// "to-"+peer role, with a numeric suffix for a second link to the same peer.
// IPv6 addresses are added without duplicate address detection so they are
// usable at once, and Link returns only once both ends are operational.
func (l *Lab) Link(a *NS, aAddr string, b *NS, bAddr string) (aIf, bIf string) {
	l.t.Helper()
	for _, addr := range []string{aAddr, bAddr} {
		if addr == "" {
			continue
		}
		if _, err := netip.ParsePrefix(addr); err != nil {
			l.t.Fatalf("netlab: link %s-%s: address %q is not in CIDR form: %v", a.Role, b.Role, addr, err)
		}
	}
	aIf = a.reserveIfname("to-" + b.Role)
	bIf = b.reserveIfname("to-" + a.Role)
	l.ip("link", "add", aIf, "netns", a.Name, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	for _, end := range []struct {
		ns   *NS
		ifn  string
		addr string
	}{{a, aIf, aAddr}, {b, bIf, bAddr}} {
		if end.addr != "" {
			end.ns.addAddr(l.t, end.ifn, end.addr)
		}
		l.ip("-n", end.ns.Name, "link", "set", end.ifn, "up")
	}
	for _, end := range []struct {
		ns  *NS
		ifn string
	}{{a, aIf}, {b, bIf}} {
		if !end.ns.waitOperUp(end.ifn, linkUpWait) {
			l.t.Fatalf("netlab: link %s in %s not operational after %v", end.ifn, end.ns.Name, linkUpWait)
		}
	}
	return aIf, bIf
}

// reserveIfname returns base, or base with a numeric suffix, unused so far
// in n.
func (n *NS) reserveIfname(base string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	name := base
	for i := 2; n.ifnames[name]; i++ {
		name = base + "-" + strconv.Itoa(i)
	}
	n.ifnames[name] = true
	return name
}

// ip runs the ip command in the root namespace and fails the lab's test on
// error.
func (l *Lab) ip(args ...string) {
	l.t.Helper()
	if out, err := runCmd(context.Background(), nil, "ip", args...); err != nil {
		l.t.Fatalf("netlab: %v\n%s", err, out)
	}
}

// close stops every process, then kills anything left in the namespaces and
// deletes them. It runs as the t.Cleanup registered by New.
func (l *Lab) close() {
	l.mu.Lock()
	l.closed = true
	procs := append([]*Proc(nil), l.procs...)
	nss := append([]*NS(nil), l.nss...)
	l.mu.Unlock()

	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.terminate(syscall.SIGTERM, stopGrace) })
	}
	wg.Wait()
	if l.t.Failed() {
		for _, p := range procs {
			l.t.Logf("netlab: output of %s (%s, %s):\n%s", p.desc, p.ns, p.state(), tail(p.Output(), 8<<10))
		}
	}
	for i := len(nss) - 1; i >= 0; i-- {
		if err := deleteNamespace(nss[i].Name); err != nil {
			l.t.Errorf("netlab: cleanup: %v", err)
		}
	}
}

// deleteNamespace kills every process in the namespace and deletes it.
func deleteNamespace(name string) error {
	var err error
	for attempt := range 5 {
		if attempt > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		killNamespacePids(name)
		var out string
		out, err = runCmd(context.Background(), nil, "ip", "netns", "del", name)
		if err == nil {
			return nil
		}
		if _, statErr := os.Stat(filepath.Join(netnsDir, name)); errors.Is(statErr, os.ErrNotExist) {
			return nil
		}
		err = fmt.Errorf("delete namespace %s: %w: %s", name, err, strings.TrimSpace(out))
	}
	return err
}

// namespacePids lists the processes inside the namespace.
func namespacePids(name string) ([]int, error) {
	out, err := runCmd(context.Background(), nil, "ip", "netns", "pids", name)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// killNamespacePids sends SIGKILL to every process inside the namespace.
func killNamespacePids(name string) {
	pids, _ := namespacePids(name)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// sweepStale deletes namespaces named like a lab's and starting with prefix
// that are older than staleAge at now and have no process inside. It
// returns one error per namespace it could not delete.
func sweepStale(now time.Time, prefix string) []error {
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		return nil
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !labNSNameRE.MatchString(name) || !strings.HasPrefix(name, prefix) {
			continue
		}
		info, err := e.Info()
		if err != nil || now.Sub(info.ModTime()) < staleAge {
			continue
		}
		if pids, err := namespacePids(name); err != nil || len(pids) > 0 {
			continue
		}
		if _, err := runCmd(context.Background(), nil, "ip", "netns", "del", name); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// newPrefix returns "mpt" followed by five random hex digits.
func newPrefix() (string, error) {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random prefix: %w", err)
	}
	return namePrefix + hex.EncodeToString(b[:])[:5], nil
}

// prefixInUse reports whether any named namespace starts with prefix.
func prefixInUse(prefix string) bool {
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			return true
		}
	}
	return false
}

// runCmd runs a command to completion with a bounded time and returns its
// combined output. The error names the command.
func runCmd(ctx context.Context, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", err, ctx.Err())
		}
		err = fmt.Errorf("%s: %w", quoteCmd(name, args), err)
	}
	return out.String(), err
}

// quoteCmd renders a command line for messages.
func quoteCmd(name string, args []string) string {
	parts := make([]string, 0, 1+len(args))
	for _, s := range append([]string{name}, args...) {
		if s == "" || strings.ContainsAny(s, " \t\n'\"\\;") {
			s = strconv.Quote(s)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

// tail returns at most the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "[...]\n" + s[len(s)-n:]
}
