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
	"sync"
	"sync/atomic"
	"time"

	"github.com/mptunnel/mptunnel/internal/aead"
	"github.com/mptunnel/mptunnel/internal/cookie"
	"github.com/mptunnel/mptunnel/internal/fec"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/metrics"
	pathpkg "github.com/mptunnel/mptunnel/internal/path"
	"github.com/mptunnel/mptunnel/internal/ratelog"
	"github.com/mptunnel/mptunnel/internal/reorder"
	"github.com/mptunnel/mptunnel/internal/sched"
	"github.com/mptunnel/mptunnel/internal/session"
	"github.com/mptunnel/mptunnel/internal/socks"
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
// the server resolves and must allow.
type Forward struct {
	Listen string // local address, such as 127.0.0.1:5353
	Target string // host:port on the server's side, such as 10.0.0.53:53
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
	Mode                 sched.Mode  // how datagrams are spread over the paths (redundant)
	Cipher               aead.Cipher // the transport cipher to insist on, or aead.Auto
	FEC                  fec.Params  // fec mode: the group shape for both directions (zero: fec.DefaultParams)
	// FECDepth is how many fec groups are open at once, datagrams going to
	// each in turn, in both directions (1 to 15; 0 or 1: one).
	FECDepth int
	// FECFlush is how long a group that does not fill waits before its
	// parity is sent, in the client's direction (fec.DefaultFlushDelay).
	FECFlush time.Duration
	// TargetLoss is adaptive mode's target for the client's direction
	// (0.001); the server's direction uses the default.
	TargetLoss float64
	// Reorder, when positive, holds datagrams from the server that arrive
	// ahead of earlier ones for up to this long, to hand them on in order.
	Reorder time.Duration

	MTU            int           // largest IP packet put on a path (1400)
	Window         int           // replay window in packets (replay.DefaultSize)
	MaxFlows       int           // local peers at once (256)
	FlowTimeout    time.Duration // an idle local peer is forgotten after this (60s)
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
	if c.Listen == "" {
		c.Listen = "127.0.0.1:3000"
	}
	if c.MTU == 0 {
		c.MTU = 1400
	}
	if c.MaxFlows <= 0 {
		c.MaxFlows = 256
	}
	if c.FlowTimeout <= 0 {
		c.FlowTimeout = 60 * time.Second
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = 250 * time.Millisecond
	}
	if c.DeadAfter <= 0 {
		c.DeadAfter = 1500 * time.Millisecond
	}
	if c.HandshakeRetry <= 0 {
		c.HandshakeRetry = time.Second
	}
	if c.ResolveEvery <= 0 {
		c.ResolveEvery = 5 * time.Second
	}
	if c.RekeyAfter <= 0 {
		c.RekeyAfter = DefaultRekeyAfter
	}
	if c.RekeyPackets == 0 {
		c.RekeyPackets = DefaultRekeyPackets
	}
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver
	}
	if c.Net == nil {
		c.Net = udpio.OS{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Defaults for Config.RekeyAfter and Config.RekeyPackets.
const (
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
	paths    atomic.Pointer[[]*path]
	reloadMu sync.Mutex // serialises SetPaths, and SetPaths with shutdown
	v6       atomic.Bool
	cnt      metrics.Counters

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

	schedMu sync.Mutex // guards sched and its scratch
	sched   *sched.Scheduler
	spaths  []sched.Path
	per     [][]int

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

type path struct {
	*pathpkg.Link
	fastTx uint64       // packets sent as of the last fast-probe tick; the timers goroutine's own
	prio   atomic.Int64 // failover priority; SetPaths may change it
	cfg    PathConfig
	remote atomic.Pointer[netip.AddrPort] // changes when a host name resolves anew
	conn   udpio.Conn
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
	id         uint32
	fr         *front
	target     wire.Target // the front's, or a SOCKS5 datagram's destination
	peer       netip.AddrPort
	lastActive atomic.Int64
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
	c.warn.Log = cfg.Logger
	var err error
	if c.jar, err = cookie.NewJar(cfg.Key); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if c.sched, err = sched.New(cfg.Mode, sched.Options{TargetLoss: cfg.TargetLoss}); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if cfg.FECDepth < 0 || cfg.FECDepth > 15 {
		return nil, fmt.Errorf("client: fec depth %d: want 1 to 15", cfg.FECDepth)
	}
	if _, ok := cfg.FEC.Byte(); !ok && cfg.FEC != (fec.Params{}) {
		return nil, fmt.Errorf("client: fec shape %d/%d: want 1 to 15 data and parity shards", cfg.FEC.Data, cfg.FEC.Parity)
	}
	if len(cfg.Paths) > 255 {
		return nil, errors.New("client: more than 255 paths")
	}
	var list []*path
	for i, pc := range cfg.Paths {
		p, err := c.newPath(pc, uint8(i))
		if err != nil {
			for _, q := range list {
				q.conn.Close()
			}
			return nil, err
		}
		list = append(list, p)
	}
	c.setList(list)
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
		if err := c.addFront(fw.Listen, tg, fw.Listen+"="+fw.Target); err != nil {
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
	if len(c.fronts) == 0 && c.socks == nil {
		c.closeSockets()
		return nil, errors.New("client: no listen address, forward or socks front: applications could send nothing")
	}
	return c, nil
}

// addFront binds a local socket at listen whose flows go to tg.
func (c *Client) addFront(listen string, tg wire.Target, name string) error {
	laddr, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return fmt.Errorf("bad listen address %s: %w", listen, err)
	}
	lap := laddr.AddrPort()
	if laddr.IP == nil {
		lap = netip.AddrPortFrom(netip.Addr{}, uint16(laddr.Port))
	}
	conn, err := c.cfg.Net.Listen(lap, "")
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", listen, err)
	}
	c.fronts = append(c.fronts, &front{conn: conn, target: tg, name: name, stats: new(frontStats)})
	return nil
}

func openPath(nw udpio.Network, r *net.Resolver, pc PathConfig) (*path, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rap, err := resolve(ctx, r, pc.Remote, "ip")
	if err != nil {
		return nil, fmt.Errorf("cannot resolve path %s: %w", pc.Remote, err)
	}
	// A socket of the remote's family, on the source address when given.
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
	conn, err := nw.Listen(la, pc.Dev)
	if err != nil {
		return nil, fmt.Errorf("path %s: %w", pc.Remote, err)
	}
	p := &path{cfg: pc, conn: conn}
	p.remote.Store(&rap)
	return p, nil
}

// newPath opens path pc with ID id.
func (c *Client) newPath(pc PathConfig, id uint8) (*path, error) {
	p, err := openPath(c.cfg.Net, c.cfg.Resolver, pc)
	if err != nil {
		return nil, err
	}
	p.Link = pathpkg.NewLink(id, pathpkg.Params{ProbeInterval: c.cfg.ProbeInterval}, time.Now())
	return p, nil
}

// pathList returns the current path list; it is never changed in place.
func (c *Client) pathList() []*path {
	if l := c.paths.Load(); l != nil {
		return *l
	}
	return nil
}

// setList makes list the path list.
func (c *Client) setList(list []*path) {
	v6 := false
	for _, p := range list {
		if a := p.remote.Load().Addr(); a.Is6() && !a.Is4In6() {
			v6 = true
		}
	}
	c.v6.Store(v6)
	c.paths.Store(&list)
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
	old := c.pathList()
	used := make(map[uint8]bool)
	keep := make(map[*path]bool)
	next := make([]*path, len(pcs))
	for i, pc := range pcs {
		for _, p := range old {
			if !keep[p] && p.cfg.Remote == pc.Remote && p.cfg.Dev == pc.Dev && p.cfg.From == pc.From {
				keep[p], used[p.ID] = true, true
				next[i] = p
				break
			}
		}
	}
	var opened []*path
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
				p.conn.Close()
			}
			return errors.New("client: more than 255 paths")
		}
		p, err := c.newPath(pc, uint8(id))
		if err != nil {
			for _, p := range opened {
				p.conn.Close()
			}
			return err
		}
		used[uint8(id)] = true
		next[i], opened = p, append(opened, p)
	}
	for i, p := range next {
		// Priority is not part of a path's identity: a kept path takes the
		// new one.
		p.prio.Store(int64(pcs[i].Priority))
	}
	c.setList(next)
	for _, p := range old {
		if !keep[p] {
			p.conn.Close() // its pathLoop ends
			c.log.Info("path removed", "path", p.cfg.Remote, "id", p.ID)
		}
	}
	for _, p := range opened {
		c.startPath(p)
		c.log.Info("path added", "path", p.cfg.Remote, "id", p.ID)
	}
	return nil
}

