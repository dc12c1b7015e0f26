package fec

import (
	"encoding/binary"
	"testing"
	"time"
)

// FuzzDecoder drives a Decoder with the input. The first byte picks a mode:
//
//   - even: the rest is a sequence of shards in wire format, each preceded by
//     its 2-byte length (the last padded with zeros to that length), fed to a
//     small Decoder as they are. It must not panic, nor hold more than its
//     limits.
//   - odd: the rest drives a real Encoder (the shape, the datagram sizes, the
//     flushes) and then which of its shards arrive, in which order and how
//     often. Every datagram delivered must be one that was sent, delivered
//     once; when every shard arrives, every datagram must be delivered.
func FuzzDecoder(f *testing.F) {
	f.Add([]byte{0})
	f.Add([]byte{1, 7, 3, 10, 20, 30, 40, 50, 60, 70, 80})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		if in[0]&1 == 0 {
			fuzzRaw(t, in[1:])
		} else {
			fuzzEncoded(t, in[1:])
		}
	})
}

func fuzzRaw(t *testing.T, in []byte) {
	lim := Limits{Groups: 4, History: 16, Timeout: 50 * time.Millisecond, Bytes: 256 << 10}
	dec := NewDecoder(lim)
	now := t0
	var pad []byte
	for len(in) >= 2 {
		n := int(binary.BigEndian.Uint16(in))
		in = in[2:]
		// A record longer than what is left is padded with zeros to its
		// length, so large shards take little input.
		b := in[:min(n, len(in))]
		in = in[len(b):]
		if n > len(b) {
			pad = append(pad[:0], b...)
			pad = append(pad, make([]byte, n-len(b))...)
			b = pad
		}
		now = now.Add(time.Millisecond)
		s, err := ParseShard(b)
		if err != nil {
			continue
		}
		for _, d := range dec.Add(s, now) {
			if len(d) > MaxDatagram {
				t.Fatalf("delivered %d bytes", len(d))
			}
		}
		if dec.InFlight() > lim.Groups || dec.Buffered() > lim.Bytes {
			t.Fatalf("%d groups, %d bytes buffered", dec.InFlight(), dec.Buffered())
		}
	}
	// Shards made to fill a group with a large shape and odd lengths.
	if len(in) == 1 {
		dec.Add(Shard{Index: in[0], Data: 1, Parity: 254, Body: make([]byte, 3)}, now)
	}
}

func fuzzEncoded(t *testing.T, in []byte) {
	next := func() byte {
		if len(in) == 0 {
			return 0
		}
		b := in[0]
		in = in[1:]
		return b
	}
	p := Params{Data: 1 + int(next()%12), Parity: int(next() % 7)}
	enc, err := NewEncoder(p, 0)
	if err != nil {
		t.Fatal(err)
	}
	count := 1 + int(next()%64)
	sent := make(map[uint32]string)
	var wire [][]byte
	now := t0
	for i := range count {
		b := next()
		size := 4 + int(b)*5
		if b == 0xff {
			size = MaxDatagram
		}
		d := make([]byte, size)
		binary.BigEndian.PutUint32(d, uint32(i))
		for j := 4; j < size; j++ {
			d[j] = byte(j * (i + 1))
		}
		sent[uint32(i)] = string(d)
		s, parity, err := enc.Add(d, now)
		if err != nil {
			t.Fatal(err)
		}
		wire = append(wire, s.AppendTo(nil))
		for _, ps := range parity {
			wire = append(wire, ps.AppendTo(nil))
		}
		if b%11 == 3 {
			parity, err := enc.Flush()
			if err != nil {
				t.Fatal(err)
			}
			for _, ps := range parity {
				wire = append(wire, ps.AppendTo(nil))
			}
		}
	}
	parity, err := enc.Flush()
	if err != nil {
		t.Fatal(err)
	}
	for _, ps := range parity {
		wire = append(wire, ps.AppendTo(nil))
	}

	// The rest of the input reorders, drops and repeats shards: each byte
	// swaps two shards (high bit clear) or drops one (high bit set, low bit
	// clear) or repeats one (both set).
	dropped := false
	for _, op := range in {
		i := int(op&0x7f) % len(wire)
		switch {
		case op&0x80 == 0:
			j := (i*7 + 3) % len(wire)
			wire[i], wire[j] = wire[j], wire[i]
		case op&1 == 0:
			wire = append(wire[:i], wire[i+1:]...)
			dropped = true
			if len(wire) == 0 {
				return
			}
		default:
			wire = append(wire, wire[i])
		}
	}
	dec := NewDecoder(Limits{})
	got := make(map[uint32]bool)
	for _, w := range wire {
		s, err := ParseShard(w)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range dec.Add(s, now) {
			if len(d) < 4 {
				t.Fatalf("delivered %d bytes, never sent", len(d))
			}
			id := binary.BigEndian.Uint32(d)
			if sent[id] != string(d) {
				t.Fatalf("delivered datagram %d of %d bytes, not the one sent", id, len(d))
			}
			if got[id] {
				t.Fatalf("datagram %d delivered twice", id)
			}
			got[id] = true
		}
	}
	if st := dec.Stats(); st.Dropped() != 0 || st.BadPrefix != 0 || st.RepairFailed != 0 {
		t.Fatalf("shards of a real encoder dropped: %+v", st)
	}
	if !dropped && len(got) != count {
		t.Fatalf("no shard lost, %d of %d delivered", len(got), count)
	}
}
