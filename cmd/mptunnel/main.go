// Command mptunnel is part of mptunnel, a multipath UDP tunnel; see README.md.
package main

import (
	"os"

	"github.com/mptunnel/mptunnel/internal/cli"
	"github.com/mptunnel/mptunnel/internal/cli/extra"
)

func main() {
	os.Exit(cli.Main("mptunnel", os.Args[1:], extra.Commands()...))
}
