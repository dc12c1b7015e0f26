package status

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// sparks are the eight heights of a sparkline.
var sparks = []rune("▁▂▃▄▅▆▇█")

// Sparkline draws values as one character each, the lowest as the shortest
// bar and the highest as the tallest; a flat series is all short bars. It
// draws the last width values.
func Sparkline(values []float64, width int) string {
	if len(values) > width {
		values = values[len(values)-width:]
	}
	if len(values) == 0 {
		return ""
	}
	lo, hi := values[0], values[0]
	for _, v := range values {
		lo, hi = min(lo, v), max(hi, v)
	}
	var b strings.Builder
	for _, v := range values {
		i := 0
		if hi > lo {
			i = int((v - lo) / (hi - lo) * float64(len(sparks)-1))
		}
		b.WriteRune(sparks[min(max(i, 0), len(sparks)-1)])
	}
	return b.String()
}

// History keeps the last few RTT and loss figures of every path of a daemon,
// for a live view.
type History struct {
	n    int
	rtt  map[string][]float64
	loss map[string][]float64
}

// NewHistory keeps n figures a path.
func NewHistory(n int) *History {
	return &History{n: n, rtt: make(map[string][]float64), loss: make(map[string][]float64)}
}

func pathKey(s Session, p Path) string { return s.ID + "/" + fmt.Sprint(p.ID) }

// Add records a snapshot's figures.
func (h *History) Add(st Status) {
	push := func(m map[string][]float64, k string, v float64) {
		s := append(m[k], v)
		if len(s) > h.n {
			s = s[len(s)-h.n:]
		}
		m[k] = s
	}
	for _, s := range st.Sessions {
		for _, p := range s.Paths {
			k := pathKey(s, p)
			push(h.rtt, k, p.RTTms)
			push(h.loss, k, max(p.LossOut, p.LossIn))
		}
	}
}

// WriteWatch writes the table of st followed, for each path, by sparklines
// of its recent RTT and loss (the worse direction), within 80 columns.
func WriteWatch(w io.Writer, st Status, h *History, now time.Time) error {
	if err := WriteTable(w, st, now); err != nil {
		return err
	}
	for _, s := range st.Sessions {
		if len(s.Paths) == 0 {
			continue
		}
		fmt.Fprintf(w, "session %s, last %d s:\n", shortenEnd(clean(s.ID), 16), min(h.n, 14))
		for _, p := range s.Paths {
			k := pathKey(s, p)
			fmt.Fprintf(w, "  %-18s rtt %-14s %8s  loss %-14s %5s\n",
				shortenMiddle(clean(p.Remote), 18), Sparkline(h.rtt[k], 14), fmtMs(p.RTTms, p.RTTms),
				Sparkline(h.loss[k], 14), fmtLoss(max(p.LossOut, p.LossIn)))
		}
	}
	return nil
}
