package peer

import (
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mptunnel/mptunnel/internal/metrics"
	"github.com/mptunnel/mptunnel/internal/ratelog"
	"github.com/mptunnel/mptunnel/internal/sched"
	"github.com/mptunnel/mptunnel/internal/udpio"
	"github.com/mptunnel/mptunnel/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestFollow: a path moves to a new address only after a packet newer than
// its latest came from there and the address answered the probe sent to it.
func TestFollow(t *testing.T) {
	now := time.Unix(1000, 0)
	home := netip.MustParseAddrPort("192.0.2.1:4000")
	away := netip.MustParseAddrPort("198.51.100.7:53")
	p := NewPath(0, "", nil, home, time.Second, now)
	p.Heard(62, 100) // the path's latest packet: counter 100
	probe := wire.Message{Kind: wire.MsgProbe, Probe: wire.Probe{Path: 0}}

	// Held back and sent from elsewhere: older, refused.
	if moved, refused, ch := p.Follow(probe, 99, away, time.Second, now); moved || !refused || ch != nil {
		t.Fatalf("older packet: moved %v refused %v challenge %v", moved, refused, ch)
	}
	// Newer: the address is challenged, once a probe interval.
	_, _, ch := p.Follow(probe, 101, away, time.Second, now)
	if ch == nil {
		t.Fatal("no challenge for a newer packet from a new address")
	}
	if _, _, again := p.Follow(probe, 102, away, time.Second, now.Add(time.Millisecond)); again != nil {
		t.Fatal("a second challenge within a probe interval")
	}
	elsewhere := netip.MustParseAddrPort("203.0.113.9:7")
	if _, _, again := p.Follow(probe, 103, elsewhere, time.Second, now.Add(2*time.Millisecond)); again != nil {
		t.Fatal("a second challenge within a probe interval, to another address")
	}
	// A reply that does not answer the challenge moves nothing.
	reply := wire.Message{Kind: wire.MsgProbeReply, Probe: wire.Probe{Path: 0, Seq: ch.Seq + 1}}
	if moved, _, _ := p.Follow(reply, 104, away, time.Second, now); moved || p.Addr() != home {
		t.Fatal("moved on a reply to another probe")
	}
	// The answer to it does.
	reply.Probe.Seq = ch.Seq
	if moved, _, _ := p.Follow(reply, 105, away, time.Second, now); !moved || p.Addr() != away || !p.Proven() {
		t.Fatalf("not moved on the challenge's answer: at %s, proven %v", p.Addr(), p.Proven())
	}
}

// countConn is a Conn that counts its writes and what they carried.
type countConn struct {
	udpio.Conn
	writes, msgs int
}

func (c *countConn) WriteBatch(msgs []udpio.Msg) (int, error) {
	c.writes++
	c.msgs += len(msgs)
	return len(msgs), nil
}

// TestSpreader: paths that share a socket get one write between them, paths
// with sockets of their own one each; only proven paths carry packets once
// one is.
func TestSpreader(t *testing.T) {
	now := time.Now()
	sc, err := sched.New(sched.Redundant, sched.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var cnt metrics.Counters
	s := NewSpreader(sc, Writer{Cnt: &cnt, Warn: &ratelog.Logger{}})
	shared := &countConn{}
	addr := netip.MustParseAddrPort("192.0.2.1:4000")
	var paths []*Path
	for i := range 3 {
		paths = append(paths, NewPath(uint8(i), "", shared, addr, time.Second, now))
	}
	pkts := [][]byte{make([]byte, 100), make([]byte, 100)}
	s.Send(paths, pkts, true, nil, now)
	if shared.writes != 1 || shared.msgs != 6 {
		t.Fatalf("shared socket: %d writes of %d packets, want 1 of 6", shared.writes, shared.msgs)
	}
	for _, p := range paths {
		if p.TxPackets.Load() != 2 {
			t.Fatalf("path %d counted %d packets, want 2", p.ID, p.TxPackets.Load())
		}
	}
	// Once one path has proven its address, only it carries replies.
	paths[1].SetProven()
	s.Send(paths, pkts, true, nil, now)
	if shared.msgs != 8 || paths[1].TxPackets.Load() != 4 || paths[0].TxPackets.Load() != 2 {
		t.Fatalf("after one path proved itself: %d packets written, path 1 %d, path 0 %d", shared.msgs, paths[1].TxPackets.Load(), paths[0].TxPackets.Load())
	}
	// An unproven path from which traffic came takes up to three times
	// its bytes (QUIC's anti-amplification bound), and no more.
	paths[0].CountRx(150)
	s.Send(paths, pkts, true, nil, now)
	if got := paths[0].TxPackets.Load(); got != 4 {
		t.Fatalf("unproven path within its bound: %d packets, want 4", got)
	}
	s.Send(paths, pkts, true, nil, now)
	if got := paths[0].TxPackets.Load(); got != 4 {
		t.Fatalf("unproven path past its bound (%d bytes sent for 150 received): %d packets, want still 4", paths[0].TxBytes.Load(), got)
	}
	// Sockets of their own: one write each.
	own := []*countConn{{}, {}}
	var mine []*Path
	for i, c := range own {
		p := NewPath(uint8(i), "p", c, addr, time.Second, now)
		p.SetProven()
		mine = append(mine, p)
	}
	s.Send(mine, pkts, true, nil, now)
	for i, c := range own {
		if c.writes != 1 || c.msgs != 2 {
			t.Fatalf("path %d: %d writes of %d packets, want 1 of 2", i, c.writes, c.msgs)
		}
	}
	if got := cnt.TxPackets.Load(); got != 18 {
		t.Fatalf("%d packets counted sent, want 18", got)
	}
}
