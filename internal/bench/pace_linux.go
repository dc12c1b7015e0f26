package bench

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pacer sleeps with microsecond precision. The runtime's timers sleep at
// least a millisecond when the process is otherwise idle (epoll_wait takes
// milliseconds), which would turn a paced 10,000 datagrams a second into
// bursts of ten and measure queueing instead of latency. A pacer waits on a
// periodic timerfd instead, armed once: the runtime's poller wakes the
// goroutine at every tick with the kernel's high-resolution timer precision,
// no thread or processor is held while it waits, and no system call re-arms
// it (arming a timer is costly on some virtual machines).
type pacer struct {
	f  *os.File
	fd int // the timerfd, kept apart: f.Fd would make it blocking
	rc syscall.RawConn
}

// newPacer returns a pacer ticking every interval, or one that falls back to
// time.Sleep when the kernel offers no timerfd.
func newPacer(interval time.Duration) *pacer {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return &pacer{}
	}
	f := os.NewFile(uintptr(fd), "bench-pacer")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return &pacer{}
	}
	iv := unix.NsecToTimespec(int64(max(interval, time.Microsecond)))
	spec := unix.ItimerSpec{Value: iv, Interval: iv}
	if err := unix.TimerfdSettime(fd, 0, &spec, nil); err != nil {
		f.Close()
		return &pacer{}
	}
	return &pacer{f: f, fd: fd, rc: rc}
}

// sleep waits for the next tick, which is at most an interval away, or for
// d with the runtime's timers when there is no timerfd.
func (p *pacer) sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	if p.f == nil || p.wait() != nil {
		time.Sleep(d)
	}
}

// wait blocks in the poller until the timer has ticked.
func (p *pacer) wait() error {
	var buf [8]byte
	var rerr error
	err := p.rc.Read(func(fd uintptr) bool {
		_, rerr = unix.Read(int(fd), buf[:])
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return fmt.Errorf("pacer: wait: %w", err)
	}
	if rerr != nil {
		return fmt.Errorf("pacer: read: %w", rerr)
	}
	return nil
}

func (p *pacer) stop() {
	if p.f != nil {
		p.f.Close()
		p.f = nil
	}
}
