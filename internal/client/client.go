// Package client is the mpclient role: it takes datagrams from local
// applications, one flow per local peer address, and sends each, sealed once,
// over every path to the server; replies from any path are deduplicated and
// returned to the peer that sent the request.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mptunnel/mptunnel/internal/aead"
	"github.com/mptunnel/mptunnel/internal/cookie"
	"github.com/mptunnel/mptunnel/internal/fec"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/metrics"
	pathpkg "github.com/mptunnel/mptunnel/internal/path"
	"github.com/mptunnel/mptunnel/internal/peer"
	"github.com/mptunnel/mptunnel/internal/ratelog"
	"github.com/mptunnel/mptunnel/internal/reorder"
	"github.com/mptunnel/mptunnel/internal/reset"
	"github.com/mptunnel/mptunnel/internal/sched"
	"github.com/mptunnel/mptunnel/internal/session"
	"github.com/mptunnel/mptunnel/internal/socks"
	"github.com/mptunnel/mptunnel/internal/stream"
	"github.com/mptunnel/mptunnel/internal/udpio"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// PathConfig is one way to the server.
type PathConfig struct {
	Remote string // host:port of a bridge or of the server itself
	Dev    string // optional local interface
	From   string // optional local source address
	// Priority orders paths in failover mode: lower first; ties keep the
	// order of the list.
	Priority int
}

// Forward is a port forward: datagrams sent to Listen go to Target, which
// the server resolves and must allow; with TCP, connections accepted on
// Listen become streams to Target (a tcp: rule must allow it).
type Forward struct {
	Listen string // local address, such as 127.0.0.1:5353
	Target string // host:port on the server's side, such as 10.0.0.53:53
	TCP    bool
}

// Config configures a Client. Zero fields take the defaults given.
type Config struct {
	// Listen is the address local applications send to for the server's
	// default target (127.0.0.1:3000); "none" for no such address.
	Listen   string
	Forwards []Forward
	// Socks, when set, is where a SOCKS5 front listens (TCP; loopback when
	// no host is given): each UDP association's datagrams are flows to the
	// destinations their headers name, which the server must allow.
	// SocksUser and SocksPass, when set, are required of its clients
	// (RFC 1929).
	Socks                string
	SocksUser, SocksPass string
	Paths                []PathConfig
	Key                  handshake.Key
	// Private and ServerPublic, when set (both), make the handshake an
	// identity one: the client proves it holds Private, and takes a
	// session only from the holder of the private key of ServerPublic.
	// Key is then the pre-shared key, or the zero Key for none.
	Private      *handshake.PrivateKey
	ServerPublic *handshake.PublicKey
	Mode         sched.Mode  // how datagrams are spread over the paths (redundant)
	Cipher       aead.Cipher // the transport cipher to insist on, or aead.Auto
	FEC          fec.Params  // fec mode: the group shape for both directions (zero: fec.DefaultParams)
	// FECDepth is how many fec groups are open at once, datagrams going to
	// each in turn, in both directions (1 to 15; 0 or 1: one).
	FECDepth int
	// FECFlush is how long a group that does not fill waits before its
	// parity is sent, in the client's direction (fec.DefaultFlushDelay).
	FECFlush time.Duration
	// TargetLoss is adaptive mode's target for the client's direction
	// (0.001); the server's direction uses the default.
	TargetLoss float64
	// NoRepair turns repair off: the client neither asks the server for
	// what every path lost nor answers the server's requests.
	NoRepair bool
	// NoParity turns off parity on top of copies (redundant mode, with
	// repair on): the client sends none; it still uses the server's.
	NoParity bool
	// Reorder, when positive, holds datagrams from the server that arrive
	// ahead of earlier ones for up to this long, to hand them on in order.
	Reorder time.Duration

	MTU            int           // largest IP packet put on a path (1400)
	Window         int           // replay window in packets (replay.DefaultSize)
	MaxFlows       int           // local peers at once (256); at the limit the least recently used idle one makes room
	FlowTimeout    time.Duration // an idle local peer is forgotten after this (60s; peer.ShortFlowTimeout for a short flow)
	ProbeInterval  time.Duration // a probe on every path this often (250ms)
	DeadAfter      time.Duration // no authentic packet for this long: handshake again (1.5s)
	HandshakeRetry time.Duration // a new handshake when none answered (1s)
	ResolveEvery   time.Duration // how often a down path's host name is looked up again (5s)
	// RekeyAfter and RekeyPackets bound a session's keys: after this long,
	// or once either end has sealed this many packets under them, the
	// session is replaced by a new handshake made inside it, which keeps
	// the flows (2m, 2^32).
	RekeyAfter   time.Duration
	RekeyPackets uint64
	Resolver     *net.Resolver // for host names (net.DefaultResolver)
	Net          udpio.Network // where sockets come from (the operating system's network)
	Logger       *slog.Logger
}

func (c *Config) setDefaults() {
	peer.Default(&c.Listen, DefaultListen)
	peer.Default(&c.MTU, wire.DefaultMTU)
	peer.Or(&c.MaxFlows, peer.DefaultMaxFlows)
	peer.Or(&c.FlowTimeout, peer.DefaultFlowTimeout)
	peer.Or(&c.ProbeInterval, peer.DefaultProbeInterval)
	peer.Or(&c.DeadAfter, 1500*time.Millisecond)
	peer.Or(&c.HandshakeRetry, time.Second)
	peer.Or(&c.ResolveEvery, 5*time.Second)
	peer.Or(&c.RekeyAfter, DefaultRekeyAfter)
	peer.Or(&c.RekeyPackets, DefaultRekeyPackets)
	peer.Default(&c.Resolver, net.DefaultResolver)
	peer.Default[udpio.Network](&c.Net, udpio.OS{})
	peer.Default(&c.Logger, slog.Default())
}

// Defaults for Config.Listen (the port the original tool's README gives),
// Config.RekeyAfter and Config.RekeyPackets.
const (
	DefaultListen       = "127.0.0.1:3000"
	DefaultRekeyAfter   = 2 * time.Minute
	DefaultRekeyPackets = 1 << 32
)

