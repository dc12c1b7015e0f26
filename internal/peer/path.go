package peer

import (
	"net/netip"
	"sync/atomic"
	"time"

	pathpkg "github.com/mptunnel/mptunnel/internal/path"
	"github.com/mptunnel/mptunnel/internal/udpio"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// Path is one path of a session as either end keeps it: its health and
// counters (path.Link), the socket it is written on and the far end its
// packets go to. A client's paths each have a socket of their own and a
// fixed far end; a server's share its one socket and follow the client when
// it moves (Follow).
type Path struct {
	*pathpkg.Link
	// Name is how logs name the path: the remote a client was configured
	// with; empty on a server, whose logs name the session and path ID.
	Name string

	conn   udpio.Conn
	addr   atomic.Pointer[netip.AddrPort] // replaced, never changed in place
	local  atomic.Pointer[netip.Addr]     // our address its packets leave from (invalid: any)
	prio   atomic.Int64
	proven atomic.Bool
	fastTx uint64 // packets sent as of the last fast-probe round; the driver's own

	// The read goroutine's own: newest is one more than the largest
	// counter of an authentic packet from addr (0: none yet); cand is an
	// address the client seems to have moved to, and candSeq the probe
	// sent there to prove it, at candAt.
	newest  uint64
	cand    netip.AddrPort
	candSeq uint32
	candAt  time.Time
}

// NewPath returns path id, written on conn toward addr, in the Probing state.
// Its priority is its ID until SetPriority.
func NewPath(id uint8, name string, conn udpio.Conn, addr netip.AddrPort, probeEvery time.Duration, now time.Time) *Path {
	p := &Path{Link: pathpkg.NewLink(id, pathpkg.Params{ProbeInterval: probeEvery}, now), Name: name, conn: conn}
	p.addr.Store(&addr)
	p.local.Store(&netip.Addr{})
	p.prio.Store(int64(id))
	return p
}

// Successor returns a new path with p's ID, name, socket, addresses,
// priority and proof, for the session a rekey makes: its counters and
// health start afresh, as the new session's counters do.
func (p *Path) Successor(probeEvery time.Duration, now time.Time) *Path {
	q := NewPath(p.ID, p.Name, p.conn, p.Addr(), probeEvery, now)
	q.local.Store(p.local.Load())
	q.prio.Store(p.prio.Load())
	q.proven.Store(p.proven.Load())
	return q
}

// Conn returns the socket the path is written on.
func (p *Path) Conn() udpio.Conn { return p.conn }

// Addr returns where the path's packets go.
func (p *Path) Addr() netip.AddrPort { return *p.addr.Load() }

// SetAddr sends the path's packets to a from now on.
func (p *Path) SetAddr(a netip.AddrPort) { p.addr.Store(&a) }

// Local returns our address the path's packets leave from; invalid for
// any.
func (p *Path) Local() netip.Addr { return *p.local.Load() }

// SetLocal makes the path's packets leave from a, the address its packets
// arrive at (a multi-homed server answers from where it was written to). An
// invalid a changes nothing.
func (p *Path) SetLocal(a netip.Addr) {
	if a.IsValid() && *p.local.Load() != a {
		p.local.Store(&a)
	}
}

// Priority returns the path's place in failover order: lower first.
func (p *Path) Priority() int { return int(p.prio.Load()) }

// SetPriority sets the path's failover priority.
func (p *Path) SetPriority(prio int) { p.prio.Store(int64(prio)) }

// Proven reports whether the far end answered a probe sent to the path's
// address: replies go only on proven paths (on every path while none is).
func (p *Path) Proven() bool { return p.proven.Load() }

// SetProven marks the path's address proven: a client's are from the start.
func (p *Path) SetProven() { p.proven.Store(true) }

// Heard counts an authentic packet of n bytes, sealed with counter ctr, from
// the path's address. The read goroutine alone calls it.
func (p *Path) Heard(n int, ctr uint64) {
	p.CountRx(n)
	if ctr >= p.newest {
		p.newest = ctr + 1
	}
}

// Follow decides what an authentic probe or probe reply m for this path,
// sealed with counter ctr, that came from addr (not the path's address)
// means; the read goroutine alone calls it, with the session's path lock.
// The path moves to addr when m answers the challenge sent there, and Follow
// reports true. An older packet than the newest from the path's address
// moves nothing (refused is true). Otherwise addr is asked to prove itself,
// at most once a probe interval: challenge is then the probe to send there.
// So a packet held back on the path and sent later from elsewhere moves
// nothing, and draws at most one probe-sized packet a probe interval
// (docs/PROTOCOL.md, Roaming).
func (p *Path) Follow(m wire.Message, ctr uint64, addr netip.AddrPort, probeEvery time.Duration, now time.Time) (moved, refused bool, challenge *wire.Probe) {
	if m.Kind == wire.MsgProbeReply && p.cand == addr && m.Probe.Seq == p.candSeq && !p.candAt.IsZero() {
		p.SetAddr(addr)
		p.newest = ctr + 1
		p.cand, p.candAt = netip.AddrPort{}, time.Time{}
		p.proven.Store(true)
		return true, false, nil
	}
	if ctr < p.newest {
		return false, true, nil
	}
	if p.candAt.IsZero() || now.Sub(p.candAt) >= probeEvery {
		// One challenge a probe interval for the path, whatever address
		// asks: held-back packets sent from many addresses draw no more.
		pr := p.Probe(now)
		p.cand, p.candAt, p.candSeq = addr, now, pr.Seq
		return false, false, &pr
	}
	return false, false, nil
}
