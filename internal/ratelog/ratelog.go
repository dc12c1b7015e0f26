// Package ratelog writes log lines for events that can happen once per packet
// (drops, refused handshakes, limits hit) at a bounded rate: at most one line
// per kind per interval, carrying how many events it stands for.
package ratelog

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Logger rate-limits lines by kind. The zero value logs through slog.Default
// at most once per 10 seconds per kind. An event that is only counted takes
// no lock: floods of them are what it is for.
type Logger struct {
	Log      *slog.Logger
	Interval time.Duration

	kinds sync.Map // kind -> *kindState
}

type kindState struct {
	last       atomic.Int64 // unix ns of the last line; 0 before any
	suppressed atomic.Int64 // events counted since
}

// Warn logs msg for kind unless a line of that kind was written within the
// interval, in which case it only counts it.
func (l *Logger) Warn(kind, msg string, args ...any) {
	if n, ok := l.admit(kind); ok {
		l.write(msg, args, n)
	}
}

// WarnLazy is Warn for a line whose attributes cost something to make (an
// address's text, say): args is called only when the line is written, so an
// event that is only counted costs no formatting.
func (l *Logger) WarnLazy(kind, msg string, args func() []any) {
	if n, ok := l.admit(kind); ok {
		l.write(msg, args(), n)
	}
}

// admit counts an event of kind and reports whether a line is due for it,
// with how many events since the last line it stands for besides itself.
func (l *Logger) admit(kind string) (suppressed int, ok bool) {
	v, found := l.kinds.Load(kind)
	if !found {
		v, _ = l.kinds.LoadOrStore(kind, new(kindState))
	}
	k := v.(*kindState)
	iv := l.Interval
	if iv <= 0 {
		iv = 10 * time.Second
	}
	now := time.Now().UnixNano()
	last := k.last.Load()
	if last != 0 && now-last < int64(iv) || !k.last.CompareAndSwap(last, now) {
		k.suppressed.Add(1)
		return 0, false
	}
	return int(k.suppressed.Swap(0)), true
}

func (l *Logger) write(msg string, args []any, suppressed int) {
	log := l.Log
	if log == nil {
		log = slog.Default()
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	log.Warn(msg, args...)
}