// prevGrace is how long a session replaced by a new one still takes the
// packets the server sent under it before it switched.
const prevGrace = 10 * time.Second

// Client is a running mpclient. Create one with Listen, run it with Serve.
type Client struct {
	cfg    Config
	log    *slog.Logger
	warn   ratelog.Logger
	fronts []*front    // the default front first, if any, then the forwards
	socks  *socksFront // the SOCKS5 front, if any
	// paths is the path list, replaced whole by SetPaths; readers take a
	// snapshot with pathList.
	paths    atomic.Pointer[pathSet]
	reloadMu sync.Mutex // serialises SetPaths, and SetPaths with shutdown
	v6       atomic.Bool
	cnt      metrics.Counters
	w        peer.Writer // counts into cnt, warns through warn
	started  bool        // Serve has started the path readers; reloadMu guards it

	sess   atomic.Pointer[session.State]
	sessAt atomic.Int64 // unix ns when sess came up
	// prev is the session sess replaced, which still takes what the server
	// sent under it until prevUntil (unix ns).
	prev      atomic.Pointer[session.State]
	prevUntil atomic.Int64
	lastAuth  atomic.Int64  // unix ns of the last authentic packet from the server
	up        chan struct{} // closed when the first session is up
	once      sync.Once

	hsMu    sync.Mutex
	pending map[uint32]*pendingHS
	jar     *cookie.Jar
	hsAt    atomic.Int64 // unix ns of the latest initiation of a new session (not a rekey)

	// resetKey checks stateless resets; resetFor is the session a reset
	// said the server no longer holds: from then on it counts as silent and
	// datagrams wait for its replacement, as for the first session.
	resetKey *reset.Key
	// token is the reset token an identity handshake's response gave for
	// the session it made (identity handshakes only).
	token    atomic.Pointer[sessToken]
	resetFor atomic.Pointer[session.State]

	spread *peer.Spreader // the mode, putting packets on the paths

	streams      streams // TCP connections carried as QUIC streams
	tcpForwards  []*tcpForward
	forwardAddrs []netip.AddrPort // of Config.Forwards, in order

	// rxMu makes the paths' readers take turns with a batch, from opening
	// its packets to handing its datagrams on: each path keeps order, so
	// the first copies, handed on in turn, do too.
	rxMu sync.Mutex

	earlyMu sync.Mutex
	early   []earlyDatagram // datagrams that arrived before the first session

	flowMu  sync.RWMutex
	byPeer  map[flowKey]*flow
	byID    map[uint32]*flow
	nextID  uint32
	closing atomic.Bool

	wg sync.WaitGroup
}

type pendingHS struct {
	in   *handshake.Initiation
	pkt  []byte // the initiation packet, which a cookie reply is bound to
	sent time.Time
	// signed is whether pkt carried a cookie MAC; answered is whether a
	// cookie reply to it has been taken.
	signed, answered bool
	// rekey is whether the initiation went inside the session it replaces.
	rekey bool
}

// pathSet is the path list: each path, named by its configured remote and
// written on a socket of its own, with its configuration.
type pathSet struct {
	paths []*peer.Path
	cfgs  []PathConfig
}

// front is a local socket applications send to: the default one, or a
// port forward's.
type front struct {
	conn   udpio.Conn
	target wire.Target // where its flows go; the zero Target for the server's default
	name   string      // for logs and status: "listen" or "listen=target"
	// A SOCKS5 UDP association's relay socket takes datagrams from its
	// client only (peer: an address and a port; a port of 0 until the
	// association's first well-formed datagram binds it, in socksBatch),
	// each with a header naming its destination.
	socks bool
	peer  netip.AddrPort
	stats *frontStats // a SOCKS5 association shares its front's
}

// frontStats counts a front's datagrams for status.
type frontStats struct {
	tx, rx, refused atomic.Uint64
}

type flow struct {
	id     uint32
	fr     *front
	target wire.Target // the front's, or a SOCKS5 datagram's destination
	peer   netip.AddrPort
	act    peer.Activity // its use: when last active, datagrams each way (the reclaim rule)
	// A flow with a target names it in what it sends until the server says
	// it has the flow (acked); a refused one is dropped here until
	// refusedUntil (unix ns), then asked for again.
	acked        atomic.Bool
	refusedUntil atomic.Int64
}

// flowKey is a flow's identity on the client: the front it came by and the
// local peer.
type flowKey struct {
	fr   *front
	peer netip.AddrPort
	dst  wire.Target // a SOCKS5 datagram's destination; zero otherwise
}

// needsTarget reports whether f's datagrams must carry its target.
func (f *flow) needsTarget() bool { return f.target.Valid() && !f.acked.Load() }

