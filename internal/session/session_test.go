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

// sealPair returns the two ends of a session with cipher c and a sealer for
// a's packets.
func sealPair(t testing.TB, c aead.Cipher) (a, b *State, sl *Sealer) {
	t.Helper()
	a, b = pairWith(t, c)
	return a, b, NewSealer()
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

// eachCipher runs f for every cipher, as a subtest or a sub-benchmark of tb.
func eachCipher[T interface{ Run(string, func(T)) bool }](tb T, f func(T, aead.Cipher)) {
	for _, c := range []aead.Cipher{aead.ChaCha20Poly1305, aead.AES256GCM} {
		tb.Run(c.String(), func(tb T) { f(tb, c) })
	}
}

func TestSealReceive(t *testing.T) { eachCipher(t, testSealReceive) }

func testSealReceive(t *testing.T, c aead.Cipher) {
	a, b, sl := sealPair(t, c)
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
	a, b, sl := sealPair(t, aead.ChaCha20Poly1305)
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

func BenchmarkSealOpen(b *testing.B) { eachCipher(b, benchSealOpen) }

func benchSealOpen(b *testing.B, c aead.Cipher) {
	x, y, sl := sealPair(b, c)
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

// TestDuplicatesAuthenticated: a packet the replay window refuses is
// reported as a duplicate (or too old) only when it is a copy of a packet the
// peer sealed; a forgery that reuses a seen counter is an authentication
// failure. Security review finding 7 (ef6581c): fails before the fix: the
// window was checked before authentication and its verdict returned as is,
// so a spoofed packet with a seen counter counted as a received duplicate on
// its path.
func TestDuplicatesAuthenticated(t *testing.T) {
	a, b, sl := sealPair(t, aead.ChaCha20Poly1305)
	var o Opener
	seal := func() []byte {
		pkt, err := sl.SealClose(a)
		if err != nil {
			t.Fatal(err)
		}
		return append([]byte(nil), pkt...)
	}
	open := func(p []byte) error {
		h, err := wire.ParseHeader(p)
		if err != nil {
			t.Fatal(err)
		}
		_, err = o.Open(b, append([]byte(nil), p...), h)
		return err
	}
	first := seal()
	if err := open(first); err != nil {
		t.Fatal(err)
	}
	// A genuine copy, recognised by its tag.
	if err := open(first); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("genuine copy: %v, want ErrDuplicate", err)
	}
	// The same counter with another tag: forged. (A copy with the tag of a
	// packet accepted and another body passes as a duplicate: only someone
	// who saw the genuine packet knows its tag, and could send the packet
	// itself.)
	for _, i := range []int{len(first) - 1, len(first) - wire.TagLen} {
		forged := append([]byte(nil), first...)
		forged[i] ^= 0x40
		if err := open(forged); !errors.Is(err, ErrAuth) {
			t.Fatalf("forged copy (byte %d changed): %v, want ErrAuth", i, err)
		}
	}
	// A copy of a packet accepted longer ago than the tag memory reaches
	// is opened again, and is still a duplicate.
	for i := 0; i < 2*memoSize; i++ {
		if err := open(seal()); err != nil {
			t.Fatal(err)
		}
	}
	if err := open(first); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("genuine copy past the memo: %v, want ErrDuplicate", err)
	}
	forged := append([]byte(nil), first...)
	forged[wire.HeaderLen] ^= 1
	if err := open(forged); !errors.Is(err, ErrAuth) {
		t.Fatalf("forged copy past the memo: %v, want ErrAuth", err)
	}
	// Too old: only a genuine packet says so.
	for i := 0; i < b.Window()+10; i++ {
		if err := open(seal()); err != nil {
			t.Fatal(err)
		}
	}
	if err := open(first); !errors.Is(err, ErrTooOld) {
		t.Fatalf("genuine old packet: %v, want ErrTooOld", err)
	}
	if err := open(forged); !errors.Is(err, ErrAuth) {
		t.Fatalf("forged old packet: %v, want ErrAuth", err)
	}
	// Where the source counts for nothing, a refused copy is not opened.
	o.UncheckedCopies = true
	if err := open(forged); !errors.Is(err, ErrTooOld) {
		t.Fatalf("unchecked old copy: %v, want ErrTooOld", err)
	}
	o.UncheckedCopies = false
	// Truncated below the overhead: refused without a panic.
	if _, err := o.Open(b, first[:wire.Overhead-1], wire.Header{Receiver: b.LocalIndex, Counter: 1}); !errors.Is(err, ErrAuth) {
		t.Fatalf("truncated: %v", err)
	}
}

// TestSealStreams: a run of stream packets is sealed into packets each
// holding one, in order, that the peer opens back to the same bytes; one
// too large for the plaintext is skipped.
func TestSealStreams(t *testing.T) {
	a, b := pair(t)
	var sl Sealer
	in := [][]byte{[]byte("one"), bytes.Repeat([]byte{7}, 1334), bytes.Repeat([]byte{8}, 1335), []byte("four")}
	out := sl.SealStreams(a, in, 1335)
	if len(out) != 3 {
		t.Fatalf("%d sealed, want 3 (one too large)", len(out))
	}
	var o Opener
	for i, want := range [][]byte{in[0], in[1], in[3]} {
		pkt := append([]byte(nil), out[i]...)
		h, _ := wire.ParseHeader(pkt)
		m, err := o.Open(b, pkt, h)
		if err != nil || m.Kind != wire.MsgStream || !bytes.Equal(m.Body, want) {
			t.Fatalf("packet %d: %v kind %d, %d bytes", i, err, m.Kind, len(m.Body))
		}
	}
}
