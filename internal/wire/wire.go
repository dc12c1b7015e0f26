// Package wire defines the layout of mptunnel packets: the clear outer headers of
// handshake and transport packets, and the inner messages carried sealed inside
// transport packets. It does no I/O and holds no cryptographic state; every
// decoder checks lengths and reserved bits before it trusts a byte.
//
// The layout is documented in docs/PROTOCOL.md.
package wire

import (
	"encoding/binary"
	"errors"
)

// Outer packet types (byte 0 of every packet).
const (
	TypeInit      = 1 // handshake initiation, client to server
	TypeResponse  = 2 // handshake response, server to client
	TypeTransport = 3 // sealed transport packet, both directions
	TypeCookie    = 4 // cookie reply, server to client, under load
	TypeReset     = 5 // stateless reset, server to client: the session named is unknown here
	TypeInitIK    = 6 // identity handshake initiation (key pairs), client to server
)

// Sizes of the fixed parts of packets.
const (
	// HeaderLen is the clear header of a transport packet: type, three
	// reserved zero bytes, the receiver's session index, the 64-bit counter.
	HeaderLen = 16
	// TagLen is the AEAD authentication tag (both ciphers).
	TagLen = 16
	// Overhead is what a transport packet adds to its sealed plaintext.
	Overhead = HeaderLen + TagLen

	// InitPrefixLen and ResponsePrefixLen are the clear bytes in front of the
	// Noise message in handshake packets. An initiation ends with two MACs
	// of MACLen bytes: mac1, keyed by the shared key, and mac2, keyed by a
	// cookie (zero when the client holds none).
	InitPrefixLen     = 4
	ResponsePrefixLen = 8
	MACLen            = 16
	// InitNoiseLen is the Noise message an initiation carries
	// (handshake.InitLen), and InitLen the whole initiation: nothing of any
	// other length is one.
	InitNoiseLen = 64
	InitLen      = InitPrefixLen + InitNoiseLen + 2*MACLen
	// InitIKNoiseLen is the Noise message an identity initiation carries
	// (handshake.InitIKLen), and InitIKLen the whole of one.
	InitIKNoiseLen = 112
	InitIKLen      = InitPrefixLen + InitIKNoiseLen + 2*MACLen
	// CookieNonceLen and SealedCookieLen make up a cookie reply after its
	// 4-byte prefix.
	CookieNonceLen  = 24
	SealedCookieLen = 16 + TagLen
	CookieLen       = 4 + CookieNonceLen + SealedCookieLen

	// ResetTokenLen is a stateless reset's token, and ResetLen the whole
	// reset: a prefix, the receiver index of the packet it answers and the
	// token. Smaller than any transport packet (Overhead), so a reset is
	// always smaller than what drew it.
	ResetTokenLen = 16
	ResetLen      = 4 + 4 + ResetTokenLen

	// DataHeaderLen and FragHeaderLen are the inner message headers.
	DataHeaderLen = 5
	FragHeaderLen = 13

	// MaxDatagram is the largest application datagram the tunnel carries:
	// the largest UDP payload of an IPv4 datagram.
	MaxDatagram = 65507
	// MaxPacket is the largest tunnel packet ever put on a path.
	MaxPacket = 65535
)

// ErrMalformed reports a packet whose layout is wrong: too short, a reserved
// byte set, an unknown type or an impossible field.
var ErrMalformed = errors.New("malformed packet")

// Header is the clear header of a transport packet. It is authenticated as the
// AEAD's associated data.
type Header struct {
	Receiver uint32 // the receiving end's session index
	Counter  uint64 // the sender's packet counter: the AEAD nonce and the dedup key
}

// PutHeader writes h as a transport header into b[:HeaderLen].
func PutHeader(b []byte, h Header) {
	_ = b[HeaderLen-1]
	b[0], b[1], b[2], b[3] = TypeTransport, 0, 0, 0
	binary.LittleEndian.PutUint32(b[4:8], h.Receiver)
	binary.LittleEndian.PutUint64(b[8:16], h.Counter)
}