// Listen checks cfg, resolves the paths and binds the local socket and one
// socket per path.
func Listen(cfg Config) (*Client, error) {
	cfg.setDefaults()
	if len(cfg.Paths) == 0 {
		return nil, errors.New("client: no paths")
	}
	if cfg.MTU < wire.MinMTU || cfg.MTU > wire.MaxPacket {
		return nil, fmt.Errorf("client: mtu %d outside %d..%d", cfg.MTU, wire.MinMTU, wire.MaxPacket)
	}
	c := &Client{
		cfg:     cfg,
		log:     cfg.Logger,
		up:      make(chan struct{}),
		pending: make(map[uint32]*pendingHS),
		byPeer:  make(map[flowKey]*flow),
		byID:    make(map[uint32]*flow),
	}
	c.resetKey = reset.NewKey(cfg.Key)
	c.warn.Log = cfg.Logger
	c.w = peer.Writer{Cnt: &c.cnt, Warn: &c.warn}
	if (cfg.Private == nil) != (cfg.ServerPublic == nil) {
		return nil, errors.New("client: a private key needs the server's public key, and the other way round")
	}
	mac1 := [32]byte(cfg.Key)
	if cfg.ServerPublic != nil && cfg.Key.IsZero() {
		// No shared key: initiations' mac1 is keyed by the server's
		// public key, as in WireGuard.
		mac1 = *cfg.ServerPublic
	}
	var err error
	if c.jar, err = cookie.NewJar(mac1); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	sc, err := sched.New(cfg.Mode, sched.Options{TargetLoss: cfg.TargetLoss})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	c.spread = peer.NewSpreader(sc, c.w)
	if cfg.FECDepth < 0 || cfg.FECDepth > 15 {
		return nil, fmt.Errorf("client: fec depth %d: want 1 to 15", cfg.FECDepth)
	}
	if _, ok := cfg.FEC.Byte(); !ok && cfg.FEC != (fec.Params{}) {
		return nil, fmt.Errorf("client: fec shape %d/%d: want 1 to 15 data and parity shards", cfg.FEC.Data, cfg.FEC.Parity)
	}
	if len(cfg.Paths) > wire.MaxPaths {
		return nil, fmt.Errorf("client: %d paths: a session has %d at most", len(cfg.Paths), wire.MaxPaths)
	}
	var list []*peer.Path
	for i, pc := range cfg.Paths {
		p, err := c.newPath(pc, uint8(i))
		if err != nil {
			for _, q := range list {
				q.Conn().Close()
			}
			return nil, err
		}
		list = append(list, p)
	}
	c.setList(list, cfg.Paths)
	if cfg.Listen != "none" {
		if err := c.addFront(cfg.Listen, wire.Target{}, cfg.Listen); err != nil {
			c.closeSockets()
			return nil, err
		}
	}
	for _, fw := range cfg.Forwards {
		tg, err := wire.ParseTargetString(fw.Target)
		if err != nil {
			c.closeSockets()
			return nil, fmt.Errorf("forward %s: bad target %q: %w", fw.Listen, fw.Target, err)
		}
		if fw.TCP {
			err = c.addTCPForward(fw.Listen, tg)
		} else if err = c.addFront(fw.Listen, tg, fw.Listen+"="+fw.Target); err == nil {
			c.forwardAddrs = append(c.forwardAddrs, c.fronts[len(c.fronts)-1].conn.LocalAddr())
		}
		if err != nil {
			c.closeSockets()
			return nil, err
		}
	}
	if cfg.Socks != "" {
		if err := c.listenSocks(cfg.Socks); err != nil {
			c.closeSockets()
			return nil, fmt.Errorf("cannot listen for socks on %s: %w", cfg.Socks, err)
		}
	}
	if len(c.fronts) == 0 && c.socks == nil && len(c.tcpForwards) == 0 {
		c.closeSockets()
		return nil, errors.New("client: no listen address, forward or socks front: applications could send nothing")
	}
	return c, nil
}

// addFront binds a local socket at listen whose flows go to tg.
func (c *Client) addFront(listen string, tg wire.Target, name string) error {
	conn, err := peer.Listen(c.cfg.Net, listen)
	if err != nil {
		return err
	}
	c.fronts = append(c.fronts, &front{conn: conn, target: tg, name: name, stats: new(frontStats)})
	return nil
}

// newPath opens path pc with ID id: a socket of the remote's family, on the
// source address or interface when given. Its address is proven: it is the
// one configured.
func (c *Client) newPath(pc PathConfig, id uint8) (*peer.Path, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rap, err := resolve(ctx, c.cfg.Resolver, pc.Remote, "ip")
	if err != nil {
		return nil, fmt.Errorf("cannot resolve path %s: %w", pc.Remote, err)
	}
	la := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	if rap.Addr().Is6() {
		la = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
	}
	if pc.From != "" {
		ip, err := netip.ParseAddr(pc.From)
		if err != nil {
			return nil, fmt.Errorf("path %s: bad source address %q", pc.Remote, pc.From)
		}
		la = netip.AddrPortFrom(ip.Unmap(), 0)
	}
	conn, err := c.cfg.Net.Listen(la, pc.Dev)
	if err != nil {
		return nil, fmt.Errorf("path %s: %w", pc.Remote, err)
	}
	p := peer.NewPath(id, pc.Remote, conn, rap, c.cfg.ProbeInterval, time.Now())
	p.SetPriority(pc.Priority)
	p.SetProven()
	return p, nil
}

// pathList returns the current path list; it is never changed in place.
func (c *Client) pathList() []*peer.Path {
	if l := c.paths.Load(); l != nil {
		return l.paths
	}
	return nil
}

// setList makes list, configured as cfgs, the path list.
func (c *Client) setList(list []*peer.Path, cfgs []PathConfig) {
	v6 := false
	for _, p := range list {
		if a := p.Addr().Addr(); a.Is6() && !a.Is4In6() {
			v6 = true
		}
	}
	c.v6.Store(v6)
	c.paths.Store(&pathSet{paths: list, cfgs: append([]PathConfig(nil), cfgs...)})
}

// SetPaths replaces the path list while the client runs: paths with the same
// remote, interface and source address keep their sockets, IDs and
// measurements (their priority is updated); others are opened with new IDs,
// and those left out are closed. Either every new path opens and the list is
// replaced, or nothing changes and the error says why.
func (c *Client) SetPaths(pcs []PathConfig) error {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	if c.closing.Load() {
		return errors.New("client: shutting down")
	}
	if len(pcs) == 0 {
		return errors.New("client: no paths")
	}
	if len(pcs) > wire.MaxPaths {
		return fmt.Errorf("client: %d paths: a session has %d at most", len(pcs), wire.MaxPaths)
	}
	var old []*peer.Path
	var oldCfgs []PathConfig
	if set := c.paths.Load(); set != nil {
		old, oldCfgs = set.paths, set.cfgs
	}
	used := make(map[uint8]bool)
	keep := make(map[*peer.Path]bool)
	next := make([]*peer.Path, len(pcs))
	for i, pc := range pcs {
		for j, p := range old {
			if q := oldCfgs[j]; !keep[p] && q.Remote == pc.Remote && q.Dev == pc.Dev && q.From == pc.From {
				keep[p], used[p.ID] = true, true
				next[i] = p
				break
			}
		}
	}
	var opened []*peer.Path
	for i, pc := range pcs {
		if next[i] != nil {
			continue
		}
		id := -1
		for k := range 256 {
			if !used[uint8(k)] {
				id = k
				break
			}
		}
		if id < 0 {
			for _, p := range opened {
				p.Conn().Close()
			}
			return errors.New("client: more than 255 paths")
		}
		p, err := c.newPath(pc, uint8(id))
		if err != nil {
			for _, p := range opened {
				p.Conn().Close()
			}
			return err
		}
		used[uint8(id)] = true
		next[i], opened = p, append(opened, p)
	}
	for i, p := range next {
		// Priority is not part of a path's identity: a kept path takes the
		// new one.
		p.SetPriority(pcs[i].Priority)
	}
	c.setList(next, pcs)
	for _, p := range old {
		if !keep[p] {
			p.Conn().Close() // its pathLoop ends
			c.log.Info("path removed", "path", p.Name, "id", p.ID)
		}
	}
	for _, p := range opened {
		if c.started {
			// Before Serve, Serve starts every path's reader itself.
			c.startPath(p)
		}
		c.log.Info("path added", "path", p.Name, "id", p.ID)
	}
	return nil
}