// startPath runs p's read loop.
func (c *Client) startPath(p *path) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.pathLoop(p)
	}()
}

func (c *Client) closeSockets() {
	for _, p := range c.pathList() {
		p.conn.Close()
	}
	for _, fr := range c.fronts {
		fr.conn.Close()
	}
	if c.socks != nil {
		c.socks.ln.Close()
	}
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
	var out []netip.AddrPort
	for _, fr := range c.fronts {
		if fr.target.Valid() {
			out = append(out, fr.conn.LocalAddr())
		}
	}
	return out
}

// Counters returns the client's counters.
func (c *Client) Counters() *metrics.Counters { return &c.cnt }

// Up is closed once the first session with the server is established.
func (c *Client) Up() <-chan struct{} { return c.up }

// Serve runs until ctx ends, then tells the server the session is over and
// frees every socket and goroutine.
func (c *Client) Serve(ctx context.Context) error {
	list := c.pathList()
	if len(list) > 0 {
		f := udpio.FeaturesOf(list[0].conn)
		c.log.Info("client sockets", "batch", f.Batch, "gso", f.GSO, "gro", f.GRO)
	}
	c.reloadMu.Lock()
	for _, p := range list {
		c.startPath(p)
	}
	c.reloadMu.Unlock()
	if c.socks != nil {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.serveSocks(ctx)
		}()
	}
	c.wg.Add(2 + len(c.fronts))
	for _, fr := range c.fronts {
		go func() {
			defer c.wg.Done()
			c.localLoop(fr)
		}()
	}
	go func() {
		defer c.wg.Done()
		c.resolver(ctx)
	}()
	go func() {
		defer c.wg.Done()
		c.timers(ctx)
	}()
	<-ctx.Done()
	c.reloadMu.Lock()
	c.closing.Store(true) // no SetPaths starts a path loop from now on
	c.reloadMu.Unlock()
	if st := c.sess.Load(); st != nil && st.FECTx != nil {
		st.FECTx.Stop()
	}
	if st := c.sess.Load(); st != nil && st.Reorder != nil {
		st.Reorder.Stop()
	}
	if pv := c.prev.Load(); pv != nil && pv.Reorder != nil {
		pv.Reorder.Stop()
	}
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

