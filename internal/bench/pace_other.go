//go:build !linux

package bench

import "time"

// pacer sleeps with the runtime's timers on this platform.
type pacer struct{}

func newPacer(time.Duration) *pacer { return &pacer{} }

func (p *pacer) sleep(d time.Duration) { time.Sleep(d) }

func (p *pacer) stop() {}