// startPath runs p's read loop.
func (c *Client) startPath(p *peer.Path) {
	c.wg.Go(func() { c.pathLoop(p) })
}

func (c *Client) closeSockets() {
	for _, p := range c.pathList() {
		p.Conn().Close()
	}
	for _, fr := range c.fronts {
		fr.conn.Close()
	}
	if c.socks != nil {
		c.socks.ln.Close()
	}
	for _, tf := range c.tcpForwards {
		tf.ln.Close()
	}
}

// Close frees the sockets Listen bound, for a client whose Serve never ran;
// Serve frees them itself when its context ends. Close may be called more
// than once, and after Serve.
func (c *Client) Close() error {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	c.closeSockets()
	return nil
}

// Addr returns the address local applications send to: the default one,
// or the first forward's when there is none.
func (c *Client) Addr() netip.AddrPort {
	if len(c.fronts) == 0 {
		return netip.AddrPort{}
	}
	return c.fronts[0].conn.LocalAddr()
}

// ForwardAddrs returns the local address of each forward, in the order of
// Config.Forwards.
func (c *Client) ForwardAddrs() []netip.AddrPort {
	return slices.Clone(c.forwardAddrs)
}

// Counters returns the client's counters.
func (c *Client) Counters() *metrics.Counters { return &c.cnt }

// Up is closed once the first session with the server is established.
func (c *Client) Up() <-chan struct{} { return c.up }

// Serve runs until ctx ends, then tells the server the session is over and
// frees every socket and goroutine.
func (c *Client) Serve(ctx context.Context) error {
	c.reloadMu.Lock()
	list := c.pathList()
	if len(list) > 0 {
		f := udpio.FeaturesOf(list[0].Conn())
		c.log.Info("client sockets", "batch", f.Batch, "gso", f.GSO, "gro", f.GRO)
	}
	for _, p := range list {
		c.startPath(p)
	}
	c.started = true
	c.reloadMu.Unlock()
	if c.socks != nil {
		c.wg.Go(func() { c.serveSocks(ctx) })
	}
	for _, tf := range c.tcpForwards {
		c.wg.Go(func() { c.serveTCPForward(ctx, tf) })
	}
	for _, fr := range c.fronts {
		c.wg.Go(func() { c.localLoop(fr) })
	}
	c.wg.Go(func() { c.resolver(ctx) })
	c.wg.Go(func() { c.timers(ctx) })
	<-ctx.Done()
	c.reloadMu.Lock()
	c.closing.Store(true) // no SetPaths starts a path loop from now on
	c.reloadMu.Unlock()
	if st := c.sess.Load(); st != nil {
		st.Stop()
	}
	if pv := c.prev.Load(); pv != nil {
		pv.Stop()
	}
	c.streams.reset(nil)
	if st := c.sess.Load(); st != nil {
		sl := session.NewSealer()
		if pkt, err := sl.SealClose(st); err == nil {
			c.sendAll(pkt)
		}
	}
	c.closeSockets()
	c.wg.Wait()
	return nil
}

// batchSize is how many datagrams one read or write system call moves.
const batchSize = 64

// sendAll sends pkt on every path (handshakes and closes).
func (c *Client) sendAll(pkt []byte) {
	for _, p := range c.pathList() {
		c.w.SendPath(p, pkt)
	}
}

// sendLive sends pkts on the paths the session's mode picks for each (on
// every usable one when all is set), in one write per path.
func (c *Client) sendLive(pkts [][]byte, all bool) {
	c.spread.Send(c.pathList(), pkts, all, nil, time.Now())
	// The parity of groups these packets closed goes after them.
	if st := c.sess.Load(); st != nil && st.ParityTx != nil {
		if par := st.ParityTx.Take(st); len(par) > 0 {
			c.spread.Send(c.pathList(), par, true, nil, time.Now())
		}
	}
}

