package replay

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// model is the reference the Filter is checked against: a set of every
// accepted counter plus the largest one, applying the window rule directly.
type model struct {
	window uint64
	max    uint64
	seen   map[uint64]struct{}
}

func newModel(window int) *model {
	return &model{window: uint64(window), seen: make(map[uint64]struct{})}
}

func (m *model) check(c uint64) Result {
	if c > m.max {
		return Accepted
	}
	if m.max-c >= m.window {
		return TooOld
	}
	if _, ok := m.seen[c]; ok {
		return Duplicate
	}
	return Accepted
}

func (m *model) update(c uint64) Result {
	r := m.check(c)
	if r == Accepted {
		m.seen[c] = struct{}{}
		if c > m.max {
			m.max = c
		}
	}
	if len(m.seen) > 4*int(m.window)+1024 {
		m.prune()
	}
	return r
}

// prune drops counters that are outside the window; they can never again
// change a verdict.
func (m *model) prune() {
	for c := range m.seen {
		if m.max-c >= m.window {
			delete(m.seen, c)
		}
	}
}

// op is one step: a counter and whether it is only checked or updated.
type op struct {
	counter uint64
	check   bool
}

// runOps applies ops to a fresh Filter of the given size and to the model,
// failing on the first disagreement.
func runOps(t *testing.T, size int, ops []op) {
	t.Helper()
	var f Filter
	f.Init(size)
	m := newModel(f.Window())
	for i, o := range ops {
		want := m.check(o.counter)
		if got := f.Check(o.counter); got != want {
			t.Fatalf("size %d, step %d: Check(%d) = %v, model says %v (max %d)",
				size, i, o.counter, got, want, m.max)
		}
		if o.check {
			continue
		}
		want = m.update(o.counter)
		if got := f.Update(o.counter); got != want {
			t.Fatalf("size %d, step %d: Update(%d) = %v, model says %v (max %d)",
				size, i, o.counter, got, want, m.max)
		}
	}
}

func TestWindow(t *testing.T) {
	tests := []struct {
		size, want int
	}{
		{-5, 16320},
		{0, 16320},
		{1, 64},
		{64, 64},
		{65, 192},
		{192, 192},
		{193, 448},
		{1000, 1984},
		{8192, 16320},
		{MaxSize, 2*MaxSize - 64},
	}
	for _, tt := range tests {
		var f Filter
		f.Init(tt.size)
		if got := f.Window(); got != tt.want {
			t.Errorf("Init(%d): Window() = %d, want %d", tt.size, got, tt.want)
		}
		if tt.size > 0 && f.Window() < tt.size {
			t.Errorf("Init(%d): Window() = %d is smaller than requested", tt.size, f.Window())
		}
		if n := len(f.ring); n&(n-1) != 0 {
			t.Errorf("Init(%d): ring length %d is not a power of two", tt.size, n)
		}
	}
	var zero Filter
	if got := zero.Window(); got != 16320 || got < DefaultSize {
		t.Errorf("zero Filter: Window() = %d, want 16320", got)
	}
}

func TestInitTooLargePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Init(MaxSize+1) did not panic")
		}
	}()
	var f Filter
	f.Init(MaxSize + 1)
}

const (
	A = Accepted
	D = Duplicate
	O = TooOld
)

