package reorder

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

type sink struct{ got []string }

func (s *sink) deliver(flow uint32, d []byte) { s.got = append(s.got, fmt.Sprintf("%d:%s", flow, d)) }

func TestInOrderAndWaiting(t *testing.T) {
	b := New(10*time.Millisecond, 8)
	var s sink
	t0 := time.Unix(100, 0)
	for seq := range uint64(5) {
		b.Push(seq, 0, nil, t0, s.deliver) // probes: places, no datagrams
	}
	b.Push(5, 1, []byte("a"), t0, s.deliver)
	if due := b.Push(7, 1, []byte("c"), t0, s.deliver); due != t0.Add(10*time.Millisecond) {
		t.Fatalf("due %v, want 10ms after the held packet arrived", due)
	}
	if !slices.Equal(s.got, []string{"1:a"}) {
		t.Fatalf("got %v before the gap filled", s.got)
	}
	b.Push(6, 2, []byte("b"), t0, s.deliver)
	if !slices.Equal(s.got, []string{"1:a", "2:b", "1:c"}) {
		t.Fatalf("got %v, want a b c", s.got)
	}
	// Markers (probes) fill gaps without delivering anything.
	b.Push(9, 1, []byte("e"), t0, s.deliver)
	b.Push(8, 0, nil, t0, s.deliver)
	if !slices.Equal(s.got, []string{"1:a", "2:b", "1:c", "1:e"}) {
		t.Fatalf("got %v after a marker filled the gap", s.got)
	}
	st := b.Stats()
	if st.InOrder != 2 || st.Waited != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestExpireGivesUpGaps(t *testing.T) {
	b := New(10*time.Millisecond, 8)
	var s sink
	t0 := time.Unix(100, 0)
	b.Push(0, 1, []byte("a"), t0, s.deliver)
	b.Push(3, 1, []byte("d"), t0.Add(time.Millisecond), s.deliver)
	b.Push(2, 1, []byte("c"), t0.Add(2*time.Millisecond), s.deliver)
	if due := b.Expire(t0.Add(5*time.Millisecond), s.deliver); due != t0.Add(11*time.Millisecond) {
		t.Fatalf("due %v", due)
	}
	if len(s.got) != 1 {
		t.Fatalf("delivered %v before the wait", s.got)
	}
	if due := b.Expire(t0.Add(11*time.Millisecond), s.deliver); !due.IsZero() {
		t.Fatalf("still due at %v with nothing held", due)
	}
	if !slices.Equal(s.got, []string{"1:a", "1:c", "1:d"}) {
		t.Fatalf("got %v, want a c d once 1 is given up", s.got)
	}
	// The missing one arrives late: handed on at once.
	b.Push(1, 1, []byte("b"), t0.Add(12*time.Millisecond), s.deliver)
	if s.got[3] != "1:b" || b.Stats().Late != 1 || b.Stats().Skipped != 1 {
		t.Fatalf("late packet: %v %+v", s.got, b.Stats())
	}
}

func TestOverflow(t *testing.T) {
	b := New(time.Hour, 4)
	var s sink
	t0 := time.Unix(100, 0)
	b.Push(0, 1, []byte("0"), t0, s.deliver)
	b.Push(2, 1, []byte("2"), t0, s.deliver)
	b.Push(3, 1, []byte("3"), t0, s.deliver)
	b.Push(9, 1, []byte("9"), t0, s.deliver) // beyond the span of 4: gives up 1, hands on 2 and 3
	if !slices.Equal(s.got, []string{"1:0", "1:2", "1:3"}) || b.Stats().Overflow != 1 {
		t.Fatalf("got %v, %+v", s.got, b.Stats())
	}
	b.Push(6, 1, []byte("6"), t0, s.deliver)
	b.Push(7, 1, []byte("7"), t0, s.deliver)
	b.Push(8, 1, []byte("8"), t0, s.deliver)
	if !slices.Equal(s.got, []string{"1:0", "1:2", "1:3", "1:6", "1:7", "1:8", "1:9"}) {
		t.Fatalf("got %v", s.got)
	}
}

// TestShuffled: a stream reordered within the span and with losses comes out
// in order, each datagram once, the lost ones given up after the wait.
func TestShuffled(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	b := New(5*time.Millisecond, 64)
	var out []uint64
	deliver := func(_ uint32, d []byte) {
		var v uint64
		fmt.Sscanf(string(d), "%d", &v)
		out = append(out, v)
	}
	const n = 5000
	order := make([]uint64, 0, n)
	for i := uint64(0); i < n; i += 16 {
		chunk := []uint64{}
		for j := i; j < i+16 && j < n; j++ {
			chunk = append(chunk, j)
		}
		rng.Shuffle(len(chunk), func(a, c int) { chunk[a], chunk[c] = chunk[c], chunk[a] })
		order = append(order, chunk...)
	}
	now := time.Unix(100, 0)
	lost := map[uint64]bool{}
	for _, seq := range order {
		now = now.Add(10 * time.Microsecond)
		if rng.IntN(20) == 0 {
			lost[seq] = true
			continue
		}
		b.Push(seq, 0, []byte(fmt.Sprint(seq)), now, deliver)
		b.Expire(now, deliver)
	}
	b.Expire(now.Add(time.Second), deliver)
	if len(out) != n-len(lost) {
		t.Fatalf("delivered %d, want %d", len(out), n-len(lost))
	}
	if !slices.IsSorted(out) {
		t.Fatal("not in order")
	}
	if st := b.Stats(); st.Skipped != uint64(len(lost)) || st.Late != 0 {
		t.Fatalf("stats %+v, want %d skipped and none late", st, len(lost))
	}
}

// benchBuffer is a buffer the benchmarks feed 1200-byte datagrams of flow
// 1 at now, handing them on to nowhere.
type benchBuffer struct {
	*Buffer
	now time.Time
	d   []byte
}

func newBenchBuffer(b *testing.B, wait time.Duration) *benchBuffer {
	b.ReportAllocs()
	return &benchBuffer{Buffer: New(wait, 0), now: time.Unix(100, 0), d: make([]byte, 1200)}
}

func (bb *benchBuffer) push(seq uint64) { bb.Push(seq, 1, bb.d, bb.now, func(uint32, []byte) {}) }

func BenchmarkInOrder(b *testing.B) {
	buf := newBenchBuffer(b, 10*time.Millisecond)
	seq := uint64(0)
	for b.Loop() {
		buf.push(seq)
		seq++
	}
}

func BenchmarkSwapped(b *testing.B) {
	buf := newBenchBuffer(b, 10*time.Millisecond)
	seq := uint64(0)
	for b.Loop() {
		buf.push(seq + 1)
		buf.push(seq)
		seq += 2
	}
}

// BenchmarkBehind: even sequence numbers come by a path 32 ahead of the odd
// ones' path, so 16 datagrams are always held and each late one releases
// one of them.
func BenchmarkBehind(b *testing.B) {
	buf := newBenchBuffer(b, time.Second)
	for seq := uint64(0); seq < 32; seq += 2 {
		buf.push(seq)
	}
	k := uint64(0)
	for b.Loop() {
		buf.now = buf.now.Add(time.Microsecond)
		buf.push(2*k + 32)
		buf.push(2*k + 1)
		k++
	}
	if st := buf.Stats(); st.Skipped != 0 || st.Waited < uint64(b.N) {
		b.Fatalf("the pattern did not hold: %+v", st)
	}
}

// TestTimed: a datagram held for a gap that never fills is handed on by the
// timer once its wait is over.
func TestTimed(t *testing.T) {
	got := make(chan string, 4)
	tb := NewTimed(20*time.Millisecond, 8, func(flow uint32, d []byte) { got <- string(d) })
	defer tb.Stop()
	start := time.Now()
	tb.Push(1, 1, []byte("after a gap"), start)
	select {
	case d := <-got:
		if d != "after a gap" {
			t.Fatalf("got %q", d)
		}
		if el := time.Since(start); el < 20*time.Millisecond {
			t.Fatalf("handed on after %v, before its wait of 20ms", el)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the timer never handed the datagram on")
	}
	if st := tb.Stats(); st.Skipped != 1 || st.Waited != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// FuzzPush: whatever sequence of pushes and expiries, every datagram pushed
// (and not a copy of one held) is handed on exactly once, in order except for
// those counted late, and the buffer holds no more than its span.
func FuzzPush(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3})
	f.Add([]byte{3, 2, 1, 0})
	f.Add([]byte{0, 200, 1, 255, 2, 9})
	f.Fuzz(func(t *testing.T, ops []byte) {
		b := New(time.Millisecond, 16)
		now := time.Unix(100, 0)
		var got []uint64
		deliver := func(_ uint32, d []byte) { got = append(got, binary.BigEndian.Uint64(d)) }
		pushed := map[uint64]bool{}
		var seq uint64
		for _, op := range ops {
			switch {
			case op == 255:
				now = now.Add(2 * time.Millisecond)
				b.Expire(now, deliver)
			case op >= 128:
				seq += uint64(op - 127) // a jump forward
			default:
				s := seq + uint64(op%32)
				if !pushed[s] {
					pushed[s] = true
					b.Push(s, 0, binary.BigEndian.AppendUint64(nil, s), now, deliver)
				}
			}
			if b.held > len(b.slots) {
				t.Fatalf("holds %d in a span of %d", b.held, len(b.slots))
			}
		}
		b.Expire(now.Add(time.Hour), deliver)
		if len(got) != len(pushed) {
			t.Fatalf("pushed %d, handed on %d", len(pushed), len(got))
		}
		seen := map[uint64]bool{}
		inversions := 0
		for i, v := range got {
			if seen[v] {
				t.Fatalf("%d handed on twice", v)
			}
			seen[v] = true
			if i > 0 && v < got[i-1] {
				inversions++
			}
		}
		if st := b.Stats(); uint64(inversions) > st.Late {
			t.Fatalf("%d out of order, %d counted late", inversions, st.Late)
		}
	})
}

// TestByteBound: a buffer never holds more than MaxBytes of datagrams; what
// would not fit is handed on at once.
func TestByteBound(t *testing.T) {
	b := New(time.Hour, 0)
	var s sink
	t0 := time.Unix(100, 0)
	big := make([]byte, 60000)
	n := MaxBytes/len(big) + 10
	for seq := uint64(1); seq <= uint64(n); seq++ { // 0 never comes: all wait
		b.Push(seq, 1, big, t0, s.deliver)
	}
	if b.bytes > MaxBytes {
		t.Fatalf("holds %d bytes, more than %d", b.bytes, MaxBytes)
	}
	if len(s.got) < 10 || b.Stats().Overflow < 10 {
		t.Fatalf("handed on %d at once, %+v; want the ones past the bound", len(s.got), b.Stats())
	}
	b.Push(0, 0, nil, t0, s.deliver)
	if len(s.got) != n || b.bytes != 0 {
		t.Fatalf("after the gap filled: %d handed on of %d, %d bytes held", len(s.got), n, b.bytes)
	}
}
