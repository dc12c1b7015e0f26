//go:build linux

package netlab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// stopGrace is how long Stop and cleanup wait after SIGTERM before
	// sending SIGKILL.
	stopGrace = 3 * time.Second
	// killWait bounds the wait for a process after SIGKILL.
	killWait = 10 * time.Second
	// maxOutput bounds the output kept per process; older output is dropped.
	maxOutput = 4 << 20
)

// Proc is a background process running inside a namespace, started by
// NS.Start. Its stdout and stderr go to one in-memory buffer. It runs in a
// process group of its own, and signals go to the whole group. The lab stops
// it at cleanup; if the test process dies, the kernel kills it.
type Proc struct {
	desc string // command line, for messages
	ns   string // namespace name
	cmd  *exec.Cmd
	out  *outBuffer

	done chan struct{} // closed once the process has been waited for
	err  error         // result of Wait; written before done is closed
}

// Start runs name with args in the background inside the namespace. Its
// output is captured (see Proc.Output). The process is stopped with
// SIGTERM, then SIGKILL after a grace period, when t's cleanup runs or when
// the lab is cleaned up, whichever comes first. A name without a slash is
// looked up on PATH first, so a missing program fails the test at once.
func (n *NS) Start(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	return n.StartEnv(t, nil, name, args...)
}

// StartEnv is Start with extra environment variables ("KEY=value") added to
// the test process's environment.
func (n *NS) StartEnv(t testing.TB, env []string, name string, args ...string) *Proc {
	t.Helper()
	return n.start(t, quoteCmd(name, args), env, name, args)
}

// start starts the process; desc names it in messages.
func (n *NS) start(t testing.TB, desc string, env []string, name string, args []string) *Proc {
	t.Helper()
	path := name
	if !strings.Contains(name, "/") {
		p, err := exec.LookPath(name)
		if err != nil {
			t.Fatalf("netlab: start %s in %s: %v", name, n.Name, err)
		}
		path = p
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, path}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	out := &outBuffer{}
	cmd.Stdout = out
	cmd.Stderr = out
	// Pdeathsig kills the process if the test binary dies without cleanup.
	// (It fires when the starting OS thread exits; Go only ends threads
	// whose goroutine exits while locked to them.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Children that inherit the output pipe must not hold Wait up forever.
	cmd.WaitDelay = 2 * time.Second
	p := &Proc{
		desc: desc,
		ns:   n.Name,
		cmd:  cmd,
		out:  out,
		done: make(chan struct{}),
	}
	// Start and register under the lab's lock so cleanup cannot miss it.
	l := n.lab
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		t.Fatalf("netlab: start %s in %s: the lab was already cleaned up", p.desc, n.Name)
	}
	if err := cmd.Start(); err != nil {
		l.mu.Unlock()
		t.Fatalf("netlab: start %s in %s: %v", p.desc, n.Name, err)
	}
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.terminate(syscall.SIGTERM, stopGrace) })
	return p
}

// Pid returns the process id. The process is the named program itself:
// `ip netns exec` replaces itself with it.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Output returns everything the process has written to stdout and stderr
// so far. It is safe to call at any time from any goroutine.
func (p *Proc) Output() string { return p.out.String() }

// Done returns a channel closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM to the process group, waits up to a grace period, then
// sends SIGKILL, and returns the result of waiting for the process: nil for
// exit status 0, otherwise an error wrapping *exec.ExitError. A process that
// already exited just returns that result. Stop is safe to call repeatedly.
func (p *Proc) Stop() error {
	p.terminate(syscall.SIGTERM, stopGrace)
	return p.exitErr()
}

// Signal sends sig to the process group, unless the process has exited.
func (p *Proc) Signal(sig syscall.Signal) { p.signalGroup(sig) }

// Kill9 sends SIGKILL to the process group and waits for the process.
func (p *Proc) Kill9() {
	p.terminate(syscall.SIGKILL, 0)
}

// WaitOutput waits up to timeout until the process's output contains
// substr, and fails the test, showing the output, if it does not or if the
// process exits first.
func (p *Proc) WaitOutput(t testing.TB, substr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if strings.Contains(p.Output(), substr) {
			return
		}
		if p.Exited() {
			// Output may have arrived just before the exit.
			if strings.Contains(p.Output(), substr) {
				return
			}
			t.Fatalf("netlab: %s in %s exited (%v) before printing %q; output:\n%s", p.desc, p.ns, p.err, substr, tail(p.Output(), 8<<10))
		}
		if time.Now().After(deadline) {
			t.Fatalf("netlab: %s in %s did not print %q within %v; output:\n%s", p.desc, p.ns, substr, timeout, tail(p.Output(), 8<<10))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// terminate signals the process group with sig and waits; unless sig is
// SIGKILL, it sends SIGKILL after grace. Every wait is bounded.
func (p *Proc) terminate(sig syscall.Signal, grace time.Duration) {
	if p.Exited() {
		return
	}
	p.signalGroup(sig)
	if sig != syscall.SIGKILL {
		timer := time.NewTimer(grace)
		select {
		case <-p.done:
			timer.Stop()
			return
		case <-timer.C:
		}
		p.signalGroup(syscall.SIGKILL)
	}
	timer := time.NewTimer(killWait)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
	}
}

// signalGroup signals the process group while its leader has not been
// reaped, so the group id cannot belong to anyone else.
func (p *Proc) signalGroup(sig syscall.Signal) {
	if p.Exited() {
		return
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); errors.Is(err, syscall.ESRCH) {
		_ = p.cmd.Process.Signal(sig)
	}
}

// exitErr returns the result of waiting for the process, with context.
func (p *Proc) exitErr() error {
	if !p.Exited() {
		return fmt.Errorf("%s in %s: still running after SIGKILL", p.desc, p.ns)
	}
	if p.err != nil {
		return fmt.Errorf("%s in %s: %w", p.desc, p.ns, p.err)
	}
	return nil
}

// state describes the process state for messages.
func (p *Proc) state() string {
	if !p.Exited() {
		return "running"
	}
	if p.err != nil {
		return "exited: " + p.err.Error()
	}
	return "exited: status 0"
}

// outBuffer is a concurrency-safe output buffer that keeps at most
// maxOutput bytes, dropping the oldest half when full.
type outBuffer struct {
	mu      sync.Mutex
	buf     []byte
	dropped bool
}

func (b *outBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > maxOutput {
		keep := b.buf[len(b.buf)-maxOutput/2:]
		b.buf = append(make([]byte, 0, maxOutput), keep...)
		b.dropped = true
	}
	return len(p), nil
}

func (b *outBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped {
		return "[earlier output dropped]\n" + string(b.buf)
	}
	return string(b.buf)
}
