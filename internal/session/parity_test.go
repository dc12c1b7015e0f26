package session

import (
	"bytes"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/metrics"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// TestParityRebuilds: a group of the sender's datagrams, one of them lost,
// and its parity: the receiver rebuilds the lost one from the parity and
// the others, whole, and marks it received, so that a late copy is a
// duplicate; with two lost, nothing is rebuilt until one of them comes,
// and then the other is. The largest datagram a group covers leaves room
// for the parity's header in one packet.
func TestParityRebuilds(t *testing.T) {
	a, b := pair(t)
	maxPlain := wire.MaxPlaintext(1400, false)
	var cnt metrics.Counters
	sent := func(pkts [][]byte) {}
	EnableRepair(a, 256, &cnt, sent)
	EnableRepair(b, 256, &cnt, sent)
	EnableParity(a, maxPlain, &cnt, sent)
	EnableParity(b, maxPlain, &cnt, sent)
	defer a.Stop()
	defer b.Stop()
	a.ParityTx.SetGroup(4)

	sl := NewSealer()
	var pkts [][]byte
	var want [][]byte
	// Sizes up to the most a group covers; the limit itself included.
	for i, n := range []int{100, 1, maxPlain - wire.ParityHeaderLen - wire.DataHeaderLen, 700} {
		d := bytes.Repeat([]byte{byte(i + 1)}, n)
		want = append(want, d)
		copy(sl.Payload(), d)
		out, err := sl.Seal(a, 9, n, maxPlain)
		if err != nil || len(out) != 1 {
			t.Fatalf("seal: %v, %d packets", err, len(out))
		}
		pkts = append(pkts, append([]byte(nil), out[0]...))
	}
	par := a.ParityTx.Take(a)
	if len(par) != 1 {
		t.Fatalf("%d parity packets for a group of 4, want 1", len(par))
	}
	if len(par[0])+28 > 1400 {
		t.Fatalf("a %d-byte parity packet is over the MTU", len(par[0]))
	}

	var o Opener

	deliver := func(flow uint32, d []byte) { t.Fatalf("nothing is cut here, yet %d bytes were delivered", len(d)) }
	receive := func(pkt []byte) wire.Message {
		t.Helper()
		pkt = append([]byte(nil), pkt...)
		h, _ := wire.ParseHeader(pkt)
		m, err := o.Receive(b, pkt, h, time.Now(), &cnt, deliver)
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		return m
	}
	// The parity switches storing on: only what comes after it counts, so
	// the first group is lost for parity and shows that nothing is made up.
	m := receive(par[0])
	if _, _, ok := b.Rebuild(m); ok {
		t.Fatal("rebuilt a packet from a parity whose group was never stored")
	}

	// A second group: 0, 2, 3 arrive, 1 is lost.
	pkts, want = pkts[:0], want[:0]
	for i, n := range []int{10, 20, 30, 40} {
		d := bytes.Repeat([]byte{byte(i + 10)}, n)
		want = append(want, d)
		copy(sl.Payload(), d)
		out, _ := sl.Seal(a, 9, n, maxPlain)
		pkts = append(pkts, append([]byte(nil), out[0]...))
	}
	par = a.ParityTx.Take(a)
	for _, i := range []int{0, 2, 3} {
		receive(pkts[i])
	}
	ctr, plain, ok := b.Rebuild(receive(par[0]))
	if !ok {
		t.Fatal("one packet of four lost: not rebuilt")
	}
	h, _ := wire.ParseHeader(pkts[1])
	if ctr != h.Counter {
		t.Fatalf("rebuilt counter %d, want %d", ctr, h.Counter)
	}
	rm, err := o.Rebuilt(b, ctr, plain, time.Now(), &cnt, deliver)
	if err != nil || rm.Kind != wire.MsgData || !bytes.Equal(rm.Body, want[1]) {
		t.Fatalf("rebuilt %+v %v, want datagram %q", rm, err, want[1])
	}
	// The copy that comes late is a duplicate.
	late := append([]byte(nil), pkts[1]...)
	if _, err := o.Receive(b, late, h, time.Now(), &cnt, deliver); err != ErrDuplicate {
		t.Fatalf("late copy of a rebuilt packet: %v, want ErrDuplicate", err)
	}

	// A third group: 0 and 1 lost; the parity waits, and when 0 comes, 1
	// is rebuilt.
	pkts = pkts[:0]
	for i := range 4 {
		copy(sl.Payload(), []byte{byte(i)})
		out, _ := sl.Seal(a, 9, 1, maxPlain)
		pkts = append(pkts, append([]byte(nil), out[0]...))
	}
	par = a.ParityTx.Take(a)
	receive(pkts[2])
	receive(pkts[3])
	if _, _, ok := b.Rebuild(receive(par[0])); ok {
		t.Fatal("rebuilt a packet of a group with two missing")
	}
	h0, _ := wire.ParseHeader(pkts[0])
	receive(pkts[0])
	ctr, plain, ok = b.Retry(h0.Counter)
	h1, _ := wire.ParseHeader(pkts[1])
	if !ok || ctr != h1.Counter || !bytes.Equal(plain[wire.DataHeaderLen:], []byte{1}) {
		t.Fatalf("after the other came: rebuilt %v, counter %d (want %d), %q", ok, ctr, h1.Counter, plain)
	}
	if n := b.ParityRx.Recovered(); n != 2 {
		t.Fatalf("%d rebuilt, want 2", n)
	}

}

// TestParityOff: a sender with no group size sends no parity.
func TestParityOff(t *testing.T) {
	a, _ := pair(t)
	var cnt metrics.Counters
	EnableRepair(a, 256, &cnt, func([][]byte) {})
	EnableParity(a, 1335, &cnt, func([][]byte) {})
	defer a.Stop()
	sl := NewSealer()
	for range 100 {
		if _, err := sl.Seal(a, 1, 100, 1335); err != nil {
			t.Fatal(err)
		}
	}
	if par := a.ParityTx.Take(a); len(par) != 0 || a.ParityTx.Sent() != 0 {
		t.Fatalf("%d parity packets with parity off", len(par))
	}
}
