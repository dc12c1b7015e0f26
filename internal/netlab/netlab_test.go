//go:build linux

package netlab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	MaybeRunEcho()
	code := m.Run()
	RemoveBuilds()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutine leak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// probeFails asserts that a probe gets no echo.
func probeFails(t *testing.T, ns *NS, addr, why string) {
	t.Helper()
	if err := ns.Probe(t, addr, []byte("should not come back"), 400*time.Millisecond); err == nil {
		t.Fatalf("probe %s from %s was echoed although %s", addr, ns.Name, why)
	}
}

// linked returns the namespaces a and b of a new lab, joined by a link with
// the addresses aAddr and bAddr, and the link's interfaces in each.
func linked(t *testing.T, aAddr, bAddr string) (a, b *NS, aIf, bIf string) {
	t.Helper()
	lab := New(t)
	a, b = lab.Namespace("a"), lab.Namespace("b")
	aIf, bIf = lab.Link(a, aAddr, b, bAddr)
	return a, b, aIf, bIf
}

// flapLink takes ns's end ifName of a link down, checks that target no
// longer answers, and brings it up again until target answers.
func flapLink(t *testing.T, ns *NS, ifName, target, why string) {
	t.Helper()
	ns.LinkDown(t, ifName)
	probeFails(t, ns, target, why)
	ns.LinkUp(t, ifName)
	ns.WaitEcho(t, target, 10*time.Second)
}

func TestTwoNamespacesEchoLossAndLinkState(t *testing.T) {
	t.Parallel()
	Require(t, "nft")
	a, b, aIf, bIf := linked(t, "10.77.1.1/24", "10.77.1.2/24")
	if aIf != "to-b" || bIf != "to-a" {
		t.Fatalf("interface names = %q, %q; want to-b, to-a", aIf, bIf)
	}
	b.StartEcho(t, "0.0.0.0:2000")
	const target = "10.77.1.2:2000"
	a.WaitEcho(t, target, 10*time.Second)

	for _, size := range []int{0, 1, 1400, 9000, 65507} {
		payload := bytes.Repeat([]byte{byte(size)}, size)
		if err := a.Probe(t, target, payload, 2*time.Second); err != nil {
			t.Fatalf("%d-byte datagram: %v", size, err)
		}
	}

	a.SetLoss(t, aIf, 100)
	probeFails(t, a, target, "a drops all it sends")
	a.SetLoss(t, aIf, 0)
	a.WaitEcho(t, target, 5*time.Second)

	b.SetLoss(t, bIf, 100)
	probeFails(t, a, target, "b drops all it sends")
	b.SetLoss(t, bIf, 30)
	rules := b.Run(t, "nft", "list", "table", "netdev", lossTable)
	if !strings.Contains(rules, "numgen random mod 100 < 30") || !strings.Contains(rules, `device "to-a"`) {
		t.Fatalf("30%% loss rule missing:\n%s", rules)
	}
	b.SetLoss(t, bIf, 0)
	if rules := b.Run(t, "nft", "list", "table", "netdev", lossTable); strings.Contains(rules, "drop") {
		t.Fatalf("loss rule left after SetLoss 0:\n%s", rules)
	}
	a.WaitEcho(t, target, 5*time.Second)

	// A loss rule outlives the link going down and up.
	b.SetLoss(t, bIf, 100)
	b.LinkDown(t, bIf)
	probeFails(t, a, target, "b's end of the link is down")
	b.LinkUp(t, bIf)
	before := dropCount(t, b, bIf)
	for i := 0; ; i++ {
		probeFails(t, a, target, "b still drops all it sends after the link flap")
		after := dropCount(t, b, bIf)
		if after > before {
			break
		}
		if i == 10 {
			t.Fatalf("loss rule dropped nothing after the link flap (counter %d then %d)", before, after)
		}
	}
	b.SetLoss(t, bIf, 0)
	a.WaitEcho(t, target, 5*time.Second)

	flapLink(t, a, aIf, target, "a's end of the link is down")
}

