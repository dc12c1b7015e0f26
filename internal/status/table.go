package status

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// tableWidth is the number of columns WriteTable never exceeds.
const tableWidth = 80

// column is one column of the path rows.
type column struct {
	title string
	width int
	left  bool
}

// pathColumns returns the columns of a path row, laid out to fill tableWidth
// exactly: an indent of 2, the widths and one space between columns.
func pathColumns() [9]column {
	return [...]column{
		{"REMOTE", 21, true},
		{"STATE", 8, true},
		{"RTT", 6, false},
		{"JITTER", 6, false},
		{"LOSS O/I", 9, false},
		{"TX", 4, false},
		{"RX", 4, false},
		{"DUPS", 4, false},
		{"SEEN", 8, false},
	}
}

const rowIndent = "  "

// WriteTable writes s to w as a table for people that fits 80 columns: a
// header line with the name (when the daemon sent one), role, version,
// uptime and number of sessions; per session
// a line with its id, mode and flows followed by one row per path with
// remote, state, round-trip time, jitter, loss out/in in percent, packets
// sent and received and duplicates (compact: 1.2k, 3.4M), and the time since
// the path was last seen relative to now; then the counters, if any. Long
// values are shortened to fit.
func WriteTable(w io.Writer, s Status, now time.Time) error {
	var b strings.Builder
	sessions := "sessions"
	if len(s.Sessions) == 1 {
		sessions = "session"
	}
	// A long version gives way first, so uptime and sessions stay visible.
	role := shortenEnd(clean(s.Role), 12)
	name := ""
	if s.Name != "" {
		name = shortenEnd(clean(s.Name), 30) + ": "
	}
	rest := fmt.Sprintf("  up %s  %d %s", fmtUptime(s.Uptime), len(s.Sessions), sessions)
	room := max(tableWidth-len(name)-len("mptunnel ")-len(role)-len(" ")-len(rest), 8)
	header := name + "mptunnel " + role + " " + shortenEnd(clean(s.Version), room) + rest
	b.WriteString(shortenEnd(header, tableWidth))
	b.WriteByte('\n')
	if len(s.Sessions) == 0 {
		b.WriteString("no sessions\n")
	}
	for _, se := range s.Sessions {
		mode := shortenEnd(clean(se.Mode), 16)
		if se.Cipher != "" {
			mode += "  " + shortenEnd(clean(se.Cipher), 20)
		}
		id := shortenEnd(clean(se.ID), 16)
		if se.Client != "" {
			// The client's name, on a server with identities.
			id += "  client " + shortenEnd(clean(se.Client), 32)
		}
		fmt.Fprintf(&b, "session %s  %s  %s  %s\n",
			id, mode,
			plural(se.Flows, "flow"), plural(len(se.Paths), "path"))
		if len(se.Paths) == 0 {
			continue
		}
		cols := pathColumns()
		titles := make([]string, len(cols))
		for i, c := range cols {
			titles[i] = c.title
		}
		writeRow(&b, titles)
		for _, p := range se.Paths {
			writeRow(&b, []string{
				shortenMiddle(clean(p.Remote), cols[0].width),
				shortenEnd(clean(p.State), cols[1].width),
				fmtMs(p.RTTms, p.RTTms),
				fmtMs(p.JitterMs, p.RTTms),
				fmtLoss(p.LossOut) + "/" + fmtLoss(p.LossIn),
				fmtCount(p.TxPackets),
				fmtCount(p.RxPackets),
				fmtCount(p.Duplicates),
				fmtAgo(p.LastSeen, now),
			})
		}
	}
	for _, t := range s.Targets {
		to := t.Target
		if to == "" {
			to = "default target"
		}
		line := fmt.Sprintf("%s -> %s  %s  tx %s  rx %s", shortenMiddle(clean(t.Name), 24), shortenMiddle(clean(to), 24),
			plural(t.Flows, "flow"), fmtCount(t.TxDatagrams), fmtCount(t.RxDatagrams))
		if t.Refused > 0 {
			line += "  refused " + fmtCount(t.Refused)
		}
		if ss := t.Streams; ss != nil {
			var refused uint64
			for _, n := range ss.Refused {
				refused += n
			}
			line += fmt.Sprintf("  streams %d open, %s opened, %s refused, up %s B, down %s B", ss.Open, fmtCount(ss.Opened),
				fmtCount(refused), fmtCount(ss.BytesUp), fmtCount(ss.BytesDown))
		}
		b.WriteString(shortenEnd(line, tableWidth))
		b.WriteByte('\n')
	}
	writeCounters(&b, s.Counters)
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("writing status table: %w", err)
	}
	return nil
}

// writeRow writes one path row, each cell padded to its column.
func writeRow(b *strings.Builder, cells []string) {
	var line strings.Builder
	line.WriteString(rowIndent)
	cols := pathColumns()
	for i, c := range cols {
		cell := shortenEnd(cells[i], c.width)
		pad := strings.Repeat(" ", c.width-len(cell))
		if i > 0 {
			line.WriteByte(' ')
		}
		if c.left {
			line.WriteString(cell)
			if i < len(cols)-1 {
				line.WriteString(pad)
			}
		} else {
			line.WriteString(pad)
			line.WriteString(cell)
		}
	}
	b.WriteString(line.String())
	b.WriteByte('\n')
}

