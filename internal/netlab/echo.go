//go:build linux

package netlab

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	// EchoEnv, when set to a UDP address, makes MaybeRunEcho run a UDP echo
	// server on that address instead of returning.
	EchoEnv = "MPTUNNEL_NETLAB_ECHO"
	// ProbeEnv, when set to a UDP address, makes MaybeRunEcho send one
	// datagram there, wait for it to come back, and exit 0 if it did.
	ProbeEnv = "MPTUNNEL_NETLAB_PROBE"
	// probeDataEnv carries the probe payload in hex.
	probeDataEnv = "MPTUNNEL_NETLAB_PROBE_DATA"
	// probeTimeoutEnv carries the probe's wait, in time.Duration syntax.
	probeTimeoutEnv = "MPTUNNEL_NETLAB_PROBE_TIMEOUT"

	// echoReady is what the echo server prints once it is bound.
	echoReady = "netlab echo: listening on "
	// maxDatagram is the largest UDP payload handled.
	maxDatagram = 65535
)

// Main is a ready-made TestMain body for packages that use netlab: it calls
// MaybeRunEcho, runs the tests, removes the binaries built by BuildBinaries
// and exits with the tests' status.
//
//	func TestMain(m *testing.M) { netlab.Main(m) }
func Main(m *testing.M) {
	MaybeRunEcho()
	code := m.Run()
	RemoveBuilds()
	os.Exit(code)
}

// MaybeRunEcho lets the test binary act as the lab's echo server, probe
// client or stream client. A test package's TestMain must call it before
// anything else. If EchoEnv is set, it serves UDP echo on that address
// until SIGTERM or SIGINT and exits 0 (1 if it cannot listen); if ProbeEnv
// is set, it runs one probe and exits 0 on success, 1 otherwise; if
// StreamEnv is set, it runs the stream NS.StartStream configured, prints
// its report and exits 0 (1 if it cannot run); it serves as a relay when
// MaybeRunRelay's variable is set. Without any of these variables it
// returns at once.
func MaybeRunEcho() {
	MaybeRunRelay()
	if addr := os.Getenv(EchoEnv); addr != "" {
		os.Exit(runEcho(addr))
	}
	if addr := os.Getenv(ProbeEnv); addr != "" {
		os.Exit(runProbe(addr, os.Getenv(probeDataEnv), os.Getenv(probeTimeoutEnv)))
	}
	if addr := os.Getenv(StreamEnv); addr != "" {
		os.Exit(runStreamFromEnv(addr))
	}
}

// runEcho serves UDP echo on addr until SIGTERM or SIGINT.
func runEcho(addr string) int {
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "netlab echo: %v\n", err)
		return 1
	}
	stopped := stopSignal()
	go func() {
		<-stopped
		conn.Close()
	}()
	fmt.Fprintf(os.Stdout, "%s%s\n", echoReady, conn.LocalAddr())
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			select {
			case <-stopped:
				return 0
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return 0
			}
			fmt.Fprintf(os.Stderr, "netlab echo: read: %v\n", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if _, err := conn.WriteTo(buf[:n], from); err != nil {
			fmt.Fprintf(os.Stderr, "netlab echo: write to %v: %v\n", from, err)
		}
	}
}

// stopSignal returns a channel closed on the first SIGTERM or SIGINT.
func stopSignal() <-chan struct{} {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	stop := make(chan struct{})
	go func() {
		<-sigs
		close(stop)
	}()
	return stop
}

