// Package cli is the command line of mptunnel, mpclient and mpserver: it
// parses arguments, builds the role, runs it until SIGINT or SIGTERM, and turns
// failures into one sentence on stderr and the exit status DESIGN promises:
// 0 on clean shutdown, 2 on bad usage or configuration, 1 on runtime failure.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mptunnel/mptunnel/internal/aead"
	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/config"
	"github.com/mptunnel/mptunnel/internal/control"
	"github.com/mptunnel/mptunnel/internal/fec"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/sched"
	"github.com/mptunnel/mptunnel/internal/server"
	"github.com/mptunnel/mptunnel/internal/udpio"
)

// Version is the program version, set at build time with -ldflags.
var Version = "dev"

// Exit statuses.
const (
	ExitOK      = 0
	ExitRuntime = 1
	ExitUsage   = 2
)

// usageError marks errors that exit with status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// Env is what a command sees of the world; tests replace it.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// Context ends the command as SIGINT or SIGTERM would.
	Context context.Context
}

// Main runs the program named prog (mptunnel, mpclient or mpserver) with args
// and returns the exit status.
func Main(prog string, args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(prog, args, Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Context: ctx})
}

// Run is Main with its environment given.
func Run(prog string, args []string, env Env) int {
	err := dispatch(prog, args, env)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		if errors.Is(err, flag.ErrHelp) {
			return ExitUsage
		}
		return ExitOK
	}
	fmt.Fprintf(env.Stderr, "%s: %v\n", prog, err)
	var ue usageError
	if errors.As(err, &ue) {
		return ExitUsage
	}
	var ce *config.Error
	if errors.As(err, &ce) {
		return ExitUsage
	}
	return ExitRuntime
}

const topUsage = `usage: mptunnel COMMAND [flags] [args]

commands:
  server   [flags] PORT TARGET_HOST TARGET_PORT   run the server end (same as mpserver)
  client   [flags] CONFIG                          run the client end (same as mpclient)
  bridge   --listen ADDR --to HOST:PORT            relay UDP, one upstream socket per peer
  status   [--json] [--control PATH]               show sessions and paths of a running client or server
  bench    [--paths N] [--json] [--short] ...      measure throughput, latency and memory on loopback
  genkey                                           print a new shared key
  version                                          print the version

Run 'mptunnel COMMAND -h' for a command's flags.
`

func dispatch(prog string, args []string, env Env) error {
	switch prog {
	case "mpserver":
		return runServer(prog, args, env)
	case "mpclient":
		return runClient(prog, args, env)
	}
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, topUsage)
		return usageError{errors.New("no command given")}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "server":
		return runServer("mptunnel server", rest, env)
	case "client":
		return runClient("mptunnel client", rest, env)
	case "bridge":
		return runBridge(rest, env)
	case "status":
		return runStatus(rest, env)
	case "bench":
		return runBench(rest, env)
	case "genkey":
		if len(rest) != 0 {
			return usagef("genkey takes no arguments")
		}
		k, err := handshake.GenerateKey()
		if err != nil {
			return err
		}
		fmt.Fprintln(env.Stdout, k.String())
		return nil
	case "version", "--version", "-version":
		fmt.Fprintln(env.Stdout, "mptunnel", Version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(env.Stdout, topUsage)
		return nil
	}
	fmt.Fprint(env.Stderr, topUsage)
	return usagef("unknown command %q", cmd)
}

// common holds the flags both tunnel ends take.
type common struct {
	keyFile  string
	mtu      int
	window   int
	maxFlows int
	flowTO   time.Duration
	logLevel string
	control  string
	cipher   string
	reorder  time.Duration
	io       udpio.Options
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.keyFile, "key-file", "", "file holding the shared key (default: $MPTUNNEL_KEY)")
	fs.IntVar(&c.mtu, "mtu", 1400, "largest IP packet put on a path, in bytes")
	fs.IntVar(&c.window, "window", 0, "replay window in packets (default 8192, rounded up)")
	fs.IntVar(&c.maxFlows, "max-flows", 256, "flows per session")
	fs.DurationVar(&c.flowTO, "flow-timeout", 60*time.Second, "free a flow idle this long")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&c.io.NoGSO, "no-gso", false, "never send with UDP segmentation offload")
	fs.BoolVar(&c.io.NoGRO, "no-gro", false, "never receive with UDP generic receive offload")
	fs.BoolVar(&c.io.NoBatch, "no-batch", false, "one datagram per system call")
	fs.StringVar(&c.cipher, "cipher", "auto", "transport cipher: auto (AES-256-GCM where both CPUs have AES instructions, else ChaCha20-Poly1305), chacha20-poly1305 or aes-256-gcm")
	fs.DurationVar(&c.reorder, "reorder", 0, "hold datagrams from the peer that overtake earlier ones up to this long, to hand them on in order (0: off; useful with balance and fec over paths of different delays)")
	fs.StringVar(&c.control, "control", "", "status socket that 'mptunnel status' reads, or \"none\" (default under $XDG_RUNTIME_DIR, /run or the temp dir)")
}

