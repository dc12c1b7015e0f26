package server

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/aead"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/peer"
	"github.com/mptunnel/mptunnel/internal/session"
	"github.com/mptunnel/mptunnel/internal/udpio"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// flowServer is a server on an in-memory network, not serving: its flow
// table is driven by hand, with a clock of the test's own. Its flows'
// sockets are closed, and their readers stopped, at cleanup.
func flowServer(t *testing.T, maxFlows int) (*Server, *sess) {
	t.Helper()
	key, err := handshake.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Listen(Config{Listen: "127.0.0.1:0", Target: "127.0.0.1:9", Key: key, MaxFlows: maxFlows,
		Net: &udpio.MemNet{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	st, err := session.New(handshake.Keys{}, aead.ChaCha20Poly1305, 7, 0)
	if err != nil {
		t.Fatal(err)
	}
	ss := &sess{index: 7, st: st, srv: s, flows: make(map[uint32]*flow)}
	ss.paths.Store(&[]*peer.Path{})
	s.sessions[ss.index] = ss
	t.Cleanup(func() {
		s.mu.Lock()
		s.closeSessionLocked(ss.index, ss)
		s.mu.Unlock()
		s.wg.Wait()
		s.Close()
	})
	return s, ss
}

// open is what a datagram for flow id does to ss's table at now: the flow,
// or nil. tg is the target the datagram names (nil: plain data).
func open(s *Server, ss *sess, id uint32, tg *wire.Target, now time.Time) *flow {
	ss.flowMu.Lock()
	defer ss.flowMu.Unlock()
	return s.flowLocked(ss, id, tg, now)
}

func flowIDs(ss *sess) map[uint32]bool {
	ss.flowMu.Lock()
	defer ss.flowMu.Unlock()
	ids := make(map[uint32]bool)
	for id := range ss.flows {
		ids[id] = true
	}
	return ids
}

func closed(f *flow) bool {
	f.waitMu.Lock()
	defer f.waitMu.Unlock()
	return f.closed
}

// TestEvictAtLimit: at the flow limit the least recently used idle flow
// makes room, its socket closed; when every flow is busy the new one is
// refused. A freed flow that names its target is told to the client, and
// plain data for it afterwards is dropped and counted, answered (at most
// every retell), and never opens a flow to the default target.
func TestEvictAtLimit(t *testing.T) {
	s, ss := flowServer(t, 2)
	t0 := time.Now()
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	f1 := open(s, ss, 1, nil, at(0))
	f2 := open(s, ss, 2, nil, at(500*time.Millisecond))
	if f1 == nil || f2 == nil || !f1.ready.Load() || !f2.ready.Load() {
		t.Fatal("flows within the limit not opened toward the default target")
	}
	// Flow 1 idle 1.2 s, flow 2 0.7 s: flow 1 makes room.
	if f := open(s, ss, 3, nil, at(1200*time.Millisecond)); f == nil {
		t.Fatal("flow 3 refused while flow 1 was idle")
	}
	if ids := flowIDs(ss); !ids[2] || !ids[3] || len(ids) != 2 || !closed(f1) || closed(f2) {
		t.Fatalf("flows %v, flow 1 closed %v, flow 2 closed %v: want flow 1 evicted and closed", ids, closed(f1), closed(f2))
	}
	if n := s.cnt.FlowsEvicted.Load(); n != 1 {
		t.Fatalf("%d evicted, want 1", n)
	}
	if n := ss.st.Sent(); n != 0 {
		t.Fatalf("%d messages to the client for a default target's flow, want none", n)
	}
	// Flows 2 and 3 both active within a second: the new one is refused.
	if f := open(s, ss, 4, nil, at(1300*time.Millisecond)); f != nil || s.cnt.FlowLimit.Load() != 1 {
		t.Fatalf("flow 4 opened (%v) or not counted (%d) while every flow was busy", f != nil, s.cnt.FlowLimit.Load())
	}

	// A named flow takes flow 2's place (flow 2 the least recent), and is
	// told open.
	tg := wire.Target{Addr: netip.MustParseAddr("127.0.0.1"), Port: 9}
	named := uint32(wire.FlowNamed | 5)
	f5 := open(s, ss, named, &tg, at(3*time.Second))
	if f5 == nil || !f5.ready.Load() || !closed(f2) || ss.st.Sent() != 1 {
		t.Fatalf("named flow: opened %v, flow 2 closed %v, %d messages sent; want it open, flow 2 evicted, told open", f5 != nil, closed(f2), ss.st.Sent())
	}
	// Flow 3 busy again: the named flow is the least recent idle one.
	ss.flows[3].act.Touch(at(9500 * time.Millisecond).UnixNano())
	if f := open(s, ss, 6, nil, at(10*time.Second)); f == nil || !closed(f5) {
		t.Fatal("the named flow did not make room")
	}
	if n := ss.st.Sent(); n != 2 {
		t.Fatalf("%d messages sent, want the client told the named flow was freed", n)
	}
	// Plain data for the freed named flow: dropped, counted, answered once
	// a retell, no flow made.
	for i, c := range []struct {
		d          time.Duration
		sent, lost uint64
	}{{10100 * time.Millisecond, 3, 1}, {10200 * time.Millisecond, 3, 2}, {10400 * time.Millisecond, 4, 3}} {
		if f := open(s, ss, named, nil, at(c.d)); f != nil {
			t.Fatalf("datagram %d: plain data opened a freed named flow", i)
		}
		if ss.st.Sent() != c.sent || s.cnt.UnknownFlow.Load() != c.lost {
			t.Fatalf("datagram %d: %d messages sent, %d dropped; want %d and %d", i, ss.st.Sent(), s.cnt.UnknownFlow.Load(), c.sent, c.lost)
		}
	}
	if ids := flowIDs(ss); len(ids) != 2 || !ids[3] || !ids[6] {
		t.Fatalf("flows %v, want 3 and 6", ids)
	}
	// Named again, it opens anew toward its target, from a new socket.
	if f := open(s, ss, named, &tg, at(12*time.Second)); f == nil || f == f5 || !f.ready.Load() {
		t.Fatal("the named flow did not open anew when it named its target again")
	}
	if n := s.cnt.FlowsFreed.Load(); n != 4 {
		t.Fatalf("%d flows freed, want the 4 evicted", n)
	}
}

// TestReclaimShort: the janitor frees a flow of one exchange after
// peer.ShortFlowTimeout idle, and an established one only after the flow
// timeout.
func TestReclaimShort(t *testing.T) {
	s, ss := flowServer(t, 16)
	t0 := time.Now()
	short := open(s, ss, 1, nil, t0)
	long := open(s, ss, 2, nil, t0)
	short.act.Out(1)
	short.act.In(1)
	long.act.Out(5)
	long.act.In(5)
	alive := func(now time.Time) {
		ss.lastRx.Store(now.UnixNano())
		s.expire(now)
	}
	alive(t0.Add(peer.ShortFlowTimeout - 10*time.Millisecond))
	if len(flowIDs(ss)) != 2 {
		t.Fatal("a flow freed before the short timeout")
	}
	alive(t0.Add(peer.ShortFlowTimeout + 10*time.Millisecond))
	if ids := flowIDs(ss); len(ids) != 1 || !ids[2] || !closed(short) {
		t.Fatalf("flows %v after the short timeout: want the one-exchange flow reclaimed", ids)
	}
	if s.cnt.FlowsReclaimed.Load() != 1 || s.cnt.FlowsFreed.Load() != 1 {
		t.Fatalf("reclaimed %d, freed %d; want 1 and 1", s.cnt.FlowsReclaimed.Load(), s.cnt.FlowsFreed.Load())
	}
	alive(t0.Add(peer.DefaultFlowTimeout + 10*time.Millisecond))
	if len(flowIDs(ss)) != 0 || !closed(long) {
		t.Fatal("the established flow outlived the flow timeout")
	}
	if s.cnt.FlowsReclaimed.Load() != 1 || s.cnt.FlowsFreed.Load() != 2 {
		t.Fatalf("reclaimed %d, freed %d; want 1 and 2", s.cnt.FlowsReclaimed.Load(), s.cnt.FlowsFreed.Load())
	}
}
