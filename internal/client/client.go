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

	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/metrics"
	pathpkg "github.com/mptunnel/mptunnel/internal/path"
	"github.com/mptunnel/mptunnel/internal/ratelog"
	"github.com/mptunnel/mptunnel/internal/session"
	"github.com/mptunnel/mptunnel/internal/udpio"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// PathConfig is one way to the server.
type PathConfig struct {
	Remote string // host:port of a bridge or of the server itself
	Dev    string // optional local interface
	From   string // optional local source address
}

// Config configures a Client. Zero fields take the defaults given.
type Config struct {
	Listen string // address local applications send to (127.0.0.1:3000)
	Paths  []PathConfig
	Key    handshake.Key

	MTU            int           // largest IP packet put on a path (1400)
	Window         int           // replay window in packets (replay.DefaultSize)
	MaxFlows       int           // local peers at once (256)
	FlowTimeout    time.Duration // an idle local peer is forgotten after this (60s)
	ProbeInterval  time.Duration // a probe on every path this often (250ms)
	DeadAfter      time.Duration // no authentic packet for this long: handshake again (1.5s)
	HandshakeRetry time.Duration // a new handshake when none answered (1s)
	ResolveEvery   time.Duration // how often a down path's host name is looked up again (5s)
	Resolver       *net.Resolver // for host names (net.DefaultResolver)
	Logger         *slog.Logger
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
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Client is a running mpclient. Create one with Listen, run it with Serve.
type Client struct {
	cfg   Config
	log   *slog.Logger
	warn  ratelog.Logger
	local *net.UDPConn
	paths []*path
	v6    bool
	cnt   metrics.Counters

	sess     atomic.Pointer[session.State]
	lastAuth atomic.Int64  // unix ns of the last authentic packet from the server
	up       chan struct{} // closed when the first session is up
	once     sync.Once

	hsMu    sync.Mutex
	pending map[uint32]*pendingHS

	flowMu  sync.RWMutex
	byPeer  map[netip.AddrPort]*flow
	byID    map[uint32]*flow
	nextID  uint32
	closing atomic.Bool

	wg sync.WaitGroup
}

type pendingHS struct {
	in   *handshake.Initiation
	sent time.Time
}

type path struct {
	*pathpkg.Link
	cfg    PathConfig
	remote atomic.Pointer[netip.AddrPort] // changes when a host name resolves anew
	conn   *net.UDPConn
}

type flow struct {
	id         uint32
	peer       netip.AddrPort
	lastActive atomic.Int64
}

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
		byPeer:  make(map[netip.AddrPort]*flow),
		byID:    make(map[uint32]*flow),
	}
	c.warn.Log = cfg.Logger
	if len(cfg.Paths) > 255 {
		return nil, errors.New("client: more than 255 paths")
	}
	for i, pc := range cfg.Paths {
		p, err := openPath(cfg.Resolver, pc)
		if err != nil {
			c.closeSockets()
			return nil, err
		}
		if a := p.remote.Load().Addr(); a.Is6() && !a.Is4In6() {
			c.v6 = true
		}
		p.Link = pathpkg.NewLink(uint8(i), pathpkg.Params{ProbeInterval: cfg.ProbeInterval}, time.Now())
		c.paths = append(c.paths, p)
	}
	laddr, err := net.ResolveUDPAddr("udp", cfg.Listen)
	if err != nil {
		c.closeSockets()
		return nil, fmt.Errorf("bad listen address %s: %w", cfg.Listen, err)
	}
	c.local, err = net.ListenUDP("udp", laddr)
	if err != nil {
		c.closeSockets()
		return nil, fmt.Errorf("cannot listen on %s: %w", cfg.Listen, err)
	}
	_ = udpio.SetBuffers(c.local, udpio.DefaultBuffer) // best effort: the kernel caps it
	return c, nil
}

func openPath(r *net.Resolver, pc PathConfig) (*path, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rap, err := resolve(ctx, r, pc.Remote, "ip")
	if err != nil {
		return nil, fmt.Errorf("cannot resolve path %s: %w", pc.Remote, err)
	}
	ra := net.UDPAddrFromAddrPort(rap)
	var la *net.UDPAddr
	if pc.From != "" {
		ip, err := netip.ParseAddr(pc.From)
		if err != nil {
			return nil, fmt.Errorf("path %s: bad source address %q", pc.Remote, pc.From)
		}
		la = net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0))
	}
	network := "udp"
	if ra.IP.To4() != nil {
		network = "udp4"
	}
	conn, err := listenPath(network, la, pc.Dev)
	if err != nil {
		return nil, fmt.Errorf("path %s: %w", pc.Remote, err)
	}
	_ = udpio.SetBuffers(conn, udpio.DefaultBuffer)
	p := &path{cfg: pc, conn: conn}
	p.remote.Store(&rap)
	return p, nil
}