// fastProbes is how many times a probe interval failover probes the path it
// sends on.
const fastProbes = 5

// batchSize is how many datagrams one read or write system call moves.
const batchSize = 64

// sendAll sends pkt on every path (handshakes and closes).
func (c *Client) sendAll(pkt []byte) {
	for _, p := range c.pathList() {
		c.send(p, pkt)
	}
}

// send sends one packet on path p.
func (c *Client) send(p *path, pkt []byte) {
	msg := [1]udpio.Msg{{Buf: pkt, Addr: *p.remote.Load()}}
	c.writePath(p, msg[:])
}

// writePath writes msgs (already addressed to p's remote) on path p and
// counts them.
func (c *Client) writePath(p *path, msgs []udpio.Msg) {
	sent, bytes, err := udpio.Write(p.conn, msgs)
	p.CountTxBatch(sent, bytes)
	c.cnt.TxPackets.Add(uint64(sent))
	c.cnt.TxBytes.Add(uint64(bytes))
	switch {
	case err == nil:
	case errors.Is(err, udpio.ErrQueueFull):
		c.cnt.QueueFull.Add(uint64(len(msgs) - sent))
		c.warn.Warn("queue-full", "path send buffer full: packets dropped (more is sent than the path's link takes)", "path", p.cfg.Remote)
	default:
		c.cnt.SendErrors.Add(uint64(len(msgs) - sent))
	}
}

