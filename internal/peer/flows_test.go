package peer

import (
	"testing"
	"time"
)

// at is a clock for the tests: t0 plus d.
var t0 = time.Unix(1_000_000, 0)

func at(d time.Duration) time.Time { return t0.Add(d) }

// used returns an Activity last active at t0+d that carried out and in
// datagrams.
func used(d time.Duration, out, in int) *Activity {
	a := new(Activity)
	a.Touch(at(d).UnixNano())
	for range out {
		a.Out(1)
	}
	a.In(in)
	return a
}

// TestReclaimRule: a flow of at most ShortFlowDatagrams each way goes after
// ShortFlowTimeout idle, any other after the flow timeout, and a shorter
// flow timeout wins over the short rule.
func TestReclaimRule(t *testing.T) {
	const timeout = 60 * time.Second
	for _, c := range []struct {
		name               string
		out, in            int
		idle               time.Duration
		timeout            time.Duration
		expired, reclaimed bool
	}{
		{"one exchange, fresh", 1, 1, ShortFlowTimeout - time.Millisecond, timeout, false, false},
		{"one exchange, idle", 1, 1, ShortFlowTimeout + time.Millisecond, timeout, true, true},
		{"unanswered query", 1, 0, ShortFlowTimeout + time.Millisecond, timeout, true, true},
		{"a retry and its answers", 2, 2, ShortFlowTimeout + time.Millisecond, timeout, true, true},
		{"three out", 3, 1, ShortFlowTimeout + time.Millisecond, timeout, false, false},
		{"three back", 1, 3, ShortFlowTimeout + time.Millisecond, timeout, false, false},
		{"established, idle long", 50, 50, timeout + time.Millisecond, timeout, true, false},
		{"established, idle less", 50, 50, timeout - time.Millisecond, timeout, false, false},
		{"short timeout configured", 50, 50, 2 * time.Second, time.Second, true, false},
		{"nothing carried", 0, 0, ShortFlowTimeout + time.Millisecond, timeout, true, true},
	} {
		a := used(0, c.out, c.in)
		expired, reclaimed := a.Expired(at(c.idle), c.timeout)
		if expired != c.expired || reclaimed != c.reclaimed {
			t.Errorf("%s: expired %v reclaimed %v, want %v %v", c.name, expired, reclaimed, c.expired, c.reclaimed)
		}
	}
}

// TestCountsSaturate: counting stops just past the short limit, and a
// batch of many counts as many.
func TestCountsSaturate(t *testing.T) {
	a := new(Activity)
	a.Out(1)
	a.Out(1)
	if !a.Short() {
		t.Fatal("two datagrams out: still short")
	}
	a.Out(1)
	if a.Short() {
		t.Fatal("three datagrams out: not short")
	}
	for range 1000 {
		a.Out(1)
	}
	if n := a.out.Load(); n != ShortFlowDatagrams+1 {
		t.Fatalf("out count %d, want it held at %d", n, ShortFlowDatagrams+1)
	}
	b := new(Activity)
	b.In(16)
	if b.Short() || b.in.Load() != ShortFlowDatagrams+1 {
		t.Fatalf("a batch of 16 back: short %v, count %d", b.Short(), b.in.Load())
	}
	b.In(0)
	c := new(Activity)
	c.In(0)
	if !c.Short() {
		t.Fatal("nothing counted: short")
	}
}

// TestLeastRecent: at the limit the least recently used idle flow makes
// room; a flow active within FlowIdleAfter never does, and when every flow
// is busy there is none.
func TestLeastRecent(t *testing.T) {
	act := func(a *Activity) *Activity { return a }
	m := map[string]*Activity{
		"old established": used(0, 100, 100),
		"older short":     used(-time.Second, 1, 1),
		"recent":          used(9500*time.Millisecond, 1, 0),
		"idle":            used(5*time.Second, 1, 1),
	}
	now := at(10 * time.Second)
	k, ok := LeastRecent(m, act, now)
	if !ok || k != "older short" {
		t.Fatalf("victim %q %v, want the older short flow", k, ok)
	}
	delete(m, k)
	if k, ok = LeastRecent(m, act, now); !ok || k != "old established" {
		t.Fatalf("victim %q %v, want the old established flow: least recent, whatever it carried", k, ok)
	}
	delete(m, k)
	if k, ok = LeastRecent(m, act, now); !ok || k != "idle" {
		t.Fatalf("victim %q %v, want the idle flow", k, ok)
	}
	delete(m, k)
	if k, ok = LeastRecent(m, act, now); ok {
		t.Fatalf("victim %q among busy flows only, want none", k)
	}
	// Exactly FlowIdleAfter without traffic is idle; a moment less is not.
	m = map[string]*Activity{"edge": used(0, 1, 1)}
	if _, ok := LeastRecent(m, act, at(FlowIdleAfter-time.Nanosecond)); ok {
		t.Fatal("a flow active a moment less than FlowIdleAfter ago made room")
	}
	if _, ok := LeastRecent(m, act, at(FlowIdleAfter)); !ok {
		t.Fatal("a flow idle for FlowIdleAfter did not make room")
	}
	if _, ok := LeastRecent(map[string]*Activity{}, act, now); ok {
		t.Fatal("an empty table has a victim")
	}
}

// TestLeastRecentTable: a table of MaxFlows one-exchange flows, one new a
// tick as a DNS client makes them, never refuses one while the oldest are
// idle, and holds only the newest.
func TestLeastRecentTable(t *testing.T) {
	const limit, tick = 8, 200 * time.Millisecond
	m := make(map[int]*Activity)
	act := func(a *Activity) *Activity { return a }
	for i := range 100 {
		now := at(time.Duration(i) * tick)
		if len(m) >= limit {
			k, ok := LeastRecent(m, act, now)
			if !ok {
				t.Fatalf("flow %d refused with flows idle for %v", i, time.Duration(limit)*tick)
			}
			if k != i-limit {
				t.Fatalf("flow %d evicted flow %d, want the least recent, %d", i, k, i-limit)
			}
			delete(m, k)
		}
		m[i] = used(time.Duration(i)*tick, 1, 1)
	}
	// Ten flows, one every 100 ms: all active within FlowIdleAfter, so
	// every flow is busy.
	busy := make(map[int]*Activity)
	for i := 1; i <= 10; i++ {
		busy[i] = used(time.Duration(i)*100*time.Millisecond, 1, 1)
	}
	if k, ok := LeastRecent(busy, act, at(time.Second)); ok {
		t.Fatalf("flow %d made room while every flow was active within %v", k, FlowIdleAfter)
	}
}
