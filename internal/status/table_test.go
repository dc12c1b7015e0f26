package status

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

var tableNow = time.Date(2024, 5, 1, 12, 0, 0, 423_000_000, time.UTC)

func table(t *testing.T, s Status) string {
	t.Helper()
	var b strings.Builder
	if err := WriteTable(&b, s, tableNow); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func checkWidth(t *testing.T, out string) {
	t.Helper()
	for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if n := len([]rune(line)); n > tableWidth {
			t.Errorf("line %d is %d columns:\n%s", i+1, n, line)
		}
		for _, r := range line {
			if r < 0x20 || r > 0x7e {
				t.Errorf("line %d holds %q:\n%s", i+1, r, line)
			}
		}
	}
}

func TestTableSample(t *testing.T) {
	s := sampleStatus()
	s.Sessions[0].Paths = append(s.Sessions[0].Paths,
		Path{Remote: "198.51.100.20:4000", State: PathProbing},
		Path{Remote: "198.51.100.21:4000", State: PathDegraded, RTTms: 250, JitterMs: 40, LossOut: 0.25, LossIn: 1,
			LastSeen: FormatTime(tableNow.Add(-90 * time.Second))},
	)
	out := table(t, s)
	checkWidth(t, out)
	for _, want := range []string{
		"mptunnel client 1.0.0  up 1h02m  1 session",
		"session 0000002a  redundant  3 flows  4 paths",
		"REMOTE", "STATE", "LOSS O/I",
		"203.0.113.10:4000", "12.3ms", "1.20ms", "0.1%/0%", "1.2k", "3.4M", "0.3s ago",
		"[2001:db8::7]:4000", "never",
		"25%/100%", "250ms", "1m ago",
		"counters:", "too_old=3 unknown_session=1",
		"127.0.0.1:5353 -> 10.0.0.53:53  1 flow  tx 10  rx 9  refused 2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	for _, p := range s.Sessions[0].Paths {
		if !strings.Contains(out, " "+p.State+" ") {
			t.Errorf("table lacks state %q:\n%s", p.State, out)
		}
	}
}

func TestTableExtremes(t *testing.T) {
	long := strings.Repeat("very-long-host-name.", 12) + "example.com:65535"
	s := Status{
		Role:    "server",
		Version: strings.Repeat("9.9.9-rc", 20),
		Uptime:  math.Inf(1),
		Sessions: []Session{{
			ID:    strings.Repeat("f", 40),
			Mode:  strings.Repeat("m", 40),
			Flows: math.MaxInt,
			Paths: []Path{
				{
					Remote: long, Local: long, State: PathDegraded,
					RTTms: 1e12, JitterMs: 1e9, LossOut: 0.999, LossIn: 2,
					TxPackets: math.MaxUint64, RxPackets: 999_999_999_999, Duplicates: 999_500,
					LastSeen: "2001-01-01T00:00:00.000Z",
				},
				{
					Remote: "[2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:4000", State: PathUp,
					RTTms: math.NaN(), JitterMs: math.Inf(1), LossOut: math.NaN(), LossIn: -1,
					LastSeen: "not a time",
				},
				{
					Remote: "h\x1b[2J\u00e9\u4e2d:1", State: "a-state-name-longer-than-the-column", RTTms: 0.01,
					LastSeen: FormatTime(tableNow.Add(time.Hour)),
				},
			},
		}},
		Counters: map[string]uint64{
			"a":                    1,
			"b":                    2,
			"drop_auth":            12345678901234,
			"drop_queue_full":      8,
			"drop_rate_limited":    9,
			"drop_replay":          99,
			"drop_too_big":         7,
			"drop_unknown_session": 5,
		},
	}
	s.Counters[strings.Repeat("c", 100)] = math.MaxUint64
	out := table(t, s)
	checkWidth(t, out)
	for _, want := range []string{"up 53375995583650d07h  1 session\n", "=18446744073709551615", "degraded", "up", "...", ":65535", "18E", "1.0T", "1.0M", ">99d ago", "0.0s ago", "?"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Error("control character passed through")
	}
	t.Logf("\n%s", out)
}

