package peer

import (
	"errors"
	"net/netip"
	"time"

	"github.com/mptunnel/mptunnel/internal/reorder"
	"github.com/mptunnel/mptunnel/internal/session"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// Endpoint is a role as the receive path sees it.
type Endpoint interface {
	// Session returns the session a transport packet's receiver index
	// names, or nil when there is none.
	Session(receiver uint32, now time.Time) Session
	// Handshake takes a handshake packet: an initiation on a server, a
	// response, a cookie reply or a stateless reset on a client.
	Handshake(pkt []byte, from netip.AddrPort, local netip.Addr, now time.Time)
	// Unknown is told of a well-formed transport packet of size bytes,
	// from from to our address local, whose receiver index names no
	// session: a server answers it with a stateless reset, at a bounded
	// rate, on the path it came by; a client does nothing.
	Unknown(receiver uint32, size int, from netip.AddrPort, local netip.Addr, now time.Time)
}

// Session is a role's session as the receive path sees it. Its methods run
// on the reading goroutine, one packet at a time.
type Session interface {
	// State is the session's keys, window and buffers.
	State() *session.State
	// PathFrom returns the path whose packets come from addr, or nil.
	PathFrom(addr netip.AddrPort) *Path
	// Deliver is where datagrams the session puts back together go
	// (fragments, FEC shards, the reorder buffer), each valid only during
	// the call. It is made once: it is read for every packet.
	Deliver() func(flow uint32, datagram []byte)
	// Authentic is told of every packet that authenticated, by path p (nil
	// when not known), before it is acted on, with its kind.
	Authentic(p *Path, kind byte, now time.Time)
	// ProbePath returns the path a probe or probe reply m, sealed with
	// counter ctr and from addr, is for when it is not p (p is nil, or is
	// another path's), or nil to ignore it: a server learns or follows the
	// client's paths, a client ignores such a probe.
	ProbePath(m wire.Message, p *Path, ctr uint64, from netip.AddrPort, now time.Time, sl *session.Sealer) *Path
	// Data takes a whole datagram of flow, which stays valid until the
	// reading goroutine's next batch.
	Data(p *Path, flow uint32, body []byte, now time.Time)
	// Message takes the kinds only one role speaks: flow fates, data-to,
	// open, rekey, close.
	Message(p *Path, m wire.Message, now time.Time)
	// Resend puts packets the peer asked for again on every usable path;
	// they stay valid only during the call.
	Resend(pkts [][]byte)
}

// Receiver acts on what one reading goroutine gets from its socket; it holds
// the goroutine's scratch. Call Packet for each packet of a batch, then
// EndBatch.
type Receiver struct {
	W     Writer
	o     session.Opener
	sl    *session.Sealer // probe replies, challenges
	heard []*Path         // paths that carried other than probes this batch
	again []byte          // packets asked for again, back to back
	start []int           // where each begins
	pkts  [][]byte        // and each of them

	// A datagram put back together from the packet at hand takes that
	// packet's place in the reorder buffer, when there is one.
	push    func(flow uint32, d []byte)
	ro      *reorder.Timed
	seq     uint64
	pushed  bool
	deliver func(flow uint32, d []byte)
	now     time.Time

	// The packet at hand, when its session uses parity: it may rebuild
	// one (a parity) or let a waiting parity rebuild one (a member).
	rs   Session
	rst  *session.State
	rctr uint64
	rmsg wire.Message
}

// NewReceiver returns a Receiver that answers probes and counts with w.
func NewReceiver(w Writer) *Receiver {
	r := &Receiver{W: w, sl: session.NewSealer()}
	r.push = r.pushWhole
	return r
}

// pushWhole puts a datagram put back together from the packet at hand in
// the reorder buffer, in that packet's place: the first one only, as a
// place holds one datagram (FEC may rebuild several from one shard; the
// others go on at once).
func (r *Receiver) pushWhole(flow uint32, d []byte) {
	if r.pushed {
		r.deliver(flow, d)
		return
	}
	r.pushed = true
	r.ro.Push(r.seq, flow, d, r.now)
}

// Sealer returns the goroutine's sealer, for what a role answers itself.
func (r *Receiver) Sealer() *session.Sealer { return r.sl }

// Packet acts on one packet that came from from to our address local
// (invalid when unknown) at now. p is the path it came by when the socket
// says so (a client's path has a socket of its own); nil on a server, whose
// one socket takes every path.
func (r *Receiver) Packet(ep Endpoint, pkt []byte, p *Path, from netip.AddrPort, local netip.Addr, now time.Time) {
	r.packet(ep, pkt, p, from, local, now)
	st := r.rst
	if st == nil {
		return
	}
	r.rst = nil
	var (
		ctr   uint64
		plain []byte
		ok    bool
	)
	if r.rmsg.Kind == wire.MsgParity {
		ctr, plain, ok = st.Rebuild(r.rmsg)
	} else {
		ctr, plain, ok = st.Retry(r.rctr)
	}
	for ok {
		r.rebuilt(r.rs, st, ctr, plain, now)
		// A packet rebuilt may let a waiting parity rebuild another.
		ctr, plain, ok = st.Retry(ctr)
	}
}

// rebuilt acts on the plaintext of the peer's packet ctr that parity
// rebuilt, as packet does on one that came by a path.
func (r *Receiver) rebuilt(s Session, st *session.State, ctr uint64, plain []byte, now time.Time) {
	deliver := s.Deliver()
	if st.Reorder != nil {
		r.ro, r.seq, r.pushed, r.deliver, r.now = st.Reorder, ctr, false, deliver, now
		deliver = r.push
	}
	m, err := r.o.Rebuilt(st, ctr, plain, now, r.W.Cnt, deliver)
	if err != nil {
		return
	}
	s.Authentic(nil, m.Kind, now)
	if ro := st.Reorder; ro != nil {
		if m.Kind == wire.MsgData {
			ro.Push(ctr, m.Flow, m.Body, now)
			return
		}
		ro.Push(ctr, 0, nil, now)
	}
	switch m.Kind {
	case wire.MsgData:
		s.Data(nil, m.Flow, m.Body, now)
	case wire.MsgFragment, wire.MsgFEC:
		// Handed on by Rebuilt once whole.
	default:
		s.Message(nil, m, now)
	}
}

// packet is Packet for the packet itself.
func (r *Receiver) packet(ep Endpoint, pkt []byte, p *Path, from netip.AddrPort, local netip.Addr, now time.Time) {
	switch wire.Type(pkt) {
	case wire.TypeTransport:
	case wire.TypeInit, wire.TypeInitIK, wire.TypeResponse, wire.TypeCookie, wire.TypeReset:
		ep.Handshake(pkt, from, local, now)
		return
	default:
		r.W.Cnt.Malformed.Add(1)
		return
	}
	h, err := wire.ParseHeader(pkt)
	if err != nil {
		r.W.Cnt.Malformed.Add(1)
		return
	}
	s := ep.Session(h.Receiver, now)
	if s == nil {
		r.W.Cnt.UnknownSession.Add(1)
		ep.Unknown(h.Receiver, len(pkt), from, local, now)
		return
	}
	st := s.State()
	if p == nil {
		p = s.PathFrom(from)
	}

	// Open, then drop copies: a copy from no path's address counts
	// nowhere, so it is dropped without the cost of proving it authentic.
	r.o.UncheckedCopies = p == nil
	deliver := s.Deliver()
	if st.Reorder != nil {
		r.ro, r.seq, r.pushed, r.deliver, r.now = st.Reorder, h.Counter, false, deliver, now
		deliver = r.push
	}
	m, err := r.o.Receive(st, pkt, h, now, r.W.Cnt, deliver)
	if err != nil {
		switch {
		case errors.Is(err, session.ErrDuplicate), errors.Is(err, session.ErrTooOld):
			// An authentic copy: the path carried it.
			if p != nil {
				p.Heard(len(pkt), h.Counter)
				if errors.Is(err, session.ErrDuplicate) {
					p.Duplicates.Add(1)
				}
			}
		case errors.Is(err, session.ErrAuth):
			r.W.Warn.WarnLazy("auth", "packet failed authentication, dropped (forged, or corrupted on the way)",
				func() []any { return []any{"from", from.String()} })
		}
		return
	}
	// Only authentic packets count on a path: its counts steer the
	// scheduler through the loss they show. At once: a probe answered
	// below carries the count.
	if p != nil {
		p.Heard(len(pkt), h.Counter)
	}
	if st.ParityRx != nil {
		r.rs, r.rst, r.rctr, r.rmsg = s, st, h.Counter, m
	}
	s.Authentic(p, m.Kind, now)

	// The reorder buffer, when on: every counter takes its place, only
	// data waits (and leaves through Deliver).
	if ro := st.Reorder; ro != nil {
		if m.Kind == wire.MsgData {
			ro.Push(h.Counter, m.Flow, m.Body, now)
			r.heardOn(p)
			return
		}
		ro.Push(h.Counter, 0, nil, now)
	}

	switch m.Kind {
	case wire.MsgProbe, wire.MsgProbeReply:
		if p == nil || p.ID != m.Probe.Path {
			if p = s.ProbePath(m, p, h.Counter, from, now, r.sl); p == nil {
				return
			}
			p.Heard(len(pkt), h.Counter)
		}
		p.SetLocal(local)
		if m.Kind == wire.MsgProbe {
			// Answered at once, on the path it came by.
			reply := p.OnProbe(m.Probe, now)
			if out, err := r.sl.SealProbe(st, wire.MsgProbeReply, reply); err == nil {
				r.W.SendPath(p, out)
			}
			return
		}
		// The far end got our probe at this address: proven.
		p.SetProven()
		p.OnProbeReply(m.Probe, now)
	case wire.MsgData:
		s.Data(p, m.Flow, m.Body, now)
		r.heardOn(p)
	case wire.MsgRepair:
		r.resend(s, st, m.Body)
		r.heardOn(p)
	case wire.MsgParity:
		r.heardOn(p) // used once this packet is done with (Packet)
	default:
		s.Message(p, m, now)
		r.heardOn(p)
	}
}

// resend sends again the packets of st a repair request (its body) names,
// those still kept.
func (r *Receiver) resend(s Session, st *session.State, body []byte) {
	if st.Repair == nil {
		return // repair is off at this end: the peer's request goes unanswered
	}
	r.again, r.start, r.pkts = r.again[:0], r.start[:0], r.pkts[:0]
	n := len(body) / 8
	for i := range n {
		start := len(r.again)
		var ok bool
		if r.again, ok = st.Repair.Keep.Take(wire.RepairCounter(body, i), r.again); ok {
			r.start = append(r.start, start)
		}
	}
	for i, start := range r.start {
		end := len(r.again)
		if i+1 < len(r.start) {
			end = r.start[i+1]
		}
		r.pkts = append(r.pkts, r.again[start:end])
	}
	r.W.Cnt.RepairResent.Add(uint64(len(r.pkts)))
	r.W.Cnt.RepairMissing.Add(uint64(n - len(r.pkts)))
	if len(r.pkts) > 0 {
		s.Resend(r.pkts)
	}
}

// heardOn notes that p (if known) carried a packet other than a probe.
func (r *Receiver) heardOn(p *Path) {
	if p != nil && (len(r.heard) == 0 || r.heard[len(r.heard)-1] != p) {
		r.heard = append(r.heard, p)
	}
}

// EndBatch tells the paths heard in the batch read at now: their health
// learns of it once a batch, not once a packet.
func (r *Receiver) EndBatch(now time.Time) {
	for i, p := range r.heard {
		p.OnHeard(now)
		r.heard[i] = nil
	}
	r.heard = r.heard[:0]
}
