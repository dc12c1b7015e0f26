package cli_test

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/mptunnel/mptunnel/internal/cli"
	"github.com/mptunnel/mptunnel/internal/cli/extra"
)

// TestHelp: -h and --help print the usage to stdout, nothing to stderr, and
// exit 0, for mpclient, mpserver, mptunnel and every one of mptunnel's
// commands (taken from its command table, so a new one is covered); an
// unknown flag is bad usage: exit 2, the error and the usage on stderr,
// nothing on stdout.
func TestHelp(t *testing.T) {
	type call struct {
		prog  string
		args  []string
		usage string // stdout starts with it
		wrong string // the error an unknown flag gives, on stderr
	}
	const unknownFlag = "flag provided but not defined: -no-such-flag"
	calls := []call{
		{"mpclient", nil, "usage: mpclient [flags] CONFIG", unknownFlag},
		{"mpserver", nil, "usage: mpserver [flags] PORT TARGET_HOST TARGET_PORT", unknownFlag},
		{"mptunnel", nil, "usage: mptunnel COMMAND", `unknown command "--no-such-flag"`},
	}
	cmds := cli.AllCommands(extra.Commands())
	if len(cmds) < 9 {
		t.Fatalf("%d commands in mptunnel's table, want at least 9", len(cmds))
	}
	for _, c := range cmds {
		calls = append(calls, call{"mptunnel", []string{c.Name}, "usage: mptunnel " + c.Name, unknownFlag})
	}
	for _, c := range calls {
		name := strings.Join(append([]string{c.prog}, c.args...), " ")
		for _, h := range []string{"-h", "--help"} {
			t.Run(name+" "+h, func(t *testing.T) {
				code, stdout, stderr := run(c.prog, slices.Concat(c.args, []string{h})...)
				if code != cli.ExitOK || !strings.HasPrefix(stdout, c.usage) || stderr != "" {
					t.Fatalf("exit %d, stdout %q, stderr %q; want exit 0, stdout starting %q, no stderr", code, stdout, stderr, c.usage)
				}
				if c.args != nil && !strings.Contains(stdout, "\n  -h\tprint this usage and exit\n") {
					t.Fatalf("the flags listed lack -h:\n%s", stdout)
				}
			})
		}
		t.Run(name+" wrong usage", func(t *testing.T) {
			code, stdout, stderr := run(c.prog, slices.Concat(c.args, []string{"--no-such-flag"})...)
			if code != cli.ExitUsage || stdout != "" || !strings.Contains(stderr, c.wrong) || !strings.Contains(stderr, c.usage) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2, no stdout, stderr with %q and %q", code, stdout, stderr, c.wrong, c.usage)
			}
		})
	}
}

// run runs prog as its binary does (mptunnel with package extra's commands).
func run(prog string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	env := cli.Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }, Context: context.Background()}
	var more []cli.Command
	if prog == "mptunnel" {
		more = extra.Commands()
	}
	code = cli.Run(prog, args, env, more...)
	return code, out.String(), errb.String()
}
