package repair

import (
	"bytes"
	"slices"
	"testing"
	"time"
)

// TestTrackerAsksForGaps: a counter skipped is asked for once its wait is
// over, again after each retry, Tries times, then given up; one that
// arrives meanwhile is counted filled and asked for no more.
func TestTrackerAsksForGaps(t *testing.T) {
	var tr Tracker
	tr.SetDelays(10*time.Millisecond, 50*time.Millisecond)
	t0 := time.Unix(1000, 0)
	for _, c := range []uint64{0, 1, 4, 5} { // 2 and 3 missing
		due := tr.Seen(c, t0)
		if c == 4 && !due.Equal(t0.Add(10*time.Millisecond)) {
			t.Fatalf("first gap: timer due %v, want the wait after it", due)
		}
		if c != 4 && !due.IsZero() {
			t.Fatalf("counter %d armed the timer (%v)", c, due)
		}
	}
	if got, next := tr.Due(t0.Add(9*time.Millisecond), nil); len(got) != 0 || !next.Equal(t0.Add(10*time.Millisecond)) {
		t.Fatalf("before the wait: asked %v, next %v", got, next)
	}
	got, next := tr.Due(t0.Add(10*time.Millisecond), nil)
	if !slices.Equal(got, []uint64{2, 3}) || !next.Equal(t0.Add(60*time.Millisecond)) {
		t.Fatalf("asked %v (want [2 3]), next %v", got, next)
	}
	tr.Seen(3, t0.Add(30*time.Millisecond)) // the repair of 3
	at := t0.Add(60 * time.Millisecond)
	for try := 2; try <= Tries; try++ {
		if got, _ = tr.Due(at, nil); !slices.Equal(got, []uint64{2}) {
			t.Fatalf("try %d: asked %v, want [2]", try, got)
		}
		at = at.Add(50 * time.Millisecond)
	}
	if got, next = tr.Due(at, nil); len(got) != 0 || !next.IsZero() {
		t.Fatalf("after %d tries: asked %v, next %v; want nothing", Tries, got, next)
	}
	want := Stats{Asked: 2 + Tries - 1, Filled: 1, Lost: 1}
	if s := tr.Stats(); s != want || tr.Pending() != 0 {
		t.Fatalf("stats %+v (pending %d), want %+v", s, tr.Pending(), want)
	}
}

// TestTrackerBounds: a jump longer than MaxJump is watched only for its
// last MaxJump counters, and the pending list never passes MaxPending; one
// request names at most MaxAsk counters.
func TestTrackerBounds(t *testing.T) {
	var tr Tracker
	t0 := time.Unix(1000, 0)
	tr.Seen(0, t0)
	tr.Seen(10_000, t0)
	if n, s := tr.Pending(), tr.Stats(); n != MaxJump || s.Missed != 10_000-1-MaxJump {
		t.Fatalf("after a jump: %d pending, %d missed", n, s.Missed)
	}
	for c := uint64(10_002); c < 30_000; c += 2 {
		tr.Seen(c, t0)
	}
	if n := tr.Pending(); n != MaxPending {
		t.Fatalf("%d pending, want the bound %d", n, MaxPending)
	}
	got, _ := tr.Due(t0.Add(time.Second), nil)
	if len(got) != MaxAsk || !slices.IsSorted(got) {
		t.Fatalf("one round asked %d counters (sorted %v), want %d", len(got), slices.IsSorted(got), MaxAsk)
	}
}

// TestRingTake: a kept packet comes back as it was put, Tries times at
// most; one whose slot a newer packet took, or never kept, does not.
func TestRingTake(t *testing.T) {
	r := NewRing(100)
	if r.Size() != 128 {
		t.Fatalf("size %d, want 128", r.Size())
	}
	for c := uint64(0); c < 200; c++ {
		r.Put(c, bytes.Repeat([]byte{byte(c)}, int(c%50)+1))
	}
	got, ok := r.Take(150, []byte("x"))
	if !ok || !bytes.Equal(got, append([]byte("x"), bytes.Repeat([]byte{150}, 1)...)) {
		t.Fatalf("take 150: %v %q", ok, got)
	}
	for range Tries - 1 {
		if _, ok := r.Take(150, nil); !ok {
			t.Fatal("a packet could not be taken Tries times")
		}
	}
	if _, ok := r.Take(150, nil); ok {
		t.Fatal("a packet was taken more than Tries times")
	}
	if _, ok := r.Take(10, nil); ok {
		t.Fatal("a packet older than the ring was taken")
	}
	if _, ok := r.Take(500, nil); ok {
		t.Fatal("a packet never put was taken")
	}
	if s := r.Stats(); s.Resent != Tries || s.Missing != 3 {
		t.Fatalf("stats %+v", s)
	}
	// A large packet's buffer is not kept for a small one.
	r.Put(1000, make([]byte, 9000))
	r.Put(1000+uint64(r.Size()), []byte{1})
	if c := cap(r.slots[1000%128].buf); c > keepBuf {
		t.Fatalf("slot kept a %d-byte buffer for a 1-byte packet", c)
	}
}

// TestBudget: a Ring resends about one packet in Share of those it kept,
// beyond a first Burst; a Tracker asks likewise for those it saw, putting
// off the rest.
func TestBudget(t *testing.T) {
	r := NewRing(4096)
	for c := range uint64(4096) {
		r.Put(c, []byte{1})
	}
	taken := 0
	for c := range uint64(4096) {
		if _, ok := r.Take(c, nil); ok {
			taken++
		}
	}
	if want := Burst; taken != want {
		t.Fatalf("%d resent right after 4,096 kept, want the burst %d", taken, want)
	}
	for c := uint64(4096); c < 4096+8*Share; c++ {
		r.Put(c, []byte{1})
	}
	taken = 0
	for c := uint64(4096); c < 4096+8*Share; c++ {
		if _, ok := r.Take(c, nil); ok {
			taken++
		}
	}
	if taken != 8 {
		t.Fatalf("%d resent of %d kept since, want %d (one in %d)", taken, 8*Share, 8, Share)
	}
	if s := r.Stats(); s.Refused == 0 {
		t.Fatalf("stats %+v: no refusal counted", s)
	}

	var tr Tracker
	t0 := time.Unix(1000, 0)
	// Every other counter missing: half the packets lost, far over the
	// budget once the burst is spent.
	for c := uint64(0); c < 4*Burst; c += 2 {
		tr.Seen(c, t0)
	}
	asked := 0
	for i := range 40 {
		got, _ := tr.Due(t0.Add(time.Duration(i+1)*time.Second), nil)
		asked += len(got)
	}
	if asked > Burst+2*Burst/Share+1 {
		t.Fatalf("asked %d times for %d missing counters, want the budget's %d", asked, 2*Burst, Burst+2*Burst/Share)
	}
	if s := tr.Stats(); s.Delayed == 0 {
		t.Fatalf("stats %+v: nothing put off", s)
	}
}
