package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/peer"
	"github.com/mptunnel/mptunnel/internal/server"
)

// flowWatch polls the flows both ends' status shows, every 10 ms until
// stopped, and keeps the most seen.
type flowWatch struct {
	stop     chan struct{}
	done     chan struct{}
	cli, srv atomic.Int64
}

func watchFlows(cl *client.Client, srv *server.Server) *flowWatch {
	w := &flowWatch{stop: make(chan struct{}), done: make(chan struct{})}
	flows := func(sessions int, of func(int) int) int64 {
		n := 0
		for i := range sessions {
			n += of(i)
		}
		return int64(n)
	}
	go func() {
		defer close(w.done)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			cs := cl.Status("test", time.Now()).Sessions
			ss := srv.Status("test", time.Now()).Sessions
			w.cli.Store(max(w.cli.Load(), flows(len(cs), func(i int) int { return cs[i].Flows })))
			w.srv.Store(max(w.srv.Load(), flows(len(ss), func(i int) int { return ss[i].Flows })))
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

func (w *flowWatch) close() {
	close(w.stop)
	<-w.done
}

// exchange sends q from a socket of its own (a new source port: a new flow)
// to addr and waits for the answer, asking again on the same socket, as a
// DNS client does, up to tries times; it returns the tries it took.
func exchange(addr netip.AddrPort, q []byte, tries int) (int, error) {
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	buf := make([]byte, 512)
	for try := 1; try <= tries; try++ {
		if _, err := conn.Write(q); err != nil {
			return try, err
		}
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		for {
			n, err := conn.Read(buf)
			if err != nil {
				break
			}
			if bytes.Equal(buf[:n], q) {
				return try, nil
			}
		}
	}
	return tries, fmt.Errorf("no answer to %q in %d tries", q, tries)
}

// TestManyShortFlows: 2,000 one-query flows through a port forward, each
// from a new source port, 150 a second, to an echo target. With 256 flows a
// session on both ends, every query is answered: flows that carried one
// exchange are reclaimed after 5 s, and before that the least recently used
// idle one makes room for the next; neither end refuses one, neither ever
// holds more than its limit, and nothing reaches the default target.
func TestManyShortFlows(t *testing.T) {
	const flows, rate, limit = 2000, 150, peer.DefaultMaxFlows
	key := testKey(t)
	def, echo := newEchoTarget(t), newEchoTarget(t)
	srv := startServer(t, server.Config{Target: def.addr(), Key: key, Allow: []string{echo.addr()}})
	paths, _ := startPaths(t, srv.Addr().String(), 91, impair.Config{}, impair.Config{})
	cl := startClient(t, client.Config{Paths: paths, Key: key, Listen: "none",
		Forwards: []client.Forward{{Listen: "127.0.0.1:0", Target: echo.addr()}}})
	fwd := cl.ForwardAddrs()[0]

	w := watchFlows(cl, srv)
	var wg sync.WaitGroup
	var failed, retried atomic.Int64
	var firstErr atomic.Value
	tick := time.NewTicker(time.Second / rate)
	start := time.Now()
	for i := range flows {
		<-tick.C
		wg.Go(func() {
			tries, err := exchange(fwd, []byte("query "+strconv.Itoa(i)), 3)
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
			if tries > 1 {
				retried.Add(1)
			}
		})
	}
	tick.Stop()
	wg.Wait()
	took := time.Since(start)
	w.close()

	sc, cc := srv.Counters().Snapshot(), cl.Counters().Snapshot()
	t.Logf("%d flows in %v (%d asked again); most flows at once: client %d, server %d; server: %d reclaimed, %d evicted, %d freed; client: %d reclaimed, %d evicted",
		flows, took.Round(time.Millisecond), retried.Load(), w.cli.Load(), w.srv.Load(),
		sc.FlowsReclaimed, sc.FlowsEvicted, sc.FlowsFreed, cc.FlowsReclaimed, cc.FlowsEvicted)
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d queries unanswered: first %v", n, flows, firstErr.Load())
	}
	if sc.FlowLimit != 0 || cc.FlowLimit != 0 {
		t.Fatalf("flows refused at the limit: server %d, client %d; want none while idle flows can make room", sc.FlowLimit, cc.FlowLimit)
	}
	if w.srv.Load() > limit || w.cli.Load() > limit {
		t.Fatalf("most flows at once: server %d, client %d; the limit is %d", w.srv.Load(), w.cli.Load(), limit)
	}
	if sc.FlowsEvicted == 0 || cc.FlowsEvicted == 0 {
		t.Fatalf("server evicted %d flows, client %d: at %d new flows a second the tables fill before the short rule frees any", sc.FlowsEvicted, cc.FlowsEvicted, rate)
	}
	// Its peers are fewer: the ports of freed flows' sockets are taken
	// again by new ones.
	if _, got := echo.stats(); got < flows {
		t.Fatalf("echo target: %d datagrams, want %d", got, flows)
	}
	if _, got := def.stats(); got != 0 {
		t.Fatalf("the default target received %d datagrams of the forward's flows", got)
	}
	// What is left goes by the short rule: the tables empty.
	left := func() (int, int) {
		n := 0
		for _, ss := range cl.Status("test", time.Now()).Sessions {
			n += ss.Flows
		}
		return n, srv.Flows()
	}
	wait := peer.ShortFlowTimeout + 3*time.Second
	if !eventually(wait, func() bool { c, s := left(); return c == 0 && s == 0 }) {
		c, s := left()
		t.Fatalf("%d flows left on the client and %d on the server %v after the last query", c, s, wait)
	}
	sc2, cc2 := srv.Counters().Snapshot(), cl.Counters().Snapshot()
	if got, want := sc2.FlowsReclaimed-sc.FlowsReclaimed, w.srv.Load(); got < uint64(want)/2 || sc2.FlowsEvicted != sc.FlowsEvicted {
		t.Fatalf("server: %d flows reclaimed (%d evicted) after the last query, want the last ones, by the short rule", got, sc2.FlowsEvicted-sc.FlowsEvicted)
	}
	if cc2.FlowsReclaimed == cc.FlowsReclaimed {
		t.Fatal("client: no flow reclaimed after the last query")
	}
	t.Logf("reclaimed after the last query: server %d, client %d", sc2.FlowsReclaimed-sc.FlowsReclaimed, cc2.FlowsReclaimed-cc.FlowsReclaimed)
}

// TestEvictedNamedFlow: a forward's established flow, evicted on the server
// to make room while the client keeps it, is opened anew toward its own
// target when it sends again: none of its datagrams reaches the default
// target, and every one comes back.
func TestEvictedNamedFlow(t *testing.T) {
	key := testKey(t)
	def, echo := newEchoTarget(t), newEchoTarget(t)
	srv := startServer(t, server.Config{Target: def.addr(), Key: key, Allow: []string{echo.addr()}, MaxFlows: 2})
	paths, _ := startPaths(t, srv.Addr().String(), 92, impair.Config{}, impair.Config{})
	cl := startClient(t, client.Config{Paths: paths, Key: key,
		Forwards: []client.Forward{{Listen: "127.0.0.1:0", Target: echo.addr()}}})
	fwd := cl.ForwardAddrs()[0]
	a := dialAddr(t, fwd)
	pingPong(t, a, "a", 5) // established: more than a couple each way
	// a idle for FlowIdleAfter; two new flows fill the server's table, the
	// second by evicting a.
	time.Sleep(peer.FlowIdleAfter + 100*time.Millisecond)
	pingPong(t, dialAddr(t, fwd), "b", 1)
	pingPong(t, dialAddr(t, fwd), "c", 1)
	if n := srv.Counters().Snapshot().FlowsEvicted; n != 1 {
		t.Fatalf("server evicted %d flows, want a's", n)
	}
	if n := cl.Counters().Snapshot().FlowsEvicted; n != 0 {
		t.Fatalf("client evicted %d flows, want none below its limit", n)
	}
	// a sends again once b and c are idle too, so that one of them makes
	// room. The server has no flow for a: a's datagram either names the
	// target (the client heard the flow was freed) or is dropped and
	// counted, and the client names the target from then on.
	time.Sleep(peer.FlowIdleAfter + 100*time.Millisecond)
	buf := make([]byte, 64)
	answered := 0
	for i := range 20 {
		want := fmt.Sprintf("a again %d", i)
		if _, err := a.Write([]byte(want)); err != nil {
			t.Fatal(err)
		}
		a.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, err := a.Read(buf); err == nil && string(buf[:n]) == want {
			answered++
		}
	}
	sc := srv.Counters().Snapshot()
	t.Logf("a: %d of 20 answered after its flow was evicted; server dropped %d for a flow it no longer had", answered, sc.UnknownFlow)
	if answered < 19 {
		t.Fatalf("a: %d of 20 answered after eviction", answered)
	}
	if _, got := def.stats(); got != 0 {
		t.Fatalf("the default target received %d datagrams of a forward's flow", got)
	}
	if n := srv.Counters().Snapshot().FlowsEvicted; n != 2 {
		t.Fatalf("server evicted %d flows, want a's and then b's", n)
	}
	if _, got := echo.stats(); got < 5+1+1+answered {
		t.Fatalf("echo target received %d datagrams, want %d or more", got, 5+1+1+answered)
	}
}

// TestDigManyQueries: dig, through a port forward, asks a real dnsmasq
// serving a local zone 300 times, each run from a new source port: every
// query is answered.
func TestDigManyQueries(t *testing.T) {
	dig, err1 := exec.LookPath("dig")
	dnsmasq, err2 := exec.LookPath("dnsmasq")
	if err1 != nil || err2 != nil {
		t.Skip("needs dig and dnsmasq (Debian: apt-get install dnsutils dnsmasq-base)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: dnsmasq runs with --user=root")
	}
	port := freeUDPPort(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--listen-address=127.0.0.1", "--bind-interfaces", "--port="+strconv.Itoa(port), "--user=root",
		"--pid-file="+filepath.Join(dir, "pid"), "--address=/example.test/192.0.2.1", "--log-facility=-")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("dnsmasq: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	dns := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	ask := func(at netip.AddrPort, name string) (string, error) {
		out, err := exec.Command(dig, "@"+at.Addr().String(), "-p", strconv.Itoa(int(at.Port())),
			"+short", "+tries=1", "+time=2", name).Output()
		return strings.TrimSpace(string(out)), err
	}
	if !eventually(5*time.Second, func() bool { a, _ := ask(dns, "up.example.test"); return a == "192.0.2.1" }) {
		t.Fatalf("dnsmasq does not answer on %v: %s", dns, stderr.String())
	}

	key := testKey(t)
	def := newEchoTarget(t)
	srv := startServer(t, server.Config{Target: def.addr(), Key: key, Allow: []string{dns.String()}})
	paths, _ := startPaths(t, srv.Addr().String(), 93, impair.Config{}, impair.Config{})
	cl := startClient(t, client.Config{Paths: paths, Key: key, Listen: "none",
		Forwards: []client.Forward{{Listen: "127.0.0.1:0", Target: dns.String()}}})
	fwd := cl.ForwardAddrs()[0]
	const queries, workers = 300, 3
	var wg sync.WaitGroup
	var next, failed atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for i := next.Add(1); i <= queries; i = next.Add(1) {
				a, err := ask(fwd, fmt.Sprintf("q%d.example.test", i))
				if err != nil || a != "192.0.2.1" {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Errorf("q%d: %q %v", i, a, err))
				}
			}
		})
	}
	wg.Wait()
	sc, cc := srv.Counters().Snapshot(), cl.Counters().Snapshot()
	t.Logf("%d dig runs in %v; server: %d reclaimed, %d evicted; client: %d reclaimed, %d evicted",
		queries, time.Since(start).Round(time.Millisecond), sc.FlowsReclaimed, sc.FlowsEvicted, cc.FlowsReclaimed, cc.FlowsEvicted)
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d dig queries unanswered: first %v", n, queries, firstErr.Load())
	}
	if sc.FlowLimit != 0 || cc.FlowLimit != 0 {
		t.Fatalf("flows refused at the limit: server %d, client %d", sc.FlowLimit, cc.FlowLimit)
	}
}

// freeUDPPort returns a UDP port on 127.0.0.1 that was free a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
