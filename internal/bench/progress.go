package bench

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progress writes a one-line account of the run, at most once a second. On
// a terminal the line is rewritten in place; elsewhere each update is a line
// of its own, so logs stay short.
type progress struct {
	w     io.Writer
	tty   bool
	every time.Duration
	last  time.Time
	width int // of the line on screen, to blank it out
}

func newProgress(w io.Writer, tty bool) *progress {
	return &progress{w: w, tty: tty, every: time.Second}
}

// printf shows a new state unless one was shown less than a second ago.
func (p *progress) printf(format string, args ...any) {
	if p == nil || p.w == nil {
		return
	}
	now := time.Now()
	if !p.last.IsZero() && now.Sub(p.last) < p.every {
		return
	}
	p.last = now
	line := "bench: " + fmt.Sprintf(format, args...)
	if !p.tty {
		fmt.Fprintln(p.w, line)
		return
	}
	const maxWidth = 79
	if len(line) > maxWidth {
		line = line[:maxWidth]
	}
	pad := max(0, p.width-len(line))
	fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
	p.width = len(line)
}

// finish blanks the line on a terminal.
func (p *progress) finish() {
	if p == nil || p.w == nil || !p.tty || p.width == 0 {
		return
	}
	fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", p.width))
	p.width = 0
}
