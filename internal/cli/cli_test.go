package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mptunnel/mptunnel/internal/control"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, ctx context.Context, vars map[string]string, prog string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(prog, args, Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return vars[k] }, Context: ctx})
	return result{code, out.String(), errb.String()}
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestErrors(t *testing.T) {
	k, _ := handshake.GenerateKey()
	withKey := map[string]string{"MPTUNNEL_KEY": k.String()}
	good := writeFile(t, "good.conf", "# paths\n127.0.0.1 4000\n")
	busy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	bg := context.Background()
	cases := []struct {
		name string
		vars map[string]string
		prog string
		args []string
		code int
		want string
	}{
		{"no command", nil, "mptunnel", nil, 2, "no command"},
		{"unknown command", nil, "mptunnel", []string{"frobnicate"}, 2, "unknown command"},
		{"server args", withKey, "mpserver", []string{"2000"}, 2, "expected PORT TARGET_HOST TARGET_PORT"},
		{"server bad port", withKey, "mpserver", []string{"70000", "127.0.0.1", "7"}, 2, "bad port"},
		{"no key", nil, "mpserver", []string{"2000", "127.0.0.1", "7"}, 2, "mptunnel genkey -o mptunnel.key"},
		{"malformed key", map[string]string{"MPTUNNEL_KEY": "hunter2"}, "mpserver", []string{"2000", "127.0.0.1", "7"}, 2, "MPTUNNEL_KEY: the key is not valid"},
		{"missing key file", nil, "mpclient", []string{"--key-file", "/nonexistent/key", good}, 2, "cannot read key file"},
		{"bad config line", withKey, "mpclient", []string{writeFile(t, "bad.conf", "127.0.0.1 4000\n127.0.0.1\n")}, 2, "bad.conf:2:"},
		{"missing config", withKey, "mpclient", []string{"/nonexistent/mpclient.conf"}, 2, "/nonexistent/mpclient.conf"},
		{"bad flag", withKey, "mpclient", []string{"--no-such-flag", good}, 2, "no-such-flag"},
		{"bad log level", withKey, "mpclient", []string{"--log-level", "loud", good}, 2, "log-level"},
		{"send buffer too small", withKey, "mpclient", []string{"--send-buffer", "100", good}, 2, "bad --send-buffer 100"},
		{"rekey too often", withKey, "mpclient", []string{"--rekey-after", "1s", good}, 2, "bad --rekey-after 1s"},
		{"rekey too few packets", withKey, "mpclient", []string{"--rekey-packets", "10", good}, 2, "bad --rekey-packets 10"},
		{"port zero", withKey, "mpserver", []string{"0", "127.0.0.1", "7"}, 2, "bad port"},
		{"port in use", withKey, "mpserver", []string{strconv.Itoa(busy.LocalAddr().(*net.UDPAddr).Port), "127.0.0.1", "7"}, 1, "address already in use"},
		{"listen in use", withKey, "mpclient", []string{"--listen", busy.LocalAddr().String(), good}, 1, "cannot listen on " + busy.LocalAddr().String()},
		{"status without daemon", nil, "mptunnel", []string{"status", "--control", filepath.Join(t.TempDir(), "none.sock")}, 1, "no mptunnel daemon is serving status"},
		{"status args", nil, "mptunnel", []string{"status", "one", "two"}, 2, "no arguments"},
		{"status name and control", nil, "mptunnel", []string{"status", "--control", "x.sock", "one"}, 2, "not both"},
		{"bad name", withKey, "mpclient", []string{"--name", "vpn/1", good}, 2, "bad --name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runCLI(t, bg, c.vars, c.prog, c.args...)
			if r.code != c.code || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", r.code, r.stderr, c.code, c.want)
			}
		})
	}
}

func TestGenkeyAndVersion(t *testing.T) {
	r := runCLI(t, context.Background(), nil, "mptunnel", "genkey")
	if r.code != 0 {
		t.Fatalf("genkey exit %d: %s", r.code, r.stderr)
	}
	if _, err := handshake.ParseKey(r.stdout); err != nil {
		t.Fatalf("genkey printed %q: %v", r.stdout, err)
	}
	r2 := runCLI(t, context.Background(), nil, "mptunnel", "genkey")
	if r2.stdout == r.stdout {
		t.Fatal("two keys are the same")
	}
	if r := runCLI(t, context.Background(), nil, "mptunnel", "version"); r.code != 0 || !strings.HasPrefix(r.stdout, "mptunnel ") {
		t.Fatalf("version: %d %q", r.code, r.stdout)
	}
}

