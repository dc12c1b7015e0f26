package extra

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mptunnel/mptunnel/internal/cli"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type result struct {
	code           int
	stdout, stderr string
}

// run runs mptunnel with these commands, as cmd/mptunnel does.
func run(ctx context.Context, args ...string) result {
	var out, errb bytes.Buffer
	code := cli.Run("mptunnel", args, cli.Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }, Context: ctx}, Commands()...)
	return result{code, out.String(), errb.String()}
}

// fullUsage is mptunnel's usage, every command in it.
const fullUsage = `usage: mptunnel COMMAND [flags] [args]

commands:
  server   [flags] PORT TARGET_HOST TARGET_PORT   run the server end (same as mpserver)
  server   -c FILE [flags]                         ... with its options from a TOML file
  client   [flags] CONFIG                          run the client end (same as mpclient)
  client   -c FILE [flags]                         ... with its options from a TOML file
  check    -c FILE                                 check a TOML file without starting anything
  demo     [--html FILE] [--json]                  see it work: 3 lossy paths, best single path vs mptunnel
  bridge   --listen ADDR --to HOST:PORT            relay UDP, one upstream socket per peer
  status   [--json] [--control PATH | NAME]        show sessions and paths of every running client and server
  bench    [--paths N] [--json] [--short] ...      measure throughput, latency and memory on loopback
  genkey   [-o FILE]                               print a new shared key, or write it to a new owner-only FILE
  genkey   --pair -o FILE                          write a new private key to a new owner-only FILE, print its public key
  pubkey   [--key-file FILE] < PRIVATE_KEY         print the public key of a private key
  version                                          print the version

Run 'mptunnel COMMAND -h' for a command's flags.
`

// TestUsage: with these commands mptunnel's usage lists every command; without
// them it lists none of them, and naming one is an unknown command.
func TestUsage(t *testing.T) {
	if r := run(context.Background(), "help"); r.code != 0 || r.stdout != fullUsage {
		t.Fatalf("help: exit %d, stdout:\n%s\nwant:\n%s", r.code, r.stdout, fullUsage)
	}
	if r := run(context.Background()); r.code != 2 || !strings.HasPrefix(r.stderr, fullUsage) {
		t.Fatalf("no command: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	var out, errb bytes.Buffer
	env := cli.Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }, Context: context.Background()}
	if code := cli.Run("mptunnel", []string{"help"}, env); code != 0 {
		t.Fatalf("help without commands: exit %d", code)
	}
	for _, c := range Commands() {
		if strings.Contains(out.String(), "\n  "+c.Name+" ") {
			t.Errorf("usage without the commands lists %s:\n%s", c.Name, out.String())
		}
	}
	if !strings.Contains(out.String(), "\n  status ") {
		t.Errorf("usage without the commands lost status:\n%s", out.String())
	}
	if code := cli.Run("mptunnel", []string{"demo"}, env); code != 2 || !strings.Contains(errb.String(), `unknown command "demo"`) {
		t.Errorf("demo without the commands: exit %d, stderr %q", code, errb.String())
	}
}

func TestBridgeUsage(t *testing.T) {
	r := run(context.Background(), "bridge", "--listen", ":0")
	if r.code != 2 || !strings.Contains(r.stderr, "--to") {
		t.Fatalf("exit %d, stderr %q; want exit 2 and %q", r.code, r.stderr, "--to")
	}
}

// TestBridgeCleanShutdown: the bridge exits 0 when told to stop.
func TestBridgeCleanShutdown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if r := run(ctx, "bridge", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:9"); r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
}

func TestDemoUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"demo", "extra"}, "demo takes no arguments"},
		{[]string{"demo", "--loss", "1"}, "bad --loss"},
		{[]string{"bench", "extra"}, "bench takes no arguments"},
		{[]string{"bench", "--mode", "sideways"}, "sideways"},
		{[]string{"bench", "--bridge-rates", "fast"}, "bad --bridge-rates"},
	} {
		if r := run(context.Background(), c.args...); r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and %q", c.args, r.code, r.stderr, c.want)
		}
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]int64{"50M": 50_000_000, "1.5k": 1500, "2G": 2_000_000_000, "700": 700} {
		if got, err := parseRate(in); err != nil || got != want {
			t.Errorf("parseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "fast", "-1M", "2000G"} {
		if _, err := parseRate(in); err == nil {
			t.Errorf("parseRate(%q) did not fail", in)
		}
	}
}
