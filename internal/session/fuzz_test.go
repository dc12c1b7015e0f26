package session

import (
	"bytes"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/fec"
	"github.com/mptunnel/mptunnel/internal/metrics"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// validPackets seals a few messages of every kind with the fuzz pair's keys.
func validPackets(t testing.TB) [][]byte {
	a, _ := pair(t)
	var out [][]byte
	sl := NewSealer()
	for _, n := range []int{0, 1, 100, 1400, 3000} {
		copy(sl.Payload(), bytes.Repeat([]byte{byte(n)}, n))
		pkts, err := sl.Seal(a, 3, n, wire.MaxPlaintext(1400, false))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pkts {
			out = append(out, append([]byte(nil), p...))
		}
	}
	if p, err := sl.SealProbe(a, wire.MsgProbe, wire.Probe{Path: 1, Seq: 2}); err == nil {
		out = append(out, append([]byte(nil), p...))
	}
	if p, err := sl.SealClose(a); err == nil {
		out = append(out, append([]byte(nil), p...))
	}
	tx, err := NewFECSender(fec.Params{Data: 2, Parity: 1}, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := tx.Add(a, 1, []byte{byte(i), 1, 2, 3}, time.Unix(1, 0)); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range tx.pkts {
		out = append(out, append([]byte(nil), p...))
	}
	return out
}

// FuzzReceive: any bytes offered to a session as a transport packet are
// dropped and counted, never delivered, unless they are exactly a packet the
// peer sealed; nothing panics, and a fragment or shard never delivers a
// datagram longer than the largest.
func FuzzReceive(f *testing.F) {
	valid := validPackets(f)
	for _, p := range valid {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		_, b := pair(t)
		b.FECRx = NewFECReceiver(fec.Limits{Groups: 2, History: 4})
		var o Opener
		var cnt metrics.Counters
		authentic := false
		for _, v := range valid {
			authentic = authentic || bytes.Equal(v, pkt)
		}
		delivered := 0
		deliver := func(_ uint32, d []byte) {
			delivered++
			if len(d) > wire.MaxDatagram {
				t.Fatalf("delivered %d bytes", len(d))
			}
		}
		h, err := wire.ParseHeader(pkt)
		if err != nil {
			return
		}
		m, err := o.Receive(b, pkt, h, time.Unix(1, 0), &cnt, deliver)
		if err != nil {
			if delivered > 0 {
				t.Fatal("a refused packet delivered a datagram")
			}
			return
		}
		if !authentic {
			t.Fatalf("a packet not sealed by the peer was accepted: kind %d", m.Kind)
		}
	})
}