func (c *Client) closeSockets() {
	for _, p := range c.paths {
		p.conn.Close()
	}
	if c.local != nil {
		c.local.Close()
	}
}

// Addr returns the address local applications send to.
func (c *Client) Addr() netip.AddrPort {
	return c.local.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Counters returns the client's counters.
func (c *Client) Counters() *metrics.Counters { return &c.cnt }

// Up is closed once the first session with the server is established.
func (c *Client) Up() <-chan struct{} { return c.up }

// Serve runs until ctx ends, then tells the server the session is over and
// frees every socket and goroutine.
func (c *Client) Serve(ctx context.Context) error {
	for _, p := range c.paths {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.pathLoop(p)
		}()
	}
	c.wg.Add(3)
	go func() {
		defer c.wg.Done()
		c.localLoop()
	}()
	go func() {
		defer c.wg.Done()
		c.resolver(ctx)
	}()
	go func() {
		defer c.wg.Done()
		c.timers(ctx)
	}()
	<-ctx.Done()
	c.closing.Store(true)
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

// sendAll sends pkt on every path.
func (c *Client) sendAll(pkt []byte) {
	for _, p := range c.paths {
		c.send(p, pkt)
	}
}

// sendLive sends pkt on every path that is not down, or on every path when
// all are down (a path may be back before its probes say so).
func (c *Client) sendLive(pkt []byte) {
	live := 0
	for _, p := range c.paths {
		if !p.Down() {
			live++
		}
	}
	for _, p := range c.paths {
		if live == 0 || !p.Down() {
			c.send(p, pkt)
		}
	}
}

func (c *Client) send(p *path, pkt []byte) {
	p.CountTx(len(pkt))
	if _, err := p.conn.WriteToUDPAddrPort(pkt, *p.remote.Load()); err != nil {
		c.cnt.SendErrors.Add(1)
		return
	}
	c.cnt.TxPackets.Add(1)
	c.cnt.TxBytes.Add(uint64(len(pkt)))
}

// localLoop carries local applications' datagrams into the tunnel.
func (c *Client) localLoop() {
	sl := session.NewSealer()
	for {
		n, peer, err := c.local.ReadFromUDPAddrPort(sl.Payload())
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		st := c.sess.Load()
		if st == nil {
			c.cnt.NoSession.Add(1)
			c.warn.Warn("nosession", "datagram dropped: no session with the server yet")
			continue
		}
		f := c.flowFor(peer)
		if f == nil {
			continue
		}
		f.lastActive.Store(time.Now().UnixNano())
		pkts, err := sl.Seal(st, f.id, n, wire.MaxPlaintext(c.cfg.MTU, c.v6))
		if err != nil {
			if errors.Is(err, session.ErrOversize) {
				c.cnt.Oversize.Add(1)
				c.warn.Warn("oversize", "datagram too large for the tunnel, dropped", "from", peer.String(), "limit", wire.MaxDatagram)
			}
			continue
		}
		c.cnt.Forwarded.Add(1)
		for _, pkt := range pkts {
			c.sendLive(pkt)
		}
	}
}

func (c *Client) flowFor(peer netip.AddrPort) *flow {
	c.flowMu.RLock()
	f := c.byPeer[peer]
	c.flowMu.RUnlock()
	if f != nil {
		return f
	}
	c.flowMu.Lock()
	defer c.flowMu.Unlock()
	if f = c.byPeer[peer]; f != nil {
		return f
	}
	if len(c.byPeer) >= c.cfg.MaxFlows {
		c.cnt.FlowLimit.Add(1)
		c.warn.Warn("flows", "local peer refused: flow limit reached", "peer", peer.String(), "limit", c.cfg.MaxFlows)
		return nil
	}
	c.nextID++
	f = &flow{id: c.nextID, peer: peer}
	c.byPeer[peer] = f
	c.byID[f.id] = f
	c.log.Debug("flow open", "flow", f.id, "peer", peer.String())
	return f
}

// pathLoop reads what the server sends on one path.
func (c *Client) pathLoop(p *path) {
	buf := make([]byte, wire.MaxPacket+1)
	var o session.Opener
	sl := session.NewSealer()
	deliver := func(id uint32, d []byte) {
		c.flowMu.RLock()
		f := c.byID[id]
		c.flowMu.RUnlock()
		if f == nil {
			return
		}
		f.lastActive.Store(time.Now().UnixNano())
		if _, err := c.local.WriteToUDPAddrPort(d, f.peer); err != nil {
			c.cnt.SendErrors.Add(1)
			return
		}
		c.cnt.Delivered.Add(1)
		c.cnt.DeliveredBy.Add(uint64(len(d)))
	}
	for {
		n, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if netip.AddrPortFrom(from.Addr().Unmap(), from.Port()) != *p.remote.Load() {
			// Only the path's own remote end may talk to this socket.
			c.cnt.Malformed.Add(1)
			continue
		}
		c.cnt.RxPackets.Add(1)
		c.cnt.RxBytes.Add(uint64(n))
		p.CountRx(n)
		pkt := buf[:n]
		switch wire.Type(pkt) {
		case wire.TypeTransport:
			h, err := wire.ParseHeader(pkt)
			if err != nil {
				c.cnt.Malformed.Add(1)
				continue
			}
			st := c.sess.Load()
			if st == nil || h.Receiver != st.LocalIndex {
				c.cnt.UnknownSess.Add(1)
				continue
			}
			now := time.Now()
			m, err := o.Receive(st, pkt, h, now, &c.cnt, deliver)
			if err != nil {
				if errors.Is(err, session.ErrDuplicate) {
					p.Duplicates.Add(1)
				}
				continue
			}
			c.lastAuth.Store(now.UnixNano())
			switch {
			case m.Kind == wire.MsgProbe && m.Probe.Path == p.ID:
				reply := p.OnProbe(m.Probe, now)
				if out, err := sl.SealProbe(st, wire.MsgProbeReply, reply); err == nil {
					c.send(p, out)
				}
			case m.Kind == wire.MsgProbeReply && m.Probe.Path == p.ID:
				p.OnProbeReply(m.Probe, now)
			default:
				if m.Kind == wire.MsgData {
					deliver(m.Flow, m.Body)
				}
				p.OnHeard(now)
			}
		case wire.TypeResponse:
			c.handleResponse(pkt)
		default:
			c.cnt.Malformed.Add(1)
		}
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
	keys, peerIdx, err := ph.in.Finish(msg)
	if err != nil {
		c.cnt.HandshakeBad.Add(1)
		c.warn.Warn("handshake", "handshake response does not authenticate (wrong key on one end?)")
		return
	}
	st, err := session.New(keys, peerIdx, c.cfg.Window)
	if err != nil {
		c.log.Error("session setup failed", "err", err)
		return
	}
	st.LocalIndex = idx
	clear(c.pending)
	c.lastAuth.Store(time.Now().UnixNano())
	old := c.sess.Swap(st)
	c.cnt.HandshakeOK.Add(1)
	c.log.Info("session up", "session", fmt.Sprintf("%08x", peerIdx), "rtt", time.Since(ph.sent).Round(time.Microsecond).String(), "replaces", old != nil)
	// Tell the server every path at once.
	c.probeAll(session.NewSealer(), st, time.Now())
	c.once.Do(func() { close(c.up) })
}

func (c *Client) handshake(now time.Time) {
	in, err := handshake.Initiate(c.cfg.Key, 0, now)
	if err != nil {
		c.log.Error("handshake", "err", err)
		return
	}
	c.hsMu.Lock()
	for idx, ph := range c.pending {
		if now.Sub(ph.sent) > 5*c.cfg.HandshakeRetry {
			delete(c.pending, idx)
		}
	}
	c.pending[in.Index] = &pendingHS{in: in, sent: now}
	c.hsMu.Unlock()
	c.sendAll(wire.AppendInit(nil, in.Msg))
}

// probeAll sends a probe on every path, each sealed for its path.
func (c *Client) probeAll(sl *session.Sealer, st *session.State, now time.Time) {
	for _, p := range c.paths {
		if pkt, err := sl.SealProbe(st, wire.MsgProbe, p.Probe(now)); err == nil {
			c.send(p, pkt)
		}
	}
}

// tickPaths advances every path's state machine and logs each change.
func (c *Client) tickPaths(now time.Time) {
	for _, p := range c.paths {
		if changed, from, to, reason := p.Tick(now); changed {
			c.log.Info("path state", "path", p.cfg.Remote, "from", from.String(), "to", to.String(), "reason", reason)
		}
	}
}

// PathStates returns each path's health, in the order of the path list.
func (c *Client) PathStates() []pathpkg.Stats {
	out := make([]pathpkg.Stats, len(c.paths))
	for i, p := range c.paths {
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
	sl := session.NewSealer()
	lastExpire := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-probe.C:
			st := c.sess.Load()
			if st != nil {
				c.probeAll(sl, st, now)
			}
			c.tickPaths(now)
			silent := st != nil && now.Sub(time.Unix(0, c.lastAuth.Load())) > c.cfg.DeadAfter
			if (st == nil || silent) && now.Sub(lastHS) >= c.cfg.HandshakeRetry {
				if silent {
					c.warn.Warn("silent", "no answer from the server; handshaking again", "silent_for", now.Sub(time.Unix(0, c.lastAuth.Load())).Round(time.Millisecond).String())
				}
				c.handshake(now)
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