// TestCleanShutdown: both ends exit 0 when told to stop (the bridge:
// package extra).
func TestCleanShutdown(t *testing.T) {
	k, _ := handshake.GenerateKey()
	kf := writeFile(t, "key", k.String()+"\n")
	conf := writeFile(t, "c.conf", "127.0.0.1 9\n")
	free, err := net.ListenUDP("udp", &net.UDPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(free.LocalAddr().(*net.UDPAddr).Port)
	free.Close()
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	for _, args := range [][]string{
		{"server", "--key-file", kf, "--log-level", "error", "--control", ctl, port, "127.0.0.1", "9"},
		{"client", "--key-file", kf, "--log-level", "error", "--control", ctl, "--listen", "127.0.0.1:0", conf},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		r := runCLI(t, ctx, nil, "mptunnel", args...)
		cancel()
		if r.code != 0 {
			t.Fatalf("%s: exit %d: %s", args[0], r.code, r.stderr)
		}
	}
}

// TestStatus: a running client serves its status; mptunnel status reads it as
// a table and as JSON.
func TestStatus(t *testing.T) {
	k, _ := handshake.GenerateKey()
	kf := writeFile(t, "key", k.String())
	conf := writeFile(t, "c.conf", "127.0.0.1 9\n127.0.0.1 10\n")
	ctl := filepath.Join(t.TempDir(), "client.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 1)
	go func() {
		done <- runCLI(t, ctx, nil, "mptunnel", "client", "--key-file", kf, "--log-level", "error", "--control", ctl, "--listen", "127.0.0.1:0", conf)
	}()
	defer func() {
		cancel()
		if r := <-done; r.code != 0 {
			t.Errorf("client exit %d: %s", r.code, r.stderr)
		}
	}()
	var r result
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if r = runCLI(t, context.Background(), nil, "mptunnel", "status", "--json", "--control", ctl); r.code == 0 {
			break
		}
	}
	if r.code != 0 {
		t.Fatalf("status --json: exit %d: %s", r.code, r.stderr)
	}
	var st struct {
		Role     string `json:"role"`
		Sessions []any  `json:"sessions"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Role != "client" || st.Sessions == nil {
		t.Fatalf("status --json printed %q (%v)", r.stdout, err)
	}
	r = runCLI(t, context.Background(), nil, "mptunnel", "status", "--control", ctl)
	if r.code != 0 || !strings.Contains(r.stdout, "client") {
		t.Fatalf("status table: exit %d: %q %s", r.code, r.stdout, r.stderr)
	}
	// A second daemon on the same socket is refused with advice.
	r = runCLI(t, context.Background(), nil, "mptunnel", "client", "--key-file", kf, "--control", ctl, "--listen", "127.0.0.1:0", conf)
	if r.code != 1 || !strings.Contains(r.stderr, "its own --name or --control PATH") {
		t.Fatalf("second daemon on one socket: exit %d: %s", r.code, r.stderr)
	}
}

// TestConfigFile: both ends run from TOML files; flags given override the
// file; bad files are exit 2 naming the file, line and key; check validates.
func TestConfigFile(t *testing.T) {
	k, _ := handshake.GenerateKey()
	kf := writeFile(t, "key", k.String()+"\n")
	busy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	srvFile := writeFile(t, "server.toml", "listen = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:9\"\nkey_file = \""+kf+"\"\ncontrol = \""+ctl+"\"\n[log]\nlevel = \"error\"\nformat = \"json\"\n")
	cliFile := writeFile(t, "client.toml", "listen = \""+busy.LocalAddr().String()+"\"\nkey_file = \""+kf+"\"\ncontrol = \"none\"\nmode = \"fec\"\n[fec]\nshape = \"10/4\"\n[log]\nlevel = \"error\"\n[[path]]\nremote = \"127.0.0.1:9\"\npriority = 2\n")
	run := func(args ...string) result {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		return runCLI(t, ctx, nil, "mptunnel", args...)
	}
	if r := run("server", "-c", srvFile); r.code != 0 {
		t.Fatalf("server -c: exit %d: %s", r.code, r.stderr)
	}
	// The file's listen address is taken: the daemon fails, naming it...
	if r := run("client", "-c", cliFile); r.code != 1 || !strings.Contains(r.stderr, busy.LocalAddr().String()) {
		t.Fatalf("client -c with a busy listen address: exit %d: %s", r.code, r.stderr)
	}
	// ...and the flag overrides it.
	if r := run("client", "-c", cliFile, "--listen", "127.0.0.1:0"); r.code != 0 {
		t.Fatalf("client -c --listen: exit %d: %s", r.code, r.stderr)
	}
	// The original HOST PORT file replaces the TOML file's paths.
	if r := run("client", "-c", cliFile, "--listen", "127.0.0.1:0", writeFile(t, "p.conf", "127.0.0.1 9\n")); r.code != 0 {
		t.Fatalf("client -c FILE CONFIG: exit %d: %s", r.code, r.stderr)
	}
	bad := writeFile(t, "bad.toml", "listen = \"127.0.0.1:0\"\n[log]\nlevel = \"loud\"\n")
	if r := run("client", "-c", bad); r.code != 2 || !strings.Contains(r.stderr, "bad.toml:3: log.level") {
		t.Fatalf("bad file: exit %d: %s", r.code, r.stderr)
	}
	if r := run("server", "-c", writeFile(t, "s.toml", "listen = \":0\"\n")); r.code != 2 || !strings.Contains(r.stderr, "listen, and target or allow") {
		t.Fatalf("server file without target: exit %d: %s", r.code, r.stderr)
	}
	for _, c := range []struct {
		file string
		code int
		want string
	}{
		{cliFile, 0, "valid client configuration with 1 paths"},
		{srvFile, 0, "valid server configuration"},
		{bad, 2, "bad.toml:3: log.level"},
		{writeFile(t, "typo.toml", "target = \"a:1\"\nmax_session = 3\n"), 2, "typo.toml:2: max_session: unknown key"},
	} {
		r := run("check", "-c", c.file)
		if r.code != c.code || !strings.Contains(r.stdout+r.stderr, c.want) {
			t.Errorf("check %s: exit %d, %q %q; want %d and %q", c.file, r.code, r.stdout, r.stderr, c.code, c.want)
		}
	}
	for _, ex := range []string{"../../examples/client.toml", "../../examples/server.toml"} {
		if r := run("check", "-c", ex); r.code != 0 {
			t.Errorf("check %s: exit %d: %s", ex, r.code, r.stderr)
		}
	}
}

// TestStatusWatch: status --watch redraws the live view with a sparkline
// per path; not on a terminal, it prints plain snapshots, no escape codes.
func TestStatusWatch(t *testing.T) {
	k, _ := handshake.GenerateKey()
	kf := writeFile(t, "key", k.String())
	free, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(free.LocalAddr().(*net.UDPAddr).Port)
	free.Close()
	conf := writeFile(t, "c.conf", "127.0.0.1 "+port+"\n")
	ctl := filepath.Join(t.TempDir(), "client.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 2)
	go func() {
		done <- runCLI(t, ctx, nil, "mptunnel", "server", "--key-file", kf, "--log-level", "error", "--control", "none", port, "127.0.0.1", "9")
	}()
	go func() {
		done <- runCLI(t, ctx, nil, "mptunnel", "client", "--key-file", kf, "--log-level", "error", "--control", ctl, "--listen", "127.0.0.1:0", conf)
	}()
	defer func() {
		cancel()
		for range 2 {
			if r := <-done; r.code != 0 {
				t.Errorf("daemon exit %d: %s", r.code, r.stderr)
			}
		}
	}()
	// Wait for the session and a measured round trip.
	var r result
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		r = runCLI(t, context.Background(), nil, "mptunnel", "status", "--json", "--control", ctl)
		if r.code == 0 && strings.Contains(r.stdout, `"state": "up"`) {
			break
		}
	}
	if !strings.Contains(r.stdout, `"state": "up"`) {
		t.Fatalf("no path up: %s %s", r.stdout, r.stderr)
	}
	// status --json, field by field as docs/STATUS.md lists them.
	var st map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"role", "version", "uptime_s", "sessions", "counters"} {
		if _, ok := st[k]; !ok {
			t.Errorf("status has no %q", k)
		}
	}
	sess := st["sessions"].([]any)[0].(map[string]any)
	for _, k := range []string{"id", "mode", "cipher", "flows", "paths"} {
		if _, ok := sess[k]; !ok {
			t.Errorf("session has no %q", k)
		}
	}
	pth := sess["paths"].([]any)[0].(map[string]any)
	for _, k := range []string{"id", "remote", "local", "state", "rtt_ms", "jitter_ms", "loss_out", "loss_in", "tx_packets", "rx_packets", "tx_bytes", "rx_bytes", "duplicates", "last_seen", "share"} {
		if _, ok := pth[k]; !ok {
			t.Errorf("path has no %q", k)
		}
	}
	if pth["remote"] != "127.0.0.1:"+port || pth["state"] != "up" || pth["rtt_ms"].(float64) <= 0 || pth["tx_packets"].(float64) < 1 {
		t.Errorf("path figures: %v", pth)
	}
	r = runCLI(t, context.Background(), nil, "mptunnel", "status", "--watch", "--count", "2", "--control", ctl)
	if r.code != 0 {
		t.Fatalf("status --watch: exit %d: %s", r.code, r.stderr)
	}
	if n := strings.Count(r.stdout, "mptunnel client"); n != 2 {
		t.Fatalf("%d snapshots, want 2:\n%s", n, r.stdout)
	}
	if strings.Contains(r.stdout, "\x1b[") {
		t.Fatal("escape codes written to something that is not a terminal")
	}
	if !strings.ContainsAny(r.stdout, "▁▂▃▄▅▆▇█") || !strings.Contains(r.stdout, "rtt ") {
		t.Fatalf("no sparklines:\n%s", r.stdout)
	}
	for _, l := range strings.Split(r.stdout, "\n") {
		if n := len([]rune(l)); n > 80 {
			t.Fatalf("a line of %d columns: %q", n, l)
		}
	}
	if r := runCLI(t, context.Background(), nil, "mptunnel", "status", "--watch", "--json", "--control", ctl); r.code != 2 {
		t.Fatalf("--watch --json: exit %d", r.code)
	}
}

// freePort returns a UDP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return strconv.Itoa(c.LocalAddr().(*net.UDPAddr).Port)
}

// ours keeps the daemons of list whose socket is in dir: as root, status
// also reads /run/mptunnel, where other daemons of the machine may be.
func ours(list []status.Daemon, dir string) map[string]status.Daemon {
	m := make(map[string]status.Daemon)
	for _, d := range list {
		if filepath.Dir(d.Socket) == dir {
			m[d.Name] = d
		}
	}
	return m
}

// TestInstances: two clients and two servers run side by side with default
// options, each with its own status socket named after its listen address;
// `mptunnel status` lists them all, as tables and as a JSON array, skipping a
// stale socket; a daemon whose name is taken is refused; a named daemon is
// read alone by its name.
func TestInstances(t *testing.T) {
	k, _ := handshake.GenerateKey()
	kf := writeFile(t, "key", k.String())
	runtime := t.TempDir()
	vars := map[string]string{"XDG_RUNTIME_DIR": runtime}
	dir := filepath.Join(runtime, "mptunnel")

	s1, s2, c1, c2 := freePort(t), freePort(t), freePort(t), freePort(t)
	want := map[string]string{
		"server-" + s1:           "server",
		"server-" + s2:           "server",
		"client-127.0.0.1-" + c1: "client",
		"client-127.0.0.1-" + c2: "client",
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 5)
	start := func(cmd string, args ...string) {
		args = append([]string{cmd, "--log-level", "error"}, args...)
		go func() { done <- runCLI(t, ctx, vars, "mptunnel", args...) }()
	}
	daemons := 0
	defer func() {
		cancel()
		for range daemons {
			if r := <-done; r.code != 0 {
				t.Errorf("daemon exit %d: %s", r.code, r.stderr)
			}
		}
	}()
	for _, args := range [][]string{
		{"server", "--key-file", kf, s1, "127.0.0.1", "9"},
		{"server", "--key-file", kf, s2, "127.0.0.1", "9"},
		{"client", "--key-file", kf, "--listen", "127.0.0.1:" + c1, writeFile(t, "c1.conf", "127.0.0.1 "+s1+"\n")},
		{"client", "--key-file", kf, "--listen", "127.0.0.1:" + c2, writeFile(t, "c2.conf", "127.0.0.1 "+s2+"\n")},
	} {
		start(args[0], args[1:]...)
		daemons++
	}
	// A socket left by a daemon that died: nothing answers on it.
	stale := filepath.Join(dir, "stale.sock")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()

	statusOf := func(args ...string) result {
		return runCLI(t, context.Background(), vars, "mptunnel", append([]string{"status"}, args...)...)
	}
	var list []status.Daemon
	var r result
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		list = nil
		if r = statusOf("--json"); r.code == 0 {
			if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
				t.Fatalf("status --json printed %q: %v", r.stdout, err)
			}
		}
		if len(ours(list, dir)) == len(want) {
			break
		}
	}
	found := ours(list, dir)
	if len(found) != len(want) {
		t.Fatalf("status --json found %v, want %v: exit %d\n%s\n%s", found, want, r.code, r.stdout, r.stderr)
	}
	for name, role := range want {
		d, ok := found[name]
		if !ok || d.Status.Role != role || d.Status.Name != name || d.Socket != filepath.Join(dir, name+".sock") {
			t.Errorf("status --json entry %q = %+v, want a %s at %s", name, d, role, filepath.Join(dir, name+".sock"))
		}
	}
	if _, ok := found["stale"]; ok {
		t.Error("the stale socket was listed")
	}
	if _, err := os.Lstat(stale); err != nil {
		t.Errorf("the stale socket was not left in place: %v", err)
	}

	// The table: one block per daemon, headed by its name and role.
	r = statusOf()
	if r.code != 0 {
		t.Fatalf("status: exit %d: %s", r.code, r.stderr)
	}
	for name, role := range want {
		if !strings.Contains(r.stdout, name+": mptunnel "+role+" ") {
			t.Errorf("status table has no block headed %q:\n%s", name+": mptunnel "+role, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "stale: ") {
		t.Errorf("status table shows the stale socket:\n%s", r.stdout)
	}

	// A second daemon under a name in use is refused, saying so.
	taken := "client-127.0.0.1-" + c1
	r = runCLI(t, context.Background(), vars, "mptunnel", "server", "--key-file", kf, "--name", taken, freePort(t), "127.0.0.1", "9")
	if r.code != 1 || !strings.Contains(r.stderr, "already serving status at "+filepath.Join(dir, taken+".sock")) || !strings.Contains(r.stderr, "--name") {
		t.Fatalf("daemon under a taken name: exit %d: %s", r.code, r.stderr)
	}

	// A name from the TOML file; status NAME reads that daemon alone, as
	// --control PATH does: one JSON object.
	named := writeFile(t, "named.toml", "name = \"site-b\"\nkey_file = \""+kf+"\"\nlisten = \"127.0.0.1:0\"\n[[path]]\nremote = \"127.0.0.1:"+s2+"\"\n")
	start("client", "-c", named)
	daemons++
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if r = statusOf("--json", "site-b"); r.code == 0 {
			break
		}
	}
	var one status.Status
	if err := json.Unmarshal([]byte(r.stdout), &one); r.code != 0 || err != nil || one.Name != "site-b" || one.Role != "client" {
		t.Fatalf("status --json site-b: exit %d, %+v (%v): %s", r.code, one, err, r.stderr)
	}
	r = statusOf("--json", "--control", filepath.Join(dir, "site-b.sock"))
	if err := json.Unmarshal([]byte(r.stdout), &one); r.code != 0 || err != nil || one.Name != "site-b" {
		t.Fatalf("status --json --control: exit %d, %+v (%v): %s", r.code, one, err, r.stderr)
	}
	if r := statusOf("no-such-daemon"); r.code != 1 || !strings.Contains(r.stderr, `under the name "no-such-daemon"`) {
		t.Fatalf("status of an unknown name: exit %d: %s", r.code, r.stderr)
	}
	// --watch shows every daemon.
	r = statusOf("--watch", "--count", "1")
	if r.code != 0 {
		t.Fatalf("status --watch: exit %d: %s", r.code, r.stderr)
	}
	for name := range want {
		if !strings.Contains(r.stdout, name+": mptunnel ") {
			t.Errorf("status --watch has no block for %s:\n%s", name, r.stdout)
		}
	}
}

// TestStatusNoDaemon: with no daemon in the status directories, status says
// where it looked; a stale socket alone is no daemon.
func TestStatusNoDaemon(t *testing.T) {
	runtime := t.TempDir()
	dir := filepath.Join(runtime, "mptunnel")
	vars := map[string]string{"XDG_RUNTIME_DIR": runtime, "TMPDIR": t.TempDir()}
	dirs := control.SearchDirs(func(k string) string { return vars[k] }, os.Getuid())
	if others := control.Sockets(dirs, os.Getuid()); len(others) > 0 {
		t.Skipf("this machine's own daemons serve status at %v, which status would list", others)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "gone.sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	for _, args := range [][]string{{"status"}, {"status", "--json"}} {
		r := runCLI(t, context.Background(), vars, "mptunnel", args...)
		if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "no mptunnel daemon is serving status in "+dir) {
			t.Errorf("%v: exit %d, %q, %s", args, r.code, r.stdout, r.stderr)
		}
	}
}
