package fec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/klauspost/reedsolomon"
)

func TestParamsValidate(t *testing.T) {
	for _, tc := range []struct {
		p  Params
		ok bool
	}{
		{DefaultParams(), true},
		{Params{Data: 1, Parity: 0}, true},
		{Params{Data: 10, Parity: 4}, true},
		{Params{Data: 254, Parity: 1}, true},
		{Params{Data: 1, Parity: 254}, true},
		{Params{Data: 0, Parity: 4}, false},
		{Params{Data: -1, Parity: 4}, false},
		{Params{Data: 4, Parity: -1}, false},
		{Params{Data: 200, Parity: 56}, false},
		{Params{Data: 255, Parity: 0}, true},
		{Params{Data: 256, Parity: 0}, false},
	} {
		err := tc.p.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%+v: err %v, want ok=%v", tc.p, err, tc.ok)
		}
		if _, err := NewEncoder(tc.p, 0); (err == nil) != tc.ok {
			t.Errorf("NewEncoder(%+v): err %v, want ok=%v", tc.p, err, tc.ok)
		}
	}
}

func TestWireFormat(t *testing.T) {
	s := Shard{Group: 0x01020304, Index: 9, Data: 8, Parity: 4, Body: []byte("parity")}
	b := s.AppendTo([]byte("x"))
	if want := "x\x01\x02\x03\x04\x09\x08\x04parity"; string(b) != want {
		t.Fatalf("AppendTo = %q, want %q", b, want)
	}
	got, err := ParseShard(b[1:])
	if err != nil {
		t.Fatal(err)
	}
	if got.Group != s.Group || got.Index != s.Index || got.Data != s.Data || got.Parity != s.Parity || string(got.Body) != "parity" || !got.IsParity() {
		t.Fatalf("ParseShard = %+v", got)
	}
	if _, err := ParseShard(b[1:7]); !errors.Is(err, ErrShortShard) {
		t.Fatalf("short shard: %v", err)
	}
	if got, err := ParseShard(b[1:8]); err != nil || len(got.Body) != 0 {
		t.Fatalf("empty body: %+v %v", got, err)
	}
}

// TestRoundTrip sends datagrams of every size class with no loss: each is
// delivered once, by its own data shard, at once and in order.
func TestRoundTrip(t *testing.T) {
	p := Params{Data: 10, Parity: 4}
	enc := mustEncoder(t, p)
	dec := NewDecoder(Limits{})
	rng := rand.New(rand.NewPCG(3, 4))
	sizes := []int{0, 1, 2, 100, 1000, 1400, MaxDatagram}
	now := t0
	parityShards := 0
	for i := range 1000 {
		n := sizes[rng.IntN(len(sizes))]
		if i%97 == 0 {
			n = MaxDatagram
		}
		d := make([]byte, n)
		for j := range d {
			d[j] = byte(i*31 + j*7)
		}
		s, parity, err := enc.Add(d, now)
		if err != nil {
			t.Fatal(err)
		}
		if s.IsParity() || s.Group != uint32(i/10) || int(s.Index) != i%10 || s.Data != 10 || s.Parity != 4 || n > 0 && &s.Body[0] != &d[0] {
			t.Fatalf("datagram %d: data shard %+v", i, s)
		}
		got := dec.Add(s, now)
		if len(got) != 1 || !bytes.Equal(got[0], d) {
			t.Fatalf("datagram %d: delivered %d datagrams at once, want it alone", i, len(got))
		}
		if (i%10 == 9) != (parity != nil) {
			t.Fatalf("datagram %d: %d parity shards", i, len(parity))
		}
		for _, ps := range parity {
			parityShards++
			if !ps.IsParity() || ps.Data != 10 || ps.Parity != 4 {
				t.Fatalf("parity shard %+v", ps)
			}
			if got := dec.Add(ps, now); len(got) != 0 {
				t.Fatalf("parity of a complete group delivered %d datagrams", len(got))
			}
		}
	}
	if parityShards != 400 {
		t.Errorf("%d parity shards, want 400", parityShards)
	}
	st := dec.Stats()
	if st.Delivered != 1000 || st.Recovered != 0 || st.Unneeded != 400 || st.Dropped() != 0 {
		t.Errorf("stats %+v", st)
	}
	if dec.InFlight() != 0 || dec.Buffered() != 0 {
		t.Errorf("after complete groups: %d groups, %d bytes buffered", dec.InFlight(), dec.Buffered())
	}
	if _, _, err := enc.Add(make([]byte, MaxDatagram+1), now); err == nil {
		t.Error("datagram over MaxDatagram accepted")
	}
}

