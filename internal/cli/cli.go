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
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/mptunnel/mptunnel/internal/aead"
	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/conffile"
	"github.com/mptunnel/mptunnel/internal/config"
	"github.com/mptunnel/mptunnel/internal/control"
	"github.com/mptunnel/mptunnel/internal/fec"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/prom"
	"github.com/mptunnel/mptunnel/internal/sched"
	"github.com/mptunnel/mptunnel/internal/server"
	"github.com/mptunnel/mptunnel/internal/status"
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
	Stdin          io.Reader // nil: empty
	Getenv         func(string) string
	// Context ends the command as SIGINT or SIGTERM would.
	Context context.Context
}

// Main runs the program named prog (mptunnel, mpclient or mpserver) with args
// and returns the exit status. extra are mptunnel's commands beyond those of
// this package (package extra's demo, bench and bridge), so that mpclient and
// mpserver do not link them.
func Main(prog string, args []string, extra ...Command) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(prog, args, Env{Stdout: os.Stdout, Stderr: os.Stderr, Stdin: os.Stdin, Getenv: os.Getenv, Context: ctx}, extra...)
}

// Run is Main with its environment given.
func Run(prog string, args []string, env Env, extra ...Command) int {
	err := dispatch(prog, args, env, extra)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		// -h or --help: the usage is on stdout (parse), which is success.
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

// topUsage is mptunnel's usage with every command, package extra's among
// them; usageOf leaves out the lines of those a binary does not have.
const topUsage = `usage: mptunnel COMMAND [flags] [args]

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

func dispatch(prog string, args []string, env Env, extra []Command) error {
	switch prog {
	case "mpserver":
		return runServer(prog, args, env)
	case "mpclient":
		return runClient(prog, args, env)
	}
	usage := usageOf(extra)
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, usage)
		return usageError{errors.New("no command given")}
	}
	cmd, rest := args[0], args[1:]
	for _, c := range commands(extra) {
		if c.Name == cmd {
			return c.Run(rest, env)
		}
	}
	switch cmd {
	case "--version", "-version":
		return runVersion(rest, env)
	case "help", "-h", "--help":
		fmt.Fprint(env.Stdout, usage)
		return nil
	}
	fmt.Fprint(env.Stderr, usage)
	return usagef("unknown command %q", cmd)
}

// runVersion prints the version line.
func runVersion(args []string, env Env) error {
	fs := newFlagSet("mptunnel version", env, "")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return usagef("version takes no arguments")
	}
	fmt.Fprintln(env.Stdout, versionLine())
	return nil
}

// runGenkey prints a new key, or with -o writes it to a new file that only
// its owner can read (the daemons refuse a key file others can read).
func runGenkey(args []string, env Env) error {
	fs := newFlagSet("mptunnel genkey", env, "[-o FILE]\n       mptunnel genkey --pair -o FILE")
	var out string
	fs.StringVar(&out, "o", "", "write the key to this new file, mode 0600, instead of printing it (an existing file is not overwritten)")
	fs.StringVar(&out, "out", "", "same as -o")
	pair := fs.Bool("pair", false, "make a key pair: the private key goes to the -o FILE, the public key to stdout")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return usagef("genkey takes no arguments (write the key to a file with -o FILE)")
	}
	if *pair {
		return genPair(out, env)
	}
	k, err := handshake.GenerateKey()
	if err != nil {
		return err
	}
	if out == "" {
		fmt.Fprintln(env.Stdout, k.String())
		return nil
	}
	return writeNewSecret(out, k.String())
}

// common holds the flags both tunnel ends take.
type common struct {
	keyFile  string
	logLevel string
	name     string // --name: the instance's name; "" derives one
	control  string
	cipher   string
	io       udpio.Options
	logFmt   string
	metrics  string
	file     string // -c: the TOML file
	level    slog.LevelVar
	// keyOptional: no shared key is no error (identity handshakes, whose
	// pre-shared key is then none); keys gives the zero Key.
	keyOptional bool
	id          identity // the key pair options
}

// setFromFile sets *dst to the file's value v unless the flag was given on
// the command line or the file leaves the key out (the zero value): for the
// options that are not fields of a role's Config as they are (the key file,
// the log, the mode's name), which binder does for the others.
func setFromFile[T comparable](dst *T, flagSet bool, v T) {
	var zero T
	if !flagSet && v != zero {
		*dst = v
	}
}

// applyFile takes the common options the command line did not set from f.
func (c *common) applyFile(set map[string]bool, f conffile.Common) {
	setFromFile(&c.keyFile, set["key-file"], f.KeyFile)
	setFromFile(&c.logLevel, set["log-level"], f.Log.Level)
	setFromFile(&c.logFmt, set["log-format"], f.Log.Format)
	setFromFile(&c.name, set["name"], f.Name)
	setFromFile(&c.control, set["control"], f.Control)
	setFromFile(&c.cipher, set["cipher"], f.Cipher)
	setFromFile(&c.metrics, set["metrics"], f.Metrics)
	setFromFile(&c.io.NoGSO, set["no-gso"], f.IO.NoGSO)
	setFromFile(&c.io.NoGRO, set["no-gro"], f.IO.NoGRO)
	setFromFile(&c.io.NoBatch, set["no-batch"], f.IO.NoBatch)
	setFromFile(&c.io.SendBuffer, set["send-buffer"], f.IO.SendBuffer)
}

// visited returns the names of the flags given on the command line.
func visited(fs *flag.FlagSet) map[string]bool {
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.keyFile, "key-file", "", "file holding the shared key, readable by its owner only (default: $MPTUNNEL_KEY)")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFmt, "log-format", "text", "text or json")
	fs.StringVar(&c.metrics, "metrics", "", "serve Prometheus metrics on this address, e.g. 127.0.0.1:9150 (/metrics; default: none)")
	fs.StringVar(&c.file, "c", "", "read options from this TOML file (docs/CONFIG.md); flags given override it")
	fs.BoolVar(&c.io.NoGSO, "no-gso", false, "never send with UDP segmentation offload")
	fs.BoolVar(&c.io.NoGRO, "no-gro", false, "never receive with UDP generic receive offload")
	fs.BoolVar(&c.io.NoBatch, "no-batch", false, "one datagram per system call")
	fs.IntVar(&c.io.SendBuffer, "send-buffer", udpio.DefaultBuffer, "bytes a path socket may hold unsent; past it packets are dropped and counted (queue_full), never waited for")
	fs.StringVar(&c.cipher, "cipher", "auto", "transport cipher: auto (AES-256-GCM where both CPUs have AES instructions, else ChaCha20-Poly1305), chacha20-poly1305 or aes-256-gcm")
	fs.StringVar(&c.name, "name", "", "this daemon's name, unique among the user's daemons: its default status socket is NAME.sock (default: made of the listen address, such as client-127.0.0.1-3000 or server-2000)")
	fs.StringVar(&c.control, "control", "", "status socket that 'mptunnel status' reads, or \"none\" (default: NAME.sock under $XDG_RUNTIME_DIR, /run, ~/.mptunnel or the temp dir)")
}

// keys reads the key file (or MPTUNNEL_KEY): one key a line, the first the
// one this end uses, the others accepted by a server while clients move to
// the first (docs/SECURITY.md, key rotation). A key file that the group or
// others may access is refused (readSecret).
func (c *common) keys(env Env) ([]handshake.Key, error) {
	var text, from string
	switch {
	case c.keyFile != "":
		b, err := readSecret("key file", c.keyFile)
		if err != nil {
			return nil, err
		}
		text, from = string(b), c.keyFile
	case env.Getenv("MPTUNNEL_KEY") != "":
		text, from = env.Getenv("MPTUNNEL_KEY"), "MPTUNNEL_KEY"
	case c.keyOptional:
		return []handshake.Key{{}}, nil
	default:
		return nil, usagef("no key: make one with 'mptunnel genkey -o mptunnel.key', copy it to both ends (readable by its owner only), and pass --key-file mptunnel.key (or set MPTUNNEL_KEY)")
	}
	keys, err := handshake.ParseKeys(text)
	if err != nil {
		return nil, usagef("%s: %w", from, err)
	}
	return keys, nil
}

// setup loads the keys (the first is this end's, see keys), reads the
// cipher and builds the logger.
func (c *common) setup(env Env) ([]handshake.Key, aead.Cipher, *slog.Logger, error) {
	ciph, err := aead.Parse(c.cipher)
	if err != nil {
		return nil, ciph, nil, usagef("bad --cipher: %w", err)
	}
	if c.name != "" {
		if err := control.CheckName(c.name); err != nil {
			return nil, ciph, nil, usagef("bad --name: %w", err)
		}
	}
	if c.io.SendBuffer < 4096 || c.io.SendBuffer > 1<<30 {
		return nil, ciph, nil, usagef("bad --send-buffer %d: want 4096 to 1073741824 bytes", c.io.SendBuffer)
	}
	keys, err := c.keys(env)
	if err != nil {
		return nil, ciph, nil, err
	}
	log, err := c.logger(env)
	return keys, ciph, log, err
}

func (c *common) logger(env Env) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, usagef("bad --log-level %q: want debug, info, warn or error", c.logLevel)
	}
	c.level.Set(lv)
	opts := &slog.HandlerOptions{Level: &c.level}
	switch c.logFmt {
	case "text", "":
		return slog.New(slog.NewTextHandler(env.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(env.Stderr, opts)), nil
	}
	return nil, usagef("bad --log-format %q: want text or json", c.logFmt)
}

// helpFlag is -h and -help (--help): given, the command prints its usage to
// stdout and exits 0 instead of running (parse). Errors and the usage after
// bad usage go to stderr.
type helpFlag struct {
	given  bool
	stdout io.Writer
}

func (h *helpFlag) String() string {
	if h == nil {
		return "false"
	}
	return strconv.FormatBool(h.given)
}

func (h *helpFlag) Set(s string) error {
	v, err := strconv.ParseBool(s)
	h.given = v
	return err
}

func (h *helpFlag) IsBoolFlag() bool { return true }

func newFlagSet(name string, env Env, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s\n\nflags:\n", strings.TrimSpace(name+" "+usage))
		fs.PrintDefaults()
	}
	h := &helpFlag{stdout: env.Stdout}
	fs.Var(h, "h", "print this usage and exit")
	fs.Var(h, "help", "same as -h")
	return fs
}

// parse parses args into fs. With -h or --help it prints the usage to
// stdout and returns flag.ErrHelp, which exits 0; any other error is bad
// usage, already reported on stderr with the usage.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	f := fs.Lookup("h")
	if f == nil {
		return nil
	}
	if h, ok := f.Value.(*helpFlag); ok && h.given {
		out := fs.Output()
		fs.SetOutput(h.stdout)
		fs.Usage()
		fs.SetOutput(out)
		return flag.ErrHelp
	}
	return nil
}

func runServer(name string, args []string, env Env) error {
	fs := newFlagSet(name, env, "[flags] PORT TARGET_HOST TARGET_PORT\n       "+name+" -c FILE [flags] [PORT TARGET_HOST TARGET_PORT]")
	var c common
	c.register(fs)
	id := &c.id
	id.registerServer(fs)
	// The flags set cfg's fields; the TOML file's values are in fromFile.
	var cfg, fromFile server.Config
	b := binder{fs: fs}
	b.serverFlags(&cfg, &fromFile)
	var allowRules listFlag
	fs.Var(&allowRules, "allow", "a target clients may name besides the default one, HOST:PORTS (10.0.0.53:53, 10.0.0.0/8:1000-2000, dns.example:53, [2001:db8::/32]:*); repeat for more")
	if err := parse(fs, args); err != nil {
		return err
	}
	var listen, target string
	var file conffile.Server
	set := visited(fs)
	if c.file != "" {
		f, err := conffile.LoadServer(c.file)
		if err != nil {
			return usageError{err}
		}
		file = f
		c.applyFile(set, f.Common)
		id.applyServerFile(set, f)
		fromFile = serverFile(f)
		if !set["allow"] {
			allowRules = fromFile.Allow
		}
		listen, target = fromFile.Listen, fromFile.Target
	}
	b.take(set)
	switch {
	case fs.NArg() == 3:
		port, err := parsePort(fs.Arg(0))
		if err != nil {
			return err
		}
		tport, err := parsePort(fs.Arg(2))
		if err != nil {
			return err
		}
		listen = net.JoinHostPort("", strconv.Itoa(port))
		target = net.JoinHostPort(fs.Arg(1), strconv.Itoa(tport))
	case fs.NArg() == 0 && c.file != "":
		if listen == "" || (target == "" && len(allowRules) == 0) {
			return usagef("%s: the file needs listen, and target or allow (or give PORT TARGET_HOST TARGET_PORT)", c.file)
		}
	default:
		fs.Usage()
		return usagef("expected PORT TARGET_HOST TARGET_PORT, got %d arguments", fs.NArg())
	}
	priv, err := id.private()
	if err != nil {
		return err
	}
	if priv != nil {
		if cfg.Clients, err = id.serverClients(file, c.file); err != nil {
			return err
		}
		cfg.Private, cfg.AllowShared = priv, id.allowShared
		c.keyOptional = true
	} else if id.clientsDir != "" || len(file.Clients) > 0 {
		return usagef("a client list needs the server's --private-key-file")
	}
	keys, ciph, log, err := c.setup(env)
	if err != nil {
		return err
	}
	cfg.Listen, cfg.Target, cfg.Allow = listen, target, allowRules
	cfg.Key, cfg.OldKeys, cfg.Cipher = keys[0], keys[1:], ciph
	cfg.Net = udpio.OS{Options: withPktInfo(c.io)}
	cfg.Logger = log
	srv, err := server.Listen(cfg)
	if err != nil {
		return err
	}
	reload := func() {
		if err := c.reloadServer(srv, &file, set, env, log); err != nil {
			log.Error("reload refused; nothing changed", "err", err)
		}
	}
	return c.serve(env, "server", control.AddrName("server", srv.Addr()), srv.Serve, srv.Status, reload)
}

// reloadServer applies a changed key file (the keys new sessions are
// accepted under) and log level to a running server; any other change is
// refused whole.
func (c *common) reloadServer(srv *server.Server, file *conffile.Server, set map[string]bool, env Env, log *slog.Logger) error {
	next := *file
	if c.file != "" {
		f, err := conffile.LoadServer(c.file)
		if err != nil {
			return err
		}
		next = f
		var other []string
		for _, k := range conffile.Changed(*file, next) {
			if k != "log.level" && k != "client" {
				other = append(other, k)
			}
		}
		if len(other) > 0 {
			return fmt.Errorf("%s: %s cannot change while running; restart to apply", c.file, strings.Join(other, ", "))
		}
	}
	keys, err := c.keys(env)
	if err != nil {
		return err
	}
	lv, err := c.levelFor(next.Log.Level, set)
	if err != nil {
		return err
	}
	var clients []server.Client
	if c.id.privateKeyFile != "" {
		// The client list: the file's and the directory's, read again.
		if clients, err = c.id.serverClients(next, c.file); err != nil {
			return err
		}
		if err := srv.SetClients(clients); err != nil {
			return err
		}
	}
	if !keys[0].IsZero() {
		srv.SetKeys(keys)
	}
	c.level.Set(lv)
	*file = next
	log.Info("configuration reloaded", "keys", len(keys), "clients", clientNames(clients), "log_level", lv.String())
	return nil
}

// levelFor is the log level a reloaded file asks for, unless the command
// line set one.
func (c *common) levelFor(level string, set map[string]bool) (slog.Level, error) {
	if level == "" || set["log-level"] {
		level = c.logLevel
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return lv, fmt.Errorf("log level %q: %w", level, err)
	}
	return lv, nil
}

func runClient(name string, args []string, env Env) error {
	fs := newFlagSet(name, env, "[flags] CONFIG\n       "+name+" -c FILE [flags] [CONFIG]")
	var c common
	c.register(fs)
	id := &c.id
	id.registerClient(fs)
	// The flags set cfg's fields; the TOML file's values are in fromFile.
	var cfg, fromFile client.Config
	b := binder{fs: fs}
	b.clientFlags(&cfg, &fromFile)
	modeName := fs.String("mode", "redundant", "how datagrams use the paths: redundant, failover, balance, adaptive or fec")
	fecShape := fs.String("fec", "8/4", "fec mode: K data and M parity shards a group, 1 to 15 each (both directions)")
	socksAuth := fs.String("socks-auth-file", "", "file holding USER:PASSWORD that SOCKS5 clients must give (RFC 1929); readable by its owner only")
	var forwards listFlag
	fs.Var(&forwards, "L", "a port forward, [tcp:]LISTEN=TARGET (127.0.0.1:5353=10.0.0.53:53): datagrams sent to LISTEN go to TARGET on the server's side, which the server resolves and must allow; with tcp:, TCP connections accepted on LISTEN (a tcp: rule must allow TARGET); repeat for more")
	if err := parse(fs, args); err != nil {
		return err
	}
	var paths []client.PathConfig
	var file conffile.Client
	set := visited(fs)
	if c.file != "" {
		f, err := conffile.LoadClient(c.file)
		if err != nil {
			return usageError{err}
		}
		file = f
		c.applyFile(set, f.Common)
		id.applyClientFile(set, f)
		fromFile = clientFile(f)
		setFromFile(modeName, set["mode"], f.Mode)
		setFromFile(fecShape, set["fec"], f.FEC.Shape)
		setFromFile(socksAuth, set["socks-auth-file"], f.Socks.AuthFile)
		if !set["L"] {
			for _, fw := range fromFile.Forwards {
				s := fw.Listen + "=" + fw.Target
				if fw.TCP {
					s = "tcp:" + s
				}
				forwards = append(forwards, s)
			}
		}
		paths = fromFile.Paths
	}
	b.take(set)
	mode, err := sched.ParseMode(*modeName)
	if err != nil {
		return usageError{err}
	}
	shape, err := fec.ParseParams(*fecShape)
	if err != nil {
		return usageError{err}
	}
	if cfg.FECDepth < 1 || cfg.FECDepth > 15 {
		return usagef("bad --fec-interleave %d: want 1 to 15", cfg.FECDepth)
	}
	if cfg.RekeyAfter < 10*time.Second {
		return usagef("bad --rekey-after %v: want 10s or more", cfg.RekeyAfter)
	}
	if cfg.RekeyPackets < 1<<16 {
		return usagef("bad --rekey-packets %d: want 65536 or more", cfg.RekeyPackets)
	}
	if cfg.TargetLoss <= 0 || cfg.TargetLoss >= 1 {
		return usagef("bad --target-loss %v: want a fraction between 0 and 1, such as 0.001", cfg.TargetLoss)
	}
	switch {
	case fs.NArg() == 1:
		// The original HOST PORT file; it replaces the TOML file's paths.
		pl, err := config.LoadPaths(fs.Arg(0))
		if err != nil {
			return err
		}
		paths = paths[:0]
		for _, p := range pl {
			paths = append(paths, client.PathConfig{Remote: p.Address(), Dev: p.Dev, From: p.From})
		}
	case fs.NArg() == 0 && c.file != "":
		if len(paths) == 0 {
			return usagef("%s: no paths; add a [[path]] with remote = \"host:port\"", c.file)
		}
	default:
		fs.Usage()
		return usagef("expected one CONFIG file of HOST PORT lines, got %d arguments", fs.NArg())
	}
	var socksUser, socksPass string
	if *socksAuth != "" {
		b, err := readSecret("socks auth file", *socksAuth)
		if err != nil {
			return err
		}
		u, p, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
		if !ok || u == "" || p == "" || len(u) > 255 || len(p) > 255 {
			return usagef("%s: want one line USER:PASSWORD, each 1 to 255 bytes", *socksAuth)
		}
		socksUser, socksPass = u, p
	}
	var fwds []client.Forward
	for _, s := range forwards {
		rest, tcp := strings.CutPrefix(s, "tcp:")
		if !tcp {
			rest, _ = strings.CutPrefix(s, "udp:")
		}
		l, t, ok := strings.Cut(rest, "=")
		if !ok || l == "" || t == "" {
			return usagef("bad -L %q: want [tcp:]LISTEN=TARGET, such as 127.0.0.1:5353=10.0.0.53:53 or tcp:127.0.0.1:8080=intranet.lan:80", s)
		}
		fwds = append(fwds, client.Forward{Listen: l, Target: t, TCP: tcp})
	}
	if cfg.Private, cfg.ServerPublic, err = id.clientKeys(); err != nil {
		return err
	}
	c.keyOptional = cfg.Private != nil
	keys, ciph, log, err := c.setup(env)
	if err != nil {
		return err
	}
	cfg.Forwards, cfg.Paths = fwds, paths
	cfg.SocksUser, cfg.SocksPass = socksUser, socksPass
	cfg.Key, cfg.Cipher = keys[0], ciph
	cfg.Mode, cfg.FEC = mode, shape
	cfg.Net = udpio.OS{Options: c.io}
	cfg.Logger = log
	cl, err := client.Listen(cfg)
	if err != nil {
		return err
	}
	log.Info("client listening", "addr", cl.Addr().String(), "paths", len(cfg.Paths))
	hostPort := ""
	if fs.NArg() == 1 {
		hostPort = fs.Arg(0)
	}
	reload := func() {
		if err := c.reloadClient(cl, &file, hostPort, set, log); err != nil {
			log.Error("reload refused; nothing changed", "err", err)
		}
	}
	return c.serve(env, "client", clientName(cfg, cl), cl.Serve, cl.Status, reload)
}

// reloadClient applies a changed configuration to a running client: the
// paths (from the HOST PORT file when one was given, else from the TOML
// file) and the log level. Any other change is refused whole, as is a path
// list that does not open.
func (c *common) reloadClient(cl *client.Client, file *conffile.Client, hostPort string, set map[string]bool, log *slog.Logger) error {
	var next conffile.Client
	if c.file != "" {
		f, err := conffile.LoadClient(c.file)
		if err != nil {
			return err
		}
		next = f
		var other []string
		for _, k := range conffile.Changed(*file, next) {
			if k != "path" && k != "log.level" {
				other = append(other, k)
			}
		}
		if len(other) > 0 {
			return fmt.Errorf("%s: %s cannot change while running; restart to apply", c.file, strings.Join(other, ", "))
		}
	}
	paths := filePaths(next.Paths)
	if hostPort != "" {
		pl, err := config.LoadPaths(hostPort)
		if err != nil {
			return err
		}
		paths = nil
		for _, p := range pl {
			paths = append(paths, client.PathConfig{Remote: p.Address(), Dev: p.Dev, From: p.From})
		}
	}
	lv, err := c.levelFor(next.Log.Level, set)
	if err != nil {
		return err
	}
	if err := cl.SetPaths(paths); err != nil {
		return err
	}
	c.level.Set(lv)
	*file = next
	log.Info("configuration reloaded", "paths", len(paths), "log_level", lv.String())
	return nil
}

// filePaths turns a TOML file's paths into the client's.
func filePaths(ps []conffile.Path) []client.PathConfig {
	var out []client.PathConfig
	for _, p := range ps {
		out = append(out, client.PathConfig{Remote: p.Remote, Dev: p.Dev, From: p.From, Priority: p.Priority})
	}
	return out
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || p < 1 || p > 65535 {
		return 0, usagef("bad port %q: want a number from 1 to 65535", s)
	}
	return p, nil
}

// clientName is the name of a client given no --name: made of the address
// local applications send to, or with listen "none" of its SOCKS5 front's,
// or else of its first forward's (a client listens on one of these, or does
// not start).
func clientName(cfg client.Config, cl *client.Client) string {
	if cfg.Listen != "none" {
		return control.AddrName("client", cl.Addr())
	}
	if a := cl.SocksAddr(); a.IsValid() {
		return control.AddrName("client-socks", a)
	}
	prefix := "client-fwd"
	if len(cfg.Forwards) > 0 && cfg.Forwards[0].TCP {
		prefix = "client-fwd-tcp"
	}
	var first netip.AddrPort
	if fw := cl.ForwardAddrs(); len(fw) > 0 {
		first = fw[0]
	}
	return control.AddrName(prefix, first)
}

// serve runs a daemon with its status socket, its metrics endpoint when one
// is asked for, and, when reload is set, a reload on each SIGHUP. derived is
// the daemon's name unless --name gives one: it names the default status
// socket and is in every status snapshot.
func (c *common) serve(env Env, role, derived string, serve func(context.Context) error, snap func(string, time.Time) status.Status, reload func()) error {
	started := time.Now()
	name := derived
	if c.name != "" {
		name = c.name
	}
	snapshot := func() status.Status {
		st := snap(Version, started)
		st.Name = name
		return st
	}
	ctx, cancel := context.WithCancel(env.Context)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // before wg.Wait: every helper below stops on ctx
	helperErr := make(chan error, 2)

	if c.control != "none" {
		path := c.control
		if path == "" {
			path = control.DefaultPath(name, env.Getenv, os.Getuid())
		}
		ctl, err := control.Listen(path)
		if err != nil {
			return fmt.Errorf("%s %s: status socket: %w (give each daemon its own --name or --control PATH, or --control none)", role, name, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ctl.Serve(ctx, snapshot); err != nil {
				helperErr <- fmt.Errorf("status socket: %w", err)
			}
		}()
	}
	if c.metrics != "" {
		ln, err := net.Listen("tcp", c.metrics)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := prom.Serve(ctx, ln, snapshot); err != nil {
				helperErr <- err
			}
		}()
	}
	if reload != nil {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer signal.Stop(hup)
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					reload()
				}
			}
		}()
	}
	// Under systemd (Type=notify) the daemon is ready now: its sockets are
	// bound. Without NOTIFY_SOCKET this does nothing.
	_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
	err := serve(ctx)
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	cancel()
	wg.Wait()
	if err == nil {
		select {
		case err = <-helperErr:
		default:
		}
	}
	return err
}

// withPktInfo turns on local-address reporting, which a server listening on
// every address needs to answer from the right one.
func withPktInfo(o udpio.Options) udpio.Options {
	o.PktInfo = true
	return o
}

// runCheck reads a TOML file as a client's or a server's and reports the
// first problem, without starting anything.
func runCheck(args []string, env Env) error {
	fs := newFlagSet("mptunnel check", env, "-c FILE [--role client|server]")
	file := fs.String("c", "", "the TOML file to check")
	role := fs.String("role", "", "client or server (default: server when the file has a target, else client)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *file == "" || fs.NArg() != 0 {
		fs.Usage()
		return usagef("check takes -c FILE and no arguments")
	}
	if *role == "" {
		r, err := conffile.Role(*file)
		if err != nil {
			return usageError{err}
		}
		*role = r
	}
	switch *role {
	case "client":
		c, err := conffile.LoadClient(*file)
		if err != nil {
			return usageError{err}
		}
		fmt.Fprintf(env.Stdout, "%s: a valid client configuration with %d paths\n", *file, len(c.Paths))
	case "server":
		s, err := conffile.LoadServer(*file)
		if err != nil {
			return usageError{err}
		}
		clients, err := s.AllClients(*file)
		if err != nil {
			return usageError{err}
		}
		if len(clients) > 0 {
			fmt.Fprintf(env.Stdout, "%s: a valid server configuration with %d clients\n", *file, len(clients))
			break
		}
		fmt.Fprintf(env.Stdout, "%s: a valid server configuration\n", *file)
	default:
		return usagef("bad --role %q: want client or server", *role)
	}
	return nil
}

// versionLine is "mptunnel VERSION (commit REV[, modified], GOVERSION)", with
// what the build recorded.
func versionLine() string {
	v, rev, modified, gover := Version, "", false, ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		gover = bi.GoVersion
		if v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, st := range bi.Settings {
			switch st.Key {
			case "vcs.revision":
				rev = st.Value
			case "vcs.modified":
				modified = st.Value == "true"
			}
		}
	}
	var extra []string
	if rev != "" {
		c := "commit " + rev[:min(len(rev), 12)]
		if modified {
			c += ", modified"
		}
		extra = append(extra, c)
	}
	if gover != "" {
		extra = append(extra, gover)
	}
	if len(extra) == 0 {
		return "mptunnel " + v
	}
	return "mptunnel " + v + " (" + strings.Join(extra, ", ") + ")"
}

// listFlag is a flag that may be given several times.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}