// localLoop carries local applications' datagrams into the tunnel, a batch
// at a time: each datagram is sealed where it was read, and the batch goes
// out on every live path in one write per path.
func (c *Client) localLoop(fr *front) {
	b := session.NewBatch(batchSize)
	sl := session.NewSealer() // for datagrams that carry their flow's target
	in := make([]udpio.Msg, b.Size())
	for {
		for i := range in {
			in[i].Buf = b.Buf(i)
		}
		n, ok := udpio.Read(fr.conn, in)
		if !ok {
			return
		}
		st := c.live()
		if st == nil && fr.socks {
			c.cnt.NoSession.Add(uint64(n))
			continue
		}
		if st == nil {
			if st = c.holdEarly(fr, in[:n]); st == nil {
				continue
			}
		}
		if fr.socks {
			c.socksBatch(fr, st, in[:n], sl)
			continue
		}
		nowT := time.Now()
		now := nowT.UnixNano()
		maxPlain := wire.MaxPlaintext(c.cfg.MTU, c.v6.Load())
		b.Reset()
		// In fec mode, datagrams that fit become shards, one path each; the
		// others are cut and sent on every path.
		tx := st.FECTx
		// Datagrams of a batch mostly come from one peer: its flow is
		// looked up and stamped once, and the counters move once a batch.
		var lastF *flow
		var lastPeer netip.AddrPort
		var forwarded uint64
		for i := range in[:n] {
			f := lastF
			if f == nil || in[i].Addr != lastPeer {
				if f = c.flowFor(fr, in[i].Addr); f == nil {
					continue
				}
				f.act.Touch(now)
				lastF, lastPeer = f, in[i].Addr
			}
			f.act.Out(1)
			if now < f.refusedUntil.Load() {
				c.cnt.TargetRefused.Add(1)
				fr.stats.refused.Add(1)
				continue
			}
			if f.needsTarget() {
				// Sent at once, after what the batch holds, on every path.
				if len(b.Pkts) > 0 {
					c.sendLive(b.Pkts, tx != nil)
					b.Reset()
				}
				if pkts, _, ok := c.sealFlow(sl, st, f, in[i].Buf[:min(in[i].N, len(in[i].Buf))], maxPlain); ok {
					c.sendLive(pkts, true)
				}
				continue
			}
			if tx != nil && session.FECFits(in[i].N, maxPlain) {
				if err := tx.Add(st, f.id, in[i].Buf[:in[i].N], nowT); err != nil {
					c.log.Error("fec", "err", err)
					continue
				}
				forwarded++
				continue
			}
			err := b.Add(st, i, f.id, in[i].N, maxPlain)
			if errors.Is(err, session.ErrBatchFull) {
				c.sendLive(b.Pkts, tx != nil)
				b.Reset()
				err = b.Add(st, i, f.id, in[i].N, maxPlain)
			}
			if err != nil {
				if errors.Is(err, session.ErrOversize) {
					c.cnt.Oversize.Add(1)
					c.warn.Warn("oversize", "datagram too large for the tunnel, dropped", "from", in[i].Addr.String(), "limit", wire.MaxDatagram)
				}
				continue
			}
			forwarded++
		}
		if forwarded > 0 {
			c.cnt.Forwarded.Add(forwarded)
			fr.stats.tx.Add(forwarded)
		}
		if len(b.Pkts) > 0 {
			c.sendLive(b.Pkts, tx != nil)
		}
		if tx != nil {
			tx.Flush(nowT)
		}
	}
}

// deliverFlow hands one datagram of flow id to its local peer at once.
func (c *Client) deliverFlow(id uint32, d []byte) {
	c.flowMu.RLock()
	f := c.byID[id]
	c.flowMu.RUnlock()
	if f == nil {
		c.cnt.UnknownFlow.Add(1)
		return
	}
	f.act.Touch(time.Now().UnixNano())
	f.act.In(1)
	var scratch []byte // the reorder buffer's timer and readers call this: no shared buffer
	c.writeLocal(f.fr, []udpio.Msg{f.localMsg(d, &scratch)})
}

// localMsg addresses datagram d of flow f to its local peer: as it is, or
// for a SOCKS5 association after a header naming where it came from, built
// at the end of *scratch. The caller empties *scratch once the message is
// written; a reader that keeps its scratch allocates nothing once it has
// grown to a batch's size (a message made before the scratch grew keeps
// the old array).
func (f *flow) localMsg(d []byte, scratch *[]byte) udpio.Msg {
	if f.fr.socks {
		start := len(*scratch)
		*scratch = socks.AppendUDP(*scratch, f.target, d)
		d = (*scratch)[start:]
	}
	return udpio.Msg{Buf: d, Addr: f.peer}
}

// newFEC gives st the fec mode's sender and receiver: its shards go one
// path each, and its parity is flushed by a timer when a group does not fill
// in time.
func (c *Client) newFEC(st *session.State) error {
	return session.EnableFEC(st, c.cfg.FEC, c.cfg.FECFlush, c.cfg.FECDepth,
		func(pkts [][]byte, parity uint64) {
			c.sendLive(pkts, false)
			c.cnt.FECParity.Add(parity)
		},
		func(err error) { c.log.Error("fec", "err", err) })
}

func (c *Client) flowFor(fr *front, peer netip.AddrPort) *flow {
	return c.flowTo(fr, peer, fr.target)
}

// flowTo returns the flow from local peer from by front fr to target tg (the front's
// own, or a SOCKS5 datagram's destination), making it if it is new.
func (c *Client) flowTo(fr *front, from netip.AddrPort, tg wire.Target) *flow {
	key := flowKey{fr, from, wire.Target{}}
	if fr.socks {
		key.dst = tg
	}
	c.flowMu.RLock()
	f := c.byPeer[key]
	c.flowMu.RUnlock()
	if f != nil {
		return f
	}
	c.flowMu.Lock()
	defer c.flowMu.Unlock()
	if f = c.byPeer[key]; f != nil {
		return f
	}
	now := time.Now()
	if len(c.byPeer) >= c.cfg.MaxFlows {
		// The least recently used idle flow makes room; when every flow
		// is busy the new one is refused.
		old, ok := peer.LeastRecent(c.byPeer, func(f *flow) *peer.Activity { return &f.act }, now)
		if !ok {
			c.cnt.FlowLimit.Add(1)
			c.warn.Warn("flows", "local peer refused: flow limit reached, and every flow is busy", "peer", from.String(), "limit", c.cfg.MaxFlows)
			return nil
		}
		c.freeFlowLocked(old)
		c.cnt.FlowsEvicted.Add(1)
	}
	f = &flow{id: c.newIDLocked(tg.Valid()), fr: fr, peer: from, target: tg}
	f.act.Touch(now.UnixNano())
	c.byPeer[key] = f
	c.byID[f.id] = f
	c.log.Debug("flow open", "flow", f.id, "peer", from.String(), "front", fr.name)
	return f
}

