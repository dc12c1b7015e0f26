package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
)

// memory runs the memory scenario: a server child process, Sessions
// in-process clients of Flows flows each sending FlowRate echo requests a
// second, and the child's VmRSS and VmHWM once the traffic is steady.
func (b *bencher) memory(ctx context.Context) (m Memory, err error) {
	cfg := b.cfg
	m = Memory{Sessions: cfg.Sessions, Flows: cfg.Flows, Paths: cfg.Paths, FlowRate: cfg.FlowRate}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	port, err := freePort()
	if err != nil {
		return m, err
	}
	tap, err := netip.ParseAddrPort(b.target.addr())
	if err != nil {
		return m, fmt.Errorf("memory: target address: %w", err)
	}
	b.prog.printf("memory: starting the server child")
	cmd := exec.CommandContext(ctx, cfg.ServerExe, "server", "--control", "none", "--log-level", "warn",
		strconv.Itoa(port), tap.Addr().String(), strconv.Itoa(int(tap.Port())))
	cmd.Env = append(os.Environ(), "MPTUNNEL_KEY="+b.key.String())
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 3 * time.Second // then it is killed
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return m, fmt.Errorf("memory: start server %s: %w", cfg.ServerExe, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	defer func() {
		cancel()
		<-exited
	}()

	srvAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	clients, err := b.startClients(ctx, srvAddr, exited)
	defer clients.stop()
	if err != nil {
		return m, fmt.Errorf("%w (server said: %s)", err, strings.TrimSpace(stderr.String()))
	}
	m.SessionsUp = clients.up

	steady := 3 * time.Second
	if cfg.Short {
		steady = time.Second
	}
	b.prog.printf("memory: %d sessions x %d flows at %d pkt/s each, waiting %v", cfg.Sessions, cfg.Flows, cfg.FlowRate, steady)
	clients.startTraffic(ctx, cfg.Size, cfg.FlowRate, b.epoch)
	select {
	case <-time.After(steady):
	case <-ctx.Done():
		return m, ctx.Err()
	case <-exited:
		return m, fmt.Errorf("memory: server exited early: %v (%s)", waitErr, strings.TrimSpace(stderr.String()))
	}
	rss, hwm, err := procMemory(cmd.Process.Pid)
	if err != nil {
		return m, fmt.Errorf("memory: %w", err)
	}
	m.RSSMiB, m.HWMMiB = rss, hwm
	m.SteadySecs = steady.Seconds()
	clients.stopTraffic()
	m.Sent, m.Echoed = clients.sent.Load(), clients.echoed.Load()
	return m, nil
}

// clientSet is the memory scenario's clients and their flow sockets.
type clientSet struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup // clients' Serve
	traffic sync.WaitGroup // senders and readers
	flows   []*net.UDPConn
	dsts    []netip.AddrPort
	stopped chan struct{}
	once    sync.Once
	up      int

	sent, echoed atomic.Uint64
}

// startClients starts the clients, each with cfg.Paths paths straight to
// the server, opens their flow sockets and waits for every session.
func (b *bencher) startClients(ctx context.Context, srvAddr string, exited <-chan struct{}) (*clientSet, error) {
	cfg := b.cfg
	cctx, cancel := context.WithCancel(ctx)
	cs := &clientSet{cancel: cancel, stopped: make(chan struct{})}
	var ups []<-chan struct{}
	for i := 0; i < cfg.Sessions; i++ {
		cc := client.Config{Listen: "127.0.0.1:0", Key: b.key, Logger: b.log, MaxFlows: max(256, cfg.Flows)}
		for j := 0; j < cfg.Paths; j++ {
			cc.Paths = append(cc.Paths, client.PathConfig{Remote: srvAddr})
		}
		cl, err := client.Listen(cc)
		if err != nil {
			return cs, fmt.Errorf("memory: client %d: %w", i+1, err)
		}
		cs.wg.Add(1)
		go func() {
			defer cs.wg.Done()
			_ = cl.Serve(cctx) // returns nil once cctx ends
		}()
		ups = append(ups, cl.Up())
		for j := 0; j < cfg.Flows; j++ {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				return cs, fmt.Errorf("memory: flow socket: %w", err)
			}
			cs.flows = append(cs.flows, c)
			cs.dsts = append(cs.dsts, cl.Addr())
		}
	}
	b.prog.printf("memory: waiting for %d sessions", cfg.Sessions)
	t := time.NewTimer(upTimeout)
	defer t.Stop()
	for _, up := range ups {
		select {
		case <-up:
			cs.up++
		case <-exited:
			return cs, errors.New("memory: server exited")
		case <-ctx.Done():
			return cs, ctx.Err()
		case <-t.C:
			return cs, fmt.Errorf("memory: %d of %d sessions up within %v", cs.up, len(ups), upTimeout)
		}
	}
	return cs, nil
}

