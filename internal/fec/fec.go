// Package fec adds Reed-Solomon forward error correction to a stream of
// datagrams: the logic of the tunnel's fec mode, which sends each datagram once
// instead of once per path and repairs losses from parity.
//
// Datagrams are taken in groups of k (Params.Data). Each datagram leaves at
// once as a data shard: its group number and index in a small header, then the
// datagram as is, with no padding and no added delay. When the group is full,
// or when the caller flushes it (after a few milliseconds without filling), m
// (Params.Parity) parity shards follow. The parity is computed over the group's
// k' datagrams (k' = k for a full group, fewer for a flushed one), each
// prefixed by its 2-byte length and zero-padded to the longest one, so every
// parity shard is 2 bytes longer than the group's longest datagram. A receiver
// holding any k' of the k'+m shards of a group rebuilds the missing datagrams.
//
// Parity shards carry k' in their header; data shards carry the encoder's k,
// which is all they can know when they leave. A shard is a parity shard when
// its Index is at least its Data field.
//
// The package is pure logic: no I/O, no goroutines, no clock reads (the
// caller passes the time in). An [Encoder] serves one sending direction, a
// [Decoder] one receiving direction; neither is safe for concurrent use.
//
// # Wire format
//
// A shard on the wire is a 7-byte header followed by its body:
//
//	0..3  group number, big endian (wraps)
//	4     index in the group: 0..k'-1 data, k'..k'+m-1 parity
//	5     data shards in the group: k for a data shard, k' for a parity shard
//	6     parity shards in the group (m)
//	7..   body: the datagram (data shard) or the parity (parity shard)
//
// # Cost
//
// For full groups of datagrams of L bytes, the bytes put on the wire per
// application byte are
//
//	(k*(L+7) + m*(L+2+7)) / (k*L)
//
// before the tunnel's own per-packet overhead; [Params.Overhead] computes it.
// With k=8, m=4 and L=1000 that is 1.512; with k=10, m=4, 1.411.
package fec

import (
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	// HeaderLen is the length of a shard's header on the wire.
	HeaderLen = 7
	// MaxDatagram is the largest datagram an Encoder takes (the largest IPv4
	// UDP payload).
	MaxDatagram = 65507
	// MaxShardBody is the largest body of a shard: a datagram of MaxDatagram
	// bytes with its 2-byte length prefix (the length of the parity shards of
	// a group holding such a datagram).
	MaxShardBody = MaxDatagram + 2
	// MaxShards is the largest number of shards (k+m) in a group.
	MaxShards = 255
)

// Params is the shape of the code: groups of Data datagrams (k) protected by
// Parity parity shards (m).
//
// With independent loss p on every shard, a datagram is lost for good when
// its data shard is lost and at least m of the group's other k+m-1 shards are
// lost too:
//
//	residual = p * P(Binomial(k+m-1, p) >= m)
//
// At p = 10%, with the bytes on the wire per application byte for datagrams
// of 1,000 bytes (in brackets: adding the tunnel's 37 bytes and IPv4 and UDP
// headers' 28 bytes a packet):
//
//	k, m   shards/datagram  residual  bytes/app byte  whole path of 3 lost
//	 8, 4  1.50             0.19%     1.51 (1.61)     repaired (4 shards a path)
//	 6, 3  1.50             0.38%     1.51 (1.61)     repaired (3 shards a path)
//	10, 5  1.50             0.09%     1.51 (1.61)     repaired (5 shards a path)
//	10, 4  1.40             0.34%     1.41 (1.50)     77% delivered (5 shards on 2 paths)
//	12, 4  1.33             0.56%     1.34 (1.43)     not repaired
//	10, 3  1.30             1.11%     1.31 (1.39)     not repaired
//
// Spread round-robin over three paths, a group loses ceil((k+m)/3) shards
// with a path, so a whole path is repaired only when m >= ceil((k+m)/3), that
// is k <= 2m: at least 1.5 shards a datagram, and always a little over 1.5x
// on the wire once headers count. The same holds for bursts of about ten
// packets on one path: 8/4 delivers them all, 10/4 about 98.5%.
//
// The defaults are k=8, m=4: a shape that survives the loss of a whole path
// of three at the least cost (1.5 shards a datagram), with half the residual
// random loss of 6/3 (0.19%) and shorter groups, so quicker repair and less
// buffering, than 10/5. Where bandwidth matters more than a failing path,
// 10/4 keeps the residual loss under 1% at 1.41x.
type Params struct {
	Data   int // data shards a group (k), 1..254
	Parity int // parity shards a group (m), 0..254, Data+Parity <= 255
}