// newIDLocked returns an unused flow ID, with wire.FlowNamed set for a flow
// that names its target; the caller holds c.flowMu. IDs are not reused until
// the 31-bit count wraps, and never while in use here.
func (c *Client) newIDLocked(named bool) uint32 {
	for {
		c.nextID = (c.nextID + 1) &^ wire.FlowNamed
		id := c.nextID
		if named {
			id |= wire.FlowNamed
		}
		if c.nextID != 0 && c.byID[id] == nil {
			return id
		}
	}
}

// freeFlowLocked forgets flow key; the caller holds c.flowMu. What the
// server still sends on it is dropped and counted (unknown_flow).
func (c *Client) freeFlowLocked(key flowKey) {
	f := c.byPeer[key]
	delete(c.byPeer, key)
	delete(c.byID, f.id)
	c.cnt.FlowsFreed.Add(1)
	c.log.Debug("flow freed", "flow", f.id, "peer", f.peer.String(), "front", f.fr.name)
}

// flowFate takes the server's word on flow f: open, refused and why, or
// freed on the server's side.
func (c *Client) flowFate(f *flow, status byte, now time.Time) {
	switch status {
	case wire.FlowOK:
		f.acked.Store(true)
		f.refusedUntil.Store(0)
		return
	case wire.FlowClosed:
		// The server freed the flow: its next datagram names the
		// target again, and the server opens it anew.
		f.acked.Store(false)
		f.refusedUntil.Store(0)
		return
	}
	if now.UnixNano() < f.refusedUntil.Load() {
		return // heard already
	}
	f.refusedUntil.Store(now.Add(refusedFor).UnixNano())
	c.warn.Warn("refused", "the server refused a flow; its datagrams are dropped, and it is asked for again in a while", "front", f.fr.name, "peer", f.peer.String(), "why", wire.FlowFate(status))
}

// refusedFor is how long the datagrams of a flow the server refused are
// dropped here before the flow is asked for again.
const refusedFor = 2 * time.Second

// writeLocal hands datagrams to local peers of front fr and counts them.
func (c *Client) writeLocal(fr *front, msgs []udpio.Msg) {
	sent, bytes, _ := c.w.Write(fr.conn, msgs, "local send buffer full: datagrams for applications dropped")
	fr.stats.rx.Add(uint64(sent))
	c.cnt.Delivered.Add(uint64(sent))
	c.cnt.DeliveredBytes.Add(uint64(bytes))
}

func (c *Client) handleResponse(pkt []byte) {
	idx, msg, err := wire.ParseResponse(pkt)
	if err != nil {
		c.cnt.Malformed.Add(1)
		return
	}
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	ph := c.pending[idx]
	if ph == nil {
		c.cnt.HandshakeReplay.Add(1)
		return
	}
	fin, err := ph.in.Finish(msg)
	if errors.Is(err, handshake.ErrVersion) {
		c.cnt.HandshakeBad.Add(1)
		c.warn.Warn("handshake", "handshake response from a server with another protocol version")
		return
	}
	if err != nil {
		c.cnt.HandshakeBad.Add(1)
		c.warn.Warn("handshake", "handshake response does not authenticate (wrong key on one end?)")
		return
	}
	peerIdx := fin.PeerIndex
	st, err := session.New(fin.Keys, fin.Cipher, peerIdx, c.cfg.Window)
	if err != nil {
		c.log.Error("session setup failed", "err", err)
		return
	}
	st.LocalIndex = idx
	if !c.cfg.NoRepair && c.cfg.Mode != sched.FEC {
		// fec mode's parity is its repair.
		session.EnableRepair(st, session.RingSize(c.cfg.MTU), &c.cnt, func(pkts [][]byte) { c.sendLive(pkts, true) })
		if !c.cfg.NoParity && c.cfg.Mode == sched.Redundant {
			session.EnableParity(st, wire.MaxPlaintext(c.cfg.MTU, c.v6.Load()), &c.cnt, func(pkts [][]byte) { c.sendLive(pkts, true) })
		}
	}
	if c.cfg.Reorder > 0 {
		st.Reorder = reorder.NewTimed(c.cfg.Reorder, 0, c.deliverFlow)
	}
	if c.cfg.Mode == sched.FEC {
		if err := c.newFEC(st); err != nil {
			c.log.Error("session setup failed", "err", err)
			return
		}
	}
	clear(c.pending)
	now := time.Now()
	c.lastAuth.Store(now.UnixNano())
	if !ph.rekey {
		// Streams belong to the server's state of the old session: they
		// end, and new ones go over a new QUIC connection.
		secret := stream.Secret(fin.Keys.Send, fin.Keys.Recv)
		c.streams.reset(&secret)
		// A new session from scratch (the server restarted): it knows no
		// flow, so every flow names its target again.
		c.flowMu.RLock()
		for _, f := range c.byID {
			f.acked.Store(false)
			f.refusedUntil.Store(0)
		}
		c.flowMu.RUnlock()
	}
	if fin.HasToken {
		c.token.Store(&sessToken{st: st, token: fin.ResetToken})
	}
	c.earlyMu.Lock()
	c.sessAt.Store(now.UnixNano())
	old := c.sess.Swap(st)
	if old != nil {
		// Nothing more is sent under the old session, but what the server
		// sent under it before it switched is still taken for a while.
		if old.FECTx != nil {
			old.FECTx.Stop()
		}
		c.prevUntil.Store(now.Add(prevGrace).UnixNano())
		if pv := c.prev.Swap(old); pv != nil {
			pv.Stop()
		}
	}
	early := c.early
	c.early = nil
	c.earlyMu.Unlock()
	c.cnt.HandshakeOK.Add(1)
	if ph.rekey {
		c.cnt.Rekeys.Add(1)
		c.log.Debug("session rekeyed", "session", fmt.Sprintf("%08x", peerIdx), "rtt", time.Since(ph.sent).Round(time.Microsecond).String())
	} else {
		c.log.Info("session up", "session", fmt.Sprintf("%08x", peerIdx), "cipher", fin.Cipher.String(), "rtt", time.Since(ph.sent).Round(time.Microsecond).String(), "replaces", old != nil)
	}
	// Tell the server every path at once, then send what waited for the session.
	sl := session.NewSealer()
	for _, p := range c.pathList() {
		if pkt, err := sl.SealProbe(st, wire.MsgProbe, p.Probe(time.Now())); err == nil {
			c.w.SendPath(p, pkt)
		}
	}
	c.sendEarly(sl, st, early)
	c.once.Do(func() { close(c.up) })
}

