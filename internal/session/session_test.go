package session

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/aead"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/metrics"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// pair returns the two ends of a ChaCha20-Poly1305 session with matching keys.
func pair(t testing.TB) (a, b *State) {
	t.Helper()
	return pairWith(t, aead.ChaCha20Poly1305)
}

func pairWith(t testing.TB, c aead.Cipher) (a, b *State) {
	t.Helper()
	var k1, k2 [32]byte
	k1[0], k2[0] = 1, 2
	a, err := New(handshake.Keys{Send: k1, Recv: k2}, c, 20, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err = New(handshake.Keys{Send: k2, Recv: k1}, c, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	a.LocalIndex, b.LocalIndex = 10, 20
	return a, b
}

func TestSealReceive(t *testing.T) {
	for _, c := range []aead.Cipher{aead.ChaCha20Poly1305, aead.AES256GCM} {
		t.Run(c.String(), func(t *testing.T) { testSealReceive(t, c) })
	}
}

func testSealReceive(t *testing.T, c aead.Cipher) {
	a, b := pairWith(t, c)
	sl := NewSealer()
	var o Opener
	var cnt metrics.Counters
	for _, n := range []int{0, 1, 1335, 1336, 8000, wire.MaxDatagram} {
		msg := bytes.Repeat([]byte{byte(n)}, n)
		copy(sl.Payload(), msg)
		pkts, err := sl.Seal(a, 7, n, wire.MaxPlaintext(1400, false))
		if err != nil {
			t.Fatal(err)
		}
		var got [][]byte
		deliver := func(flow uint32, d []byte) {
			if flow != 7 {
				t.Fatalf("flow %d", flow)
			}
			got = append(got, append([]byte(nil), d...))
		}
		for _, p := range pkts {
			if len(p)+28 > 1400 {
				t.Fatalf("%d-byte datagram made a %d-byte packet, over the MTU", n, len(p))
			}
			// Every packet arrives twice, as over two paths.
			dup := append([]byte(nil), p...)
			for _, q := range [][]byte{p, dup} {
				h, err := wire.ParseHeader(q)
				if err != nil || h.Receiver != b.LocalIndex {
					t.Fatalf("header %+v %v", h, err)
				}
				if m, err := o.Receive(b, q, h, time.Now(), &cnt, deliver); err == nil && m.Kind == wire.MsgData {
					deliver(m.Flow, m.Body)
				}
			}
		}
		if len(got) != 1 || !bytes.Equal(got[0], msg) {
			t.Fatalf("%d bytes: delivered %d datagrams", n, len(got))
		}
	}
	if cnt.Duplicates.Load() == 0 || cnt.Reassembled.Load() != 3 {
		t.Fatalf("duplicates %d, reassembled %d", cnt.Duplicates.Load(), cnt.Reassembled.Load())
	}
}

func TestOpenRejects(t *testing.T) {
	a, b := pair(t)
	sl := NewSealer()
	var o Opener
	copy(sl.Payload(), "hello")
	pkts, _ := sl.Seal(a, 1, 5, 1000)
	p := append([]byte(nil), pkts[0]...)
	h, _ := wire.ParseHeader(p)

	tampered := append([]byte(nil), p...)
	tampered[len(tampered)-1] ^= 1
	if _, err := o.Open(b, tampered, h); !errors.Is(err, ErrAuth) {
		t.Fatalf("tampered: %v", err)
	}
	// The header is authenticated too: another counter fails.
	moved := append([]byte(nil), p...)
	wire.PutHeader(moved, wire.Header{Receiver: h.Receiver, Counter: h.Counter + 1})
	if _, err := o.Open(b, moved, wire.Header{Receiver: h.Receiver, Counter: h.Counter + 1}); !errors.Is(err, ErrAuth) {
		t.Fatalf("moved counter: %v", err)
	}
	// A failed open does not burn the counter: the real packet still opens.
	if _, err := o.Open(b, append([]byte(nil), p...), h); err != nil {
		t.Fatalf("genuine packet after forgeries: %v", err)
	}
	if _, err := o.Open(b, append([]byte(nil), p...), h); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("second copy: %v", err)
	}
	// Far behind the window.
	for i := 0; i < b.Window()+10; i++ {
		sl.SealClose(a)
	}
	last, _ := sl.SealClose(a)
	lh, _ := wire.ParseHeader(last)
	if _, err := o.Open(b, last, lh); err != nil {
		t.Fatal(err)
	}
	copy(sl.Payload(), "late")
	// A packet sealed long ago (counter 0 region) arriving now is too old.
	old := append([]byte(nil), p...)
	if _, err := o.Open(b, old, h); !errors.Is(err, ErrTooOld) {
		t.Fatalf("old packet: %v", err)
	}
}

func BenchmarkSealOpen(b *testing.B) {
	for _, c := range []aead.Cipher{aead.ChaCha20Poly1305, aead.AES256GCM} {
		b.Run(c.String(), func(b *testing.B) { benchSealOpen(b, c) })
	}
}

func benchSealOpen(b *testing.B, c aead.Cipher) {
	x, y := pairWith(b, c)
	sl := NewSealer()
	var o Opener
	var cnt metrics.Counters
	deliver := func(uint32, []byte) {}
	b.SetBytes(1200)
	b.ReportAllocs()
	for b.Loop() {
		pkts, err := sl.Seal(x, 1, 1200, 1372)
		if err != nil {
			b.Fatal(err)
		}
		h, _ := wire.ParseHeader(pkts[0])
		if m, err := o.Receive(y, pkts[0], h, time.Time{}, &cnt, deliver); err != nil || m.Kind != wire.MsgData {
			b.Fatal("not delivered")
		}
	}
}
