// Package extra holds the mptunnel commands that are not a tunnel end: demo,
// bench and bridge. Only cmd/mptunnel links them, through Commands, so
// mpclient and mpserver carry neither the demonstration and measurement code
// nor the userspace relay (internal/demo, internal/bench, internal/impair).
package extra

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/mptunnel/mptunnel/internal/cli"
	"github.com/mptunnel/mptunnel/internal/demo"
	"github.com/mptunnel/mptunnel/internal/impair"
)

// Commands returns the commands for cli.Main.
func Commands() []cli.Command {
	return []cli.Command{
		{Name: "demo", Run: runDemo},
		{Name: "bridge", Run: runBridge},
		{Name: "bench", Run: runBench},
	}
}

// runDemo runs the built-in demonstration and prints its report.
func runDemo(args []string, env cli.Env) error {
	fs := cli.NewFlagSet("mptunnel demo", env, "[flags]")
	dur := fs.Duration("duration", 10*time.Second, "how long the streams run")
	rate := fs.Int("rate", 200, "echo requests a second on each stream")
	loss := fs.Float64("loss", 0.1, "each path's random loss each way, 0 to 1")
	htmlFile := fs.String("html", "", "also write the report as a self-contained HTML page with charts")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() != 0:
		fs.Usage()
		return cli.Usagef("demo takes no arguments")
	case *dur < time.Second || *dur > time.Hour:
		return cli.Usagef("bad --duration %v: want 1s to 1h", *dur)
	case *rate < 1 || *rate > 10000:
		return cli.Usagef("bad --rate %d: want 1 to 10000", *rate)
	case *loss <= 0 || *loss >= 1:
		return cli.Usagef("bad --loss %v: want a fraction between 0 and 1", *loss)
	}
	rep, err := demo.Run(env.Context, demo.Config{Duration: *dur, Rate: *rate, Loss: *loss, Progress: env.Stderr})
	if err != nil {
		return err
	}
	if *htmlFile != "" {
		f, err := os.Create(*htmlFile)
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		err = rep.WriteHTML(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.WriteText(env.Stdout)
}

// runBridge relays UDP from --listen to --to, one upstream socket per peer.
func runBridge(args []string, env cli.Env) error {
	fs := cli.NewFlagSet("mptunnel bridge", env, "--listen ADDR --to HOST:PORT")
	listen := fs.String("listen", "", "address to relay from, e.g. :4000")
	to := fs.String("to", "", "address to relay to, e.g. server.example:2000")
	idle := fs.Duration("idle-timeout", 2*time.Minute, "forget a peer idle this long")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *listen == "" || *to == "" || fs.NArg() != 0 {
		fs.Usage()
		return cli.Usagef("bridge needs --listen ADDR and --to HOST:PORT")
	}
	r, err := impair.New(impair.Options{Listen: *listen, To: *to, IdleTimeout: *idle})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "bridge relaying %s -> %s\n", r.Addr(), *to)
	<-env.Context.Done()
	return r.Close()
}
