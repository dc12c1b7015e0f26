package bench

import "encoding/binary"

// Every datagram the generator sends starts with this header, little endian:
//
//	0   2  magic
//	2   1  kind (kindCount or kindEcho)
//	3   1  reserved
//	4   4  step: which measurement it belongs to
//	8   8  sequence number within the step, from 0
//	16  8  send time, nanoseconds since the run's epoch
//
// The rest of the datagram is filler up to the chosen size.
const (
	headerLen        = 24
	magic     uint16 = 0x6d62

	kindCount byte = 1 // the target counts it
	kindEcho  byte = 2 // the target sends it back
)

// MinSize is the smallest datagram the benchmark can number and time.
const MinSize = headerLen

type header struct {
	kind byte
	step uint32
	seq  uint64
	sent int64
}

func (h header) put(b []byte) {
	binary.LittleEndian.PutUint16(b[0:], magic)
	b[2] = h.kind
	b[3] = 0
	binary.LittleEndian.PutUint32(b[4:], h.step)
	binary.LittleEndian.PutUint64(b[8:], h.seq)
	binary.LittleEndian.PutUint64(b[16:], uint64(h.sent))
}

func parseHeader(b []byte) (header, bool) {
	if len(b) < headerLen || binary.LittleEndian.Uint16(b) != magic {
		return header{}, false
	}
	return header{
		kind: b[2],
		step: binary.LittleEndian.Uint32(b[4:]),
		seq:  binary.LittleEndian.Uint64(b[8:]),
		sent: int64(binary.LittleEndian.Uint64(b[16:])),
	}, true
}

// seqSet records which sequence numbers below its limit were seen, so that
// losses and duplicates are counted exactly. It is not safe for concurrent
// use.
type seqSet struct {
	bits  []uint64
	limit uint64
}

func newSeqSet(limit uint64) seqSet {
	return seqSet{bits: make([]uint64, (limit+63)/64), limit: limit}
}

// add marks seq and reports whether it is new; ok is false when seq is out
// of range.
func (s *seqSet) add(seq uint64) (isNew, ok bool) {
	if seq >= s.limit {
		return false, false
	}
	w, m := seq/64, uint64(1)<<(seq%64)
	if s.bits[w]&m != 0 {
		return false, true
	}
	s.bits[w] |= m
	return true, true
}
