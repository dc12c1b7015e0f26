package client

import (
	"net/netip"
	"time"

	"github.com/mptunnel/mptunnel/internal/peer"
	"github.com/mptunnel/mptunnel/internal/session"
	"github.com/mptunnel/mptunnel/internal/udpio"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// pathReader is one path's read loop as the receive path (peer.Receiver)
// sees the client: the session a packet names, and the batch of datagrams
// for local peers it collects. It is the loop's own.
type pathReader struct {
	c  *Client
	p  *peer.Path
	st *session.State // the session of the packet at hand

	out     []udpio.Msg // datagrams for local peers, written at the batch's end
	outFr   []*front    // the front of each
	scratch []byte      // their SOCKS5 headers and bodies, and copies of those put back together
	flow    *flow       // the last flow looked up
	auth    bool        // some packet of the batch authenticated
	deliver func(id uint32, d []byte)
}

// Session returns the session receiver names: the current one, or the one
// it replaced while what the server sent under it is still on its way.
func (r *pathReader) Session(receiver uint32, now time.Time) peer.Session {
	c := r.c
	st := c.sess.Load()
	if st != nil && receiver != st.LocalIndex {
		// Sent before the server switched to our new session?
		st = c.prev.Load()
		if st != nil && (receiver != st.LocalIndex || now.UnixNano() > c.prevUntil.Load()) {
			st = nil
		}
	}
	if st == nil {
		return nil
	}
	r.st = st
	return r
}

// Handshake takes a server's handshake response, cookie reply or stateless
// reset. Handshake messages are not counted on a path: the server does not
// count them either.
func (r *pathReader) Handshake(pkt []byte, _ netip.AddrPort, _ netip.Addr, now time.Time) {
	switch wire.Type(pkt) {
	case wire.TypeResponse:
		r.c.handleResponse(pkt)
	case wire.TypeCookie:
		r.c.handleCookie(pkt)
	case wire.TypeReset:
		r.c.handleReset(pkt, now)
	default:
		r.c.cnt.Malformed.Add(1)
	}
}

func (r *pathReader) State() *session.State                       { return r.st }
func (r *pathReader) PathFrom(netip.AddrPort) *peer.Path          { return r.p }
func (r *pathReader) Deliver() func(flow uint32, datagram []byte) { return r.deliver }

// Unknown does nothing: a client answers no packet for a session it does
// not hold.
func (r *pathReader) Unknown(uint32, int, netip.AddrPort, netip.Addr, time.Time) {}

// Authentic notes, once a batch, that the server is alive.
func (r *pathReader) Authentic(*peer.Path, byte, time.Time) { r.auth = true }

// ProbePath ignores a probe for another path: a client's paths never move.
func (r *pathReader) ProbePath(wire.Message, *peer.Path, uint64, netip.AddrPort, time.Time, *session.Sealer) *peer.Path {
	return nil
}

// Resend puts packets the server asked for again on every usable path.
func (r *pathReader) Resend(pkts [][]byte) { r.c.sendLive(pkts, true) }

// Data queues a datagram for its flow's local peer.
func (r *pathReader) Data(_ *peer.Path, id uint32, body []byte, now time.Time) {
	f := r.flow
	if f == nil || f.id != id {
		if f = r.c.lookup(id); f == nil {
			r.c.cnt.UnknownFlow.Add(1) // freed here: its local peer is gone
			return
		}
		f.act.Touch(now.UnixNano())
		r.flow = f
	}
	f.act.In(1)
	if !f.acked.Load() {
		f.acked.Store(true) // a reply: the server has the flow
	}
	r.out = append(r.out, f.localMsg(body, &r.scratch))
	r.outFr = append(r.outFr, f.fr)
}

// Message takes the server's word on a flow.
func (r *pathReader) Message(_ *peer.Path, m wire.Message, now time.Time) {
	switch m.Kind {
	case wire.MsgFlow:
		if f := r.c.lookup(m.Flow); f != nil {
			r.c.flowFate(f, m.Status, now)
		}
	case wire.MsgStream:
		r.c.streamIn(m.Body)
	}
}

// lookup returns flow id, or nil.
func (c *Client) lookup(id uint32) *flow {
	c.flowMu.RLock()
	defer c.flowMu.RUnlock()
	return c.byID[id]
}

// pathLoop reads what the server sends on path p.
func (c *Client) pathLoop(p *peer.Path) {
	in := make([]udpio.Msg, batchSize)
	for i := range in {
		in[i].Buf = make([]byte, wire.MaxPacket+1)
	}
	r := &pathReader{c: c, p: p, out: make([]udpio.Msg, 0, batchSize)}
	// A datagram put back together lives only during the callback: a copy
	// goes with the batch's others, in the order they were sent.
	r.deliver = func(id uint32, d []byte) {
		if len(r.scratch)+len(d) > cap(r.scratch) {
			// A larger scratch: what is queued from the old one keeps it.
			r.scratch = make([]byte, 0, max(2*cap(r.scratch), len(d)+64<<10))
		}
		start := len(r.scratch)
		r.scratch = append(r.scratch, d...)
		r.Data(p, id, r.scratch[start:len(r.scratch):len(r.scratch)], time.Now())
	}
	rcv := peer.NewReceiver(c.w)
	for {
		n, ok := udpio.Read(p.Conn(), in)
		if !ok {
			return
		}
		c.rxMu.Lock()
		now := time.Now()
		r.out, r.outFr, r.scratch, r.flow, r.auth = r.out[:0], r.outFr[:0], r.scratch[:0], nil, false
		remote := p.Addr()
		// The client's counters and the path's health move once a batch,
		// not once a packet.
		var rxPackets, rxBytes int
		for i := range in[:n] {
			if in[i].Addr != remote {
				// Only the path's own remote end may talk to this socket.
				c.cnt.Malformed.Add(1)
				continue
			}
			pkt := in[i].Buf[:in[i].N]
			rxPackets++
			rxBytes += len(pkt)
			rcv.Packet(r, pkt, p, remote, netip.Addr{}, now)
		}
		if rxPackets > 0 {
			c.cnt.RxPackets.Add(uint64(rxPackets))
			c.cnt.RxBytes.Add(uint64(rxBytes))
		}
		if r.auth {
			c.lastAuth.Store(now.UnixNano())
		}
		rcv.EndBatch(now)
		// One write per run of datagrams for the same front.
		for i := 0; i < len(r.out); {
			j := i + 1
			for j < len(r.out) && r.outFr[j] == r.outFr[i] {
				j++
			}
			c.writeLocal(r.outFr[i], r.out[i:j])
			i = j
		}
		c.rxMu.Unlock()
	}
}