// ParseHeader decodes the transport header at the start of pkt. pkt must hold
// at least a header and a tag.
func ParseHeader(pkt []byte) (Header, error) {
	if len(pkt) < Overhead || pkt[0] != TypeTransport || pkt[1]|pkt[2]|pkt[3] != 0 {
		return Header{}, ErrMalformed
	}
	return Header{
		Receiver: binary.LittleEndian.Uint32(pkt[4:8]),
		Counter:  binary.LittleEndian.Uint64(pkt[8:16]),
	}, nil
}

// Type returns the outer packet type, or 0 for an empty packet.
func Type(pkt []byte) byte {
	if len(pkt) == 0 {
		return 0
	}
	return pkt[0]
}

// AppendInit frames a Noise initiation message, with zero MACs for the
// sender to fill in: an identity initiation (TypeInitIK) when the message
// has that size.
func AppendInit(b []byte, noiseMsg []byte) []byte {
	t := byte(TypeInit)
	if len(noiseMsg) == InitIKNoiseLen {
		t = TypeInitIK
	}
	b = append(b, t, 0, 0, 0)
	b = append(b, noiseMsg...)
	return append(b, make([]byte, 2*MACLen)...)
}

// ParseInit returns the Noise message and the two MACs (mac1 then mac2) of
// an initiation packet, shared-key (TypeInit) or identity (TypeInitIK).
func ParseInit(pkt []byte) (noiseMsg, macs []byte, err error) {
	okLen := len(pkt) == InitLen && Type(pkt) == TypeInit || len(pkt) == InitIKLen && Type(pkt) == TypeInitIK
	if !okLen || pkt[1]|pkt[2]|pkt[3] != 0 {
		return nil, nil, ErrMalformed
	}
	return pkt[InitPrefixLen : len(pkt)-2*MACLen], pkt[len(pkt)-2*MACLen:], nil
}

// AppendCookie frames a cookie reply.
func AppendCookie(b []byte, nonce, sealed []byte) []byte {
	b = append(b, TypeCookie, 0, 0, 0)
	b = append(b, nonce...)
	return append(b, sealed...)
}

// ParseCookie returns the nonce and the sealed cookie of a cookie reply.
func ParseCookie(pkt []byte) (nonce, sealed []byte, err error) {
	if len(pkt) != CookieLen || pkt[0] != TypeCookie || pkt[1]|pkt[2]|pkt[3] != 0 {
		return nil, nil, ErrMalformed
	}
	return pkt[4 : 4+CookieNonceLen], pkt[4+CookieNonceLen:], nil
}

// AppendReset frames a stateless reset for the packet whose receiver index
// was receiver; token is ResetTokenLen bytes (internal/reset makes it).
func AppendReset(b []byte, receiver uint32, token []byte) []byte {
	b = append(b, TypeReset, 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, receiver)
	return append(b, token...)
}

// ParseReset returns the receiver index and the token of a stateless reset.
// Nothing of any other length than ResetLen is one.
func ParseReset(pkt []byte) (receiver uint32, token []byte, err error) {
	if len(pkt) != ResetLen || pkt[0] != TypeReset || pkt[1]|pkt[2]|pkt[3] != 0 {
		return 0, nil, ErrMalformed
	}
	return binary.LittleEndian.Uint32(pkt[4:8]), pkt[8:], nil
}

// AppendResponse frames a Noise response message addressed to the initiator's
// session index.
func AppendResponse(b []byte, receiver uint32, noiseMsg []byte) []byte {
	b = append(b, TypeResponse, 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, receiver)
	return append(b, noiseMsg...)
}

// ParseResponse returns the initiator's index and the Noise message of a
// response packet.
func ParseResponse(pkt []byte) (receiver uint32, noiseMsg []byte, err error) {
	if len(pkt) <= ResponsePrefixLen || pkt[0] != TypeResponse || pkt[1]|pkt[2]|pkt[3] != 0 {
		return 0, nil, ErrMalformed
	}
	return binary.LittleEndian.Uint32(pkt[4:8]), pkt[ResponsePrefixLen:], nil
}