func TestIPv6LinkSurvivesDownUp(t *testing.T) {
	t.Parallel()
	a, b, aIf, _ := linked(t, "fd00:77:1::1/64", "fd00:77:1::2/64")
	b.StartEcho(t, "[::]:2000")
	const target = "[fd00:77:1::2]:2000"
	a.WaitEcho(t, target, 10*time.Second)
	if err := a.Probe(t, target, bytes.Repeat([]byte("v6"), 2000), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	flapLink(t, a, aIf, target, "the link is down")
}

func TestSecondLinkAndExtraAddress(t *testing.T) {
	t.Parallel()
	lab := New(t)
	a := lab.Namespace("a")
	b := lab.Namespace("b")
	lab.Link(a, "10.77.1.1/24", b, "10.77.1.2/24")
	aIf2, bIf2 := lab.Link(a, "10.77.2.1/24", b, "")
	if aIf2 != "to-b-2" || bIf2 != "to-a-2" {
		t.Fatalf("second link names = %q, %q; want to-b-2, to-a-2", aIf2, bIf2)
	}
	b.AddAddr(t, bIf2, "10.77.2.2/24")
	b.StartEcho(t, "0.0.0.0:2000")
	a.WaitEcho(t, "10.77.1.2:2000", 10*time.Second)
	a.WaitEcho(t, "10.77.2.2:2000", 10*time.Second)
}

func TestSetRate(t *testing.T) {
	t.Parallel()
	Require(t, "tc")
	a, _, aIf, _ := linked(t, "10.77.1.1/24", "10.77.1.2/24")
	a.SetRate(t, aIf, 0) // nothing to remove yet
	a.SetRate(t, aIf, 1000)
	if out := a.Run(t, "tc", "qdisc", "show", "dev", aIf); !strings.Contains(out, "tbf") {
		t.Fatalf("no tbf qdisc after SetRate:\n%s", out)
	}
	a.SetRate(t, aIf, 0)
	if out := a.Run(t, "tc", "qdisc", "show", "dev", aIf); strings.Contains(out, "tbf") {
		t.Fatalf("tbf qdisc left after SetRate 0:\n%s", out)
	}
}

// waitComm waits until /proc/pid/comm reads want.
func waitComm(t *testing.T, pid int, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err == nil && strings.TrimSpace(string(b)) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d is %q, not %q (%v)", pid, strings.TrimSpace(string(b)), want, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestProcLifecycle(t *testing.T) {
	t.Parallel()
	lab := New(t)
	ns := lab.Namespace("p")

	sleeper := ns.Start(t, "sleep", "300")
	if sleeper.Pid() <= 0 {
		t.Fatalf("Pid() = %d", sleeper.Pid())
	}
	waitComm(t, sleeper.Pid(), "sleep")
	own, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", sleeper.Pid())); err != nil || theirs == own {
		t.Fatalf("process net namespace %q (%v) is the test's own %q", theirs, err, own)
	}
	err = sleeper.Stop()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || !sleeper.Exited() {
		t.Fatalf("Stop of a process killed by SIGTERM = %v; want an exit error", err)
	}
	if err2 := sleeper.Stop(); err2 == nil || err2.Error() != err.Error() {
		t.Fatalf("second Stop = %v; want %v", err2, err)
	}

	clean := ns.Start(t, "sh", "-c", `trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.1; done`)
	clean.WaitOutput(t, "ready", 5*time.Second)
	if err := clean.Stop(); err != nil {
		t.Fatalf("Stop of a process exiting 0 on SIGTERM = %v", err)
	}
	if out := clean.Output(); !strings.Contains(out, "ready\n") || !strings.Contains(out, "bye") {
		t.Fatalf("output = %q", out)
	}

	stubborn := ns.Start(t, "sh", "-c", `trap '' TERM; echo ready; sleep 300`)
	stubborn.WaitOutput(t, "ready", 5*time.Second)
	start := time.Now()
	if err := stubborn.Stop(); err == nil {
		t.Fatal("Stop of a process ignoring SIGTERM returned nil")
	}
	if d := time.Since(start); d < stopGrace-200*time.Millisecond || d > stopGrace+5*time.Second {
		t.Fatalf("Stop took %v; want about the %v grace period", d, stopGrace)
	}

	killed := ns.Start(t, "sleep", "300")
	killed.Kill9()
	if !killed.Exited() {
		t.Fatal("process still running after Kill9")
	}

	exited := ns.Start(t, "sh", "-c", "echo out; echo err >&2; exit 3")
	<-exited.Done()
	if err := exited.Stop(); !errors.As(err, &exitErr) || exitErr.ExitCode() != 3 {
		t.Fatalf("Stop after exit 3 = %v", err)
	}
	if out := exited.Output(); !strings.Contains(out, "out") || !strings.Contains(out, "err") {
		t.Fatalf("output = %q; want stdout and stderr", out)
	}
}

