package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestRate: one line per kind per interval, carrying the events it stands
// for; a lazy line's attributes are made only when it is written.
func TestRate(t *testing.T) {
	var buf bytes.Buffer
	l := Logger{Log: slog.New(slog.NewTextHandler(&buf, nil)), Interval: time.Hour}
	made := 0
	attrs := func() []any { made++; return []any{"from", "here"} }
	for range 5 {
		l.WarnLazy("auth", "dropped", attrs)
		l.Warn("other", "refused", "n", 1)
	}
	if made != 1 {
		t.Fatalf("attributes made %d times for 5 events in one interval, want once", made)
	}
	if n := strings.Count(buf.String(), "msg=dropped"); n != 1 {
		t.Fatalf("%d lines for kind auth, want 1:\n%s", n, buf.String())
	}
	if n := strings.Count(buf.String(), "msg=refused"); n != 1 {
		t.Fatalf("%d lines for kind other, want 1", n)
	}
	// The next line, once the interval passed, tells how many it skipped.
	l.Interval = time.Nanosecond
	time.Sleep(time.Millisecond)
	l.Warn("other", "refused")
	if !strings.Contains(buf.String(), "suppressed=4") {
		t.Fatalf("no count of the suppressed events:\n%s", buf.String())
	}
}