func (c *common) key(env Env) (handshake.Key, error) {
	var text, from string
	switch {
	case c.keyFile != "":
		b, err := os.ReadFile(c.keyFile)
		if err != nil {
			return handshake.Key{}, usagef("cannot read key file: %w", err)
		}
		text, from = string(b), c.keyFile
	case env.Getenv("MPTUNNEL_KEY") != "":
		text, from = env.Getenv("MPTUNNEL_KEY"), "MPTUNNEL_KEY"
	default:
		return handshake.Key{}, usagef("no key: make one with 'mptunnel genkey > mptunnel.key', copy it to both ends, and pass --key-file mptunnel.key (or set MPTUNNEL_KEY)")
	}
	k, err := handshake.ParseKey(text)
	if err != nil {
		return k, usagef("%s: %w", from, err)
	}
	return k, nil
}

// setup loads the key, reads the cipher and builds the logger.
func (c *common) setup(env Env) (handshake.Key, aead.Cipher, *slog.Logger, error) {
	ciph, err := aead.Parse(c.cipher)
	if err != nil {
		return handshake.Key{}, ciph, nil, usagef("bad --cipher: %w", err)
	}
	key, err := c.key(env)
	if err != nil {
		return key, ciph, nil, err
	}
	log, err := c.logger(env)
	return key, ciph, log, err
}

func (c *common) logger(env Env) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, usagef("bad --log-level %q: want debug, info, warn or error", c.logLevel)
	}
	return slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: lv})), nil
}

func newFlagSet(name string, env Env, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "usage: %s %s\n\nflags:\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	return nil
}

func runServer(name string, args []string, env Env) error {
	fs := newFlagSet(name, env, "[flags] PORT TARGET_HOST TARGET_PORT")
	var c common
	c.register(fs)
	maxSessions := fs.Int("max-sessions", 1024, "concurrent sessions")
	sessTO := fs.Duration("session-timeout", 60*time.Second, "free a session silent this long")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 3 {
		fs.Usage()
		return usagef("expected PORT TARGET_HOST TARGET_PORT, got %d arguments", fs.NArg())
	}
	port, err := parsePort(fs.Arg(0))
	if err != nil {
		return err
	}
	tport, err := parsePort(fs.Arg(2))
	if err != nil {
		return err
	}
	key, ciph, log, err := c.setup(env)
	if err != nil {
		return err
	}
	srv, err := server.Listen(server.Config{
		Listen:         net.JoinHostPort("", strconv.Itoa(port)),
		Target:         net.JoinHostPort(fs.Arg(1), strconv.Itoa(tport)),
		Key:            key,
		Cipher:         ciph,
		Reorder:        c.reorder,
		MTU:            c.mtu,
		Window:         c.window,
		MaxSessions:    *maxSessions,
		MaxFlows:       c.maxFlows,
		SessionTimeout: *sessTO,
		Net:            udpio.OS{Options: withPktInfo(c.io)},
		FlowTimeout:    c.flowTO,
		Logger:         log,
	})
	if err != nil {
		return err
	}
	return serveWithControl(env, c.control, "server", srv.Serve, srv.Status)
}