// TestRepairEveryPattern loses every combination of up to m shards of one
// group of datagrams of different sizes and checks that the missing ones
// come back, once, with their own lengths.
func TestRepairEveryPattern(t *testing.T) {
	p := Params{Data: 5, Parity: 3}
	enc := mustEncoder(t, p)
	var shards []Shard
	var sent [][]byte
	for i := range 5 {
		d := bytes.Repeat([]byte{byte('a' + i)}, []int{0, 700, 3, 1400, 64}[i])
		sent = append(sent, d)
		s, parity, err := enc.Add(d, t0)
		if err != nil {
			t.Fatal(err)
		}
		shards = append(shards, s)
		for _, ps := range parity {
			ps.Body = bytes.Clone(ps.Body)
			shards = append(shards, ps)
		}
	}
	if len(shards) != 8 || len(shards[7].Body) != 1402 {
		t.Fatalf("%d shards, parity of %d bytes", len(shards), len(shards[7].Body))
	}
	for mask := range 1 << 8 {
		lost := 0
		for i := range 8 {
			if mask&(1<<i) != 0 {
				lost++
			}
		}
		dec := NewDecoder(Limits{})
		var got [][]byte
		for i, s := range shards {
			if mask&(1<<i) == 0 {
				for _, d := range dec.Add(s, t0) {
					got = append(got, bytes.Clone(d))
				}
			}
		}
		if lost > 3 {
			continue
		}
		if len(got) != 5 {
			t.Fatalf("lost %08b: %d delivered", mask, len(got))
		}
		for _, d := range sent {
			n := 0
			for _, g := range got {
				if bytes.Equal(g, d) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("lost %08b: datagram of %d bytes delivered %d times", mask, len(d), n)
			}
		}
		if dec.InFlight() != 0 {
			t.Fatalf("lost %08b: group still buffered", mask)
		}
	}
}

// TestRepairIsImmediate checks that a lost datagram comes back with the first
// shard that makes k' of the group, not later.
func TestRepairIsImmediate(t *testing.T) {
	p := Params{Data: 4, Parity: 2}
	enc := mustEncoder(t, p)
	dec := NewDecoder(Limits{})
	var shards []Shard
	for i := range 4 {
		s, parity, _ := enc.Add([]byte{byte(i), 1, 2}, t0)
		shards = append(shards, s)
		shards = append(shards, parity...)
	}
	// Lose data 1: data 0, 2, 3 arrive, then the first parity repairs.
	for _, i := range []int{0, 2, 3} {
		if got := dec.Add(shards[i], t0); len(got) != 1 {
			t.Fatalf("data %d: %d delivered", i, len(got))
		}
	}
	got := dec.Add(shards[4], t0)
	if len(got) != 1 || !bytes.Equal(got[0], []byte{1, 1, 2}) {
		t.Fatalf("first parity: delivered %q", got)
	}
	if got := dec.Add(shards[5], t0); len(got) != 0 || dec.Stats().Unneeded != 1 {
		t.Fatalf("second parity: delivered %d, stats %+v", len(got), dec.Stats())
	}
	// The lost data shard arriving late is not delivered again.
	if got := dec.Add(shards[1], t0); len(got) != 0 {
		t.Fatalf("late data shard delivered again")
	}
}

