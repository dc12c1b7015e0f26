package cli

import (
	"flag"
	"os"
	"strings"
)

// Command is a command of mptunnel that this package does not hold: cmd/mptunnel
// passes package extra's to Main, and mpclient and mpserver, which have no
// commands, do not link them.
type Command struct {
	// Name is the word that selects it: mptunnel NAME [args].
	Name string
	// Run runs it with the arguments after its name.
	Run func(args []string, env Env) error
}

// builtin returns the commands this package runs itself.
func builtin() []Command {
	return []Command{
		{Name: "server", Run: func(args []string, env Env) error { return runServer("mptunnel server", args, env) }},
		{Name: "client", Run: func(args []string, env Env) error { return runClient("mptunnel client", args, env) }},
		{Name: "check", Run: runCheck},
		{Name: "status", Run: runStatus},
		{Name: "genkey", Run: runGenkey},
		{Name: "pubkey", Run: runPubkey},
		{Name: "version", Run: runVersion},
	}
}

// commands returns mptunnel's commands: this package's and extra.
func commands(extra []Command) []Command {
	return append(builtin(), extra...)
}

// usageOf returns mptunnel's usage with the lines of the commands neither
// this package nor extra has left out.
func usageOf(extra []Command) string {
	known := make(map[string]bool)
	for _, c := range commands(extra) {
		known[c.Name] = true
	}
	var b strings.Builder
	for _, line := range strings.SplitAfter(topUsage, "\n") {
		if rest, ok := strings.CutPrefix(line, "  "); ok {
			if name, _, _ := strings.Cut(rest, " "); !known[name] {
				continue
			}
		}
		b.WriteString(line)
	}
	return b.String()
}

// NewFlagSet returns the flag set of a command named name (as the user
// types it, e.g. "mptunnel bench"): errors go to env.Stderr with the usage,
// the usage line "usage: NAME USAGE" before the flags; -h and --help print
// the usage to env.Stdout (Parse).
func NewFlagSet(name string, env Env, usage string) *flag.FlagSet {
	return newFlagSet(name, env, usage)
}

// Parse parses args into fs. With -h or --help it prints the usage to stdout
// and returns flag.ErrHelp, which exits 0: the caller returns it unchanged.
// Any other error exits with status 2.
func Parse(fs *flag.FlagSet, args []string) error { return parse(fs, args) }

// Usagef returns an error that exits with status 2, the status of bad usage.
func Usagef(format string, args ...any) error { return usagef(format, args...) }

// UsageError marks err as bad usage: it exits with status 2.
func UsageError(err error) error { return usageError{err} }

// IsTerminal reports whether w is a character device such as a terminal.
func IsTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
