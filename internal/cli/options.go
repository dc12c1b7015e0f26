package cli

import (
	"flag"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/conffile"
	"github.com/mptunnel/mptunnel/internal/fec"
	"github.com/mptunnel/mptunnel/internal/peer"
	"github.com/mptunnel/mptunnel/internal/sched"
	"github.com/mptunnel/mptunnel/internal/server"
	"github.com/mptunnel/mptunnel/internal/stream"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// binder binds a role's flags to the fields of its Config, and remembers for
// each the same field of the Config the TOML file makes (one function a
// role: serverFile, clientFile). After parsing, take gives each field the
// file's value unless its flag was given (the command line wins) or the file
// leaves it out (the flag's default stays).
type binder struct {
	fs    *flag.FlagSet
	takes []func(set map[string]bool)
}

// bindTo registers how the flag name's field dst takes file's value.
func bindTo[T comparable](b *binder, name string, dst, file *T) {
	b.takes = append(b.takes, func(set map[string]bool) {
		var zero T
		if !set[name] && *file != zero {
			*dst = *file
		}
	})
}

func (b *binder) Int(name string, dst, file *int, def int, usage string) {
	b.fs.IntVar(dst, name, def, usage)
	bindTo(b, name, dst, file)
}

func (b *binder) Uint64(name string, dst, file *uint64, def uint64, usage string) {
	b.fs.Uint64Var(dst, name, def, usage)
	bindTo(b, name, dst, file)
}

func (b *binder) Float64(name string, dst, file *float64, def float64, usage string) {
	b.fs.Float64Var(dst, name, def, usage)
	bindTo(b, name, dst, file)
}

func (b *binder) String(name string, dst, file *string, def string, usage string) {
	b.fs.StringVar(dst, name, def, usage)
	bindTo(b, name, dst, file)
}

func (b *binder) Bool(name string, dst, file *bool, def bool, usage string) {
	b.fs.BoolVar(dst, name, def, usage)
	bindTo(b, name, dst, file)
}

func (b *binder) Duration(name string, dst, file *time.Duration, def time.Duration, usage string) {
	b.fs.DurationVar(dst, name, def, usage)
	bindTo(b, name, dst, file)
}

// take applies the file's values to the fields whose flags set does not
// name.
func (b *binder) take(set map[string]bool) {
	for _, t := range b.takes {
		t(set)
	}
}

// serverFile is what a server's TOML file says of the server's Config.
func serverFile(f conffile.Server) server.Config {
	return server.Config{
		Listen:         f.Listen,
		Target:         f.Target,
		Allow:          f.Allow,
		MTU:            f.MTU,
		Window:         f.Window,
		MaxFlows:       f.MaxFlows,
		FlowTimeout:    f.FlowTimeout.D(),
		Reorder:        f.Reorder.D(),
		NoRepair:       f.NoRepair,
		NoParity:       f.NoParity,
		MaxSessions:    f.MaxSessions,
		SessionTimeout: f.SessionTimeout.D(),
		MaxStreams:     f.MaxStreams,
		DialTimeout:    f.DialTimeout.D(),
	}
}

// clientFile is what a client's TOML file says of the client's Config.
func clientFile(f conffile.Client) client.Config {
	cfg := client.Config{
		Listen:       f.Listen,
		Socks:        f.Socks.Listen,
		Paths:        filePaths(f.Paths),
		MTU:          f.MTU,
		Window:       f.Window,
		MaxFlows:     f.MaxFlows,
		FlowTimeout:  f.FlowTimeout.D(),
		Reorder:      f.Reorder.D(),
		NoRepair:     f.NoRepair,
		NoParity:     f.NoParity,
		FECDepth:     f.FEC.Interleave,
		FECFlush:     f.FEC.Flush.D(),
		TargetLoss:   f.TargetLoss,
		RekeyAfter:   f.Rekey.After.D(),
		RekeyPackets: f.Rekey.Packets,
	}
	for _, fw := range f.Forwards {
		cfg.Forwards = append(cfg.Forwards, client.Forward{Listen: fw.Listen, Target: fw.Target, TCP: fw.Protocol == "tcp"})
	}
	return cfg
}

// shared points at the fields both roles' Configs have.
type shared struct {
	mtu, window, maxFlows *int
	flowTimeout, reorder  *time.Duration
	noRepair, noParity    *bool
}

func serverShared(c *server.Config) shared {
	return shared{&c.MTU, &c.Window, &c.MaxFlows, &c.FlowTimeout, &c.Reorder, &c.NoRepair, &c.NoParity}
}

func clientShared(c *client.Config) shared {
	return shared{&c.MTU, &c.Window, &c.MaxFlows, &c.FlowTimeout, &c.Reorder, &c.NoRepair, &c.NoParity}
}

// bindShared binds the flags of the fields both roles' Configs have.
func (b *binder) bindShared(dst, file shared) {
	b.Int("mtu", dst.mtu, file.mtu, wire.DefaultMTU, "largest IP packet put on a path, in bytes")
	b.Int("window", dst.window, file.window, 0, "replay window in packets (default 8192, rounded up)")
	b.Int("max-flows", dst.maxFlows, file.maxFlows, peer.DefaultMaxFlows, "flows per session")
	b.Duration("flow-timeout", dst.flowTimeout, file.flowTimeout, peer.DefaultFlowTimeout, "free a flow idle this long (one that carried at most 2 datagrams each way: after 5s)")
	b.Duration("reorder", dst.reorder, file.reorder, 0, "hold datagrams from the peer that overtake earlier ones up to this long, to hand them on in order (0: off; useful with balance and fec over paths of different delays)")
	b.Bool("no-repair", dst.noRepair, file.noRepair, false, "neither ask the peer again for packets every path lost nor answer its requests")
	b.Bool("no-parity", dst.noParity, file.noParity, false, "send no parity on top of copies (redundant mode sends it while the copies still lose packets)")
}

// serverFlags binds the flags of the server's Config fields to cfg, taking
// file's when not given.
func (b *binder) serverFlags(cfg, file *server.Config) {
	b.bindShared(serverShared(cfg), serverShared(file))
	b.Int("max-sessions", &cfg.MaxSessions, &file.MaxSessions, server.DefaultMaxSessions, "concurrent sessions")
	b.Duration("session-timeout", &cfg.SessionTimeout, &file.SessionTimeout, peer.DefaultSessionTimeout, "free a session silent this long")
	b.Int("max-streams", &cfg.MaxStreams, &file.MaxStreams, stream.DefaultMaxStreams, "TCP streams (SOCKS CONNECT, tcp: forwards) a client may have open at once")
	b.Duration("dial-timeout", &cfg.DialTimeout, &file.DialTimeout, stream.DefaultDialTimeout, "how long a TCP stream's connection to its target may take before the client is told it timed out")
}

// clientFlags binds the flags of the client's Config fields to cfg, taking
// file's when not given.
func (b *binder) clientFlags(cfg, file *client.Config) {
	b.bindShared(clientShared(cfg), clientShared(file))
	b.String("listen", &cfg.Listen, &file.Listen, client.DefaultListen, "address local applications send to")
	b.Int("fec-interleave", &cfg.FECDepth, &file.FECDepth, 1, "fec mode: groups open at once, datagrams going to each in turn, 1 to 15, so that a burst of losses on one path is shared among them (both directions)")
	b.Duration("fec-flush", &cfg.FECFlush, &file.FECFlush, fec.DefaultFlushDelay, "fec mode: how long a group that does not fill waits before its parity goes (client to server)")
	b.Float64("target-loss", &cfg.TargetLoss, &file.TargetLoss, sched.DefaultTargetLoss, "adaptive mode: the combined loss to stay under, as a fraction (client to server)")
	b.String("socks", &cfg.Socks, &file.Socks, "", "serve a SOCKS5 front here (CONNECT and UDP ASSOCIATE; loopback when no host is given, such as :1080): each datagram goes to the destination it names, which the server must allow")
	b.Duration("rekey-after", &cfg.RekeyAfter, &file.RekeyAfter, client.DefaultRekeyAfter, "replace the session's keys this often, keeping its flows")
	b.Uint64("rekey-packets", &cfg.RekeyPackets, &file.RekeyPackets, client.DefaultRekeyPackets, "replace the session's keys once either end has sealed this many packets under them")
}