func TestUpdateTable(t *testing.T) {
	const max = math.MaxUint64
	// Init(100) gives a ring of 4 blocks and a window of 192.
	const w = 192
	tests := []struct {
		name     string
		counters []uint64
		want     []Result
	}{
		{"in order", []uint64{0, 1, 2, 3, 4, 5}, []Result{A, A, A, A, A, A}},
		{"zero is a counter", []uint64{0, 0}, []Result{A, D}},
		{"zero after start", []uint64{1, 0, 0}, []Result{A, A, D}},
		{"duplicates", []uint64{7, 7, 8, 7, 8, 8}, []Result{A, D, A, D, D, D}},
		{"reordered", []uint64{10, 5, 7, 5, 9, 6, 8, 10}, []Result{A, A, A, D, A, A, A, D}},
		{"three paths", []uint64{1, 2, 1, 3, 2, 1, 3, 2, 3}, []Result{A, A, D, A, D, D, D, D, D}},
		{"edge of window", []uint64{1000, 1000 - w + 1, 1000 - w, 1000 - w + 1}, []Result{A, A, O, D}},
		{"too old", []uint64{5000, 0, 4000, 4808, 4809}, []Result{A, O, O, O, A}},
		{"across block border", []uint64{63, 64, 63, 64, 127, 128, 65}, []Result{A, A, D, D, A, A, A}},
		{"jump inside ring", []uint64{10, 200, 10, 9, 11}, []Result{A, A, D, A, A}},
		{"jump of a whole ring", []uint64{100, 356, 100, 292, 165, 164}, []Result{A, A, O, A, A, O}},
		{"jump beyond ring", []uint64{3, 1 << 20, 3, 1<<20 - 1, 1 << 20}, []Result{A, A, O, A, D}},
		{"jump to max", []uint64{0, max, 0, max, max - 1, max - w + 1, max - w}, []Result{A, A, O, D, A, A, O}},
		{"near max", []uint64{max - 1, max, max, max - 1, max - 2}, []Result{A, A, D, D, A}},
		{"first counter huge", []uint64{1 << 62, 0, 1<<62 - 5}, []Result{A, O, A}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.counters) != len(tt.want) {
				t.Fatalf("bad table: %d counters, %d results", len(tt.counters), len(tt.want))
			}
			var f Filter
			f.Init(100)
			if f.Window() != w {
				t.Fatalf("Window() = %d, want %d", f.Window(), w)
			}
			for i, c := range tt.counters {
				check := f.Check(c)
				got := f.Update(c)
				if got != tt.want[i] {
					t.Errorf("step %d: Update(%d) = %v, want %v", i, c, got, tt.want[i])
				}
				if check != got {
					t.Errorf("step %d: Check(%d) = %v but Update returned %v", i, c, check, got)
				}
			}
		})
	}
}

// TestStaleBitsCleared fills the whole ring and then moves forward by less
// than, exactly, and more than one ring: no counter in the new window may be
// reported as a duplicate because of bits left from the old one.
func TestStaleBitsCleared(t *testing.T) {
	for _, jump := range []uint64{1, 63, 64, 65, 128, 255, 256, 257, 1000, 1 << 40} {
		var f Filter
		f.Init(100) // 4 blocks, 256 bits
		for c := uint64(0); c < 256; c++ {
			if r := f.Update(c); r != Accepted {
				t.Fatalf("jump %d: fill: Update(%d) = %v", jump, c, r)
			}
		}
		top := uint64(255) + jump
		if r := f.Update(top); r != Accepted {
			t.Fatalf("jump %d: Update(%d) = %v", jump, top, r)
		}
		for c := top - uint64(f.Window()) + 1; c < top; c++ {
			want := Accepted
			if c <= 255 {
				want = Duplicate
			}
			if r := f.Update(c); r != want {
				t.Fatalf("jump %d: Update(%d) = %v, want %v", jump, c, r, want)
			}
		}
	}
}

func TestZeroValue(t *testing.T) {
	var f Filter
	if r := f.Check(0); r != Accepted {
		t.Errorf("zero Filter: Check(0) = %v, want Accepted", r)
	}
	if r := f.Check(math.MaxUint64); r != Accepted {
		t.Errorf("zero Filter: Check(max) = %v, want Accepted", r)
	}
	if r := f.Update(0); r != Accepted {
		t.Errorf("zero Filter: Update(0) = %v, want Accepted", r)
	}
	if r := f.Update(0); r != Duplicate {
		t.Errorf("zero Filter: second Update(0) = %v, want Duplicate", r)
	}
	if f.Window() < DefaultSize {
		t.Errorf("zero Filter: Window() = %d < DefaultSize", f.Window())
	}
	w := uint64(f.Window())
	if r := f.Update(w); r != Accepted {
		t.Errorf("Update(%d) = %v, want Accepted", w, r)
	}
	if r := f.Update(0); r != TooOld {
		t.Errorf("Update(0) after %d = %v, want TooOld", w, r)
	}
	if r := f.Update(1); r != Accepted {
		t.Errorf("Update(1) after %d = %v, want Accepted", w, r)
	}

	var z Filter
	z.Reset() // must not panic on the zero value
	if r := z.Update(5); r != Accepted {
		t.Errorf("after Reset of zero Filter: Update(5) = %v", r)
	}
}