// procRunning reports whether pid exists and is not a zombie.
func procRunning(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestCleanupRemovesEverything(t *testing.T) {
	t.Parallel()
	Require(t)
	var prefix string
	var procs []*Proc
	var grandchild int
	t.Run("lab", func(t *testing.T) {
		lab := New(t)
		prefix = lab.Prefix()
		a := lab.Namespace("a")
		b := lab.Namespace("b")
		lab.Link(a, "10.77.1.1/24", b, "10.77.1.2/24")
		if out, err := runCmd(t.Context(), nil, "ip", "netns", "list"); err != nil || !strings.Contains(out, a.Name) {
			t.Fatalf("namespace %s not listed (%v):\n%s", a.Name, err, out)
		}
		procs = append(procs, a.Start(t, "sleep", "300"), b.StartEcho(t, "0.0.0.0:2000"))
		// A child that leaves the process group must still go with the
		// namespace.
		p := b.Start(t, "sh", "-c", `setsid sleep 300 & echo "child $!"; wait`)
		p.WaitOutput(t, "child ", 5*time.Second)
		f := strings.Fields(p.Output())
		pid, err := strconv.Atoi(f[len(f)-1])
		if err != nil {
			t.Fatalf("child pid in %q: %v", p.Output(), err)
		}
		grandchild = pid
		procs = append(procs, p)
	})
	out, err := runCmd(t.Context(), nil, "ip", "netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, prefix) {
		t.Fatalf("namespaces with prefix %s left after cleanup:\n%s", prefix, out)
	}
	for _, p := range procs {
		if !p.Exited() {
			t.Errorf("%s still running after cleanup", p.desc)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for procRunning(grandchild) {
		if time.Now().After(deadline) {
			t.Fatalf("detached child %d still running after cleanup", grandchild)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestThreeBridges(t *testing.T) {
	t.Parallel()
	Require(t, "socat", "nft", "ss")
	lab := New(t)
	client := lab.Namespace("client")
	server := lab.Namespace("server")
	var bridges []*NS
	var serverSide []string
	for k := 1; k <= 3; k++ {
		br := lab.Namespace(fmt.Sprintf("bridge%d", k))
		lab.Link(client, fmt.Sprintf("10.77.%d.1/24", k), br, fmt.Sprintf("10.77.%d.2/24", k))
		brIf, _ := lab.Link(br, fmt.Sprintf("10.77.%d.1/24", 10+k), server, fmt.Sprintf("10.77.%d.2/24", 10+k))
		bridges = append(bridges, br)
		serverSide = append(serverSide, brIf)
	}
	server.StartEcho(t, "0.0.0.0:2000")
	for k, br := range bridges {
		br.Start(t, "socat", "-T", "60", "udp-listen:4000,fork,reuseaddr", fmt.Sprintf("udp4:10.77.%d.2:2000", 11+k))
		br.WaitListening(t, "udp", 4000, 10*time.Second)
	}
	bridgeAddr := func(k int) string { return fmt.Sprintf("10.77.%d.2:4000", k+1) }
	for k := range bridges {
		client.WaitEcho(t, bridgeAddr(k), 15*time.Second)
		if err := client.Probe(t, bridgeAddr(k), bytes.Repeat([]byte{'m'}, 1200), 2*time.Second); err != nil {
			t.Fatalf("bridge %d: %v", k+1, err)
		}
	}

	bridges[1].SetLoss(t, serverSide[1], 100)
	probeFails(t, client, bridgeAddr(1), "bridge 2 drops all it sends to the server")
	for _, k := range []int{0, 2} {
		if err := client.Probe(t, bridgeAddr(k), []byte("other path"), 2*time.Second); err != nil {
			t.Fatalf("bridge %d while bridge 2 is lossy: %v", k+1, err)
		}
	}
	bridges[1].SetLoss(t, serverSide[1], 0)
	client.WaitEcho(t, bridgeAddr(1), 5*time.Second)
}

func TestModuleRoot(t *testing.T) {
	root, err := moduleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mod), "module github.com/mptunnel/mptunnel") {
		t.Fatalf("module root %s has go.mod:\n%s", root, mod)
	}
	if _, err := moduleRoot("/"); err == nil {
		t.Fatal("moduleRoot(/) found a go.mod")
	}
}

func TestPkgBase(t *testing.T) {
	for pkg, want := range map[string]string{
		"./cmd/mpserver":  "mpserver",
		"./cmd/mpclient/": "mpclient",
		"github.com/mptunnel/mptunnel/cmd/mpproxy": "mpproxy",
		".": "root",
	} {
		if got := pkgBase("/x/root", pkg); got != want {
			t.Errorf("pkgBase(%q) = %q; want %q", pkg, got, want)
		}
	}
}

// goUsable skips the test unless go can build here.
func goUsable(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go is not on PATH")
	}
	out, err := exec.Command("go", "env", "GOCACHE").Output()
	if err != nil {
		t.Skipf("go env GOCACHE: %v", err)
	}
	cache := strings.TrimSpace(string(out))
	if cache == "" || cache == "off" || os.MkdirAll(cache, 0o755) != nil {
		t.Skipf("go build cache %q is not usable", cache)
	}
}

func TestBuilder(t *testing.T) {
	goUsable(t)
	root := t.TempDir()
	files := map[string]string{
		"go.mod":              "module example.com/tiny\n\ngo 1.21\n",
		"cmd/hello/main.go":   "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello from tiny\") }\n",
		"cmd/goodbye/main.go": "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"goodbye\") }\n",
		"other/hello/main.go": "package main\n\nfunc main() {}\n",
		"broken/main.go":      "package main\n\nfunc main() { undefined() }\n",
	}
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var b builder
	defer b.remove()
	paths, err := b.build(root, []string{"./cmd/hello", "./cmd/goodbye"})
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 2 {
		t.Fatalf("paths = %v", paths)
	}
	out, err := exec.Command(paths["hello"]).Output()
	if err != nil || string(out) != "hello from tiny\n" {
		t.Fatalf("hello printed %q, %v", out, err)
	}
	info, err := os.Stat(paths["hello"])
	if err != nil {
		t.Fatal(err)
	}
	again, err := b.build(root, []string{"./cmd/hello"})
	if err != nil {
		t.Fatal(err)
	}
	if again["hello"] != paths["hello"] {
		t.Fatalf("second build path %q; want cached %q", again["hello"], paths["hello"])
	}
	if info2, err := os.Stat(again["hello"]); err != nil || !info2.ModTime().Equal(info.ModTime()) {
		t.Fatalf("cached binary was rebuilt (%v)", err)
	}
	if _, err := b.build(root, []string{"./cmd/hello", "./other/hello"}); err == nil || !strings.Contains(err.Error(), "same base name") {
		t.Fatalf("build of two packages named hello = %v; want a name clash error", err)
	}
	if _, err := b.build(root, []string{"./broken"}); err == nil || !strings.Contains(err.Error(), "undefined") {
		t.Fatalf("build of a broken package = %v; want the compiler's message", err)
	}
	dir := b.dir
	b.remove()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("build dir %s left after remove: %v", dir, err)
	}
}

func TestSweepBuildDirs(t *testing.T) {
	tmp := t.TempDir()
	old := time.Now().Add(-time.Hour)
	mk := func(name string) string {
		p := filepath.Join(tmp, name)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
		return p
	}
	dead := mk(buildDirPrefix + "2147483647-123") // no such process
	alive := mk(buildDirPrefix + strconv.Itoa(os.Getppid()) + "-123")
	mine := mk(buildDirPrefix + strconv.Itoa(os.Getpid()) + "-123")
	other := mk("unrelated-2147483647-123")
	sweepBuildDirs(tmp, time.Now())
	if _, err := os.Stat(dead); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dead process's dir kept: %v", err)
	}
	for _, p := range []string{alive, mine, other} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
}

func TestOutBufferKeepsTail(t *testing.T) {
	var b outBuffer
	chunk := bytes.Repeat([]byte("x"), 1<<20)
	for range 5 {
		b.Write(chunk)
	}
	b.Write([]byte("END"))
	s := b.String()
	if !strings.HasPrefix(s, "[earlier output dropped]") || !strings.HasSuffix(s, "END") || len(s) > maxOutput+64 {
		t.Fatalf("buffer of %d bytes, prefix %q, suffix %q", len(s), s[:min(30, len(s))], s[max(0, len(s)-3):])
	}
}

func TestLossChainName(t *testing.T) {
	if got := lossChain("to-bridge1-2"); got != "loss_to_bridge1_2" {
		t.Fatalf("lossChain = %q", got)
	}
}

func TestRequireSkipsWithoutRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root; the skip path is exercised by non-root runs")
	}
	skipped := false
	t.Run("inner", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		Require(t)
	})
	if !skipped {
		t.Fatal("Require did not skip for a non-root user")
	}
}

