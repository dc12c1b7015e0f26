package peer

import (
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/mptunnel/mptunnel/internal/metrics"
	"github.com/mptunnel/mptunnel/internal/ratelog"
	"github.com/mptunnel/mptunnel/internal/sched"
	"github.com/mptunnel/mptunnel/internal/udpio"
)

// Writer writes batches on sockets and counts what could not go. Every
// write of either end, to a path, an application or a target, goes through
// one: a full send buffer drops at once (queue_full, logged at a bounded
// rate), never waits.
type Writer struct {
	Cnt  *metrics.Counters
	Warn *ratelog.Logger
}

// Write writes msgs on conn and returns how many went and their bytes; err
// is the write's error, already counted: queue_full (logged as full says,
// with attrs, key and value in turn) or send_errors.
func (w Writer) Write(conn udpio.Conn, msgs []udpio.Msg, full string, attrs ...string) (sent, bytes int, err error) {
	sent, bytes, err = udpio.Write(conn, msgs)
	switch {
	case err == nil:
	case errors.Is(err, udpio.ErrQueueFull):
		w.Cnt.QueueFull.Add(uint64(len(msgs) - sent))
		args := make([]any, len(attrs))
		for i, a := range attrs {
			args[i] = a
		}
		w.Warn.Warn("queue-full", full, args...)
	default:
		w.Cnt.SendErrors.Add(uint64(len(msgs) - sent))
	}
	return sent, bytes, err
}

// SendPath writes pkt on path p, counted on the path and as tunnel traffic.
func (w Writer) SendPath(p *Path, pkt []byte) {
	msg := [1]udpio.Msg{{Buf: pkt, Addr: p.Addr(), Local: p.Local()}}
	w.writePaths(p.conn, msg[:], []*Path{p}, []int{1}, nil)
}

// SendTo writes one packet to addr from local on conn, counted as tunnel
// traffic but on no path (handshake messages, challenges are counted by the
// caller).
func (w Writer) SendTo(conn udpio.Conn, pkt []byte, to netip.AddrPort, local netip.Addr) {
	msg := [1]udpio.Msg{{Buf: pkt, Addr: to, Local: local}}
	sent, bytes, _ := w.Write(conn, msg[:], "send buffer full: a handshake packet dropped")
	w.Cnt.TxPackets.Add(uint64(sent))
	w.Cnt.TxBytes.Add(uint64(bytes))
}

// writePaths writes msgs, which go on paths in turn (count[i] of them on
// paths[i], bytes[i] bytes; nil to add up), on conn, which they all share.
// With one path, its counters move by what was sent; with several, by what
// was given to the socket, which cannot say which path's packets it
// dropped.
func (w Writer) writePaths(conn udpio.Conn, msgs []udpio.Msg, paths []*Path, count, bytes []int) {
	name := ""
	if len(paths) == 1 {
		name = paths[0].Name
	}
	sent, b, _ := w.Write(conn, msgs, "path send buffer full: packets dropped (more is sent than the path's link takes)", "path", name)
	w.Cnt.TxPackets.Add(uint64(sent))
	w.Cnt.TxBytes.Add(uint64(b))
	if len(paths) == 1 {
		paths[0].CountTxBatch(sent, b)
		return
	}
	for i, p := range paths {
		p.CountTxBatch(count[i], bytes[i])
	}
}

// Spreader puts sealed packets on a session's paths as its scheduling mode
// says, one write per socket: a client's paths have one each, a server's
// share one. It is safe for concurrent use; its lock is taken after an FEC
// sender's.
type Spreader struct {
	W Writer

	mu     sync.Mutex
	sched  *sched.Scheduler
	spaths []sched.Path
	per    [][]int
	live   []*Path
	out    []udpio.Msg
	run    []*Path // the paths of one socket's write, with their counts
	count  []int
	bytes  []int
}

// NewSpreader returns a Spreader for the scheduler sc, writing with w.
func NewSpreader(sc *sched.Scheduler, w Writer) *Spreader {
	return &Spreader{sched: sc, W: w}
}

// Mode returns the scheduling mode.
func (s *Spreader) Mode() sched.Mode { return s.sched.Mode() }

// Amplification bounds what goes on a path that has not proven its address
// yet: at most this many times the bytes that came from there, as QUIC
// bounds what it sends to an address it has not validated.
const Amplification = 3

// Send puts pkts on paths: on every usable one when all is set (packets
// that must not be lost, such as a flow's first), else as the mode picks.
// A path that has not proven its address takes them only while what it was
// sent stays within Amplification times what came from it, or when no path
// of the session has proven its address yet (its first round trip).
// preferred, when set, is the path the peer's latest data came by first.
func (s *Spreader) Send(paths []*Path, pkts [][]byte, all bool, preferred *Path, now time.Time) {
	if len(pkts) == 0 || len(paths) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	proven := false
	for _, p := range paths {
		proven = proven || p.Proven()
	}
	var size uint64
	for _, pkt := range pkts {
		size += uint64(len(pkt))
	}
	s.live = s.live[:0]
	for _, p := range paths {
		if !proven || p.Proven() || p.TxBytes.Load()+size <= Amplification*p.RxBytes.Load() {
			s.live = append(s.live, p)
		}
	}
	live := s.live
	s.spaths = s.spaths[:0]
	for _, p := range live {
		sp := sched.FromStats(p.Stats(), p.Suspect(now))
		sp.Priority = p.Priority()
		sp.Preferred = p == preferred
		s.spaths = append(s.spaths, sp)
	}
	for len(s.per) < len(live) {
		s.per = append(s.per, nil)
	}
	var per [][]int
	if all {
		per = sched.SpreadAll(s.spaths, len(pkts), s.per[:len(live)])
	} else {
		per = s.sched.Spread(s.spaths, len(pkts), now, s.per[:len(live)])
	}
	// One write per socket: the paths of a socket are taken together.
	s.out, s.run, s.count, s.bytes = s.out[:0], s.run[:0], s.count[:0], s.bytes[:0]
	var conn udpio.Conn
	for i, p := range live {
		if len(per[i]) == 0 {
			continue
		}
		if conn != nil && p.conn != conn {
			s.W.writePaths(conn, s.out, s.run, s.count, s.bytes)
			s.out, s.run, s.count, s.bytes = s.out[:0], s.run[:0], s.count[:0], s.bytes[:0]
		}
		conn = p.conn
		to, local := p.Addr(), p.Local()
		n := 0
		for _, k := range per[i] {
			s.out = append(s.out, udpio.Msg{Buf: pkts[k], Addr: to, Local: local})
			n += len(pkts[k])
		}
		s.run, s.count, s.bytes = append(s.run, p), append(s.count, len(per[i])), append(s.bytes, n)
	}
	if conn != nil {
		s.W.writePaths(conn, s.out, s.run, s.count, s.bytes)
	}
}