// runProbe sends the hex-encoded payload to addr and waits for the same
// bytes to come back.
func runProbe(addr, dataHex, timeoutStr string) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "netlab probe: "+format+"\n", args...)
		return 1
	}
	payload, err := hex.DecodeString(dataHex)
	if err != nil {
		return fail("bad payload: %v", err)
	}
	timeout, err := time.ParseDuration(timeoutStr)
	if err != nil || timeout <= 0 {
		timeout = time.Second
	}
	conn, err := net.Dial("udp", addr)
	if err != nil {
		return fail("%v", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return fail("%v", err)
	}
	if _, err := conn.Write(payload); err != nil {
		return fail("send %d bytes to %s: %v", len(payload), addr, err)
	}
	buf := make([]byte, maxDatagram)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return fail("no echo of %d bytes from %s: %v", len(payload), addr, err)
		}
		if bytes.Equal(buf[:n], payload) {
			fmt.Fprintf(os.Stdout, "netlab probe: %d bytes echoed by %s\n", n, addr)
			return 0
		}
		// A late reply to some earlier probe cannot reach this fresh
		// socket, but keep reading until the deadline rather than fail on
		// anything unexpected.
		fmt.Fprintf(os.Stderr, "netlab probe: ignoring %d unexpected bytes\n", n)
	}
}

// testBinary returns the path of the running executable.
func testBinary(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("netlab: locate the test binary: %v", err)
	}
	return exe
}

// StartEcho starts a UDP echo server on addr (for example "0.0.0.0:2000" or
// "[::]:2000") inside the namespace and waits until it is bound. The server
// is this test binary run again with EchoEnv set, so the test package's
// TestMain must call MaybeRunEcho (or Main).
func (n *NS) StartEcho(t testing.TB, addr string) *Proc {
	t.Helper()
	p := n.start(t, "netlab echo on "+addr, reexecEnv(EchoEnv+"="+addr), testBinary(t), []string{"-test.run=^$"})
	p.waitStarted(t, echoReady, fmt.Sprintf("echo server on %s in %s", addr, n.Name), 20*time.Millisecond)
	return p
}

// waitStarted waits up to 15 s, looking every poll, until p, the test binary
// run again, prints ready; it fails the test, naming what p is, if p does
// not.
func (p *Proc) waitStarted(t testing.TB, ready, what string, poll time.Duration) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(p.Output(), ready) {
		if p.Exited() || time.Now().After(deadline) {
			if p.Exited() && strings.Contains(p.Output(), ready) {
				break
			}
			t.Fatalf("netlab: %s did not start (%s); does TestMain call netlab.MaybeRunEcho? output:\n%s",
				what, p.state(), tail(p.Output(), 8<<10))
		}
		time.Sleep(poll)
	}
}

// Probe sends payload (0 to 65507 bytes) in one UDP datagram from the
// namespace to addr and waits up to timeout for the identical datagram to
// come back. It returns nil if it did, otherwise an error with the probe's
// output. Like StartEcho it runs the test binary again, so TestMain must
// call MaybeRunEcho.
func (n *NS) Probe(t testing.TB, addr string, payload []byte, timeout time.Duration) error {
	t.Helper()
	env := reexecEnv(
		ProbeEnv+"="+addr,
		probeDataEnv+"="+hex.EncodeToString(payload),
		probeTimeoutEnv+"="+timeout.String(),
	)
	out, err := runCmd(context.Background(), env, "ip", "netns", "exec", n.Name, testBinary(t), "-test.run=^$")
	if err != nil {
		return fmt.Errorf("probe %s from %s: %w: %s", addr, n.Name, err, strings.TrimSpace(out))
	}
	if !strings.Contains(out, "netlab probe:") {
		return fmt.Errorf("probe %s from %s: the test binary ran no probe; does TestMain call netlab.MaybeRunEcho? output: %s",
			addr, n.Name, strings.TrimSpace(out))
	}
	return nil
}

// WaitEcho probes addr from the namespace, up to 500 ms per attempt, until
// a datagram comes back or timeout passes, and fails the test if none does.
// Use it to wait for a relay or echo path to become ready.
func (n *NS) WaitEcho(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for i := 0; ; i++ {
		err = n.Probe(t, addr, []byte(fmt.Sprintf("netlab wait %d", i)), 500*time.Millisecond)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("netlab: no echo from %s to %s within %v: %v", addr, n.Name, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// reexecEnv returns the environment additions for running the test binary
// again as a helper. Race-enabled binaries otherwise sleep a second at exit.
func reexecEnv(extra ...string) []string {
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	return append(extra, "GORACE="+gorace)
}