func TestTableNoSessions(t *testing.T) {
	out := table(t, Status{Role: "server", Version: "1.0.0", Uptime: 5})
	checkWidth(t, out)
	if want := "mptunnel server 1.0.0  up 5s  0 sessions\nno sessions\n"; out != want {
		t.Errorf("table = %q, want %q", out, want)
	}
}

// TestTableName: a daemon's name heads its table, before the role; a long
// one is shortened so the line still fits.
func TestTableName(t *testing.T) {
	out := table(t, Status{Role: "client", Name: "client-127.0.0.1-3000", Version: "1.0.0", Uptime: 5})
	if want := "client-127.0.0.1-3000: mptunnel client 1.0.0  up 5s  0 sessions\n"; !strings.HasPrefix(out, want) {
		t.Errorf("table = %q, want it to start with %q", out, want)
	}
	out = table(t, Status{Role: "server", Name: strings.Repeat("n", 64), Version: strings.Repeat("v", 60), Uptime: 5})
	checkWidth(t, out)
	if !strings.Contains(out, "mptunnel server") || !strings.Contains(out, "up 5s  0 sessions") {
		t.Errorf("long name and version hid the role or uptime: %q", out)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestTableWriteError(t *testing.T) {
	if err := WriteTable(failWriter{}, sampleStatus(), tableNow); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("WriteTable error = %v", err)
	}
	if err := WriteJSON(failWriter{}, sampleStatus()); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("WriteJSON error = %v", err)
	}
}

