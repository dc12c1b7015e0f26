// Command mpserver is part of mptunnel, a multipath UDP tunnel; see README.md.
package main

import (
	"os"

	"github.com/mptunnel/mptunnel/internal/cli"
)

func main() {
	os.Exit(cli.Main("mpserver", os.Args[1:]))
}
