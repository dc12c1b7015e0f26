package session

import (
	"errors"

	"github.com/mptunnel/mptunnel/internal/frag"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// ErrBatchFull reports that a Batch cannot take another cut datagram before
// its packets are sent and it is reset.
var ErrBatchFull = errors.New("batch holds a cut datagram already")

// Batch seals the datagrams of one batched read. Each datagram is read into
// its own buffer, at the offset where it is sealed, so a datagram that fits
// one packet is sealed in place with no copy; a datagram that must be cut is
// cut into a separate arena, one per batch. A Batch is one goroutine's
// scratch, reused from batch to batch: it allocates nothing after NewBatch.
type Batch struct {
	bufs  [][]byte
	cut   *Sealer // made on the first datagram that must be cut
	used  bool    // the cut arena holds packets of this batch
	nonce Nonce
	// Pkts are the sealed packets of the batch so far, in order. They stay
	// valid until Reset.
	Pkts [][]byte
}

// NewBatch returns a Batch for up to size datagrams.
func NewBatch(size int) *Batch {
	b := &Batch{bufs: make([][]byte, size), Pkts: make([][]byte, 0, size)}
	for i := range b.bufs {
		b.bufs[i] = make([]byte, payloadOff+wire.MaxDatagram+1+wire.TagLen)
	}
	return b
}

// Size is the number of datagrams a batch holds.
func (b *Batch) Size() int { return len(b.bufs) }

// Buf is where datagram i of the batch is read: one byte longer than the
// largest datagram, so a read that fills it reveals an oversize one.
func (b *Batch) Buf(i int) []byte {
	return b.bufs[i][payloadOff : payloadOff+wire.MaxDatagram+1]
}

// Reset forgets the batch's packets.
func (b *Batch) Reset() {
	b.Pkts = b.Pkts[:0]
	b.used = false
}

// Add seals the n-byte datagram read into Buf(i) for flow and appends its
// packets to Pkts. It returns ErrBatchFull when the datagram must be cut and
// the batch already holds a cut one: send Pkts, Reset, and Add it again.
func (b *Batch) Add(st *State, i int, flow uint32, n, maxPlain int) error {
	if n > wire.MaxDatagram {
		return ErrOversize
	}
	if count, _ := frag.Plan(n, maxPlain); count == 1 {
		buf := b.bufs[i]
		wire.PutData(buf[wire.HeaderLen:], flow)
		pkt, err := st.Seal(buf, wire.DataHeaderLen+n, &b.nonce)
		if err != nil {
			return err
		}
		b.Pkts = append(b.Pkts, pkt)
		return nil
	}
	if b.used {
		return ErrBatchFull
	}
	if b.cut == nil {
		b.cut = NewSealer() // on the first datagram cut: many batches never need it
	}
	copy(b.cut.Payload(), b.bufs[i][payloadOff:payloadOff+n])
	pkts, err := b.cut.Seal(st, flow, n, maxPlain)
	if err != nil {
		return err
	}
	b.used = true
	b.Pkts = append(b.Pkts, pkts...)
	return nil
}