// sendLive sends pkts on the paths the session's mode picks for each, in one
// write per path. out is the caller's scratch.
func (c *Client) sendLive(pkts [][]byte, out []udpio.Msg, all bool) []udpio.Msg {
	c.schedMu.Lock()
	defer c.schedMu.Unlock()
	now := time.Now()
	list := c.pathList()
	if len(c.spaths) != len(list) {
		c.spaths = make([]sched.Path, len(list))
		c.per = make([][]int, len(list))
	}
	for i, p := range list {
		c.spaths[i] = sched.FromStats(p.Stats(), p.Suspect(now))
		c.spaths[i].Priority = int(p.prio.Load())
	}
	if all {
		c.per = sched.SpreadAll(c.spaths, len(pkts), c.per)
	} else {
		c.per = c.sched.Spread(c.spaths, len(pkts), now, c.per)
	}
	for i, p := range list {
		if len(c.per[i]) == 0 {
			continue
		}
		to := *p.remote.Load()
		out = out[:0]
		for _, k := range c.per[i] {
			out = append(out, udpio.Msg{Buf: pkts[k], Addr: to})
		}
		c.writePath(p, out)
	}
	return out
}

// localLoop carries local applications' datagrams into the tunnel, a batch
// at a time: each datagram is sealed where it was read, and the batch goes
// out on every live path in one write per path.
func (c *Client) localLoop(fr *front) {
	b := session.NewBatch(batchSize)
	sl := session.NewSealer() // for datagrams that carry their flow's target
	in := make([]udpio.Msg, b.Size())
	out := make([]udpio.Msg, 0, 2*batchSize)
	for {
		for i := range in {
			in[i].Buf = b.Buf(i)
		}
		n, err := fr.conn.ReadBatch(in)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		st := c.sess.Load()
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
			out = c.socksBatch(fr, st, in[:n], sl, out)
			continue
		}
		nowT := time.Now()
		now := nowT.UnixNano()
		maxPlain := wire.MaxPlaintext(c.cfg.MTU, c.v6.Load())
		b.Reset()
		// In fec mode, datagrams that fit become shards, one path each; the
		// others are cut and sent on every path.
		tx := st.FECTx
		if tx != nil {
			tx.Lock()
		}
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
				f.lastActive.Store(now)
				lastF, lastPeer = f, in[i].Addr
			}
			if now < f.refusedUntil.Load() {
				c.cnt.TargetRefused.Add(1)
				fr.stats.refused.Add(1)
				continue
			}
			if f.needsTarget() {
				// Sent at once, after what the batch holds, on every path.
				if len(b.Pkts) > 0 {
					out = c.sendLive(b.Pkts, out, tx != nil)
					b.Reset()
				}
				if pkts, _, ok := c.sealFlow(sl, st, f, in[i].Buf[:min(in[i].N, len(in[i].Buf))], maxPlain); ok {
					out = c.sendLive(pkts, out, true)
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
				out = c.sendLive(b.Pkts, out, tx != nil)
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
			out = c.sendLive(b.Pkts, out, tx != nil)
		}
		if tx != nil {
			out = c.sendFEC(tx, out)
			tx.Arm(nowT)
			tx.Unlock()
		}
	}
}