// Inner message kinds: the first byte of a sealed plaintext.
const (
	MsgData       = 1  // a whole datagram of one flow
	MsgFragment   = 2  // one piece of a datagram too large for one packet
	MsgProbe      = 3  // proof of life and measurement on one path
	MsgClose      = 4  // the sender ends the session; no body
	MsgProbeReply = 5  // the answer to a probe, on the same path
	MsgFEC        = 6  // a forward error correction shard (fec mode): internal/fec's wire format
	MsgRekey      = 7  // a new handshake initiation (its Noise message) for a session that succeeds this one
	MsgDataTo     = 8  // a whole datagram of a flow, with the flow's target: until the server confirms the flow
	MsgOpen       = 9  // a flow's target alone, ahead of a datagram cut into fragments
	MsgFlow       = 10 // server to client: a flow's fate (FlowOK or why it was refused)
	MsgRepair     = 11 // counters this end has not received on any path: the peer sends them again
	MsgParity     = 12 // the XOR of a group of this end's packets: the peer rebuilds one it lost
	MsgStream     = 13 // one packet of the session's QUIC connection, which carries TCP streams
)

// Flow fates in a MsgFlow.
const (
	FlowOK         = 0 // the flow is open toward its target
	FlowNotAllowed = 1 // the server's rules do not allow the target
	FlowNoName     = 2 // the target's name does not resolve on the server
	FlowLimit      = 3 // the session has all the flows it may have
	FlowFailed     = 4 // the server cannot open a socket to the target
	FlowNoTarget   = 5 // the flow names no target and the server has no default one
	FlowClosed     = 6 // the server freed the flow (idle, or to make room): name its target again
)

// FlowNamed is the bit of a flow ID a client sets on every flow whose target
// it names (a port forward's, a SOCKS5 destination's): plain data for such
// a flow the server does not have never goes to the default target; the
// server drops it and answers FlowClosed, and the client names the target
// again. IDs without it are flows of the default target.
const FlowNamed = 1 << 31

// FlowFate describes a MsgFlow status.
func FlowFate(status byte) string {
	switch status {
	case FlowOK:
		return "open"
	case FlowNotAllowed:
		return "target not allowed by the server's rules"
	case FlowNoName:
		return "target name does not resolve on the server"
	case FlowLimit:
		return "the server's flow limit is reached"
	case FlowFailed:
		return "the server cannot open a socket to the target"
	case FlowNoTarget:
		return "the server has no default target"
	case FlowClosed:
		return "the server freed the flow"
	}
	return "unknown status"
}

// FlowMsgLen is the length of a MsgFlow.
const FlowMsgLen = 6

// PutFlow writes a MsgFlow into b[:FlowMsgLen].
func PutFlow(b []byte, flow uint32, status byte) {
	_ = b[FlowMsgLen-1]
	b[0] = MsgFlow
	binary.BigEndian.PutUint32(b[1:5], flow)
	b[5] = status
}

// AppendDataTo appends the header of a MsgDataTo (or, with kind MsgOpen,
// a whole MsgOpen) for flow to t; the datagram follows it.
func AppendDataTo(b []byte, kind byte, flow uint32, t Target) []byte {
	b = append(b, kind)
	b = binary.BigEndian.AppendUint32(b, flow)
	return AppendTarget(b, t)
}

// fecShardHeaderLen is the length of internal/fec's shard header, the least
// an MsgFEC body holds.
const fecShardHeaderLen = 7

// ProbeLen is the length of a probe or probe reply, kind byte included.
const ProbeLen = 30

// Probe is the body of a probe or probe reply. Each is sealed for one path
// only (unlike data, which is the same bytes on every path).
type Probe struct {
	Path uint8  // the client's index of the path
	Seq  uint32 // the probe's sequence number (echoed in the reply)
	Sent int64  // the prober's send time in its own clock, ns (echoed)
	Tx   uint64 // tunnel packets the sender of this message has sent on the path
	Rx   uint64 // tunnel packets the sender of this message has received on the path
}

// PutProbe writes a probe or probe reply (kind) into b[:ProbeLen].
func PutProbe(b []byte, kind byte, p Probe) {
	_ = b[ProbeLen-1]
	b[0] = kind
	b[1] = p.Path
	binary.BigEndian.PutUint32(b[2:6], p.Seq)
	binary.BigEndian.PutUint64(b[6:14], uint64(p.Sent))
	binary.BigEndian.PutUint64(b[14:22], p.Tx)
	binary.BigEndian.PutUint64(b[22:30], p.Rx)
}

// MaxRepair is how many counters one MsgRepair names at most.
const MaxRepair = 64