// handshake starts a new session: an initiation on every path.
func (c *Client) handshake(now time.Time) {
	in, pkt := c.initiate(now, false)
	if in != nil {
		c.hsAt.Store(now.UnixNano())
		c.sendAll(pkt)
	}
}

// handleReset takes a stateless reset: the server says it does not hold the
// session whose index the reset names. Only a reset made with the key for
// the index we send on now is acted on; the first for a session starts a
// new handshake at once, and the session counts as silent until the new one is up, its datagrams
// waiting for it. Anything else is counted and ignored: a reset for a
// session a rekey replaced, or for one before a restart, changes nothing.
func (c *Client) handleReset(pkt []byte, now time.Time) {
	st := c.sess.Load()
	if st == nil {
		c.cnt.ResetsRefused.Add(1)
		return
	}
	if err := c.checkReset(pkt, st); err != nil {
		c.cnt.ResetsRefused.Add(1)
		c.warn.Warn("reset-refused", "stateless reset ignored", "reason", err.Error())
		return
	}
	c.cnt.ResetsAccepted.Add(1)
	if c.resetFor.Swap(st) == st {
		return // acted on already: one came by another path, or before
	}
	c.log.Info("the server does not hold our session (it restarted); handshaking again", "session", fmt.Sprintf("%08x", st.PeerIndex))
	// At once, even if an initiation went out a moment ago: it may have
	// reached the server before its restart, or been refused as made
	// before it.
	c.handshake(now)
}

// sessToken is the reset token the server gave for session st.
type sessToken struct {
	st    *session.State
	token [handshake.ResetTokenLen]byte
}

// checkReset checks a stateless reset for session st: against the token
// its identity handshake gave, or one made with the shared key.
func (c *Client) checkReset(pkt []byte, st *session.State) error {
	if c.cfg.Private == nil {
		return c.resetKey.Check(pkt, st.PeerIndex)
	}
	tk := c.token.Load()
	if tk == nil || tk.st != st {
		return reset.ErrIndex
	}
	return reset.CheckToken(pkt, st.PeerIndex, tk.token)
}

// rekey starts the session that replaces st: the initiation goes sealed
// inside st, on every path, which tells the server to move st's flows to
// the new session once we use it (docs/PROTOCOL.md).
func (c *Client) rekey(now time.Time, st *session.State, sl *session.Sealer) {
	in, _ := c.initiate(now, true)
	if in == nil {
		return
	}
	if pkt, err := sl.SealRekey(st, in.Msg); err == nil {
		c.sendAll(pkt)
	}
}

// rekeyDue reports whether st, up since at, has reached a rekey bound.
func (c *Client) rekeyDue(st *session.State, at, now time.Time) bool {
	return now.Sub(at) >= c.cfg.RekeyAfter || st.Sent() >= c.cfg.RekeyPackets || st.Received() >= c.cfg.RekeyPackets
}

// initiate makes an initiation, remembers it as pending and returns it with
// its packet (nil if it cannot be made).
func (c *Client) initiate(now time.Time, rekey bool) (*handshake.Initiation, []byte) {
	shape, _ := c.cfg.FEC.Byte()                                  // checked in Listen; 0 for the default
	mode := byte(c.cfg.Mode) | byte(max(c.cfg.FECDepth, 1)&15)<<4 // the depth rides in the mode's high bits
	hello := handshake.Hello{Mode: mode, Ciphers: c.cfg.Cipher.Offer(), FEC: shape}
	var in *handshake.Initiation
	var err error
	if c.cfg.Private != nil {
		in, err = handshake.InitiateIK(*c.cfg.Private, *c.cfg.ServerPublic, c.cfg.Key, hello, now)
	} else {
		in, err = handshake.InitiateWith(c.cfg.Key, hello, now)
	}
	if err != nil {
		c.log.Error("handshake", "err", err)
		return nil, nil
	}
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	for idx, ph := range c.pending {
		if now.Sub(ph.sent) > 5*c.cfg.HandshakeRetry {
			delete(c.pending, idx)
		}
	}
	pkt := wire.AppendInit(nil, in.Msg)
	signed := !rekey && c.jar.Sign(pkt, now)
	c.pending[in.Index] = &pendingHS{in: in, pkt: pkt, sent: now, signed: signed, rekey: rekey}
	return in, pkt
}

// handleCookie takes a cookie reply: the server is under load and wants
// this address proven. The next initiation, sent at once, carries the
// cookie's MAC. Replies to one initiation come by every path: the first
// makes the new initiation. An initiation that carried a MAC and still got
// a reply (the server changed its secret) waits for the usual retry, so a
// server that keeps answering with cookies cannot make the client spin.
func (c *Client) handleCookie(pkt []byte) {
	now := time.Now()
	c.hsMu.Lock()
	var ph *pendingHS
	for _, p := range c.pending {
		if c.jar.Take(pkt, p.pkt, now) == nil {
			ph = p
			break
		}
	}
	again := ph != nil && !ph.answered && !ph.signed
	if ph != nil {
		ph.answered = true
	}
	c.hsMu.Unlock()
	if ph == nil {
		c.cnt.Malformed.Add(1)
		return
	}
	c.cnt.Cookies.Add(1)
	if again {
		c.handshake(now)
	}
}

// PathStates returns each path's health, in the order of the path list.
func (c *Client) PathStates() []pathpkg.Stats {
	list := c.pathList()
	out := make([]pathpkg.Stats, len(list))
	for i, p := range list {
		out[i] = p.Stats()
	}
	return out
}

