package extra

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"time"

	"github.com/mptunnel/mptunnel/internal/aead"
	"github.com/mptunnel/mptunnel/internal/bench"
	"github.com/mptunnel/mptunnel/internal/cli"
	"github.com/mptunnel/mptunnel/internal/fec"
	"github.com/mptunnel/mptunnel/internal/sched"
)

// runBench measures the tunnel on loopback against a direct baseline.
func runBench(args []string, env cli.Env) error {
	fs := cli.NewFlagSet("mptunnel bench", env, "[flags]")
	paths := fs.Int("paths", 3, "bridges, each a path of the tunnel")
	size := fs.Int("size", 1200, "datagram size in bytes")
	dur := fs.Duration("duration", 3*time.Second, "length of each measurement step")
	measure := fs.String("measure", "all", "throughput, latency, all, delivery (a stream at --rate over all paths: loss and bandwidth), tcp (one TCP connection through a TCP forward, against a direct one) or memory (the memory scenario only)")
	modeName := fs.String("mode", "redundant", "the tunnel's mode: redundant, failover, balance, adaptive or fec")
	cipherName := fs.String("cipher", "auto", "the tunnel's cipher: auto, chacha20-poly1305 or aes-256-gcm")
	fecShape := fs.String("fec", "8/4", "fec mode: K data and M parity shards a group")
	fecDepth := fs.Int("fec-interleave", 1, "fec mode: groups open at once, 1 to 15")
	fecFlush := fs.Duration("fec-flush", 0, "fec mode: how long a group that does not fill waits for its parity (default 5ms)")
	bridgeRate := fs.Int64("bridge-rate", 0, "bridges: rate limit in bits per second (0: none)")
	bridgeRates := fs.String("bridge-rates", "", "bridges: each one's rate limit, comma-separated, one a path, e.g. 50M,50M,20M (k, M, G: powers of 1000)")
	rate := fs.Int("rate", 10000, "latency and delivery: datagrams per second")
	loss := fs.Float64("loss", 0, "bridges: loss probability each way, 0 to 1")
	delay := fs.Duration("delay", 0, "bridges: one-way delay")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	bothWays := fs.Bool("both-ways", false, "throughput: send echo requests and count the echoes, so every datagram crosses the tunnel both ways")
	noOffload := fs.Bool("no-offload", false, "generator and target send and receive without GSO and GRO")
	noRepair := fs.Bool("no-repair", false, "the tunnel's ends neither ask for nor resend what every path lost")
	noParity := fs.Bool("no-parity", false, "the tunnel's ends send no parity on top of copies")
	short := fs.Bool("short", false, "tiny steps, a few seconds in all (for CI)")
	steps := fs.Int("steps", 0, "throughput: search steps after the probe (default 7, 4 with --short)")
	sessions := fs.Int("sessions", 0, "memory scenario: clients, each a session (0 skips it)")
	flows := fs.Int("flows", 1, "memory scenario: flows per session")
	flowRate := fs.Int("flow-rate", 10, "memory scenario: datagrams per second per flow")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	samplesFile := fs.String("samples", "", "latency: write every round trip to this file, a line each: SETUP SENT_US RTT_US")
	traceFile := fs.String("trace", "", "write an execution trace of the whole run to this file (go tool trace)")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return cli.Usagef("bench takes no arguments")
	}
	mode, err := sched.ParseMode(*modeName)
	if err != nil {
		return cli.UsageError(err)
	}
	ciph, err := aead.Parse(*cipherName)
	if err != nil {
		return cli.UsageError(err)
	}
	shape, err := fec.ParseParams(*fecShape)
	if err != nil {
		return cli.UsageError(err)
	}
	cfg := bench.Config{
		Paths: *paths, Size: *size, Measure: bench.Measure(*measure), Mode: mode, Cipher: ciph, FEC: shape, FECDepth: *fecDepth, FECFlush: *fecFlush, BridgeRate: *bridgeRate, Rate: *rate,
		Loss: *loss, Delay: *delay, Short: *short, NoOffload: *noOffload, BothWays: *bothWays, MaxSteps: *steps,
		NoRepair: *noRepair, NoParity: *noParity,
		Sessions: *sessions, Flows: *flows, FlowRate: *flowRate,
		Progress: env.Stderr, ProgressTTY: cli.IsTerminal(env.Stderr),
	}
	if *bridgeRates != "" {
		for _, f := range strings.Split(*bridgeRates, ",") {
			r, err := parseRate(strings.TrimSpace(f))
			if err != nil {
				return cli.Usagef("bad --bridge-rates: %w", err)
			}
			cfg.BridgeRates = append(cfg.BridgeRates, r)
		}
	}
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !*short || set["duration"] {
		cfg.Duration = *dur
	}
	if *sessions > 0 {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: cannot find this program to run the server: %w", err)
		}
		cfg.ServerExe = exe
	}
	if err := bench.CheckConfig(cfg); err != nil {
		return cli.UsageError(err)
	}
	// Files the run writes to: each is created, started before the run
	// and stopped after it.
	outputs := []struct {
		name  string
		start func(io.Writer) error
		stop  func()
	}{
		{*cpuProfile, pprof.StartCPUProfile, pprof.StopCPUProfile},
		{*traceFile, trace.Start, trace.Stop},
		{*samplesFile, func(w io.Writer) error { cfg.Samples = w; return nil }, func() {}},
	}
	for _, out := range outputs {
		if out.name == "" {
			continue
		}
		f, err := os.Create(out.name)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer f.Close()
		if err := out.start(f); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer out.stop()
	}
	rep, err := bench.Run(env.Context, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.WriteTable(env.Stdout)
}

// parseRate reads a rate in bits per second: a number with an optional k, M
// or G (powers of 1000).
func parseRate(s string) (int64, error) {
	mult := 1.0
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1e3, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "M"):
		mult, s = 1e6, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mult, s = 1e9, strings.TrimSuffix(s, "G")
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || v*mult > 1e12 {
		return 0, fmt.Errorf("rate %q: want bits per second such as 50M", s)
	}
	return int64(v * mult), nil
}
