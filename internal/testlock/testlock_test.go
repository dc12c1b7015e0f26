package testlock

import (
	"sync"
	"sync/atomic"
	"testing"
)

// TestHeavy: two holders never overlap.
func TestHeavy(t *testing.T) {
	var inside, most atomic.Int32
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			t.Run("holder", func(t *testing.T) {
				Heavy(t)
				n := inside.Add(1)
				for {
					m := most.Load()
					if n <= m || most.CompareAndSwap(m, n) {
						break
					}
				}
				for range 1000 {
					_ = inside.Load()
				}
				inside.Add(-1)
			})
		})
	}
	wg.Wait()
	if most.Load() != 1 {
		t.Fatalf("%d heavy tests held the lock at once", most.Load())
	}
}