// timers drives handshakes, probes and flow expiry. A session that has heard
// nothing authentic for DeadAfter (the server restarted, or every path is
// down) is replaced by a new handshake, retried every HandshakeRetry, while
// the old one keeps carrying traffic in case it comes back. A session a
// reset ended is retried the same way, from the handshake handleReset
// started.
func (c *Client) timers(ctx context.Context) {
	c.handshake(time.Now())
	lastHS := time.Now()
	probe := time.NewTicker(c.cfg.ProbeInterval)
	defer probe.Stop()
	// In failover mode the paths carrying the data are probed
	// peer.FastProbes times as often.
	var fast <-chan time.Time
	if c.cfg.Mode == sched.Failover {
		t := time.NewTicker(c.cfg.ProbeInterval / peer.FastProbes)
		defer t.Stop()
		fast = t.C
	}
	pr := peer.NewProber(c.w, c.log)
	sl := session.NewSealer()
	lastExpire := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-fast:
			pr.Fast(c.sess.Load(), c.pathList(), now)
		case now := <-probe.C:
			st := c.sess.Load()
			pr.Round(st, c.pathList(), true, now)
			quiet := st != nil && now.Sub(time.Unix(0, c.lastAuth.Load())) > c.cfg.DeadAfter
			silent := quiet || (st != nil && c.resetFor.Load() == st)
			switch {
			case (st == nil || silent) && now.Sub(lastHS) >= c.cfg.HandshakeRetry && now.Sub(time.Unix(0, c.hsAt.Load())) >= c.cfg.HandshakeRetry:
				if quiet {
					c.warn.Warn("silent", "no answer from the server; handshaking again", "silent_for", now.Sub(time.Unix(0, c.lastAuth.Load())).Round(time.Millisecond).String())
				}
				c.handshake(now)
				lastHS = now
			case st != nil && !silent && c.rekeyDue(st, time.Unix(0, c.sessAt.Load()), now) && now.Sub(lastHS) >= c.cfg.HandshakeRetry:
				c.rekey(now, st, sl)
				lastHS = now
			}
			if now.Sub(lastExpire) >= time.Second {
				c.expire(now)
				lastExpire = now
			}
		}
	}
}

func (c *Client) expire(now time.Time) {
	if st := c.sess.Load(); st != nil {
		st.Reasm.Expire(now)
	}
	if pv := c.prev.Load(); pv != nil && now.UnixNano() > c.prevUntil.Load() && c.prev.CompareAndSwap(pv, nil) {
		pv.Stop()
	}
	c.flowMu.Lock()
	defer c.flowMu.Unlock()
	for key, f := range c.byPeer {
		if expired, reclaimed := f.act.Expired(now, c.cfg.FlowTimeout); expired {
			c.freeFlowLocked(key)
			if reclaimed {
				c.cnt.FlowsReclaimed.Add(1)
			}
		}
	}
}

// Limits on what the client holds for the first session.
const (
	earlyMax   = 64
	earlyBytes = 256 << 10
	earlyAge   = 3 * time.Second
)

type earlyDatagram struct {
	fr   *front
	peer netip.AddrPort
	data []byte
	at   time.Time
}

// live returns the session to send on: the current one, unless a reset said
// the server no longer holds it (nil then, as before the first session).
func (c *Client) live() *session.State {
	st := c.sess.Load()
	if st != nil && c.resetFor.Load() == st {
		return nil
	}
	return st
}

// holdEarly keeps datagrams read before the first session is up, or while a
// session a reset ended is replaced (bounded in count, bytes and age), so an
// application's packets are not lost to the handshake. It returns the
// session instead if one came up meanwhile.
func (c *Client) holdEarly(fr *front, msgs []udpio.Msg) *session.State {
	c.earlyMu.Lock()
	defer c.earlyMu.Unlock()
	if st := c.live(); st != nil {
		return st
	}
	held := 0
	for _, e := range c.early {
		held += len(e.data)
	}
	now := time.Now()
	for i := range msgs {
		n := min(msgs[i].N, len(msgs[i].Buf))
		if len(c.early) >= earlyMax || held+n > earlyBytes {
			c.cnt.NoSession.Add(1)
			c.warn.Warn("nosession", "datagram dropped: no session with the server yet, and the wait queue is full")
			continue
		}
		c.early = append(c.early, earlyDatagram{fr: fr, peer: msgs[i].Addr, data: append([]byte(nil), msgs[i].Buf[:n]...), at: now})
		held += n
	}
	return nil
}

// sendEarly sends the datagrams held for the first session.
func (c *Client) sendEarly(sl *session.Sealer, st *session.State, early []earlyDatagram) {
	maxPlain := wire.MaxPlaintext(c.cfg.MTU, c.v6.Load())
	for _, e := range early {
		if time.Since(e.at) > earlyAge {
			c.cnt.NoSession.Add(1)
			continue
		}
		f := c.flowFor(e.fr, e.peer)
		if f == nil {
			continue
		}
		f.act.Touch(time.Now().UnixNano())
		f.act.Out(1)
		if pkts, withTarget, ok := c.sealFlow(sl, st, f, e.data, maxPlain); ok {
			c.sendLive(pkts, c.cfg.Mode == sched.FEC || withTarget)
		}
	}
}

// sealFlow seals datagram d of flow f with sl, one at a time: with its
// target while the server does not know the flow (withTarget: such packets
// go on every path), and counts it. The packets stay valid until sl's next
// call; ok is false when d cannot go (too large, counted).
func (c *Client) sealFlow(sl *session.Sealer, st *session.State, f *flow, d []byte, maxPlain int) (pkts [][]byte, withTarget, ok bool) {
	n := copy(sl.Payload(), d)
	var err error
	if withTarget = f.needsTarget(); withTarget {
		pkts, err = sl.SealTo(st, f.id, f.target, n, maxPlain)
	} else {
		pkts, err = sl.Seal(st, f.id, n, maxPlain)
	}
	if err != nil {
		if errors.Is(err, session.ErrOversize) {
			c.cnt.Oversize.Add(1)
		}
		return nil, withTarget, false
	}
	c.cnt.Forwarded.Add(1)
	f.fr.stats.tx.Add(1)
	return pkts, withTarget, true
}
