// Package ratelog writes log lines for events that can happen once per packet
// (drops, refused handshakes, limits hit) at a bounded rate: at most one line
// per kind per interval, carrying how many events it stands for.
package ratelog

import (
	"log/slog"
	"sync"
	"time"
)

// Logger rate-limits lines by kind. The zero value logs through slog.Default
// at most once per 10 seconds per kind.
type Logger struct {
	Log      *slog.Logger
	Interval time.Duration

	mu    sync.Mutex
	kinds map[string]*kindState
}

type kindState struct {
	last       time.Time
	suppressed int
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
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kinds == nil {
		l.kinds = make(map[string]*kindState)
	}
	k := l.kinds[kind]
	if k == nil {
		k = &kindState{}
		l.kinds[kind] = k
	}
	iv := l.Interval
	if iv <= 0 {
		iv = 10 * time.Second
	}
	if !k.last.IsZero() && now.Sub(k.last) < iv {
		k.suppressed++
		return 0, false
	}
	n := k.suppressed
	k.last, k.suppressed = now, 0
	return n, true
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