// AppendRepair appends a MsgRepair asking for counters (1 to MaxRepair of
// them) to b.
func AppendRepair(b []byte, counters []uint64) []byte {
	b = append(b, MsgRepair, byte(len(counters)))
	for _, c := range counters {
		b = binary.BigEndian.AppendUint64(b, c)
	}
	return b
}

// RepairCounter returns the i-th counter of a MsgRepair's body.
func RepairCounter(body []byte, i int) uint64 {
	return binary.BigEndian.Uint64(body[8*i:])
}

// Parity is the header of a MsgParity: which of the sender's packets its
// XOR covers, and the XOR of their plaintexts' lengths. The body that
// follows is the XOR of the plaintexts, each padded with zeros to the
// longest.
type Parity struct {
	// Base is the low 32 bits of the first covered counter; the receiver
	// takes the counter nearest to its latest with those bits.
	Base uint32
	// Members has bit i set when counter Base+i is covered (bit 0 always).
	Members uint32
	// LenXor is the XOR of the covered plaintexts' lengths.
	LenXor uint16
}

// ParityHeaderLen is the length of a MsgParity before its body, kind
// byte included: what a plaintext may hold at most, less this, for a
// group's parity to fit one packet.
const ParityHeaderLen = 11

// PutParity writes a MsgParity header into b[:ParityHeaderLen].
func PutParity(b []byte, p Parity) {
	_ = b[ParityHeaderLen-1]
	b[0] = MsgParity
	binary.BigEndian.PutUint32(b[1:5], p.Base)
	binary.BigEndian.PutUint32(b[5:9], p.Members)
	binary.BigEndian.PutUint16(b[9:11], p.LenXor)
}

// Fragment describes one piece of a datagram.
type Fragment struct {
	Flow  uint32
	ID    uint32 // the datagram's fragment ID, unique per sender and flow while in flight
	Index uint8  // this piece's position, 0-based
	Count uint8  // number of pieces, 2..255
	Total uint16 // length of the whole datagram
}

// PutData writes a data message header for flow into b[:DataHeaderLen].
func PutData(b []byte, flow uint32) {
	b[0] = MsgData
	binary.BigEndian.PutUint32(b[1:5], flow)
}

// PutFragment writes a fragment header into b[:FragHeaderLen].
func PutFragment(b []byte, f Fragment) {
	_ = b[FragHeaderLen-1]
	b[0] = MsgFragment
	binary.BigEndian.PutUint32(b[1:5], f.Flow)
	binary.BigEndian.PutUint32(b[5:9], f.ID)
	b[9] = f.Index
	b[10] = f.Count
	binary.BigEndian.PutUint16(b[11:13], f.Total)
}

// Message is a decoded inner message. Body aliases the plaintext.
type Message struct {
	Kind     byte
	Flow     uint32
	Fragment Fragment // valid when Kind == MsgFragment
	Probe    Probe    // valid when Kind is MsgProbe or MsgProbeReply
	Target   Target   // valid when Kind is MsgDataTo or MsgOpen
	Status   byte     // valid when Kind is MsgFlow
	Parity   Parity   // valid when Kind is MsgParity
	Body     []byte
}