// writeCounters writes the counters sorted by name, wrapped to the width.
func writeCounters(b *strings.Builder, counters map[string]uint64) {
	if len(counters) == 0 {
		return
	}
	names := make([]string, 0, len(counters))
	for name := range counters {
		names = append(names, name)
	}
	sort.Strings(names)
	b.WriteString("counters:\n")
	line := rowIndent
	for _, name := range names {
		value := "=" + strconv.FormatUint(counters[name], 10)
		item := shortenEnd(clean(name), tableWidth-len(rowIndent)-len(value)) + value
		if line != rowIndent && len(line)+1+len(item) > tableWidth {
			b.WriteString(line)
			b.WriteByte('\n')
			line = rowIndent
		}
		if line != rowIndent {
			line += " "
		}
		line += item
	}
	b.WriteString(line)
	b.WriteByte('\n')
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}

// clean replaces everything but printable ASCII with '?', so that a value
// can neither move the terminal's cursor nor take other than one column per
// byte.
func clean(s string) string {
	ok := true
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r > 0x7e {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// shortenEnd cuts the ASCII string s to at most w bytes, marking the cut
// with "...".
func shortenEnd(s string, w int) string {
	if len(s) <= w {
		return s
	}
	if w <= 3 {
		return s[:w]
	}
	return s[:w-3] + "..."
}

// shortenMiddle cuts the ASCII string s to at most w bytes by replacing its
// middle with "...", keeping the end (a port, say) readable.
func shortenMiddle(s string, w int) string {
	if len(s) <= w {
		return s
	}
	if w <= 3 {
		return s[:w]
	}
	head := (w - 3) / 2
	tail := w - 3 - head
	return s[:head] + "..." + s[len(s)-tail:]
}

// fmtUptime formats seconds as 42s, 12m05s, 3h25m or 2d03h.
func fmtUptime(sec float64) string {
	if math.IsNaN(sec) || sec < 0 {
		sec = 0
	}
	if sec > math.MaxInt64/2 {
		sec = math.MaxInt64 / 2
	}
	n := int64(sec)
	switch {
	case n < 60:
		return fmt.Sprintf("%ds", n)
	case n < 3600:
		return fmt.Sprintf("%dm%02ds", n/60, n%60)
	case n < 86400:
		return fmt.Sprintf("%dh%02dm", n/3600, n%3600/60)
	default:
		return fmt.Sprintf("%dd%02dh", n/86400, n%86400/3600)
	}
}

// fmtMs formats a duration in milliseconds in at most 6 bytes; "-" when
// the path's round-trip time rtt is not known yet.
func fmtMs(v, rtt float64) string {
	if !(rtt > 0) || !(v >= 0) || math.IsInf(v, 0) {
		return "-"
	}
	switch s := v / 1000; {
	case v < 9.995:
		return fmt.Sprintf("%.2fms", v)
	case v < 99.95:
		return fmt.Sprintf("%.1fms", v)
	case v < 9999.5:
		return fmt.Sprintf("%.0fms", v)
	case s < 99999.5:
		return fmt.Sprintf("%.0fs", s)
	default:
		return "long"
	}
}

// fmtLoss formats a fraction as a percentage in at most 4 bytes.
func fmtLoss(f float64) string {
	if math.IsNaN(f) {
		return "-"
	}
	f = min(max(f, 0), 1)
	pct := f * 100
	switch {
	case pct == 0:
		return "0%"
	case pct < 9.95:
		return fmt.Sprintf("%.1f%%", pct)
	default:
		return fmt.Sprintf("%.0f%%", pct)
	}
}

// fmtCount formats n compactly in at most 4 bytes: 999, 1.2k, 34k, 5.6M.
func fmtCount(n uint64) string {
	if n < 1000 {
		return strconv.FormatUint(n, 10)
	}
	v := float64(n)
	for _, unit := range []string{"k", "M", "G", "T", "P", "E"} {
		v /= 1000
		switch {
		case v < 9.95:
			return fmt.Sprintf("%.1f%s", v, unit)
		case v < 999.5:
			return fmt.Sprintf("%.0f%s", v, unit)
		}
	}
	return fmt.Sprintf("%.0fE", v*1000) // unreachable: 2^64 < 1000E
}

// fmtAgo formats the time since the RFC 3339 timestamp ts in at most 8
// bytes: "0.3s ago", "42s ago", "5m ago", "3h ago", "12d ago".
func fmtAgo(ts string, now time.Time) string {
	if ts == "" {
		return "never"
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return "?"
	}
	d := max(now.Sub(t), 0)
	switch {
	case d < 10*time.Second:
		tenths := int64(d / (100 * time.Millisecond))
		return fmt.Sprintf("%d.%ds ago", tenths/10, tenths%10)
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int64(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int64(d/time.Minute))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh ago", int64(d/time.Hour))
	case d < 100*24*time.Hour:
		return fmt.Sprintf("%dd ago", int64(d/(24*time.Hour)))
	default:
		return ">99d ago"
	}
}