func TestLabNamesFitIFNAMSIZ(t *testing.T) {
	p, err := newPrefix()
	if err != nil {
		t.Fatal(err)
	}
	name := p + strings.Repeat("z", maxRoleLen)
	if len(name) > 15 || !labNSNameRE.MatchString(name) {
		t.Fatalf("namespace name %q: length %d, matches stale pattern %v", name, len(name), labNSNameRE.MatchString(name))
	}
	if ifn := "to-" + strings.Repeat("z", maxRoleLen) + "-99"; len(ifn) > 15 {
		t.Fatalf("interface name %q too long", ifn)
	}
}

func TestQuoteCmd(t *testing.T) {
	got := quoteCmd("nft", []string{"add table x; flush", "", "plain"})
	want := `nft "add table x; flush" "" plain`
	if got != want {
		t.Fatalf("quoteCmd = %s; want %s", got, want)
	}
}

func TestSweepStaleNamespaces(t *testing.T) {
	t.Parallel()
	lab := New(t)
	busy := lab.Namespace("busy")
	busy.Start(t, "sleep", "300")
	waitFor := time.Now().Add(5 * time.Second)
	for {
		if pids, _ := namespacePids(busy.Name); len(pids) > 0 {
			break
		}
		if time.Now().After(waitFor) {
			t.Fatal("no process seen in the busy namespace")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// An empty namespace named like a lab's, as a crashed run leaves it.
	// It is not registered with the lab, so only the sweep removes it.
	left := lab.Prefix() + "left"
	if out, err := runCmd(t.Context(), nil, "ip", "netns", "add", left); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Cleanup(func() { _ = deleteNamespace(left) })
	exists := func(name string) bool {
		_, err := os.Stat(filepath.Join(netnsDir, name))
		return err == nil
	}

	if errs := sweepStale(time.Now(), lab.Prefix()); len(errs) > 0 || !exists(left) {
		t.Fatalf("fresh namespace swept (errors %v)", errs)
	}
	if errs := sweepStale(time.Now().Add(staleAge+time.Minute), lab.Prefix()); len(errs) > 0 {
		t.Fatal(errs)
	}
	if exists(left) {
		t.Fatalf("stale empty namespace %s kept", left)
	}
	if !exists(busy.Name) {
		t.Fatalf("stale namespace %s with a process inside swept", busy.Name)
	}
}

// dropCount returns the packet counter of ifname's loss rule.
func dropCount(t *testing.T, ns *NS, ifname string) int {
	t.Helper()
	out := ns.Run(t, "nft", "list", "chain", "netdev", lossTable, lossChain(ifname))
	_, after, ok := strings.Cut(out, "counter packets ")
	if !ok {
		t.Fatalf("no counter in loss chain:\n%s", out)
	}
	n, err := strconv.Atoi(strings.Fields(after)[0])
	if err != nil {
		t.Fatalf("counter in %q: %v", out, err)
	}
	return n
}