// ParseMessage decodes a sealed plaintext. For fragments it checks that the
// piece fits the datagram it claims to belong to: all pieces but the last have
// ChunkLen(total, count) bytes, and the last holds the rest.
func ParseMessage(p []byte) (Message, error) {
	if len(p) == 0 {
		return Message{}, ErrMalformed
	}
	switch p[0] {
	case MsgData:
		if len(p) < DataHeaderLen {
			return Message{}, ErrMalformed
		}
		return Message{Kind: MsgData, Flow: binary.BigEndian.Uint32(p[1:5]), Body: p[DataHeaderLen:]}, nil
	case MsgFragment:
		if len(p) < FragHeaderLen {
			return Message{}, ErrMalformed
		}
		f := Fragment{
			Flow:  binary.BigEndian.Uint32(p[1:5]),
			ID:    binary.BigEndian.Uint32(p[5:9]),
			Index: p[9],
			Count: p[10],
			Total: binary.BigEndian.Uint16(p[11:13]),
		}
		body := p[FragHeaderLen:]
		if f.Count < 2 || f.Index >= f.Count || int(f.Total) > MaxDatagram {
			return Message{}, ErrMalformed
		}
		chunk := ChunkLen(int(f.Total), int(f.Count))
		last := int(f.Total) - chunk*(int(f.Count)-1)
		if last <= 0 {
			return Message{}, ErrMalformed
		}
		want := chunk
		if f.Index == f.Count-1 {
			want = last
		}
		if len(body) != want {
			return Message{}, ErrMalformed
		}
		return Message{Kind: MsgFragment, Flow: f.Flow, Fragment: f, Body: body}, nil
	case MsgProbe, MsgProbeReply:
		if len(p) != ProbeLen {
			return Message{}, ErrMalformed
		}
		return Message{Kind: p[0], Probe: Probe{
			Path: p[1],
			Seq:  binary.BigEndian.Uint32(p[2:6]),
			Sent: int64(binary.BigEndian.Uint64(p[6:14])),
			Tx:   binary.BigEndian.Uint64(p[14:22]),
			Rx:   binary.BigEndian.Uint64(p[22:30]),
		}}, nil
	case MsgClose:
		if len(p) != 1 {
			return Message{}, ErrMalformed
		}
		return Message{Kind: MsgClose}, nil
	case MsgFEC:
		if len(p) < 1+fecShardHeaderLen {
			return Message{}, ErrMalformed
		}
		return Message{Kind: MsgFEC, Body: p[1:]}, nil
	case MsgDataTo, MsgOpen:
		if len(p) < DataHeaderLen {
			return Message{}, ErrMalformed
		}
		t, n, err := ParseTarget(p[DataHeaderLen:])
		if err != nil {
			return Message{}, err
		}
		m := Message{Kind: p[0], Flow: binary.BigEndian.Uint32(p[1:5]), Target: t, Body: p[DataHeaderLen+n:]}
		if m.Kind == MsgOpen && len(m.Body) != 0 {
			return Message{}, ErrMalformed
		}
		return m, nil
	case MsgFlow:
		if len(p) != FlowMsgLen {
			return Message{}, ErrMalformed
		}
		return Message{Kind: MsgFlow, Flow: binary.BigEndian.Uint32(p[1:5]), Status: p[5]}, nil
	case MsgRepair:
		// A count, then that many 64-bit counters: nothing else.
		if len(p) < 2 || p[1] == 0 || p[1] > MaxRepair || len(p) != 2+8*int(p[1]) {
			return Message{}, ErrMalformed
		}
		return Message{Kind: MsgRepair, Body: p[2:]}, nil
	case MsgStream:
		if len(p) < 2 {
			return Message{}, ErrMalformed
		}
		return Message{Kind: MsgStream, Body: p[1:]}, nil
	case MsgParity:
		if len(p) < ParityHeaderLen {
			return Message{}, ErrMalformed
		}
		par := Parity{
			Base:    binary.BigEndian.Uint32(p[1:5]),
			Members: binary.BigEndian.Uint32(p[5:9]),
			LenXor:  binary.BigEndian.Uint16(p[9:11]),
		}
		if par.Members&1 == 0 {
			return Message{}, ErrMalformed
		}
		return Message{Kind: MsgParity, Parity: par, Body: p[ParityHeaderLen:]}, nil
	case MsgRekey:
		// The handshake checks the initiation's length and everything else.
		if len(p) < 2 {
			return Message{}, ErrMalformed
		}
		return Message{Kind: MsgRekey, Body: p[1:]}, nil
	}
	return Message{}, ErrMalformed
}

// ChunkLen is the size of every piece but the last when total bytes are cut
// into count pieces.
func ChunkLen(total, count int) int {
	return (total + count - 1) / count
}

// IPUDPOverhead returns the bytes an IP and UDP header add to a datagram.
func IPUDPOverhead(ipv6 bool) int {
	if ipv6 {
		return 48
	}
	return 28
}

// MinMTU is the smallest path MTU the tunnel accepts, and DefaultMTU the
// one it puts on paths unless told otherwise.
const (
	MinMTU     = 576
	DefaultMTU = 1400
)

// MaxPaths is how many paths a session has at most: a server keeps this many
// per session, so a client is configured with no more.
const MaxPaths = 16

// MaxPlaintext is the largest sealed plaintext that keeps a tunnel packet
// within an IP packet of mtu bytes.
func MaxPlaintext(mtu int, ipv6 bool) int {
	return mtu - IPUDPOverhead(ipv6) - Overhead
}