// DefaultParams returns k=8, m=4 (see [Params]).
func DefaultParams() Params { return Params{Data: 8, Parity: 4} }

// Byte packs p for the handshake as k<<4 | m; false when k or m is
// outside 1..15.
func (p Params) Byte() (byte, bool) {
	if p.Data < 1 || p.Data > 15 || p.Parity < 1 || p.Parity > 15 {
		return 0, false
	}
	return byte(p.Data<<4 | p.Parity), true
}

// ParamsFromByte unpacks what Byte packed; 0 gives DefaultParams.
func ParamsFromByte(b byte) (Params, error) {
	if b == 0 {
		return DefaultParams(), nil
	}
	p := Params{Data: int(b >> 4), Parity: int(b & 15)}
	if p.Data < 1 || p.Parity < 1 {
		return p, fmt.Errorf("fec: shape %#02x: want 1 to 15 data and parity shards", b)
	}
	return p, nil
}

// ParseParams reads a shape written K/M, such as 8/4: 1 to 15 of each, as
// the handshake carries them.
func ParseParams(s string) (Params, error) {
	var p Params
	if _, err := fmt.Sscanf(s, "%d/%d", &p.Data, &p.Parity); err != nil || fmt.Sprintf("%d/%d", p.Data, p.Parity) != s {
		return p, fmt.Errorf("fec shape %q: want K/M such as 8/4", s)
	}
	if _, ok := p.Byte(); !ok {
		return p, fmt.Errorf("fec shape %q: want 1 to 15 data and parity shards", s)
	}
	return p, nil
}

// Validate reports whether p can be used: 1 <= Data, 0 <= Parity and
// Data+Parity <= MaxShards.
func (p Params) Validate() error {
	if p.Data < 1 {
		return fmt.Errorf("fec: %d data shards: need at least 1", p.Data)
	}
	if p.Parity < 0 {
		return fmt.Errorf("fec: %d parity shards: must not be negative", p.Parity)
	}
	if p.Data+p.Parity > MaxShards {
		return fmt.Errorf("fec: %d data + %d parity shards: at most %d in all", p.Data, p.Parity, MaxShards)
	}
	return nil
}

// Overhead returns the bytes put on the wire by this package (headers, data
// and parity) per application byte, for full groups of datagrams of
// datagramLen bytes. It does not count the tunnel's own per-packet overhead.
func (p Params) Overhead(datagramLen int) float64 {
	if datagramLen <= 0 || p.Data < 1 {
		return 0
	}
	wire := p.Data*(datagramLen+HeaderLen) + p.Parity*(datagramLen+2+HeaderLen)
	return float64(wire) / float64(p.Data*datagramLen)
}

// Shard is one data or parity shard of a group.
type Shard struct {
	Group  uint32 // group number, counted up by the encoder (wraps)
	Index  uint8  // position in the group; parity when Index >= Data
	Data   uint8  // k for a data shard; k' (data shards actually in the group) for a parity shard
	Parity uint8  // m
	Body   []byte // the datagram, or the parity
}

// IsParity reports whether s is a parity shard.
func (s Shard) IsParity() bool { return s.Index >= s.Data }

// AppendTo appends s in wire format (header, then body) to b.
func (s Shard) AppendTo(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, s.Group)
	b = append(b, s.Index, s.Data, s.Parity)
	return append(b, s.Body...)
}

// ErrShortShard is returned by ParseShard for a packet shorter than a header.
var ErrShortShard = errors.New("fec: shard shorter than its header")

// ParseShard reads a shard in wire format. The body aliases b. It checks only
// the length; a Decoder checks the rest.
func ParseShard(b []byte) (Shard, error) {
	if len(b) < HeaderLen {
		return Shard{}, fmt.Errorf("%w: %d bytes, need %d", ErrShortShard, len(b), HeaderLen)
	}
	return Shard{
		Group:  binary.BigEndian.Uint32(b),
		Index:  b[4],
		Data:   b[5],
		Parity: b[6],
		Body:   b[HeaderLen:],
	}, nil
}
