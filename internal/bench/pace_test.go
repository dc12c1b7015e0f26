package bench

import (
	"testing"
	"time"
)

// TestPacer: a pacer waits for its ticks: n waits take at least n-1
// intervals (the first tick may be close), never less.
func TestPacer(t *testing.T) {
	const interval, n = 2 * time.Millisecond, 6
	p := newPacer(interval)
	defer p.stop()
	start := time.Now()
	for range n {
		p.sleep(interval)
	}
	if el := time.Since(start); el < (n-1)*interval {
		t.Fatalf("%d waits took %v, want at least %v", n, el, (n-1)*interval)
	}
}
