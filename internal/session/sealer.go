package session

import (
	"errors"
	"time"

	"github.com/mptunnel/mptunnel/internal/frag"
	"github.com/mptunnel/mptunnel/internal/metrics"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// ErrOversize reports a datagram larger than wire.MaxDatagram.
var ErrOversize = errors.New("datagram larger than the tunnel carries")

// payloadOff is where a datagram sits in a Sealer's input buffer: right after
// the transport and data headers, so a datagram that fits one packet is sealed
// where it was read.
const payloadOff = wire.HeaderLen + wire.DataHeaderLen

// Sealer turns datagrams into sealed transport packets. It holds the scratch
// buffers of one goroutine; it is not safe for concurrent use. The zero value
// is not ready; use NewSealer.
type Sealer struct {
	in    []byte
	out   []byte
	to    []byte // a datagram with its target, made on first need
	slab  []byte // stream packets sealed together (SealStreams)
	pkts  [][]byte
	nonce Nonce
}

// NewSealer returns a Sealer with buffers for the largest datagram.
func NewSealer() *Sealer {
	return &Sealer{in: make([]byte, payloadOff+wire.MaxPacket+1+wire.TagLen)}
}

// Payload is where the caller reads a datagram before calling Seal. It is one
// byte longer than the largest datagram, so a read that fills it reveals an
// oversize datagram.
func (s *Sealer) Payload() []byte {
	return s.in[payloadOff : payloadOff+wire.MaxDatagram+1]
}

// Seal seals the n-byte datagram held in Payload for flow, cutting it into
// fragments when it does not fit maxPlain bytes of plaintext, and returns the
// packets to send on every path. They stay valid until the next call.
func (s *Sealer) Seal(st *State, flow uint32, n, maxPlain int) ([][]byte, error) {
	if n > wire.MaxDatagram {
		return nil, ErrOversize
	}
	s.pkts = s.pkts[:0]
	count, chunk := frag.Plan(n, maxPlain)
	if count == 1 {
		wire.PutData(s.in[wire.HeaderLen:], flow)
		pkt, err := st.Seal(s.in, wire.DataHeaderLen+n, &s.nonce)
		if err != nil {
			return nil, err
		}
		s.pkts = append(s.pkts, pkt)
		return s.pkts, nil
	}
	if s.out == nil {
		// Made on first need: most senders never cut a datagram.
		s.out = make([]byte, 0, 2*wire.MaxPacket)
	}
	f := wire.Fragment{Flow: flow, ID: st.NextFragID(), Count: uint8(count), Total: uint16(n)}
	data := s.in[payloadOff : payloadOff+n]
	out := s.out[:0]
	for i := 0; i < count; i++ {
		piece := data[i*chunk : min((i+1)*chunk, n)]
		f.Index = uint8(i)
		start := len(out)
		size := wire.HeaderLen + wire.FragHeaderLen + len(piece) + wire.TagLen
		out = out[:start+size]
		b := out[start:]
		wire.PutFragment(b[wire.HeaderLen:], f)
		copy(b[wire.HeaderLen+wire.FragHeaderLen:], piece)
		pkt, err := st.Seal(b, wire.FragHeaderLen+len(piece), &s.nonce)
		if err != nil {
			return nil, err
		}
		s.pkts = append(s.pkts, pkt)
	}
	return s.pkts, nil
}

// SealTo is Seal for a flow whose target the server does not know yet:
// the datagram held in Payload goes in one MsgDataTo with the target when
// that fits maxPlain, or else after an MsgOpen, cut into fragments. The
// packets go on every path and stay valid until the next call.
func (s *Sealer) SealTo(st *State, flow uint32, t wire.Target, n, maxPlain int) ([][]byte, error) {
	if n > wire.MaxDatagram {
		return nil, ErrOversize
	}
	if s.to == nil {
		s.to = make([]byte, wire.HeaderLen+wire.MaxPacket+wire.TagLen)
	}
	hdr := wire.AppendDataTo(s.to[wire.HeaderLen:wire.HeaderLen], wire.MsgDataTo, flow, t)
	if len(hdr)+n <= maxPlain {
		copy(s.to[wire.HeaderLen+len(hdr):], s.in[payloadOff:payloadOff+n])
		pkt, err := st.Seal(s.to, len(hdr)+n, &s.nonce)
		if err != nil {
			return nil, err
		}
		s.pkts = append(s.pkts[:0], pkt)
		return s.pkts, nil
	}
	hdr[0] = wire.MsgOpen
	open, err := st.Seal(s.to, len(hdr), &s.nonce)
	if err != nil {
		return nil, err
	}
	pkts, err := s.Seal(st, flow, n, maxPlain)
	if err != nil {
		return nil, err
	}
	s.pkts = append(pkts, nil)
	copy(s.pkts[1:], s.pkts)
	s.pkts[0] = open
	return s.pkts, nil
}

// SealStreams seals a run of packets of the session's QUIC connection,
// skipping any too large for maxPlain, and returns the sealed packets,
// valid until the next call.
func (s *Sealer) SealStreams(st *State, pkts [][]byte, maxPlain int) [][]byte {
	need := 0
	for _, p := range pkts {
		need += wire.HeaderLen + 1 + len(p) + wire.TagLen
	}
	if cap(s.slab) < need {
		s.slab = make([]byte, need)
	}
	s.pkts = s.pkts[:0]
	off := 0
	for _, p := range pkts {
		if 1+len(p) > maxPlain {
			continue
		}
		size := wire.HeaderLen + 1 + len(p) + wire.TagLen
		b := s.slab[off : off+size : off+size]
		b[wire.HeaderLen] = wire.MsgStream
		copy(b[wire.HeaderLen+1:], p)
		pkt, err := st.Seal(b, 1+len(p), &s.nonce)
		if err != nil {
			break
		}
		s.pkts = append(s.pkts, pkt)
		off += size
	}
	return s.pkts
}

// SealClose seals the message that ends a session.
func (s *Sealer) SealClose(st *State) ([]byte, error) {
	s.in[wire.HeaderLen] = wire.MsgClose
	return st.Seal(s.in, 1, &s.nonce)
}

// SealRekey seals a rekey message: the Noise initiation msg of the
// handshake that makes this session's successor.
func (s *Sealer) SealRekey(st *State, msg []byte) ([]byte, error) {
	if 1+len(msg) > wire.MaxPacket-wire.Overhead {
		return nil, ErrOversize
	}
	s.in[wire.HeaderLen] = wire.MsgRekey
	copy(s.in[wire.HeaderLen+1:], msg)
	return st.Seal(s.in, 1+len(msg), &s.nonce)
}

// SealProbe seals a probe or probe reply (kind) for one path.
func (s *Sealer) SealProbe(st *State, kind byte, p wire.Probe) ([]byte, error) {
	wire.PutProbe(s.in[wire.HeaderLen:], kind, p)
	return st.Seal(s.in, wire.ProbeLen, &s.nonce)
}

// Opener opens transport packets; like Sealer it is one goroutine's scratch.
type Opener struct {
	nonce Nonce
	// UncheckedCopies, when set, reports a packet the replay window
	// refuses (ErrDuplicate, ErrTooOld) without authenticating it: for a
	// packet whose source address counts for nothing (no path of the
	// session's), so that replays cost no AEAD open. Set it before each
	// packet; the zero value authenticates every packet.
	UncheckedCopies bool
}

// Open authenticates pkt with st and decodes its inner message, which aliases
// pkt.
func (o *Opener) Open(st *State, pkt []byte, h wire.Header) (wire.Message, error) {
	plain, err := st.Open(pkt, h, &o.nonce, o.UncheckedCopies)
	if err != nil {
		return wire.Message{}, err
	}
	return wire.ParseMessage(plain)
}

// Receive opens a transport packet with st. A whole datagram is returned in
// the message (Kind wire.MsgData, its Body aliasing pkt) for the caller to
// pass on; the piece that completes a cut datagram, and an FEC shard that
// gives datagrams, make Receive call deliver with each whole datagram, valid
// only during the call. It returns the inner message, or the reason the
// packet was dropped (ErrDuplicate, ErrTooOld, ErrAuth, wire.ErrMalformed);
// every drop is counted in cnt by its reason.
func (o *Opener) Receive(st *State, pkt []byte, h wire.Header, now time.Time, cnt *metrics.Counters, deliver func(flow uint32, datagram []byte)) (wire.Message, error) {
	m, err := o.Open(st, pkt, h)
	switch {
	case err == nil:
	case errors.Is(err, ErrDuplicate):
		cnt.Duplicates.Add(1)
		return m, err
	case errors.Is(err, ErrTooOld):
		cnt.TooOld.Add(1)
		return m, err
	case errors.Is(err, ErrAuth):
		cnt.AuthFailed.Add(1)
		return m, err
	default:
		cnt.Malformed.Add(1)
		return m, err
	}
	if st.ParityRx != nil && keeps(m.Kind) {
		st.ParityRx.store(h.Counter, pkt[wire.HeaderLen:len(pkt)-wire.TagLen])
	}
	return o.opened(st, h.Counter, m, now, cnt, deliver)
}

// Rebuilt takes the plaintext of the peer's packet ctr that parity rebuilt
// (State.Rebuild, which marked it received) as Receive takes a packet it
// opened.
func (o *Opener) Rebuilt(st *State, ctr uint64, plain []byte, now time.Time, cnt *metrics.Counters, deliver func(flow uint32, datagram []byte)) (wire.Message, error) {
	m, err := wire.ParseMessage(plain)
	if err != nil {
		cnt.Malformed.Add(1)
		return m, err
	}
	cnt.ParityRecovered.Add(1)
	return o.opened(st, ctr, m, now, cnt, deliver)
}

// opened acts on the peer's message m, sealed with ctr, once it is known
// authentic and new.
func (o *Opener) opened(st *State, ctr uint64, m wire.Message, now time.Time, cnt *metrics.Counters, deliver func(flow uint32, datagram []byte)) (wire.Message, error) {
	if st.Repair != nil {
		st.Repair.seen(ctr, now)
	}
	switch m.Kind {
	case wire.MsgFEC:
		if st.FECRx == nil {
			// Not an fec session: the peer breaks the protocol.
			cnt.Malformed.Add(1)
			return m, wire.ErrMalformed
		}
		if err := st.FECRx.receive(m.Body, now, cnt, deliver); err != nil {
			return m, err
		}
	case wire.MsgFragment:
		before := st.Reasm.Evicted()
		if st.Reasm.Add(m.Fragment, m.Body, now, deliver) {
			cnt.Reassembled.Add(1)
		}
		if ev := st.Reasm.Evicted() - before; ev > 0 {
			cnt.FragEvicted.Add(ev)
		}
	}
	return m, nil
}