func TestFmtCount(t *testing.T) {
	for n, want := range map[uint64]string{
		0: "0", 999: "999", 1000: "1.0k", 1234: "1.2k", 9949: "9.9k", 9950: "10k", 999_499: "999k",
		999_500: "1.0M", 3_400_000: "3.4M", 12_345_678: "12M", 1e9: "1.0G", 1e12: "1.0T",
		1e15: "1.0P", 1e18: "1.0E", math.MaxUint64: "18E",
	} {
		if got := fmtCount(n); got != want {
			t.Errorf("fmtCount(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestFmtMs(t *testing.T) {
	for _, tc := range []struct {
		v, rtt float64
		want   string
	}{
		{0, 0, "-"}, {1, 0, "-"}, {0, 5, "0.00ms"}, {0.013, 1, "0.01ms"}, {9.994, 1, "9.99ms"},
		{9.996, 1, "10.0ms"}, {12.34, 1, "12.3ms"}, {99.96, 1, "100ms"}, {9999.4, 1, "9999ms"},
		{9999.6, 1, "10s"}, {123456, 1, "123s"}, {1e12, 1, "long"}, {math.NaN(), 1, "-"},
		{1, math.NaN(), "-"}, {math.Inf(1), 1, "-"}, {-1, 1, "-"},
	} {
		if got := fmtMs(tc.v, tc.rtt); got != tc.want {
			t.Errorf("fmtMs(%v, %v) = %q, want %q", tc.v, tc.rtt, got, tc.want)
		}
		if got := fmtMs(tc.v, tc.rtt); len(got) > 6 {
			t.Errorf("fmtMs(%v) = %q is wider than 6", tc.v, got)
		}
	}
}

func TestFmtLoss(t *testing.T) {
	for _, tc := range []struct {
		f    float64
		want string
	}{
		{0, "0%"}, {0.000001, "0.0%"}, {0.001, "0.1%"}, {0.0994, "9.9%"}, {0.0996, "10%"},
		{0.5, "50%"}, {1, "100%"}, {3, "100%"}, {-1, "0%"}, {math.NaN(), "-"},
	} {
		if got := fmtLoss(tc.f); got != tc.want {
			t.Errorf("fmtLoss(%v) = %q, want %q", tc.f, got, tc.want)
		}
	}
}

func TestFmtAgo(t *testing.T) {
	for _, tc := range []struct {
		ago  time.Duration
		want string
	}{
		{0, "0.0s ago"}, {345 * time.Millisecond, "0.3s ago"}, {9999 * time.Millisecond, "9.9s ago"},
		{10 * time.Second, "10s ago"}, {59 * time.Second, "59s ago"}, {5 * time.Minute, "5m ago"},
		{3 * time.Hour, "3h ago"}, {99 * 24 * time.Hour, "99d ago"}, {100 * 24 * time.Hour, ">99d ago"},
		{-time.Minute, "0.0s ago"},
	} {
		ts := FormatTime(tableNow.Add(-tc.ago))
		if got := fmtAgo(ts, tableNow); got != tc.want {
			t.Errorf("fmtAgo(%v ago) = %q, want %q", tc.ago, got, tc.want)
		}
	}
	if got := fmtAgo("", tableNow); got != "never" {
		t.Errorf("fmtAgo(\"\") = %q", got)
	}
	if got := fmtAgo("yesterday", tableNow); got != "?" {
		t.Errorf("fmtAgo(bad) = %q", got)
	}
}

func TestFmtUptime(t *testing.T) {
	for sec, want := range map[float64]string{
		0: "0s", 42.9: "42s", 725: "12m05s", 3723: "1h02m", 2*86400 + 3*3600 + 59: "2d03h", -5: "0s",
	} {
		if got := fmtUptime(sec); got != want {
			t.Errorf("fmtUptime(%v) = %q, want %q", sec, got, want)
		}
	}
	if got := fmtUptime(math.NaN()); got != "0s" {
		t.Errorf("fmtUptime(NaN) = %q", got)
	}
}

func TestShorten(t *testing.T) {
	if got := shortenMiddle("very-long-host-name.example.com:4000", 21); !strings.HasSuffix(got, ":4000") || len(got) != 21 {
		t.Errorf("shortenMiddle = %q, want 21 bytes ending in the port", got)
	}
	if got := shortenEnd("abcdef", 5); got != "ab..." {
		t.Errorf("shortenEnd = %q", got)
	}
	if got := shortenEnd("abcdef", 2); got != "ab" {
		t.Errorf("shortenEnd = %q", got)
	}
	if got := clean("a\tb\u00e9"); got != "a?b?" {
		t.Errorf("clean = %q", got)
	}
}

func TestSparkline(t *testing.T) {
	cases := []struct {
		in   []float64
		w    int
		want string
	}{
		{nil, 5, ""},
		{[]float64{1, 1, 1}, 5, "▁▁▁"},
		{[]float64{0, 7}, 5, "▁█"},
		{[]float64{0, 1, 2, 3, 4, 5, 6, 7}, 8, "▁▂▃▄▅▆▇█"},
		{[]float64{9, 0, 7}, 2, "▁█"}, // the last two only
	}
	for _, c := range cases {
		if got := Sparkline(c.in, c.w); got != c.want {
			t.Errorf("Sparkline(%v, %d) = %q, want %q", c.in, c.w, got, c.want)
		}
	}
}

func TestTableClientName(t *testing.T) {
	s := sampleStatus()
	s.Sessions[0].Client = "alice"
	out := table(t, s)
	checkWidth(t, out)
	if !strings.Contains(out, "session 0000002a  client alice  redundant") {
		t.Errorf("table does not name the session's client:\n%s", out)
	}
	b, err := json.Marshal(s.Sessions[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"client":"alice"`) {
		t.Errorf("JSON session lacks its client: %s", b)
	}
	s.Sessions[0].Client = ""
	if b, _ := json.Marshal(s.Sessions[0]); strings.Contains(string(b), `"client"`) {
		t.Errorf("a shared-key session's JSON has a client field: %s", b)
	}
}
