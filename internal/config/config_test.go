package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParsePaths(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  []Path
	}{
		{
			name:  "single",
			input: "1.2.3.4 2000\n",
			want:  []Path{{Host: "1.2.3.4", Port: 2000, Line: 1}},
		},
		{
			name:  "original format",
			input: "# servers\n\n10.0.0.1 3001\n10.0.0.2 3002 # second link\n   \n\t# indented comment\nvpn.example.com 65535",
			want: []Path{
				{Host: "10.0.0.1", Port: 3001, Line: 3},
				{Host: "10.0.0.2", Port: 3002, Line: 4},
				{Host: "vpn.example.com", Port: 65535, Line: 7},
			},
		},
		{
			name:  "ipv6 bare and bracketed",
			input: "::1 2000\n[::1] 2001\n[2001:db8::5] 1\nfe80::1%eth0 9\n",
			want: []Path{
				{Host: "::1", Port: 2000, Line: 1},
				{Host: "::1", Port: 2001, Line: 2},
				{Host: "2001:db8::5", Port: 1, Line: 3},
				{Host: "fe80::1%eth0", Port: 9, Line: 4},
			},
		},
		{
			name:  "dev and from in any order",
			input: "a.example 1 dev eth0\nb.example 2 from 192.0.2.1\nc.example 3 dev wlan0 from 192.0.2.2\nc.example 4 from 2001:db8::1 dev wwan0\n[::1] 5 from [::1]\n",
			want: []Path{
				{Host: "a.example", Port: 1, Dev: "eth0", Line: 1},
				{Host: "b.example", Port: 2, From: "192.0.2.1", Line: 2},
				{Host: "c.example", Port: 3, Dev: "wlan0", From: "192.0.2.2", Line: 3},
				{Host: "c.example", Port: 4, Dev: "wwan0", From: "2001:db8::1", Line: 4},
				{Host: "::1", Port: 5, From: "::1", Line: 5},
			},
		},
		{
			name:  "crlf tabs and bom",
			input: "\uFEFFhost-a 100\r\n\r\n\thost_b\t\t200\t#x\r\nlocalhost. 300\r\n",
			want: []Path{
				{Host: "host-a", Port: 100, Line: 1},
				{Host: "host_b", Port: 200, Line: 3},
				{Host: "localhost.", Port: 300, Line: 4},
			},
		},
		{
			name:  "comment right after port",
			input: "h 7#comment\n",
			want:  []Path{{Host: "h", Port: 7, Line: 1}},
		},
		{
			name:  "leading zeros in port",
			input: "h 00080\n",
			want:  []Path{{Host: "h", Port: 80, Line: 1}},
		},
		{
			name:  "longest allowed line",
			input: "h 1 dev e" + strings.Repeat(" ", MaxLineLen-9) + "\r\n",
			want:  []Path{{Host: "h", Port: 1, Dev: "e", Line: 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePaths("mpclient.conf", strings.NewReader(tt.input))
			if err != nil {
				t.Fatalf("ParsePaths: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParsePaths =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestMaxPathsAllowed(t *testing.T) {
	var b strings.Builder
	for i := 1; i <= MaxPaths; i++ {
		fmt.Fprintf(&b, "10.0.0.%d %d\n", i, 1000+i)
	}
	got, err := ParsePaths("mpclient.conf", strings.NewReader(b.String()))
	if err != nil {
		t.Fatalf("%d paths: %v", MaxPaths, err)
	}
	if len(got) != MaxPaths {
		t.Fatalf("got %d paths, want %d", len(got), MaxPaths)
	}
	if got[MaxPaths-1].Port != 1000+MaxPaths || got[MaxPaths-1].Line != MaxPaths {
		t.Errorf("last path = %+v", got[MaxPaths-1])
	}
}

func TestParsePathsErrors(t *testing.T) {
	var many strings.Builder
	for i := 1; i <= MaxPaths+1; i++ {
		fmt.Fprintf(&many, "h%d 1\n", i)
	}
	tests := []struct {
		name  string
		input string
		want  string // the whole Error() text
		line  int
	}{
		{"one word", "a 1\nb 2\nx\n", `mpclient.conf:3: expected HOST PORT, got "x"`, 3},
		{"one word with comment", "host.example # 2000\n", `mpclient.conf:1: expected HOST PORT, got "host.example"`, 1},
		{"host:port", "1.2.3.4:2000\n", `mpclient.conf:1: expected HOST PORT, got "1.2.3.4:2000"`, 1},
		{"port not a number", "h abc\n", `mpclient.conf:1: port "abc" is not a number`, 1},
		{"negative port", "h -1\n", `mpclient.conf:1: port "-1" is not a number`, 1},
		{"signed port", "h +1\n", `mpclient.conf:1: port "+1" is not a number`, 1},
		{"port zero", "h 0\n", `mpclient.conf:1: port 0 is not allowed; use a port from 1 to 65535`, 1},
		{"port too big", "\nh 65536\n", `mpclient.conf:2: port 65536 is out of range; use a port from 1 to 65535`, 2},
		{"port huge", "h 99999999999999999999999\n", `mpclient.conf:1: port 99999999999999999999999 is out of range; use a port from 1 to 65535`, 1},
		{"unknown word", "h 1 via eth0\n", `mpclient.conf:1: unknown word "via" after HOST PORT; expected "dev IFACE" or "from ADDR"`, 1},
		{"unknown word after dev", "h 1 dev eth0 x\n", `mpclient.conf:1: unknown word "x" after HOST PORT; expected "dev IFACE" or "from ADDR"`, 1},
		{"dev without value", "h 1 dev\n", `mpclient.conf:1: "dev" must be followed by an interface name`, 1},
		{"dev then comment", "h 1 dev # eth0\n", `mpclient.conf:1: "dev" must be followed by an interface name`, 1},
		{"dev followed by from", "h 1 dev from 1.2.3.4\n", `mpclient.conf:1: "dev" must be followed by an interface name`, 1},
		{"from without value", "h 1 dev eth0 from\n", `mpclient.conf:1: "from" must be followed by a local IP address`, 1},
		{"dev twice", "h 1 dev a dev b\n", `mpclient.conf:1: "dev" is given more than once`, 1},
		{"from twice", "h 1 from 1.1.1.1 from 1.1.1.2\n", `mpclient.conf:1: "from" is given more than once`, 1},
		{"from not ip", "h 1 from myhost\n", `mpclient.conf:1: from address "myhost" is not an IP address`, 1},
		{"from with port", "h 1 from 1.2.3.4:5\n", `mpclient.conf:1: from address "1.2.3.4:5" is not an IP address`, 1},
		{"from family mismatch", "::1 1 from 127.0.0.1\n", `mpclient.conf:1: from address 127.0.0.1 and host ::1 are not of the same IP version`, 1},
		{"empty host", "[] 2000\n", `mpclient.conf:1: host is empty`, 1},
		{"unclosed bracket", "[::1 2000\n", `mpclient.conf:1: host "[::1" has "[" without a closing "]"`, 1},
		{"brackets around ipv4", "[1.2.3.4] 2000\n", `mpclient.conf:1: host "[1.2.3.4]": brackets are only for IPv6 addresses`, 1},
		{"brackets around name", "[example.com] 2000\n", `mpclient.conf:1: host "[example.com]": brackets are only for IPv6 addresses`, 1},
		{"stray bracket", "::1] 2000\n", `mpclient.conf:1: host "::1]" has a stray bracket`, 1},
		{"bad ipv6", "1::2::3 2000\n", `mpclient.conf:1: host "1::2::3" is not a valid IPv6 address; give the port as a separate word: HOST PORT`, 1},
		{"bad host name", "bad/host 2000\n", `mpclient.conf:1: host "bad/host" is not a valid host name or IP address`, 1},
		{"empty label", "a..b 2000\n", `mpclient.conf:1: host "a..b" is not a valid host name or IP address`, 1},
		{"no paths empty", "", `mpclient.conf: no paths; add at least one line of the form HOST PORT`, 0},
		{"no paths comments", "# nothing\n\n   \r\n", `mpclient.conf: no paths; add at least one line of the form HOST PORT`, 0},
		{"too many paths", many.String(), fmt.Sprintf("mpclient.conf:%d: too many paths; at most %d are allowed", MaxPaths+1, MaxPaths), MaxPaths + 1},
		{"line too long", "h 1\n" + strings.Repeat("#", MaxLineLen+1) + "\n", `mpclient.conf:2: line is longer than 4096 bytes`, 2},
		{"line too long crlf", "h 1\n" + strings.Repeat(" ", MaxLineLen+1) + "\r\n", `mpclient.conf:2: line is longer than 4096 bytes`, 2},
		{"line far too long", "h 1\n\n" + strings.Repeat("x", 100000), `mpclient.conf:3: line is longer than 4096 bytes`, 3},
		{"long word clipped", strings.Repeat("y", 100) + "\n", `mpclient.conf:1: expected HOST PORT, got "` + strings.Repeat("y", 64) + `..."`, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			paths, err := ParsePaths("mpclient.conf", strings.NewReader(tt.input))
			if err == nil {
				t.Fatalf("ParsePaths succeeded with %+v, want error %q", paths, tt.want)
			}
			if paths != nil {
				t.Errorf("ParsePaths returned paths %+v with an error", paths)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is %T, want *Error", err, err)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error =\n%s\nwant\n%s", got, tt.want)
			}
			if ce.File != "mpclient.conf" || ce.Line != tt.line {
				t.Errorf("error position = %q:%d, want mpclient.conf:%d", ce.File, ce.Line, tt.line)
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{File: "f.conf", Line: 7, Msg: "bad"}, "f.conf:7: bad"},
		{&Error{File: "f.conf", Msg: "bad"}, "f.conf: bad"},
		{&Error{Line: 7, Msg: "bad"}, "line 7: bad"},
		{&Error{Msg: "bad"}, "bad"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

func TestReadError(t *testing.T) {
	cause := errors.New("device gone")
	r := io.MultiReader(strings.NewReader("h 1\n"), failingReader{cause})
	_, err := ParsePaths("mpclient.conf", r)
	if err == nil {
		t.Fatal("ParsePaths succeeded on a failing reader")
	}
	if !errors.Is(err, cause) {
		t.Errorf("error %v does not wrap the read error", err)
	}
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("error is %T, want *Error", err)
	}
	if want := "mpclient.conf: cannot read file: device gone"; err.Error() != want {
		t.Errorf("error = %q, want %q", err.Error(), want)
	}
}

func TestLoadPaths(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mpclient.conf")
	if err := os.WriteFile(file, []byte("# paths\n192.0.2.1 4000\n[2001:db8::1] 4001 dev eth1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadPaths(file)
	if err != nil {
		t.Fatalf("LoadPaths: %v", err)
	}
	want := []Path{
		{Host: "192.0.2.1", Port: 4000, Line: 2},
		{Host: "2001:db8::1", Port: 4001, Dev: "eth1", Line: 3},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadPaths = %+v, want %+v", got, want)
	}

	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(bad, []byte("192.0.2.1 4000\nx\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadPaths(bad)
	if err == nil || err.Error() != bad+`:2: expected HOST PORT, got "x"` {
		t.Errorf("LoadPaths(bad) error = %v", err)
	}

	missing := filepath.Join(dir, "missing.conf")
	_, err = LoadPaths(missing)
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("LoadPaths(missing) error %v is %T, want *Error", err, err)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadPaths(missing) error %v does not wrap fs.ErrNotExist", err)
	}
	if ce.File != missing || !strings.HasPrefix(err.Error(), missing+": cannot open file: ") {
		t.Errorf("LoadPaths(missing) error = %q", err)
	}

	_, err = LoadPaths(dir) // a directory opens but cannot be read
	if !errors.As(err, &ce) || ce.File != dir || !strings.HasPrefix(err.Error(), dir+": ") {
		t.Errorf("LoadPaths(dir) error = %v", err)
	}
}

func TestAddress(t *testing.T) {
	tests := []struct {
		p    Path
		want string
	}{
		{Path{Host: "1.2.3.4", Port: 2000}, "1.2.3.4:2000"},
		{Path{Host: "::1", Port: 2000}, "[::1]:2000"},
		{Path{Host: "fe80::1%eth0", Port: 9}, "[fe80::1%eth0]:9"},
		{Path{Host: "vpn.example.com", Port: 65535}, "vpn.example.com:65535"},
	}
	for _, tt := range tests {
		if got := tt.p.Address(); got != tt.want {
			t.Errorf("%+v.Address() = %q, want %q", tt.p, got, tt.want)
		}
	}
}

func FuzzParsePaths(f *testing.F) {
	f.Add([]byte("1.2.3.4 2000\n"))
	f.Add([]byte("[::1] 2000 dev lo from ::1 # c\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		paths, err := ParsePaths("fuzz.conf", strings.NewReader(string(data)))
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is %T, want *Error", err, err)
			}
			if ce.File != "fuzz.conf" || ce.Msg == "" || ce.Line < 0 {
				t.Fatalf("malformed error %+v", ce)
			}
			if paths != nil {
				t.Fatalf("paths %+v returned with error %v", paths, err)
			}
			return
		}
		if len(paths) == 0 || len(paths) > MaxPaths {
			t.Fatalf("got %d paths", len(paths))
		}
		prev := 0
		for _, p := range paths {
			if p.Host == "" || p.Port == 0 {
				t.Fatalf("invalid path %+v", p)
			}
			if p.Line <= prev {
				t.Fatalf("line numbers not increasing: %d after %d", p.Line, prev)
			}
			prev = p.Line
			host, port, err := net.SplitHostPort(p.Address())
			if err != nil || host != p.Host || port != strconv.Itoa(int(p.Port)) {
				t.Fatalf("Address() %q of %+v does not split back: %q %q %v", p.Address(), p, host, port, err)
			}
		}
		// Writing the paths back out must give the same paths.
		var b strings.Builder
		for _, p := range paths {
			fmt.Fprintf(&b, "%s %d", p.Host, p.Port)
			if p.Dev != "" {
				fmt.Fprintf(&b, " dev %s", p.Dev)
			}
			if p.From != "" {
				fmt.Fprintf(&b, " from %s", p.From)
			}
			b.WriteByte('\n')
		}
		again, err := ParsePaths("fuzz.conf", strings.NewReader(b.String()))
		if err != nil {
			t.Fatalf("reparsing %q: %v", b.String(), err)
		}
		for i := range again {
			again[i].Line = paths[i].Line
		}
		if !reflect.DeepEqual(again, paths) {
			t.Fatalf("reparsed %+v, want %+v", again, paths)
		}
	})
}
