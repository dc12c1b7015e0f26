package peer

import (
	"sync/atomic"
	"time"
)

// How flows are kept and reclaimed, on both ends (docs/FORWARDS.md), as
// connection tracking keeps UDP: a flow that has carried at most
// ShortFlowDatagrams datagrams each way (a DNS query and its answer, with a
// retry) is freed after ShortFlowTimeout without traffic; any other after
// the flow timeout (DefaultFlowTimeout unless configured). At the flow
// limit, the least recently used flow idle for FlowIdleAfter makes room for
// a new one; a new flow is refused only when every flow was active within
// FlowIdleAfter.
const (
	ShortFlowDatagrams = 2
	ShortFlowTimeout   = 5 * time.Second
	FlowIdleAfter      = time.Second
)

// Activity is what a flow's table knows of its use: when it was last
// active and how many datagrams it carried each way, counted up to just
// past ShortFlowDatagrams. The zero value is a flow that carried nothing;
// its methods are safe for concurrent use.
type Activity struct {
	last    atomic.Int64 // unix ns
	out, in atomic.Uint32
}

// Touch notes that the flow was active at now (unix ns).
func (a *Activity) Touch(now int64) { a.last.Store(now) }

// Last returns when the flow was last active (unix ns).
func (a *Activity) Last() int64 { return a.last.Load() }

// Out counts n datagrams sent on the flow (from the client's local peer
// toward the target); once past ShortFlowDatagrams, counting costs a load.
func (a *Activity) Out(n int) { count(&a.out, n) }

// In counts n datagrams that came back on the flow (from the target).
func (a *Activity) In(n int) { count(&a.in, n) }

func count(c *atomic.Uint32, n int) {
	if n > 0 && c.Load() <= ShortFlowDatagrams {
		c.Add(uint32(min(n, ShortFlowDatagrams+1)))
	}
}

// Short reports whether the flow has carried at most ShortFlowDatagrams
// datagrams each way.
func (a *Activity) Short() bool {
	return a.out.Load() <= ShortFlowDatagrams && a.in.Load() <= ShortFlowDatagrams
}

// Expired reports whether the flow is to be freed at now: idle longer than
// timeout, or than ShortFlowTimeout (when that is shorter) while it is
// short. reclaimed says the short rule freed it.
func (a *Activity) Expired(now time.Time, timeout time.Duration) (expired, reclaimed bool) {
	idle := time.Duration(now.UnixNano() - a.last.Load())
	if idle > timeout {
		return true, false
	}
	if idle > ShortFlowTimeout && a.Short() {
		return true, true
	}
	return false, false
}

// Idle reports whether the flow may make room for a new one at now: no
// traffic for FlowIdleAfter.
func (a *Activity) Idle(now time.Time) bool {
	return time.Duration(now.UnixNano()-a.last.Load()) >= FlowIdleAfter
}

// LeastRecent returns the key of the flow of m, whose activity act gives,
// that was least recently active, among those idle at now; ok is false
// when every flow is busy. It looks at every flow: it runs only when a table
// is full, and a table holds a few hundred.
func LeastRecent[K comparable, F any](m map[K]F, act func(F) *Activity, now time.Time) (key K, ok bool) {
	var oldest int64
	for k, f := range m {
		a := act(f)
		if !a.Idle(now) {
			continue
		}
		if l := a.Last(); !ok || l < oldest {
			key, oldest, ok = k, l, true
		}
	}
	return key, ok
}