// deliverFlow hands one datagram of flow id to its local peer at once.
func (c *Client) deliverFlow(id uint32, d []byte) {
	c.flowMu.RLock()
	f := c.byID[id]
	c.flowMu.RUnlock()
	if f != nil {
		f.lastActive.Store(time.Now().UnixNano())
		var scratch []byte // the reorder buffer's timer and readers call this: no shared buffer
		c.writeLocal(f.fr, []udpio.Msg{f.localMsg(d, &scratch)})
	}
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

// sendFEC sends the shards tx has sealed, one path each, and resets it. The
// caller holds tx's lock.
func (c *Client) sendFEC(tx *session.FECSender, out []udpio.Msg) []udpio.Msg {
	if len(tx.Pkts) > 0 {
		out = c.sendLive(tx.Pkts, out, false)
		c.cnt.FECParity.Add(tx.Parity)
	}
	tx.Reset()
	return out
}

// newFEC gives st the fec mode's sender and receiver; st's parity is
// flushed by a timer when a group does not fill in time.
func (c *Client) newFEC(st *session.State) error {
	var out []udpio.Msg // the timer's scratch; the sender's lock guards it
	return session.EnableFEC(st, c.cfg.FEC, c.cfg.FECFlush, c.cfg.FECDepth,
		func(tx *session.FECSender) { out = c.sendFEC(tx, out) },
		func(err error) { c.log.Error("fec", "err", err) })
}

func (c *Client) flowFor(fr *front, peer netip.AddrPort) *flow {
	return c.flowTo(fr, peer, fr.target)
}

// flowTo returns the flow from peer by front fr to target tg (the front's
// own, or a SOCKS5 datagram's destination), making it if it is new.
func (c *Client) flowTo(fr *front, peer netip.AddrPort, tg wire.Target) *flow {
	key := flowKey{fr, peer, wire.Target{}}
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
	if len(c.byPeer) >= c.cfg.MaxFlows {
		c.cnt.FlowLimit.Add(1)
		c.warn.Warn("flows", "local peer refused: flow limit reached", "peer", peer.String(), "limit", c.cfg.MaxFlows)
		return nil
	}
	c.nextID++
	f = &flow{id: c.nextID, fr: fr, peer: peer, target: tg}
	c.byPeer[key] = f
	c.byID[f.id] = f
	c.log.Debug("flow open", "flow", f.id, "peer", peer.String(), "front", fr.name)
	return f
}

// pathLoop reads what the server sends on one path.
func (c *Client) pathLoop(p *path) {
	in := make([]udpio.Msg, batchSize)
	for i := range in {
		in[i].Buf = make([]byte, wire.MaxPacket+1)
	}
	out := make([]udpio.Msg, 0, batchSize) // datagrams for local peers
	var scratch []byte                     // their SOCKS5 headers and bodies
	var o session.Opener
	sl := session.NewSealer()
	lookup := func(id uint32) *flow {
		c.flowMu.RLock()
		defer c.flowMu.RUnlock()
		return c.byID[id]
	}
	// A reassembled datagram lives only during the callback: send it now.
	deliverNow := func(id uint32, d []byte) {
		if f := lookup(id); f != nil {
			f.lastActive.Store(time.Now().UnixNano())
			f.acked.Store(true)
			msg := [1]udpio.Msg{f.localMsg(d, &scratch)}
			c.writeLocal(f.fr, msg[:])
		}
	}
	var outFr []*front // the front of each datagram in out
	for {
		n, err := p.conn.ReadBatch(in)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		now := time.Now()
		out, outFr, scratch = out[:0], outFr[:0], scratch[:0]
		remote := *p.remote.Load()
		// The client's counters, the path's health and the flow lookup
		// move once a batch, not once a packet.
		var rxPackets, rxBytes int
		heard, authentic := false, false
		var lastFlow *flow
		for i := range in[:n] {
			if in[i].Addr != remote {
				// Only the path's own remote end may talk to this socket.
				c.cnt.Malformed.Add(1)
				continue
			}
			pkt := in[i].Buf[:in[i].N]
			rxPackets++
			rxBytes += len(pkt)
			switch wire.Type(pkt) {
			case wire.TypeTransport:
				h, err := wire.ParseHeader(pkt)
				if err != nil {
					c.cnt.Malformed.Add(1)
					continue
				}
				st := c.sess.Load()
				if st != nil && h.Receiver != st.LocalIndex {
					// Sent before the server switched to our new session?
					st = c.prev.Load()
					if st != nil && (h.Receiver != st.LocalIndex || now.UnixNano() > c.prevUntil.Load()) {
						st = nil
					}
				}
				if st == nil {
					c.cnt.UnknownSess.Add(1)
					continue
				}
				m, err := o.Receive(st, pkt, h, now, &c.cnt, deliverNow)
				if err != nil {
					switch {
					case errors.Is(err, session.ErrDuplicate):
						p.CountRx(len(pkt)) // an authentic copy
						p.Duplicates.Add(1)
					case errors.Is(err, session.ErrTooOld):
						p.CountRx(len(pkt))
					case errors.Is(err, session.ErrAuth):
						c.warn.Warn("auth", "packet failed authentication, dropped (forged, or corrupted on the way)", "path", p.cfg.Remote)
					}
					continue
				}
				// Only authentic packets count on the path: its counts
				// steer the scheduler through the loss they show. At
				// once: a probe answered below carries the count.
				p.CountRx(len(pkt))
				authentic = true
				if st.Reorder != nil {
					// Every counter takes its place; only data waits.
					if m.Kind == wire.MsgData {
						st.Reorder.Push(h.Counter, m.Flow, m.Body, now)
						heard = true
						continue
					}
					st.Reorder.Push(h.Counter, 0, nil, now)
				}
				switch {
				case m.Kind == wire.MsgProbe && m.Probe.Path == p.ID:
					reply := p.OnProbe(m.Probe, now)
					if pr, err := sl.SealProbe(st, wire.MsgProbeReply, reply); err == nil {
						c.send(p, pr)
					}
				case m.Kind == wire.MsgProbeReply && m.Probe.Path == p.ID:
					p.OnProbeReply(m.Probe, now)
				case m.Kind == wire.MsgFlow:
					if f := lookup(m.Flow); f != nil {
						c.flowFate(f, m.Status, now)
					}
					heard = true
				default:
					if m.Kind == wire.MsgData {
						f := lastFlow
						if f == nil || f.id != m.Flow {
							if f = lookup(m.Flow); f != nil {
								f.lastActive.Store(now.UnixNano())
								lastFlow = f
							}
						}
						if f != nil {
							if !f.acked.Load() {
								f.acked.Store(true) // a reply: the server has the flow
							}
							out = append(out, f.localMsg(m.Body, &scratch))
							outFr = append(outFr, f.fr)
						}
					}
					heard = true
				}
			case wire.TypeResponse:
				// Handshake messages are not counted on a path: the
				// server does not count them either.
				c.handleResponse(pkt)
			case wire.TypeCookie:
				c.handleCookie(pkt)
			default:
				c.cnt.Malformed.Add(1)
			}
		}
		if rxPackets > 0 {
			c.cnt.RxPackets.Add(uint64(rxPackets))
			c.cnt.RxBytes.Add(uint64(rxBytes))
		}
		if authentic {
			c.lastAuth.Store(now.UnixNano())
		}
		if heard {
			p.OnHeard(now)
		}
		// One write per run of datagrams for the same front.
		for i := 0; i < len(out); {
			j := i + 1
			for j < len(out) && outFr[j] == outFr[i] {
				j++
			}
			c.writeLocal(outFr[i], out[i:j])
			i = j
		}
	}
}

// flowFate takes the server's word on flow f: open, or refused and why.
func (c *Client) flowFate(f *flow, status byte, now time.Time) {
	if status == wire.FlowOK {
		f.acked.Store(true)
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
	sent, bytes, err := udpio.Write(fr.conn, msgs)
	fr.stats.rx.Add(uint64(sent))
	c.cnt.Delivered.Add(uint64(sent))
	c.cnt.DeliveredBy.Add(uint64(bytes))
	switch {
	case err == nil:
	case errors.Is(err, udpio.ErrQueueFull):
		c.cnt.QueueFull.Add(uint64(len(msgs) - sent))
		c.warn.Warn("queue-full", "local send buffer full: datagrams for applications dropped")
	default:
		c.cnt.SendErrors.Add(uint64(len(msgs) - sent))
	}
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
		c.cnt.HandshakeRply.Add(1)
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
		// A new session from scratch (the server restarted): it knows no
		// flow, so every flow names its target again.
		c.flowMu.RLock()
		for _, f := range c.byID {
			f.acked.Store(false)
			f.refusedUntil.Store(0)
		}
		c.flowMu.RUnlock()
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
		if pv := c.prev.Swap(old); pv != nil && pv.Reorder != nil {
			pv.Reorder.Stop()
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
	c.probeAll(sl, st, time.Now())
	c.sendEarly(sl, st, early)
	c.once.Do(func() { close(c.up) })
}

// handshake starts a new session: an initiation on every path.
func (c *Client) handshake(now time.Time) {
	in, pkt := c.initiate(now, false)
	if in != nil {
		c.sendAll(pkt)
	}
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
	in, err := handshake.InitiateWith(c.cfg.Key, handshake.Hello{Mode: mode, Ciphers: c.cfg.Cipher.Offer(), FEC: shape}, now)
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

// probeAll sends a probe on every path, each sealed for its path.
func (c *Client) probeAll(sl *session.Sealer, st *session.State, now time.Time) {
	for _, p := range c.pathList() {
		if pkt, err := sl.SealProbe(st, wire.MsgProbe, p.Probe(now)); err == nil {
			c.send(p, pkt)
		}
	}
}

// tickPaths advances every path's state machine and logs each change.
func (c *Client) tickPaths(now time.Time) {
	for _, p := range c.pathList() {
		if changed, from, to, reason := p.Tick(now); changed {
			c.log.Info("path state", "path", p.cfg.Remote, "from", from.String(), "to", to.String(), "reason", reason)
		}
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
// the old one keeps carrying traffic in case it comes back.
func (c *Client) timers(ctx context.Context) {
	c.handshake(time.Now())
	lastHS := time.Now()
	probe := time.NewTicker(c.cfg.ProbeInterval)
	defer probe.Stop()
	// In failover mode the path carrying the data is probed five times as
	// often, so that its death is suspected, and copies start on the next
	// path, within about a fifth of a probe interval.
	var fast <-chan time.Time
	if c.cfg.Mode == sched.Failover {
		t := time.NewTicker(c.cfg.ProbeInterval / fastProbes)
		defer t.Stop()
		fast = t.C
	}
	sl := session.NewSealer()
	lastExpire := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-fast:
			// A path that sent anything but our probes since the last tick
			// carries data.
			st := c.sess.Load()
			for _, p := range c.pathList() {
				if st != nil && p.TxPackets.Load() != p.fastTx {
					if pkt, err := sl.SealProbe(st, wire.MsgProbe, p.Probe(now)); err == nil {
						c.send(p, pkt)
					}
				}
				p.fastTx = p.TxPackets.Load()
			}
		case now := <-probe.C:
			st := c.sess.Load()
			if st != nil {
				c.probeAll(sl, st, now)
			}
			for _, p := range c.pathList() {
				p.fastTx = p.TxPackets.Load()
			}
			c.tickPaths(now)
			silent := st != nil && now.Sub(time.Unix(0, c.lastAuth.Load())) > c.cfg.DeadAfter
			switch {
			case (st == nil || silent) && now.Sub(lastHS) >= c.cfg.HandshakeRetry:
				if silent {
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
	if pv := c.prev.Load(); pv != nil && now.UnixNano() > c.prevUntil.Load() && c.prev.CompareAndSwap(pv, nil) && pv.Reorder != nil {
		pv.Reorder.Stop()
	}
	c.flowMu.Lock()
	defer c.flowMu.Unlock()
	for peer, f := range c.byPeer {
		if now.Sub(time.Unix(0, f.lastActive.Load())) > c.cfg.FlowTimeout {
			delete(c.byPeer, peer)
			delete(c.byID, f.id)
			c.cnt.FlowsGone.Add(1)
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

// holdEarly keeps datagrams read before the first session is up (bounded in
// count, bytes and age), so an application's first packets are not lost to
// the handshake. It returns the session instead if one came up meanwhile.
func (c *Client) holdEarly(fr *front, msgs []udpio.Msg) *session.State {
	c.earlyMu.Lock()
	defer c.earlyMu.Unlock()
	if st := c.sess.Load(); st != nil {
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
	var out []udpio.Msg
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
		f.lastActive.Store(time.Now().UnixNano())
		if pkts, withTarget, ok := c.sealFlow(sl, st, f, e.data, maxPlain); ok {
			out = c.sendLive(pkts, out, c.cfg.Mode == sched.FEC || withTarget)
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