func TestFlushPartialGroup(t *testing.T) {
	p := Params{Data: 10, Parity: 3}
	enc, err := NewEncoder(p, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	dec := NewDecoder(Limits{})
	if _, ok := enc.Deadline(); ok {
		t.Fatal("deadline with no open group")
	}
	if ps, err := enc.Flush(); ps != nil || err != nil {
		t.Fatalf("flush of nothing: %v %v", ps, err)
	}
	var data []Shard
	for i := range 3 {
		s, parity, err := enc.Add(bytes.Repeat([]byte{byte(i)}, 10*(i+1)), t0.Add(time.Duration(i)*time.Millisecond))
		if err != nil || parity != nil {
			t.Fatal(err, parity)
		}
		data = append(data, s)
	}
	if d, ok := enc.Deadline(); !ok || !d.Equal(t0.Add(5*time.Millisecond)) {
		t.Fatalf("deadline %v %v", d, ok)
	}
	if ps, _ := enc.FlushDue(t0.Add(4 * time.Millisecond)); ps != nil {
		t.Fatal("flushed before the deadline")
	}
	ps, err := enc.FlushDue(t0.Add(5 * time.Millisecond))
	if err != nil || len(ps) != 3 {
		t.Fatalf("flush at the deadline: %d shards, %v", len(ps), err)
	}
	for j, s := range ps {
		if s.Group != 0 || s.Data != 3 || s.Parity != 3 || int(s.Index) != 3+j || len(s.Body) != 32 {
			t.Fatalf("parity %d: %+v", j, s)
		}
	}
	if enc.Pending() != 0 {
		t.Fatal("group still open after flush")
	}
	// Receive data 0, parity 0 and 2: data 1 and 2 are rebuilt.
	if got := dec.Add(data[0], t0); len(got) != 1 {
		t.Fatal("data 0 not delivered")
	}
	if got := dec.Add(ps[0], t0); len(got) != 0 {
		t.Fatalf("2 shards of 3 delivered %d", len(got))
	}
	got := dec.Add(ps[2], t0)
	if len(got) != 2 || !bytes.Equal(got[0], bytes.Repeat([]byte{1}, 20)) || !bytes.Equal(got[1], bytes.Repeat([]byte{2}, 30)) {
		t.Fatalf("repair of a partial group: %q", got)
	}
	// The next group starts at 1.
	s, _, _ := enc.Add([]byte("next"), t0)
	if s.Group != 1 || s.Index != 0 {
		t.Fatalf("after flush: %+v", s)
	}
	// A partial group with every data shard received completes with its
	// first parity shard.
	ps, _ = enc.Flush()
	dec.Add(s, t0)
	if dec.InFlight() != 1 {
		t.Fatalf("%d groups in flight", dec.InFlight())
	}
	dec.Add(ps[0], t0)
	if dec.InFlight() != 0 {
		t.Fatal("complete partial group still buffered")
	}
}

func TestNoParity(t *testing.T) {
	enc := mustEncoder(t, Params{Data: 3, Parity: 0})
	dec := NewDecoder(Limits{})
	for i := range 10 {
		s, parity, err := enc.Add([]byte{byte(i)}, t0)
		if err != nil || parity != nil {
			t.Fatal(err, parity)
		}
		if got := dec.Add(s, t0); len(got) != 1 {
			t.Fatal("not delivered")
		}
	}
	if ps, err := enc.Flush(); ps != nil || err != nil {
		t.Fatal(ps, err)
	}
	if dec.InFlight() != 0 {
		t.Fatal("groups without parity buffered")
	}
}

func TestDuplicates(t *testing.T) {
	p := Params{Data: 4, Parity: 2}
	enc := mustEncoder(t, p)
	dec := NewDecoder(Limits{})
	delivered := 0
	for i := range 40 {
		s, parity, _ := enc.Add([]byte{byte(i), 0, 0, 0, 0, 0, 0, 0}, t0)
		all := append([]Shard{s}, parity...)
		for _, x := range all {
			x.Body = bytes.Clone(x.Body)
			// Lose data 2 of each group, send everything else twice.
			if !x.IsParity() && x.Index == 2 {
				continue
			}
			delivered += len(dec.Add(x, t0))
			delivered += len(dec.Add(x, t0))
		}
	}
	if delivered != 40 {
		t.Fatalf("%d delivered, want 40", delivered)
	}
	st := dec.Stats()
	// Each group: 3 data shards are duplicated while it is open (3), the
	// first parity repairs it, then its copy and the second parity (twice)
	// are unneeded (3).
	if st.Duplicate != 30 || st.Unneeded != 30 || st.Recovered != 10 {
		t.Fatalf("stats %+v", st)
	}
}

// TestOutOfOrder shuffles the shards of many groups together, losing up to m
// shards of each: every datagram is delivered once.
func TestOutOfOrder(t *testing.T) {
	p := Params{Data: 8, Parity: 4}
	enc := mustEncoder(t, p)
	rng := rand.New(rand.NewPCG(5, 6))
	var shards []Shard
	const n = 8 * 50
	for i := range n {
		d := make([]byte, 8+rng.IntN(1200))
		fill(d, uint64(i))
		s, parity, _ := enc.Add(d, t0)
		shards = append(shards, s)
		for _, ps := range parity {
			ps.Body = bytes.Clone(ps.Body)
			shards = append(shards, ps)
		}
	}
	// Lose up to 4 random shards of each group.
	var kept []Shard
	for g := 0; g < len(shards); g += 12 {
		grp := shards[g : g+12]
		lose := rng.Perm(12)[:rng.IntN(5)]
		for i, s := range grp {
			if !containsInt(lose, i) {
				kept = append(kept, s)
			}
		}
	}
	rng.Shuffle(len(kept), func(i, j int) { kept[i], kept[j] = kept[j], kept[i] })
	dec := NewDecoder(Limits{})
	seen := make(map[uint64]bool)
	sizes := make(map[uint64]int)
	for _, s := range shards {
		if !s.IsParity() {
			sizes[binary.BigEndian.Uint64(s.Body)] = len(s.Body)
		}
	}
	for _, s := range kept {
		for _, d := range dec.Add(s, t0) {
			seq := verify(t, d, func(q uint64) int { return sizes[q] })
			if seen[seq] {
				t.Fatalf("datagram %d delivered twice", seq)
			}
			seen[seq] = true
		}
	}
	if len(seen) != n {
		t.Fatalf("%d of %d delivered", len(seen), n)
	}
	if dec.InFlight() != 0 {
		t.Fatalf("%d groups still buffered", dec.InFlight())
	}
}

func containsInt(s []int, x int) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// TestBoundedMemory floods a decoder with shards of 10,000 distinct groups,
// none complete.
func TestBoundedMemory(t *testing.T) {
	dec := NewDecoder(Limits{Groups: 64})
	body := make([]byte, 1000)
	par := make([]byte, 1002)
	now := t0
	for g := range uint32(10_000) {
		now = now.Add(time.Microsecond)
		dec.Add(Shard{Group: g, Index: 0, Data: 8, Parity: 4, Body: body}, now)
		dec.Add(Shard{Group: g, Index: 9, Data: 8, Parity: 4, Body: par}, now)
		if dec.InFlight() > 64 {
			t.Fatalf("group %d: %d groups buffered", g, dec.InFlight())
		}
	}
	if dec.InFlight() != 64 || dec.Buffered() != 64*(1000+1002) {
		t.Fatalf("%d groups, %d bytes buffered", dec.InFlight(), dec.Buffered())
	}
	st := dec.Stats()
	if st.Evicted != 10_000-64 || st.Delivered != 10_000 {
		t.Fatalf("stats %+v", st)
	}
	// Shards of a group more than the history behind are too old.
	if got := dec.Add(Shard{Group: 5, Index: 1, Data: 8, Parity: 4, Body: body}, now); got != nil || dec.Stats().TooOld != 1 {
		t.Fatalf("old group: delivered %d, stats %+v", len(got), dec.Stats())
	}
	// A group evicted but still in the history: its new data shards are
	// delivered, its old ones and its parity are not.
	g := uint32(10_000 - 100)
	if got := dec.Add(Shard{Group: g, Index: 1, Data: 8, Parity: 4, Body: body}, now); len(got) != 1 {
		t.Fatal("new data shard of an evicted group not delivered")
	}
	if got := dec.Add(Shard{Group: g, Index: 0, Data: 8, Parity: 4, Body: body}, now); len(got) != 0 {
		t.Fatal("data shard of an evicted group delivered twice")
	}
	unneeded := dec.Stats().Unneeded
	if got := dec.Add(Shard{Group: g, Index: 10, Data: 8, Parity: 4, Body: par}, now); len(got) != 0 || dec.Stats().Unneeded != unneeded+1 {
		t.Fatal("parity of an evicted group used")
	}

	// The byte limit holds too, with large shards.
	dec = NewDecoder(Limits{Groups: 64, Bytes: 1 << 20})
	big := make([]byte, MaxDatagram)
	for g := range uint32(1000) {
		dec.Add(Shard{Group: g, Index: 0, Data: 8, Parity: 4, Body: big}, now)
		if dec.Buffered() > 1<<20 {
			t.Fatalf("group %d: %d bytes buffered", g, dec.Buffered())
		}
	}
	if dec.InFlight() != (1<<20)/MaxDatagram {
		t.Fatalf("%d groups buffered", dec.InFlight())
	}
}

func TestTimeout(t *testing.T) {
	dec := NewDecoder(Limits{Timeout: time.Second})
	body := []byte("datagram")
	for g := range uint32(10) {
		dec.Add(Shard{Group: g, Index: 0, Data: 4, Parity: 2, Body: body}, t0.Add(time.Duration(g)*100*time.Millisecond))
	}
	if dec.InFlight() != 10 {
		t.Fatalf("%d groups", dec.InFlight())
	}
	dec.Expire(t0.Add(1450 * time.Millisecond))
	if dec.InFlight() != 5 || dec.Stats().Expired != 5 {
		t.Fatalf("%d groups, stats %+v", dec.InFlight(), dec.Stats())
	}
	dec.Add(Shard{Group: 20, Index: 0, Data: 4, Parity: 2, Body: body}, t0.Add(10*time.Second))
	if dec.InFlight() != 1 || dec.Stats().Expired != 10 {
		t.Fatalf("%d groups, stats %+v", dec.InFlight(), dec.Stats())
	}
	// Data shards of an expired group are still delivered; parity is not used.
	if got := dec.Add(Shard{Group: 3, Index: 1, Data: 4, Parity: 2, Body: body}, t0.Add(10*time.Second)); len(got) != 1 {
		t.Fatal("late data shard of an expired group not delivered")
	}
}

// TestHostile feeds malformed and inconsistent shards: each is dropped and
// counted, none panics, nothing is delivered from them.
func TestHostile(t *testing.T) {
	body := []byte("0123456789")
	type step struct {
		s    Shard
		want int // datagrams delivered
	}
	for _, tc := range []struct {
		name  string
		steps []step
		check func(Stats) bool
	}{
		{"no data shards", []step{{Shard{Data: 0, Parity: 4, Body: body}, 0}}, func(s Stats) bool { return s.BadShape == 1 }},
		{"too many shards", []step{{Shard{Data: 200, Parity: 56, Body: body}, 0}}, func(s Stats) bool { return s.BadShape == 1 }},
		{"index past the group", []step{{Shard{Index: 12, Data: 8, Parity: 4, Body: body}, 0}}, func(s Stats) bool { return s.BadIndex == 1 }},
		{"index 255", []step{{Shard{Index: 255, Data: 250, Parity: 5, Body: body}, 0}}, func(s Stats) bool { return s.BadIndex == 1 }},
		{"oversized data", []step{{Shard{Index: 0, Data: 8, Parity: 4, Body: make([]byte, MaxDatagram+1)}, 0}}, func(s Stats) bool { return s.BadLength == 1 }},
		{"oversized parity", []step{{Shard{Index: 8, Data: 8, Parity: 4, Body: make([]byte, MaxShardBody+1)}, 0}}, func(s Stats) bool { return s.BadLength == 1 }},
		{"truncated parity", []step{{Shard{Index: 8, Data: 8, Parity: 4, Body: []byte{1}}, 0}}, func(s Stats) bool { return s.BadLength == 1 }},
		{"m changes", []step{
			{Shard{Index: 0, Data: 8, Parity: 4, Body: body}, 1},
			{Shard{Index: 1, Data: 8, Parity: 3, Body: body}, 0},
		}, func(s Stats) bool { return s.Inconsistent == 1 }},
		{"k changes", []step{
			{Shard{Index: 0, Data: 8, Parity: 4, Body: body}, 1},
			{Shard{Index: 1, Data: 9, Parity: 4, Body: body}, 0},
		}, func(s Stats) bool { return s.Inconsistent == 1 }},
		{"k' above k", []step{
			{Shard{Index: 0, Data: 8, Parity: 4, Body: body}, 1},
			{Shard{Index: 9, Data: 9, Parity: 4, Body: make([]byte, 12)}, 0},
		}, func(s Stats) bool { return s.Inconsistent == 1 }},
		{"k' changes", []step{
			{Shard{Index: 3, Data: 3, Parity: 4, Body: make([]byte, 12)}, 0},
			{Shard{Index: 5, Data: 5, Parity: 4, Body: make([]byte, 12)}, 0},
		}, func(s Stats) bool { return s.Inconsistent == 1 }},
		{"data index past k'", []step{
			{Shard{Index: 3, Data: 3, Parity: 4, Body: make([]byte, 12)}, 0},
			{Shard{Index: 4, Data: 8, Parity: 4, Body: body}, 0},
		}, func(s Stats) bool { return s.Inconsistent == 1 }},
		{"k' below a data index seen", []step{
			{Shard{Index: 5, Data: 8, Parity: 4, Body: body}, 1},
			{Shard{Index: 3, Data: 3, Parity: 4, Body: make([]byte, 12)}, 0},
		}, func(s Stats) bool { return s.Inconsistent == 1 }},
		{"parity lengths differ", []step{
			{Shard{Index: 8, Data: 8, Parity: 4, Body: make([]byte, 12)}, 0},
			{Shard{Index: 9, Data: 8, Parity: 4, Body: make([]byte, 13)}, 0},
		}, func(s Stats) bool { return s.Inconsistent == 1 }},
		{"parity shorter than data", []step{
			{Shard{Index: 0, Data: 8, Parity: 4, Body: body}, 1},
			{Shard{Index: 9, Data: 8, Parity: 4, Body: make([]byte, 11)}, 0},
		}, func(s Stats) bool { return s.Inconsistent == 1 }},
		{"data longer than parity", []step{
			{Shard{Index: 9, Data: 8, Parity: 4, Body: make([]byte, 11)}, 0},
			{Shard{Index: 0, Data: 8, Parity: 4, Body: body}, 0},
		}, func(s Stats) bool { return s.Inconsistent == 1 }},
		{"duplicate parity", []step{
			{Shard{Index: 9, Data: 8, Parity: 4, Body: make([]byte, 12)}, 0},
			{Shard{Index: 9, Data: 8, Parity: 4, Body: make([]byte, 12)}, 0},
		}, func(s Stats) bool { return s.Duplicate == 1 }},
		{"k'=1 m=254 garbage parity", []step{
			{Shard{Index: 200, Data: 1, Parity: 254, Body: []byte{0xff, 0xff, 1, 2}}, -1},
		}, func(s Stats) bool { return s.BadPrefix+s.Recovered == 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dec := NewDecoder(Limits{})
			for i, st := range tc.steps {
				if got := dec.Add(st.s, t0); st.want >= 0 && len(got) != st.want {
					t.Fatalf("step %d: %d delivered, want %d", i, len(got), st.want)
				}
			}
			if !tc.check(dec.Stats()) {
				t.Fatalf("stats %+v", dec.Stats())
			}
		})
	}
}

// TestBadPrefix builds a group whose rebuilt shard claims more bytes than
// it has, as a forged parity would: the datagram is dropped and counted.
func TestBadPrefix(t *testing.T) {
	code, err := reedsolomon.New(2, 1)
	if err != nil {
		t.Fatal(err)
	}
	s0 := []byte{0, 3, 'a', 'b', 'c', 0, 0, 0}
	s1 := []byte{0xff, 0xff, 1, 2, 3, 4, 5, 6}
	par := make([]byte, 8)
	if err := code.Encode([][]byte{s0, s1, par}); err != nil {
		t.Fatal(err)
	}
	dec := NewDecoder(Limits{})
	if got := dec.Add(Shard{Index: 0, Data: 2, Parity: 1, Body: []byte("abc")}, t0); len(got) != 1 {
		t.Fatal("data shard not delivered")
	}
	if got := dec.Add(Shard{Index: 2, Data: 2, Parity: 1, Body: par}, t0); len(got) != 0 {
		t.Fatalf("forged datagram delivered: %q", got)
	}
	if st := dec.Stats(); st.BadPrefix != 1 || st.Recovered != 0 {
		t.Fatalf("stats %+v", st)
	}
	if dec.InFlight() != 0 {
		t.Fatal("group still buffered")
	}
}

func TestGroupWraps(t *testing.T) {
	dec := NewDecoder(Limits{})
	for _, g := range []uint32{0xfffffffe, 0xffffffff, 0, 1} {
		if got := dec.Add(Shard{Group: g, Index: 0, Data: 2, Parity: 1, Body: []byte{1}}, t0); len(got) != 1 {
			t.Fatalf("group %#x: not delivered", g)
		}
	}
	if st := dec.Stats(); st.TooOld != 0 || st.Delivered != 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestZeroAllocs(t *testing.T) {
	p := DefaultParams()
	enc := mustEncoder(t, p)
	dec := NewDecoder(Limits{})
	d := make([]byte, 1000)
	now := t0
	step := func() {
		now = now.Add(time.Microsecond)
		s, parity, err := enc.Add(d, now)
		if err != nil {
			t.Fatal(err)
		}
		dec.Add(s, now)
		for _, ps := range parity {
			dec.Add(ps, now)
		}
	}
	for range 1000 {
		step()
	}
	// One run is a whole group. The Reed-Solomon library boxes a pooled
	// slice once per parity computation (24 bytes), so allow that one.
	group := func() {
		for range p.Data {
			step()
		}
	}
	if a := testing.AllocsPerRun(100, group); a > 1 {
		t.Errorf("%.2f allocations per group of %d datagrams (encode and decode, no loss)", a, p.Data)
	}
}

func TestCacheable(t *testing.T) {
	for _, tc := range []struct {
		k, m int
		want bool
	}{{8, 4, true}, {10, 4, true}, {6, 3, true}, {1, 1, true}, {12, 6, false}, {1, 254, false}, {200, 50, false}} {
		if got := cacheable(tc.k, tc.m); got != tc.want {
			t.Errorf("cacheable(%d, %d) = %v", tc.k, tc.m, got)
		}
	}
}

func TestParamsByte(t *testing.T) {
	for _, s := range []string{"8/4", "10/4", "1/1", "15/15"} {
		p, err := ParseParams(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		b, ok := p.Byte()
		if !ok {
			t.Fatalf("%s: no byte", s)
		}
		q, err := ParamsFromByte(b)
		if err != nil || q != p {
			t.Fatalf("%s: round trip gave %+v, %v", s, q, err)
		}
	}
	for _, s := range []string{"", "8", "0/4", "8/0", "16/4", "8/4x", "-1/2"} {
		if _, err := ParseParams(s); err == nil {
			t.Errorf("ParseParams(%q) accepted", s)
		}
	}
	if p, err := ParamsFromByte(0); err != nil || p != DefaultParams() {
		t.Fatalf("byte 0: %+v %v", p, err)
	}
	if _, err := ParamsFromByte(0x80); err == nil {
		t.Fatal("a shape with no parity was accepted")
	}
}

// TestSetGroups: an encoder numbers its groups from first by stride, so
// interleaved encoders never share a group number.
func TestSetGroups(t *testing.T) {
	e, err := NewEncoder(Params{Data: 2, Parity: 1}, 0)
	if err != nil {
		t.Fatal(err)
	}
	e.SetGroups(1, 3)
	now := time.Now()
	var groups []uint32
	for i := range 6 {
		s, parity, err := e.Add([]byte{byte(i)}, now)
		if err != nil {
			t.Fatal(err)
		}
		groups = append(groups, s.Group)
		for _, p := range parity {
			if p.Group != s.Group {
				t.Fatalf("parity of group %d in a data shard's group %d", p.Group, s.Group)
			}
		}
	}
	if want := []uint32{1, 1, 4, 4, 7, 7}; !slices.Equal(groups, want) {
		t.Fatalf("groups %v, want %v", groups, want)
	}
}