func TestCheckDoesNotRecord(t *testing.T) {
	var f Filter
	f.Init(64)
	for i := 0; i < 3; i++ {
		if r := f.Check(42); r != Accepted {
			t.Fatalf("Check(42) #%d = %v, want Accepted", i, r)
		}
	}
	if r := f.Update(42); r != Accepted {
		t.Fatalf("Update(42) after Check = %v, want Accepted", r)
	}
	if r := f.Check(42); r != Duplicate {
		t.Fatalf("Check(42) after Update = %v, want Duplicate", r)
	}
	if r := f.Check(1000); r != Accepted {
		t.Fatalf("Check(1000) = %v, want Accepted", r)
	}
	// Check(1000) must not have moved the window.
	if r := f.Update(41); r != Accepted {
		t.Fatalf("Update(41) = %v, want Accepted", r)
	}
}

func TestResetAndInit(t *testing.T) {
	var f Filter
	f.Init(64)
	for c := uint64(0); c < 100; c++ {
		f.Update(c)
	}
	f.Reset()
	if f.Window() != 64 {
		t.Errorf("Reset changed Window() to %d", f.Window())
	}
	for c := uint64(0); c < 100; c++ {
		if r := f.Update(c); r != Accepted {
			t.Fatalf("after Reset: Update(%d) = %v, want Accepted", c, r)
		}
	}
	f.Init(64) // same size: ring reused, state reset
	if r := f.Update(99); r != Accepted {
		t.Errorf("after Init: Update(99) = %v, want Accepted", r)
	}
	f.Init(1000)
	if f.Window() != 1984 {
		t.Errorf("after Init(1000): Window() = %d, want 1984", f.Window())
	}
	if r := f.Update(99); r != Accepted {
		t.Errorf("after Init(1000): Update(99) = %v, want Accepted", r)
	}
}

func TestResultString(t *testing.T) {
	for r, want := range map[Result]string{
		Accepted: "Accepted", Duplicate: "Duplicate", TooOld: "TooOld", 9: "Result(9)",
	} {
		if got := r.String(); got != want {
			t.Errorf("Result(%d).String() = %q, want %q", uint8(r), got, want)
		}
	}
}

func TestNoAllocs(t *testing.T) {
	var f Filter
	f.Init(0)
	var c uint64
	allocs := testing.AllocsPerRun(1000, func() {
		c += 3
		f.Update(c)
		f.Update(c - 1)
		f.Check(c - 2)
		f.Update(c + 1<<30)
	})
	if allocs != 0 {
		t.Errorf("Update/Check allocate %v times per run, want 0", allocs)
	}
}

// randomOps generates a sequence mixing in-order traffic, reordering,
// duplicates, bursts around the trailing edge of the window and big jumps.
func randomOps(rng *rand.Rand, window uint64, n int) []op {
	ops := make([]op, 0, n)
	var top, prev uint64
	for len(ops) < n {
		var c uint64
		switch k := rng.IntN(100); {
		case k < 30: // next in order, sometimes skipping a few
			c = top + 1 + uint64(rng.IntN(4))
		case k < 50: // reordered inside the window
			c = top - uint64(rng.IntN(int(window)))
		case k < 60: // a copy of the previous counter
			c = prev
		case k < 75: // around the trailing edge of the window
			c = top - window + uint64(rng.IntN(9)) - 4
		case k < 80: // a burst around the edge
			base := top - window - 2
			for i := 0; i < 6 && len(ops) < n-1; i++ {
				ops = append(ops, op{counter: base + uint64(i), check: rng.IntN(4) == 0})
			}
			c = base + 6
		case k < 85: // a jump of about a window or a ring
			c = top + window + uint64(rng.IntN(200)) - 100
		case k < 88: // a huge jump
			c = top + uint64(rng.Int64N(1<<40))
		case k < 90: // near the end of the counter space
			c = math.MaxUint64 - uint64(rng.IntN(int(2*window)))
		case k < 92: // anything
			c = rng.Uint64()
		default: // a little ahead
			c = top + uint64(rng.IntN(int(window)))
		}
		ops = append(ops, op{counter: c, check: rng.IntN(8) == 0})
		prev = c
		if c > top {
			top = c
		}
	}
	return ops
}

func TestAgainstModelRandom(t *testing.T) {
	sizes := []int{1, 64, 65, 100, 300, 1000, 0}
	seeds := 200
	if testing.Short() {
		seeds = 20
	}
	for seed := 0; seed < seeds; seed++ {
		rng := rand.New(rand.NewPCG(uint64(seed), 0x6d70_7475_6e6e_656c))
		size := sizes[seed%len(sizes)]
		var f Filter
		f.Init(size)
		runOps(t, size, randomOps(rng, uint64(f.Window()), 3000))
	}
}

