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

// builtin lists the commands this package runs itself.
var builtin = []string{"server", "client", "check", "status", "genkey", "version"}

// usageOf returns mptunnel's usage with the lines of the commands neither
// this package nor extra has left out.
func usageOf(extra []Command) string {
	known := make(map[string]bool)
	for _, name := range builtin {
		known[name] = true
	}
	for _, c := range extra {
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
// types it, e.g. "mptunnel bench"): errors and -h go to env.Stderr, with the
// usage line "usage: NAME USAGE" before the flags.
func NewFlagSet(name string, env Env, usage string) *flag.FlagSet {
	return newFlagSet(name, env, usage)
}

// Parse parses args into fs; an error other than -h exits with status 2.
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