// startTraffic starts one reader per flow socket and one sender that sends
// on every flow rate times a second, spread over ten slots.
func (cs *clientSet) startTraffic(ctx context.Context, size, rate int, epoch time.Time) {
	for _, c := range cs.flows {
		cs.traffic.Add(1)
		go func() {
			defer cs.traffic.Done()
			buf := make([]byte, size+1)
			for {
				if _, _, err := c.ReadFromUDPAddrPort(buf); err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					continue
				}
				cs.echoed.Add(1)
			}
		}()
	}
	cs.traffic.Add(1)
	go func() {
		defer cs.traffic.Done()
		const slots = 10
		tick := time.NewTicker(time.Second / time.Duration(rate*slots))
		defer tick.Stop()
		buf := make([]byte, size)
		var seq uint64
		for slot := 0; ; slot = (slot + 1) % slots {
			select {
			case <-ctx.Done():
				return
			case <-cs.stopped:
				return
			case <-tick.C:
			}
			for i := slot; i < len(cs.flows); i += slots {
				header{kind: kindEcho, seq: seq, sent: int64(time.Since(epoch))}.put(buf)
				seq++
				if _, err := cs.flows[i].WriteToUDPAddrPort(buf, cs.dsts[i]); err == nil {
					cs.sent.Add(1)
				}
			}
		}
	}()
}

// stopTraffic stops the sender; readers go on until stop.
func (cs *clientSet) stopTraffic() { cs.once.Do(func() { close(cs.stopped) }) }

// stop ends the traffic and the clients and waits for all of it.
func (cs *clientSet) stop() {
	if cs == nil {
		return
	}
	cs.stopTraffic()
	for _, c := range cs.flows {
		c.Close()
	}
	cs.traffic.Wait()
	cs.cancel()
	cs.wg.Wait()
}

// freePort returns a UDP port on loopback that was free a moment ago.
func freePort() (int, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, fmt.Errorf("memory: free port: %w", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// procMemory reads a process's VmRSS and VmHWM, in MiB.
func procMemory(pid int) (rss, hwm float64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("read process memory: %w", err)
	}
	defer f.Close()
	return parseStatus(f)
}

// parseStatus reads VmRSS and VmHWM (in kB) from a /proc/PID/status text.
func parseStatus(r io.Reader) (rss, hwm float64, err error) {
	var haveRSS, haveHWM bool
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 64)
		if err != nil {
			return 0, 0, fmt.Errorf("bad %s line %q: %w", name, sc.Text(), err)
		}
		if name == "VmRSS" {
			rss, haveRSS = kb/1024, true
		} else {
			hwm, haveHWM = kb/1024, true
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("read process memory: %w", err)
	}
	if !haveRSS || !haveHWM {
		return 0, 0, errors.New("no VmRSS or VmHWM in process status")
	}
	return rss, hwm, nil
}

// limitedBuffer keeps the first 4 KiB written to it; safe for concurrent
// use.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := 4096 - l.buf.Len(); room > 0 {
		l.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