// TestAgainstModelMultipath sends each counter over several paths with
// different delays and jitter and delivers the copies in arrival order, as
// the receiver sees them.
func TestAgainstModelMultipath(t *testing.T) {
	for seed := 0; seed < 50; seed++ {
		rng := rand.New(rand.NewPCG(uint64(seed), 1))
		paths := 1 + rng.IntN(4)
		delay := make([]int, paths)
		for i := range delay {
			delay[i] = rng.IntN(500)
		}
		type arrival struct {
			at      int
			counter uint64
		}
		var arrivals []arrival
		start := uint64(0)
		if seed%5 == 0 {
			start = math.MaxUint64 - 5000
		}
		for i := 0; i < 4000; i++ {
			for p := 0; p < paths; p++ {
				if rng.IntN(20) == 0 {
					continue // lost on this path
				}
				arrivals = append(arrivals, arrival{at: i + delay[p] + rng.IntN(50), counter: start + uint64(i)})
			}
		}
		sort.SliceStable(arrivals, func(a, b int) bool { return arrivals[a].at < arrivals[b].at })
		ops := make([]op, len(arrivals))
		for i, a := range arrivals {
			ops[i] = op{counter: a.counter}
		}
		runOps(t, []int{64, 256, 1000}[seed%3], ops)
	}
}

// decodeOps turns fuzz bytes into a window size and a sequence of steps.
// The first byte picks the size; every following byte picks how the next
// counter is derived, and may consume more bytes as its operand.
func decodeOps(data []byte) (int, []op) {
	if len(data) == 0 {
		return 1, nil
	}
	size := int(data[0])*4 + 1 // windows of 64 to 1984
	var f Filter
	f.Init(size)
	window := uint64(f.Window())
	data = data[1:]
	var ops []op
	var top, prev uint64
	next := func(n int) (uint64, bool) {
		if len(data) < n {
			return 0, false
		}
		var buf [8]byte
		copy(buf[:], data[:n])
		data = data[n:]
		return binary.LittleEndian.Uint64(buf[:]), true
	}
	for len(data) > 0 {
		b := data[0]
		data = data[1:]
		arg := uint64(b >> 4)
		var c uint64
		var ok bool
		switch b & 7 {
		case 0: // small step forward
			c, ok = top+arg+1, true
		case 1: // small step back
			c, ok = next(1)
			c = top - c
		case 2: // around the trailing edge of the window
			c, ok = next(1)
			c = top - window + uint64(int64(int8(c)))
		case 3: // medium step forward
			c, ok = next(2)
			c += top
		case 4: // absolute counter
			c, ok = next(8)
		case 5: // near the end of the counter space
			c, ok = next(1)
			c = math.MaxUint64 - c
		case 6: // the previous counter again
			c, ok = prev, true
		case 7: // jump by whole windows
			c, ok = next(1)
			c = top + c*window + arg
		}
		if !ok {
			break
		}
		ops = append(ops, op{counter: c, check: b&8 != 0})
		prev = c
		if c > top {
			top = c
		}
	}
	return size, ops
}

func FuzzFilter(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 6, 1, 3})
	f.Add([]byte{16, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 6, 5, 0, 5, 1, 2, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		size, ops := decodeOps(data)
		runOps(t, size, ops)
	})
}

// benchFilter reports allocations and returns a filter of the default
// size.
func benchFilter(b *testing.B) *Filter {
	b.ReportAllocs()
	f := new(Filter)
	f.Init(0)
	return f
}

func BenchmarkUpdate(b *testing.B) {
	b.Run("InOrder", func(b *testing.B) {
		f := benchFilter(b)
		var c uint64
		for b.Loop() {
			f.Update(c)
			c++
		}
	})
	b.Run("ThreePaths", func(b *testing.B) {
		// Each counter arrives three times, the copies interleaved with
		// the next counters.
		f := benchFilter(b)
		var c uint64 = 10
		for b.Loop() {
			f.Update(c)
			f.Update(c - 3)
			f.Update(c - 7)
			c++
		}
	})
	b.Run("Jumps", func(b *testing.B) {
		f := benchFilter(b)
		var c uint64
		for b.Loop() {
			c += 1 << 20
			f.Update(c)
		}
	})
}

func BenchmarkCheck(b *testing.B) {
	f := benchFilter(b)
	for c := uint64(0); c < 10000; c++ {
		f.Update(c)
	}
	var c uint64
	for b.Loop() {
		f.Check(c % 12000)
		c++
	}
}