func runClient(name string, args []string, env Env) error {
	fs := newFlagSet(name, env, "[flags] CONFIG")
	var c common
	c.register(fs)
	listen := fs.String("listen", "127.0.0.1:3000", "address local applications send to")
	modeName := fs.String("mode", "redundant", "how datagrams use the paths: redundant, failover, balance, adaptive or fec")
	fecShape := fs.String("fec", "8/4", "fec mode: K data and M parity shards a group, 1 to 15 each (both directions)")
	fecDepth := fs.Int("fec-interleave", 1, "fec mode: groups open at once, datagrams going to each in turn, 1 to 15, so that a burst of losses on one path is shared among them (both directions)")
	fecFlush := fs.Duration("fec-flush", 5*time.Millisecond, "fec mode: how long a group that does not fill waits before its parity goes (client to server)")
	targetLoss := fs.Float64("target-loss", 0.001, "adaptive mode: the combined loss to stay under, as a fraction (client to server)")
	if err := parse(fs, args); err != nil {
		return err
	}
	mode, err := sched.ParseMode(*modeName)
	if err != nil {
		return usageError{err}
	}
	shape, err := fec.ParseParams(*fecShape)
	if err != nil {
		return usageError{err}
	}
	if *fecDepth < 1 || *fecDepth > 15 {
		return usagef("bad --fec-interleave %d: want 1 to 15", *fecDepth)
	}
	if *targetLoss <= 0 || *targetLoss >= 1 {
		return usagef("bad --target-loss %v: want a fraction between 0 and 1, such as 0.001", *targetLoss)
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usagef("expected one CONFIG file of HOST PORT lines, got %d arguments", fs.NArg())
	}
	paths, err := config.LoadPaths(fs.Arg(0))
	if err != nil {
		return err
	}
	key, ciph, log, err := c.setup(env)
	if err != nil {
		return err
	}
	cfg := client.Config{
		Listen:      *listen,
		Key:         key,
		Cipher:      ciph,
		FEC:         shape,
		FECDepth:    *fecDepth,
		FECFlush:    *fecFlush,
		TargetLoss:  *targetLoss,
		Reorder:     c.reorder,
		MTU:         c.mtu,
		Window:      c.window,
		MaxFlows:    c.maxFlows,
		FlowTimeout: c.flowTO,
		Mode:        mode,
		Net:         udpio.OS{Options: c.io},
		Logger:      log,
	}
	for _, p := range paths {
		cfg.Paths = append(cfg.Paths, client.PathConfig{Remote: p.Address(), Dev: p.Dev, From: p.From})
	}
	cl, err := client.Listen(cfg)
	if err != nil {
		return err
	}
	log.Info("client listening", "addr", cl.Addr().String(), "paths", len(cfg.Paths))
	return serveWithControl(env, c.control, "client", cl.Serve, cl.Status)
}

func runBridge(args []string, env Env) error {
	fs := newFlagSet("mptunnel bridge", env, "--listen ADDR --to HOST:PORT")
	listen := fs.String("listen", "", "address to relay from, e.g. :4000")
	to := fs.String("to", "", "address to relay to, e.g. server.example:2000")
	idle := fs.Duration("idle-timeout", 2*time.Minute, "forget a peer idle this long")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *listen == "" || *to == "" || fs.NArg() != 0 {
		fs.Usage()
		return usagef("bridge needs --listen ADDR and --to HOST:PORT")
	}
	r, err := impair.New(impair.Options{Listen: *listen, To: *to, IdleTimeout: *idle})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "bridge relaying %s -> %s\n", r.Addr(), *to)
	<-env.Context.Done()
	return r.Close()
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || p < 1 || p > 65535 {
		return 0, usagef("bad port %q: want a number from 1 to 65535", s)
	}
	return p, nil
}

// serveWithControl runs a role until the context ends, serving its status on
// the control socket (unless path is "none") for as long as it runs.
func serveWithControl(env Env, path, role string, serve func(context.Context) error, status func(string, time.Time) control.Status) error {
	if path == "none" {
		return serve(env.Context)
	}
	if path == "" {
		path = control.DefaultPath(role, env.Getenv, os.Getuid())
	}
	ctl, err := control.Listen(path)
	if err != nil {
		return fmt.Errorf("status socket: %w (give each daemon its own --control PATH, or --control none)", err)
	}
	started := time.Now()
	ctx, cancel := context.WithCancel(env.Context)
	defer cancel()
	ctlDone := make(chan error, 1)
	go func() {
		ctlDone <- ctl.Serve(ctx, func() control.Status { return status(Version, started) })
	}()
	err = serve(ctx)
	cancel()
	if cerr := <-ctlDone; err == nil && cerr != nil {
		err = fmt.Errorf("status socket: %w", cerr)
	}
	return err
}

func runStatus(args []string, env Env) error {
	fs := newFlagSet("mptunnel status", env, "[--json] [--control PATH]")
	asJSON := fs.Bool("json", false, "print JSON (the stable format of docs/STATUS.md)")
	path := fs.String("control", "", "status socket to read (default: the client's, then the server's)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return usagef("status takes no arguments")
	}
	candidates := []string{*path}
	if *path == "" {
		candidates = []string{
			control.DefaultPath("client", env.Getenv, os.Getuid()),
			control.DefaultPath("server", env.Getenv, os.Getuid()),
		}
	}
	var st control.Status
	var err error
	for _, p := range candidates {
		if st, err = control.Fetch(env.Context, p); err == nil {
			break
		}
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return control.WriteJSON(env.Stdout, st)
	}
	return control.WriteTable(env.Stdout, st, time.Now())
}

// withPktInfo turns on local-address reporting, which a server listening on
// every address needs to answer from the right one.
func withPktInfo(o udpio.Options) udpio.Options {
	o.PktInfo = true
	return o
}
