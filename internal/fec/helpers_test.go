package fec

import (
	"encoding/binary"
	"testing"
	"time"
)

var t0 = time.Unix(1_800_000_000, 0)

func mustEncoder(t testing.TB, p Params) *Encoder {
	t.Helper()
	e, err := NewEncoder(p, 0)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// fill writes datagram number seq into b: the number, then a pattern derived
// from it, so a delivered datagram can be checked byte for byte.
func fill(b []byte, seq uint64) {
	if len(b) < 8 {
		panic("datagram too short to number")
	}
	binary.BigEndian.PutUint64(b, seq)
	x := uint32(seq*2654435761 + 1)
	for i := 8; i < len(b); i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
}

// verify checks that a delivered datagram is the one numbered in it, of the
// expected length, and returns its number.
func verify(t testing.TB, got []byte, sizeOf func(uint64) int) uint64 {
	t.Helper()
	if len(got) < 8 {
		t.Fatalf("delivered %d bytes: not a datagram that was sent", len(got))
	}
	seq := binary.BigEndian.Uint64(got)
	if n := sizeOf(seq); n != len(got) {
		t.Fatalf("datagram %d: delivered %d bytes, sent %d", seq, len(got), n)
	}
	x := uint32(seq*2654435761 + 1)
	for i := 8; i < len(got); i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		if got[i] != byte(x) {
			t.Fatalf("datagram %d: byte %d differs", seq, i)
		}
	}
	return seq
}

// quick reports whether the long simulations should be cut down.
func quick() bool { return testing.Short() || raceEnabled }

// datagrams is how many datagrams a long test sends: full, or fewer when the
// tests must be quick.
func datagrams(full, fewer int) int {
	if quick() {
		return fewer
	}
	return full
}

// run sends n datagrams through an Encoder and a Decoder. Each shard, counted
// in send order from 0, goes on path c%paths and is lost when lose(c, path)
// says so. It returns how many distinct datagrams arrived and the bytes
// put on the wire (headers included).
type runResult struct {
	sent, delivered, recovered int
	appBytes, wireBytes        int
	stats                      Stats
}

func (r runResult) residual() float64 { return 1 - float64(r.delivered)/float64(r.sent) }
func (r runResult) overhead() float64 { return float64(r.wireBytes) / float64(r.appBytes) }

func run(t testing.TB, p Params, n int, sizeOf func(uint64) int, paths int, lose func(c, path int) bool) runResult {
	t.Helper()
	enc := mustEncoder(t, p)
	dec := NewDecoder(Limits{})
	seen := make([]bool, n)
	var r runResult
	c := 0
	now := t0
	send := func(s Shard) {
		r.wireBytes += HeaderLen + len(s.Body)
		path := c % paths
		lost := lose(c, path)
		c++
		if lost {
			return
		}
		for _, got := range dec.Add(s, now) {
			seq := verify(t, got, sizeOf)
			if seq >= uint64(n) || seen[seq] {
				t.Fatalf("datagram %d delivered twice or never sent", seq)
			}
			seen[seq] = true
			r.delivered++
		}
	}
	buf := make([]byte, MaxDatagram)
	for i := range n {
		now = now.Add(10 * time.Microsecond)
		b := buf[:sizeOf(uint64(i))]
		fill(b, uint64(i))
		r.sent++
		r.appBytes += len(b)
		s, parity, err := enc.Add(b, now)
		if err != nil {
			t.Fatal(err)
		}
		send(s)
		for _, ps := range parity {
			send(ps)
		}
	}
	parity, err := enc.Flush()
	if err != nil {
		t.Fatal(err)
	}
	for _, ps := range parity {
		send(ps)
	}
	r.stats = dec.Stats()
	r.recovered = int(r.stats.Recovered)
	if got := int(r.stats.Delivered + r.stats.Recovered); got != r.delivered {
		t.Fatalf("stats count %d datagrams delivered, saw %d", got, r.delivered)
	}
	return r
}

func fixed(n int) func(uint64) int { return func(uint64) int { return n } }
