package path

import (
	"testing"
	"time"
)

// TestLinkOnHeard: what OnHeard records without the lock reaches the
// estimator: Stats shows it, it keeps a silent path from going down, and an
// older time never moves it back.
func TestLinkOnHeard(t *testing.T) {
	t0 := time.Now()
	l := NewLink(0, Params{}, t0)
	heard := t0.Add(time.Second)
	l.OnHeard(heard)
	l.OnHeard(t0.Add(500 * time.Millisecond)) // late and older: ignored
	// 2 s after the start but 1 s after it was heard: not down (DownAfter
	// is 1.5 s); without the heard time it would be.
	if _, _, to, _ := l.Tick(t0.Add(2 * time.Second)); to == Down || l.Down() {
		t.Fatalf("down 1 s after a packet was heard")
	}
	l.OnHeard(heard.Add(time.Millisecond))
	if got := l.Stats().LastHeard; !got.Equal(heard.Add(time.Millisecond)) {
		t.Fatalf("LastHeard %v after OnHeard, want %v", got.Sub(t0), heard.Add(time.Millisecond).Sub(t0))
	}
	heard = heard.Add(time.Millisecond)
	if _, _, to, _ := l.Tick(heard.Add(DefaultDownAfter + time.Millisecond)); to != Down || !l.Down() {
		t.Fatalf("state %v %v %v after %v of silence, want down", to, l.Down(), l.Stats().State, DefaultDownAfter)
	}
}
