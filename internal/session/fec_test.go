package session

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/fec"
	"github.com/mptunnel/mptunnel/internal/metrics"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// TestFEC: datagrams sealed as shards arrive whole, with their flows, when
// some packets are lost, as long as each group keeps enough shards; what
// cannot be rebuilt is counted as lost.
func TestFEC(t *testing.T) {
	a, b := pair(t)
	b.FECRx = NewFECReceiver(fec.Limits{Groups: 4, History: 4})
	tx, err := NewFECSender(fec.Params{Data: 4, Parity: 2}, time.Millisecond, 1)
	if err != nil {
		t.Fatal(err)
	}
	var o Opener
	var cnt metrics.Counters
	got := map[string]uint32{}
	deliver := func(flow uint32, d []byte) { got[string(d)] = flow }
	now := time.Now()
	maxPlain := wire.MaxPlaintext(1400, false)
	sent := 0
	for i := range 10 {
		d := []byte(fmt.Sprintf("datagram %d", i))
		if !FECFits(len(d), maxPlain) {
			t.Fatal("a small datagram does not fit")
		}
		if err := tx.Add(a, uint32(i%3), d, now); err != nil {
			t.Fatal(err)
		}
	}
	// Groups 0 and 1 are full (4 data + 2 parity each); group 2 holds two
	// datagrams and is flushed after its delay.
	if err := tx.flushDue(a, now.Add(time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if len(tx.pkts) != 10+3*2 || tx.parity != 6 {
		t.Fatalf("%d packets, %d parity; want 16 and 6", len(tx.pkts), tx.parity)
	}
	// Order: g0 d0 d1 d2 d3 p p, g1 d4 d5 d6 d7 p p, g2 d8 d9 p p.
	// Lose two data shards of group 0 (repairable) and three of group 1's
	// six shards (not repairable: one datagram lost for good).
	lost := map[int]bool{1: true, 2: true, 6: true, 7: true, 10: true}
	for k, p := range tx.pkts {
		if lost[k] {
			continue
		}
		sent++
		h, err := wire.ParseHeader(p)
		if err != nil {
			t.Fatal(err)
		}
		m, err := o.Receive(b, p, h, now, &cnt, deliver)
		if err != nil || m.Kind != wire.MsgFEC {
			t.Fatalf("packet %d: kind %d, %v", k, m.Kind, err)
		}
	}
	tx.Flush(now) // no send function: what was sealed is dropped
	for i := range 10 {
		d := fmt.Sprintf("datagram %d", i)
		flow, ok := got[d]
		if i == 4 || i == 5 {
			continue // group 1 lost two data shards and a parity shard
		}
		if !ok || flow != uint32(i%3) {
			t.Errorf("%q: delivered %v, flow %d", d, ok, flow)
		}
	}
	if _, ok := got["datagram 4"]; ok {
		t.Error("a datagram whose group lost too much was delivered")
	}
	if n := cnt.FECRecovered.Load(); n != 2 {
		t.Errorf("recovered %d, want 2", n)
	}
	// Push group 1 out of the history: its two datagrams count as lost.
	for i := range 12 {
		if err := tx.Add(a, 0, bytes.Repeat([]byte{byte(i)}, 10), now); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range tx.pkts {
		h, _ := wire.ParseHeader(p)
		if _, err := o.Receive(b, p, h, now, &cnt, deliver); err != nil {
			t.Fatal(err)
		}
	}
	if n := cnt.FECLost.Load(); n != 2 {
		t.Errorf("lost %d, want 2", n)
	}
}

// TestFECNotNegotiated: a shard in a session that is not in fec mode is
// dropped and counted.
func TestFECNotNegotiated(t *testing.T) {
	a, b := pair(t)
	tx, err := NewFECSender(fec.DefaultParams(), 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Add(a, 1, []byte("x"), time.Now()); err != nil {
		t.Fatal(err)
	}
	var o Opener
	var cnt metrics.Counters
	h, _ := wire.ParseHeader(tx.pkts[0])
	if _, err := o.Receive(b, tx.pkts[0], h, time.Now(), &cnt, func(uint32, []byte) { t.Fatal("delivered") }); err == nil {
		t.Fatal("a shard was accepted outside fec mode")
	}
	if cnt.Malformed.Load() != 1 {
		t.Fatalf("malformed %d, want 1", cnt.Malformed.Load())
	}
}
