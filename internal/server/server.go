// Package server is the mpserver role: it accepts sessions from any number of
// clients over any number of paths, drops duplicate copies, and forwards each
// flow's datagrams to the target from a socket of the flow's own, so the
// target sees one distinct peer per client flow. Replies go back over every
// path the session was recently seen on.
//
// Nothing unauthenticated creates state or gets an answer: a packet must pass
// the handshake's key check or a session's AEAD before the server acts on it.
package server

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mptunnel/mptunnel/internal/aead"
	"github.com/mptunnel/mptunnel/internal/allow"
	"github.com/mptunnel/mptunnel/internal/cookie"
	"github.com/mptunnel/mptunnel/internal/fec"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/metrics"
	"github.com/mptunnel/mptunnel/internal/peer"
	"github.com/mptunnel/mptunnel/internal/ratelimit"
	"github.com/mptunnel/mptunnel/internal/ratelog"
	"github.com/mptunnel/mptunnel/internal/reorder"
	"github.com/mptunnel/mptunnel/internal/reset"
	"github.com/mptunnel/mptunnel/internal/sched"
	"github.com/mptunnel/mptunnel/internal/session"
	"github.com/mptunnel/mptunnel/internal/status"
	"github.com/mptunnel/mptunnel/internal/stream"
	"github.com/mptunnel/mptunnel/internal/udpio"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// Config configures a Server. Zero fields take the defaults given.
type Config struct {
	Listen string // address for paths, e.g. ":2000"
	Target string // host:port of the default target: where flows that name none go ("" for none)
	// Allow lists the targets, besides the default one, that clients may
	// name for their flows (internal/allow rules, such as "10.0.0.0/8:53").
	// Names are resolved here, with Resolver (net.DefaultResolver).
	Allow    []string
	Resolver *net.Resolver
	Key      handshake.Key // the shared key
	// OldKeys are further keys clients may still use while they move to Key
	// (key rotation); new sessions under them are accepted too.
	OldKeys []handshake.Key
	// Private, when set, is the server's private key: clients then make
	// identity handshakes, each let in by its public key (Clients), and
	// Key, when not the zero Key, is their pre-shared key as well.
	Private *handshake.PrivateKey
	// Clients are the clients let in by their public keys (with Private).
	Clients []Client
	// AllowShared lets a server with Private take shared-key handshakes
	// too, from any holder of Key (while clients move to key pairs).
	AllowShared bool
	Cipher      aead.Cipher // the transport cipher required, or aead.Auto to follow the client's offer
	// NoRepair turns repair off: the server neither asks a client for what
	// every path lost nor answers a client's requests.
	NoRepair bool
	// NoParity turns off parity on top of copies (redundant mode, with
	// repair on): the server sends none; it still uses a client's.
	NoParity bool
	// Reorder, when positive, holds datagrams from clients that arrive
	// ahead of earlier ones for up to this long, to hand them on in order.
	Reorder time.Duration
	// HandshakeLoad is the rate of initiations a second beyond which the
	// server is under load: it then answers an initiation whose source
	// address is not proven with a cookie reply, and limits each source to
	// 20 handshakes a second (1000).
	HandshakeLoad int

	MTU         int // largest IP packet put on a path (1400)
	Window      int // replay window in packets (replay.DefaultSize)
	MaxSessions int // concurrent sessions, those a rekey replaced and not yet freed among them (1024)
	// MaxSessionsPerAddr bounds the clients (sessions and the ones their
	// rekeys made) whose first initiation came from one address (a
	// quarter of MaxSessions, at least 1): one address cannot take every
	// place.
	MaxSessionsPerAddr int
	MaxFlows           int           // flows per session (256); at the limit the least recently used idle one makes room
	MaxPaths           int           // paths per session (wire.MaxPaths, which is also the most)
	SessionTimeout     time.Duration // a session with no authentic packet for this long is freed (60s)
	FlowTimeout        time.Duration // a flow idle this long in both directions is freed (60s; peer.ShortFlowTimeout for a short one)
	MaxStreams         int           // TCP streams a client has open at once (stream.DefaultMaxStreams)
	DialTimeout        time.Duration // how long a stream's TCP dial of its target may take (stream.DefaultDialTimeout)
	ProbeInterval      time.Duration // each path is probed this often (250ms)
	// RekeyGrace is how long a session replaced by a rekey still takes the
	// packets the client sent under it before it switched (10s).
	RekeyGrace time.Duration
	Net        udpio.Network // where sockets come from (the operating system's, with PKTINFO)
	Logger     *slog.Logger
}

func (c *Config) setDefaults() {
	peer.Or(&c.HandshakeLoad, 1000)
	peer.Default(&c.MTU, wire.DefaultMTU)
	peer.Or(&c.MaxSessions, DefaultMaxSessions)
	peer.Or(&c.MaxSessionsPerAddr, max(c.MaxSessions/4, 1))
	peer.Or(&c.MaxFlows, peer.DefaultMaxFlows)
	peer.Or(&c.MaxPaths, wire.MaxPaths)
	c.MaxPaths = min(c.MaxPaths, wire.MaxPaths)
	peer.Or(&c.SessionTimeout, peer.DefaultSessionTimeout)
	peer.Or(&c.FlowTimeout, peer.DefaultFlowTimeout)
	peer.Or(&c.MaxStreams, stream.DefaultMaxStreams)
	peer.Or(&c.DialTimeout, stream.DefaultDialTimeout)
	peer.Or(&c.ProbeInterval, peer.DefaultProbeInterval)
	peer.Or(&c.RekeyGrace, 10*time.Second)
	peer.Default[udpio.Network](&c.Net, udpio.OS{Options: udpio.Options{PktInfo: true}})
	peer.Default(&c.Logger, slog.Default())
	peer.Default(&c.Resolver, net.DefaultResolver)
}

// DefaultMaxSessions is how many sessions a server holds unless told
// otherwise.
const DefaultMaxSessions = 1024

// Server is a running mpserver. Create one with Listen, run it with Serve.
type Server struct {
	cfg       Config
	log       *slog.Logger
	warn      ratelog.Logger
	conn      udpio.Conn
	target    netip.AddrPort // the default target; invalid when there is none
	rules     allow.Rules
	ctx       context.Context // Serve's, for what flows start
	statsMu   sync.Mutex
	byTarget  map[string]*targetStats  // traffic by target, for status
	byStream  map[string]*stream.Stats // TCP streams by target ("tcp:HOST:PORT"), for status
	resolving chan struct{}            // a token per name being resolved
	resp      *handshake.Responder
	cookies   *cookie.Checker
	cookieBuf []byte
	limiter   ratelimit.Limiter
	// Stateless resets (Unknown): made with the current key, bounded per
	// source address and over all; resetBuf is the read goroutine's.
	resetKey atomic.Pointer[reset.Key]
	resetSrc ratelimit.Limiter
	resetAll ratelimit.Bucket
	resetBuf []byte
	// Identities: the client list (SetClients replaces it) and the shared
	// keys in the order the cookie checker holds their mac1 keys.
	clients atomic.Pointer[clientList]
	psks    atomic.Pointer[[]handshake.Key]
	// Initiations counted this second and the one before (read goroutine).
	loadStart           time.Time
	loadCount, loadPrev int
	cnt                 metrics.Counters
	w                   peer.Writer // counts into cnt, warns through warn

	mu       sync.RWMutex
	sessions map[uint32]*sess
	// table is a copy of sessions for the read goroutine's lookups, made
	// anew on every change (s.mu held): one atomic load a packet, no lock,
	// so a flood of packets naming sessions costs no lock traffic.
	table    atomic.Pointer[map[uint32]*sess]
	byAddr   map[netip.Addr]int // lineages by the address their first initiation came from (shared-key ones)
	byClient map[string]int     // lineages by client name (identity ones)

	dirty []*flow // flows with datagrams queued in this batch; read goroutine only
	// arena holds the datagrams of this batch that were put back together
	// (their buffers are reused at once): queued with the others, they
	// reach the target in the order they were sent. Read goroutine only.
	arena []byte

	wg sync.WaitGroup
}

type sess struct {
	index   uint32
	st      *session.State
	created time.Time
	lastRx  atomic.Int64 // unix nanos of the last authentic packet
	v6      atomic.Bool  // some path is IPv6: smaller packets

	srv    *Server
	pathMu sync.Mutex
	paths  atomic.Pointer[[]*peer.Path]

	flowMu sync.Mutex
	flows  map[uint32]*flow
	closed bool
	// The last flow told FlowClosed for plain data it sent after the flow
	// was freed, and when (flowMu guards them): one answer per retell.
	goneID uint32
	goneAt time.Time

	lastData atomic.Pointer[peer.Path] // the path the client's latest datagram came by first
	spread   *peer.Spreader            // the session's mode, putting its packets on its paths

	// deliverFn takes the session's datagrams to their flows; made once so
	// the receive path allocates nothing per packet.
	deliverFn func(flow uint32, datagram []byte)

	// Rekeying (docs/PROTOCOL.md). pred is the session this one was made
	// to succeed, until the client confirms it with its first authentic
	// packet under it: then this session takes pred's flows. next is the
	// successor made for this session and not yet confirmed (s.mu guards
	// it). succ is where this session's flows went once it was succeeded
	// (flowMu guards it); it then lives on until retireAt (unix ns) for the
	// packets still on their way.
	pred     atomic.Pointer[sess]
	next     *sess
	succ     *sess
	retireAt atomic.Int64
	lin      *lineage // s.mu guards its members
}

type flow struct {
	id       uint32
	s        atomic.Pointer[sess] // the session that carries the flow; a rekey moves it
	name     string               // the target as the client named it, for logs and status
	ts       *targetStats         // its target's traffic
	act      peer.Activity        // its use: when last active, datagrams each way (the reclaim rule)
	pending  []udpio.Msg          // datagrams for the target queued by the read goroutine
	statusAt atomic.Int64         // unix ns the client was last told the flow's fate

	// conn is the flow's socket to its target, set once it is open (ready);
	// until then datagrams wait, a few, while the target's name resolves.
	// A refused flow never gets one: status says why.
	conn   udpio.Conn
	ready  atomic.Bool
	status atomic.Uint32 // wire.FlowOK or the reason it was refused
	waitMu sync.Mutex
	wait   [][]byte
	closed bool // waitMu guards it
}

// Listen checks cfg, resolves the target and binds the path socket.
func Listen(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if cfg.MTU < wire.MinMTU || cfg.MTU > wire.MaxPacket {
		return nil, fmt.Errorf("server: mtu %d outside %d..%d", cfg.MTU, wire.MinMTU, wire.MaxPacket)
	}
	var tap netip.AddrPort
	if cfg.Target != "" {
		target, err := net.ResolveUDPAddr("udp", cfg.Target)
		if err != nil {
			return nil, fmt.Errorf("cannot resolve target %s: %w", cfg.Target, err)
		}
		tap = target.AddrPort()
		tap = netip.AddrPortFrom(tap.Addr().Unmap(), tap.Port())
	}
	rules, err := allow.ParseAll(cfg.Allow)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if !tap.IsValid() && len(rules) == 0 {
		return nil, errors.New("server: no target and no allow rules: clients could reach nothing")
	}
	conn, err := peer.Listen(cfg.Net, cfg.Listen)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		conn:      conn,
		target:    tap,
		rules:     rules,
		resolving: make(chan struct{}, maxResolving),
		resp:      newResponder(cfg, time.Now()),
		sessions:  make(map[uint32]*sess),
		byAddr:    make(map[netip.Addr]int),
		byClient:  make(map[string]int),
		resetSrc:  ratelimit.Limiter{Rate: resetRate, Burst: resetBurst},
		resetAll:  ratelimit.Bucket{Rate: resetRateAll, Burst: resetBurstAll},
	}
	s.resetKey.Store(reset.NewKey(cfg.Key))
	s.table.Store(&map[uint32]*sess{})
	s.warn.Log = cfg.Logger
	s.w = peer.Writer{Cnt: &s.cnt, Warn: &s.warn}
	if cfg.Private != nil {
		if err := s.setupIdentity(); err != nil {
			conn.Close()
			return nil, err
		}
	}
	s.psks.Store(&[]handshake.Key{cfg.Key})
	if s.cookies, err = cookie.NewChecker(s.mac1Key(cfg.Key)); err != nil {
		conn.Close()
		return nil, err
	}
	if len(cfg.OldKeys) > 0 {
		s.SetKeys(append([]handshake.Key{cfg.Key}, cfg.OldKeys...))
	}
	return s, nil
}

// Close frees the socket Listen bound, for a server whose Serve never ran;
// Serve frees it itself when its context ends. Close may be called more
// than once, and after Serve.
func (s *Server) Close() error {
	s.conn.Close()
	return nil
}

// Addr returns the address paths reach the server on.
func (s *Server) Addr() netip.AddrPort {
	return s.conn.LocalAddr()
}

// Counters returns the server's counters.
func (s *Server) Counters() *metrics.Counters { return &s.cnt }

// Sessions returns the number of live sessions.
func (s *Server) Sessions() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.sessions)
}

// RecentHandshakes returns how many initiations the server remembers to
// refuse their replays.
func (s *Server) RecentHandshakes() int { return s.resp.Recent() }

// Flows returns the number of live flows over all sessions.
func (s *Server) Flows() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, ss := range s.sessions {
		ss.flowMu.Lock()
		n += len(ss.flows)
		ss.flowMu.Unlock()
	}
	return n
}

// Serve forwards until ctx ends, then frees every socket and goroutine.
func (s *Server) Serve(ctx context.Context) error {
	f := udpio.FeaturesOf(s.conn)
	s.log.Info("server listening", "addr", s.Addr().String(), "target", s.target.String(), "allow", len(s.rules),
		"batch", f.Batch, "gso", f.GSO, "gro", f.GRO, "pktinfo", f.PktInfo)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.ctx = ctx
	done := make(chan struct{})
	s.wg.Go(func() {
		s.readLoop()
		close(done)
	})
	s.wg.Go(func() { s.janitor(ctx) })
	s.wg.Go(func() { s.prober(ctx) })
	var err error
	select {
	case <-ctx.Done():
	case <-done:
		err = errors.New("server: path socket closed")
	}
	cancel()
	s.conn.Close()
	s.mu.Lock()
	for id, ss := range s.sessions {
		s.closeSessionLocked(id, ss)
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// batchSize is how many packets one read system call moves.
const batchSize = 64

func (s *Server) readLoop() {
	in := make([]udpio.Msg, batchSize)
	for i := range in {
		in[i].Buf = make([]byte, wire.MaxPacket+1)
	}
	r := peer.NewReceiver(s.w)
	for {
		n, ok := udpio.Read(s.conn, in)
		if !ok {
			return
		}
		// One clock reading for the batch: it arrived at once.
		now := time.Now()
		var bytes uint64
		for i := range in[:n] {
			m := &in[i]
			bytes += uint64(m.N)
			from := netip.AddrPortFrom(m.Addr.Addr().Unmap(), m.Addr.Port())
			r.Packet(s, m.Buf[:m.N], nil, from, m.Local, now)
		}
		r.EndBatch(now)
		s.cnt.RxPackets.Add(uint64(n))
		s.cnt.RxBytes.Add(bytes)
		s.flush(now)
	}
}

// Session returns the session receiver names (peer.Endpoint).
func (s *Server) Session(receiver uint32, now time.Time) peer.Session {
	if ss := (*s.table.Load())[receiver]; ss != nil {
		return ss
	}
	return nil
}

// Handshake takes a handshake packet (peer.Endpoint): a server answers
// initiations only.
func (s *Server) Handshake(pkt []byte, from netip.AddrPort, local netip.Addr, now time.Time) {
	if t := wire.Type(pkt); t != wire.TypeInit && t != wire.TypeInitIK {
		s.cnt.Malformed.Add(1)
		return
	}
	s.handleInit(pkt, from, local, now)
}

// Bounds on stateless resets: per source address (per /64 for IPv6), and
// over all sources.
const (
	resetRate     = 10
	resetBurst    = 5
	resetRateAll  = 1000
	resetBurstAll = 100
)

// Unknown answers a transport packet that names no session here (the
// server restarted, or freed the session) with a stateless reset
// (peer.Endpoint), on the path it came by: the client handshakes again at
// once instead of after its silence timeout. The reset is smaller than any
// transport packet and sent at a bounded rate, so it amplifies nothing;
// only a session this server does not hold draws one, so it cannot end a
// live one.
func (s *Server) Unknown(receiver uint32, size int, from netip.AddrPort, local netip.Addr, now time.Time) {
	if size <= wire.ResetLen || !s.resetSrc.Allow(from.Addr(), now) || !s.resetAll.Allow(now) {
		return
	}
	s.resetBuf = s.resetKey.Load().Append(s.resetBuf[:0], receiver)
	s.send(s.resetBuf, from, local)
	s.cnt.ResetsSent.Add(1)
	s.warn.WarnLazy("reset", "packet for a session this server does not hold: answered with a reset, the client handshakes again",
		func() []any { return []any{"from", from.String()} })
}

// The session as the receive path sees it (peer.Session).

func (ss *sess) State() *session.State                   { return ss.st }
func (ss *sess) Deliver() func(flow uint32, d []byte)    { return ss.deliverFn }
func (ss *sess) PathFrom(addr netip.AddrPort) *peer.Path { return ss.pathByAddr(addr) }

// Authentic takes note of an authentic packet: the session lives on, a
// rekey's session the client has used takes its predecessor's flows, and
// the path a datagram came by first is where replies prefer to go.
func (ss *sess) Authentic(p *peer.Path, kind byte, now time.Time) {
	ss.lastRx.Store(now.UnixNano())
	if ss.pred.Load() != nil {
		// The client's first authentic packet under a session made by
		// a rekey: it has the new keys, so the flows move over.
		ss.srv.adopt(ss, now)
	}
	if p != nil && (kind == wire.MsgData || kind == wire.MsgDataTo || kind == wire.MsgOpen) {
		ss.lastData.Store(p)
	}
}

// ProbePath learns or follows the path a probe names (see probed).
func (ss *sess) ProbePath(m wire.Message, _ *peer.Path, ctr uint64, from netip.AddrPort, now time.Time, sl *session.Sealer) *peer.Path {
	return ss.srv.probed(ss, m, ctr, from, now, sl)
}

// Resend puts packets the client asked for again on every usable path.
func (ss *sess) Resend(pkts [][]byte) { ss.srv.sendAll(ss, pkts, true) }

// Data queues a datagram for its flow's target.
func (ss *sess) Data(_ *peer.Path, flow uint32, body []byte, now time.Time) {
	ss.srv.queue(ss, flow, body, now)
}

// Message takes what only a client sends: flows that name their target,
// rekeys, the end of the session.
func (ss *sess) Message(p *peer.Path, m wire.Message, now time.Time) {
	s := ss.srv
	switch m.Kind {
	case wire.MsgDataTo, wire.MsgOpen:
		// A flow the client names the target of, until we tell it we
		// have it.
		tg := m.Target
		var f *flow
		if m.Kind == wire.MsgDataTo {
			f = s.queueTo(ss, m.Flow, &tg, m.Body, now)
		} else {
			f = s.flowFor(ss, m.Flow, &tg, now)
		}
		if f != nil {
			s.ackFlow(f, now)
		}
	case wire.MsgStream:
		if ss.lin != nil {
			s.streamIn(ss, m.Body)
		}
	case wire.MsgRekey:
		s.handleRekey(ss, m.Body, p, now)
	case wire.MsgClose:
		s.log.Info("session closed by client", ss.who()...)
		s.mu.Lock()
		s.closeSessionLocked(ss.index, ss)
		s.mu.Unlock()
	}
}

func (s *Server) handleInit(pkt []byte, from netip.AddrPort, local netip.Addr, now time.Time) {
	msg, _, err := wire.ParseInit(pkt)
	if err != nil {
		// Of any other length than an initiation's: nothing to answer,
		// so no answer is ever larger than what drew it.
		s.cnt.Malformed.Add(1)
		return
	}
	key, ok := s.cookies.ValidMAC1(pkt)
	ik := len(msg) == handshake.InitIKLen
	if !ok {
		// Not made with the key: one hash spent, nothing answered.
		s.cnt.HandshakeBad.Add(1)
		s.warn.Warn("handshake", "handshake refused: it does not authenticate (wrong key, or not an mptunnel client)", "from", from.String())
		return
	}
	if s.resp.Seen(msg) {
		// A copy by another path of one accepted, or a replay: known by
		// its ephemeral key before any cryptography, and not answered.
		s.cnt.HandshakeReplay.Add(1)
		return
	}
	if s.underLoad(now) {
		if !s.cookies.Valid(pkt, from, now) {
			// Prove your address first: a small, stateless answer, once
			// an initiation.
			out, err := s.cookies.Reply(s.cookieBuf[:0], pkt, from, key, now)
			switch {
			case err == nil:
				s.cookieBuf = out
				s.send(out, from, local)
				s.cnt.Cookies.Add(1)
			case errors.Is(err, cookie.ErrAnswered):
				s.cnt.HandshakeReplay.Add(1)
			}
			return
		}
		if !s.limiter.Allow(from.Addr(), now) {
			s.cnt.HandshakeRate.Add(1)
			s.warn.Warn("handshake-rate", "handshake refused: too many from this address while under load", "from", from.String())
			return
		}
	}
	// Refused before the handshake: a full server spends no key exchange
	// and no place in the memory of initiations on what it cannot take.
	// An identity handshake is bounded per client instead of per address,
	// once the client is known.
	s.mu.RLock()
	full := len(s.sessions) >= s.cfg.MaxSessions
	busy := !ik && s.byAddr[from.Addr()] >= s.cfg.MaxSessionsPerAddr
	s.mu.RUnlock()
	if full || busy {
		s.cnt.SessionLimit.Add(1)
		if full {
			s.warn.Warn("sessions", "session refused: session limit reached", "limit", s.cfg.MaxSessions, "from", from.String())
		} else {
			s.warn.Warn("sessions-addr", "session refused: this address has as many sessions as one address may", "limit", s.cfg.MaxSessionsPerAddr, "from", from.String())
		}
		return
	}
	psk := s.pskOf(key)
	a, ok := s.accept(handshake.Request{Msg: msg, From: from.Addr(), PSK: psk}, from, now)
	if !ok {
		return
	}
	ss := s.newSess(a, from, now)
	if ss == nil {
		return
	}
	s.mu.Lock()
	var c *client
	if a.IK {
		// Under s.mu, so that a client SetClients removes has no session
		// made after it ended the others.
		if c = s.admitClientLocked(a.Peer); c == nil {
			s.mu.Unlock()
			ss.st.Stop()
			return
		}
	}
	ss.lin = &lineage{origin: from.Addr(), psk: psk, streams: &streams{secret: stream.Secret(a.Keys.Recv, a.Keys.Send)}}
	if c != nil {
		// A client's rekey bound counts from its session's start too.
		ss.lin.rekeyAt = now
	}
	ss.lin.client.Store(c)
	ss.lin.streams.cur.Store(ss)
	s.addLocked(ss)
	s.mu.Unlock()
	s.cnt.HandshakeOK.Add(1)
	s.log.Info("session up", append(ss.who(), "from", from.String(), "mode", ss.spread.Mode().String(), "cipher", a.Cipher.String())...)
	out := wire.AppendResponse(make([]byte, 0, wire.ResponsePrefixLen+len(a.Response)), a.PeerIndex, a.Response)
	s.send(out, from, local)
}

// lineage is the chain of sessions one handshake began and its rekeys
// continued: one client's. s.mu guards it.
type lineage struct {
	origin  netip.Addr             // where the first initiation came from
	client  atomic.Pointer[client] // the identity handshake's client; nil for a shared-key one
	psk     handshake.Key          // the pre-shared key of its identity handshakes
	members []*sess                // in the session table: the live one, one retiring, one unconfirmed at most
	rekeyAt time.Time              // the last rekey asked for; the read goroutine's own
	streams *streams               // its client's TCP streams
}

// maxLineage is how many sessions of one lineage the table holds at once:
// the live one, the one it replaced (still taking late packets), and a
// successor the client has not confirmed yet.
const maxLineage = 3

// publishLocked makes the session table's copy for lookups; the caller
// holds s.mu.
func (s *Server) publishLocked() {
	t := make(map[uint32]*sess, len(s.sessions))
	for id, ss := range s.sessions {
		t[id] = ss
	}
	s.table.Store(&t)
}

// addLocked puts ss, whose lineage is set, in the session table; the caller
// holds s.mu.
func (s *Server) addLocked(ss *sess) {
	if len(ss.lin.members) == 0 {
		if c := ss.lin.client.Load(); c != nil {
			s.byClient[c.Name]++
		} else {
			s.byAddr[ss.lin.origin]++
		}
	}
	ss.lin.members = append(ss.lin.members, ss)
	s.sessions[ss.index] = ss
	s.publishLocked()
}

// accept runs the handshake on an initiation's Noise message from from,
// counting and logging why it is refused.
func (s *Server) accept(q handshake.Request, from netip.AddrPort, now time.Time) (handshake.Accepted, bool) {
	a, skew, err := s.resp.AcceptRequest(q, now, s.newIndex)
	switch {
	case err == nil:
		return a, true
	case errors.Is(err, handshake.ErrUnknownPeer):
		// Authentic for this server, from a key it does not let in: no
		// answer at all.
		s.cnt.HandshakeUnknown.Add(1)
		s.warn.Warn("unknown-client", "handshake refused: the client's public key is not on the list, or is disabled", "from", from.String(), "public_key", a.Peer.String())
	case errors.Is(err, handshake.ErrShared):
		s.cnt.HandshakeBad.Add(1)
		s.warn.Warn("shared", "handshake refused: a shared-key client, and this server takes its listed clients only", "from", from.String())
	case errors.Is(err, handshake.ErrReplay):
		s.cnt.HandshakeReplay.Add(1)
	case errors.Is(err, handshake.ErrSourceFull), errors.Is(err, handshake.ErrCacheFull):
		s.cnt.HandshakeRate.Add(1)
		s.warn.Warn("handshake-memory", "handshake refused: too many recent handshakes (from this address, or in all)", "from", from.String())
	case errors.Is(err, handshake.ErrBeforeStart):
		s.cnt.HandshakeStale.Add(1)
		s.warn.Warn("before-start", "handshake refused: it was made before this server started (a replay, or the client's clock is behind ours; it is accepted once our uptime passes the difference)",
			"from", from.String(), "skew", skew.Round(time.Millisecond).String())
	case errors.Is(err, handshake.ErrCipher):
		s.cnt.HandshakeBad.Add(1)
		s.warn.Warn("cipher", "handshake refused: the client offers no cipher this server accepts", "cipher", s.cfg.Cipher.String(), "from", from.String())
	case errors.Is(err, handshake.ErrStale):
		s.cnt.HandshakeStale.Add(1)
		s.warn.Warn("stale", "handshake refused: the client's clock differs from ours by more than allowed; synchronise both clocks (NTP)",
			"from", from.String(), "skew", skew.Round(time.Second).String(), "allowed", handshake.DefaultWindow.String())
	default:
		s.cnt.HandshakeBad.Add(1)
		s.warn.Warn("handshake", "handshake refused: it does not authenticate (wrong key, or not an mptunnel client)", "from", from.String())
	}
	return a, false
}

// newSess builds the session an accepted handshake asks for, or returns nil
// (counted and logged) when its mode or FEC shape is not one we know. It is
// not yet registered.
func (s *Server) newSess(a handshake.Accepted, from netip.AddrPort, now time.Time) *sess {
	st, err := session.New(a.Keys, a.Cipher, a.PeerIndex, s.cfg.Window)
	if err != nil {
		s.log.Error("session setup failed", "err", err)
		return nil
	}
	// The mode's high bits carry the fec mode's interleaving depth.
	sc, err := sched.New(sched.Mode(a.Mode&0x0f), sched.Options{})
	if err != nil {
		s.cnt.HandshakeBad.Add(1)
		s.warn.Warn("mode", "session refused: the client asks for a mode this server does not know", "mode", a.Mode, "from", from.String())
		return nil
	}
	ss := &sess{srv: s, index: a.Index, st: st, created: now, flows: make(map[uint32]*flow), spread: peer.NewSpreader(sc, s.w)}
	if sc.Mode() == sched.FEC {
		p, err := fec.ParamsFromByte(a.FEC)
		if err == nil {
			err = s.newFEC(ss, p, int(a.Mode>>4))
		}
		if err != nil {
			s.cnt.HandshakeBad.Add(1)
			s.warn.Warn("mode", "session refused: bad fec shape", "err", err, "from", from.String())
			return nil
		}
	}
	ss.deliverFn = func(id uint32, d []byte) { s.queueCopy(ss, id, d) }
	if !s.cfg.NoRepair && sc.Mode() != sched.FEC {
		// fec mode's parity is its repair.
		session.EnableRepair(st, session.RingSize(s.cfg.MTU), &s.cnt, func(pkts [][]byte) { s.sendAll(ss, pkts, true) })
		if !s.cfg.NoParity && sc.Mode() == sched.Redundant {
			session.EnableParity(st, wire.MaxPlaintext(s.cfg.MTU, ss.v6.Load()), &s.cnt, func(pkts [][]byte) { s.sendAll(ss, pkts, true) })
		}
	}
	if s.cfg.Reorder > 0 {
		// The buffer hands datagrams on from its timer too: at once.
		st.Reorder = reorder.NewTimed(s.cfg.Reorder, 0, func(id uint32, d []byte) { s.deliver(ss, id, d) })
	}
	ss.lastRx.Store(now.UnixNano())
	empty := []*peer.Path{}
	ss.paths.Store(&empty)
	return ss
}

// minRekeyGap is the least time between two rekeys of one session.
const minRekeyGap = 100 * time.Millisecond

// handleRekey answers a rekey message that arrived authenticated in session
// old by path p (nil if not yet known): msg is the initiation of the
// handshake that makes old's successor. The successor is registered at once,
// even beyond MaxSessions since it replaces old, and takes old's flows when
// the client confirms it (adopt), so the target keeps seeing the same source
// ports. A new rekey while one is unconfirmed replaces it: the client lost
// the response and tried again.
//
// A lineage (a session and the ones its rekeys made) holds at most
// maxLineage sessions and rekeys at most once a minRekeyGap, however its
// client chains them: a rekey past the bound retires the lineage's oldest
// replaced session at once. Under load, rekeys count as initiations and
// take from their address's handshake rate like them.
func (s *Server) handleRekey(old *sess, msg []byte, p *peer.Path, now time.Time) {
	from := netip.AddrPort{}
	if p != nil {
		from = p.Addr()
	}
	old.flowMu.Lock()
	retired := old.succ != nil || old.closed
	old.flowMu.Unlock()
	if retired || old.pred.Load() != nil {
		// Rekey the live session only, not one already succeeded or not
		// yet confirmed itself.
		s.cnt.HandshakeBad.Add(1)
		return
	}
	lin := old.lin
	if now.Sub(lin.rekeyAt) < lin.rekeyGap() {
		// A client retries a rekey every second: faster is a key holder
		// spending our CPU, refused like a handshake flood.
		s.cnt.HandshakeRate.Add(1)
		s.warn.Warn("rekey-rate", "rekey refused: asked again too soon", "session", status.SessionID(old.index))
		return
	}
	if s.underLoad(now) && !s.limiter.Allow(lin.origin, now) {
		s.cnt.HandshakeRate.Add(1)
		s.warn.Warn("handshake-rate", "rekey refused: too many handshakes from this address while under load", "session", status.SessionID(old.index))
		return
	}
	lin.rekeyAt = now
	a, ok := s.accept(handshake.Request{Msg: msg, Rekey: true, PSK: lin.psk}, from, now)
	if !ok {
		return
	}
	if c := lin.client.Load(); a.IK != (c != nil) || c != nil && a.Peer != c.Public {
		// A session rekeys as the client that made it, and no other.
		s.cnt.HandshakeBad.Add(1)
		s.warn.Warn("rekey-identity", "rekey refused: made under another key than the session's", "session", status.SessionID(old.index))
		return
	}
	ss := s.newSess(a, from, now)
	if ss == nil {
		return
	}
	ss.pred.Store(old)
	// The old session's paths are proven: the new one starts with them,
	// so its replies have every path from the first.
	olds := *old.paths.Load()
	paths := make([]*peer.Path, len(olds))
	for i, q := range olds {
		paths[i] = q.Successor(s.cfg.ProbeInterval, now)
	}
	ss.paths.Store(&paths)
	ss.v6.Store(old.v6.Load())
	s.mu.Lock()
	if c := lin.client.Load(); c != nil && s.clientOf(c.Public) != c {
		// The client list changed while the rekey ran: SetClients ended
		// this client's sessions, or is about to take them under its new
		// entry. Either way no successor now; the client tries again.
		s.mu.Unlock()
		ss.st.Stop()
		return
	}
	if prev := old.next; prev != nil && prev.pred.Load() == old {
		s.closeSessionLocked(prev.index, prev)
	}
	// Room in the lineage: the oldest session a rekey replaced goes now
	// rather than at the end of its grace.
	for len(lin.members) >= maxLineage {
		var oldest *sess
		for _, m := range lin.members {
			if r := m.retireAt.Load(); r != 0 && (oldest == nil || r < oldest.retireAt.Load()) {
				oldest = m
			}
		}
		if oldest == nil {
			break
		}
		s.closeSessionLocked(oldest.index, oldest)
	}
	if len(lin.members) >= maxLineage {
		// Not reached: a lineage's members are its live session, replaced
		// ones and one unconfirmed successor, which was closed above.
		s.mu.Unlock()
		s.cnt.HandshakeRate.Add(1)
		return
	}
	old.next = ss
	ss.lin = lin
	s.addLocked(ss)
	s.mu.Unlock()
	s.cnt.HandshakeOK.Add(1)
	s.log.Debug("session rekeying", "session", status.SessionID(old.index), "new", status.SessionID(a.Index))
	// The response goes on every path of the old session, as plain
	// handshake responses do: the client takes the first. Like those, it
	// is not counted on the paths (the client does not count it).
	out := wire.AppendResponse(make([]byte, 0, wire.ResponsePrefixLen+len(a.Response)), a.PeerIndex, a.Response)
	for _, q := range *old.paths.Load() {
		s.send(out, q.Addr(), q.Local())
	}
}

// adopt moves the flows of the session ss was made to succeed over to ss,
// now that the client has used ss: the old session retires. Concurrent calls
// and flowFor are safe: the first moves everything under both sessions'
// flow locks, the others find nothing left to do.
func (s *Server) adopt(ss *sess, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := ss.pred.Load()
	if old == nil {
		return
	}
	old.flowMu.Lock()
	ss.flowMu.Lock()
	moved, kept := 0, !old.closed && !ss.closed
	if kept {
		for id, f := range old.flows {
			ss.flows[id] = f
			f.s.Store(ss)
			delete(old.flows, id)
			moved++
		}
		old.succ = ss
	}
	ss.pred.Store(nil)
	ss.flowMu.Unlock()
	old.flowMu.Unlock()
	if kept && ss.lin != nil {
		ss.lin.streams.cur.Store(ss)
	}
	if old.next == ss {
		old.next = nil
	}
	if !kept {
		return
	}
	old.retireAt.Store(now.Add(s.cfg.RekeyGrace).UnixNano())
	s.cnt.Rekeys.Add(1)
	s.log.Info("session rekeyed", append(old.who(), "new", status.SessionID(ss.index), "flows", moved)...)
}

// underLoad counts an initiation at now and reports whether more than
// HandshakeLoad arrived in this second or the one before. The read
// goroutine alone calls it.
func (s *Server) underLoad(now time.Time) bool {
	if gap := now.Sub(s.loadStart); gap >= time.Second {
		s.loadPrev, s.loadCount, s.loadStart = s.loadCount, 0, now
		if gap >= 2*time.Second {
			s.loadPrev = 0 // a quiet second in between
		}
	}
	s.loadCount++
	return s.loadCount > s.cfg.HandshakeLoad || s.loadPrev > s.cfg.HandshakeLoad
}

// newIndex picks an unused session index. It runs with s.mu not held.
func (s *Server) newIndex() uint32 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for {
		idx := randUint32()
		if _, used := s.sessions[idx]; !used && idx != 0 {
			return idx
		}
	}
}

// send sends one handshake packet to to, from our address local (when
// valid).
func (s *Server) send(pkt []byte, to netip.AddrPort, local netip.Addr) {
	s.w.SendTo(s.conn, pkt, to, local)
}

// sendAll puts pkts on ss's paths as its mode says (on every usable one when
// all is set).
func (s *Server) sendAll(ss *sess, pkts [][]byte, all bool) {
	ss.spread.Send(*ss.paths.Load(), pkts, all, ss.lastData.Load(), time.Now())
	// The parity of groups these packets closed goes after them.
	if st := ss.st; st.ParityTx != nil {
		if par := st.ParityTx.Take(st); len(par) > 0 {
			ss.spread.Send(*ss.paths.Load(), par, true, ss.lastData.Load(), time.Now())
		}
	}
}

// queue puts one of ss's datagrams, which stays valid until the read
// goroutine's next batch, on its flow's batch toward the target; flush sends
// the batches. Both run on the read goroutine only.
func (s *Server) queue(ss *sess, id uint32, d []byte, now time.Time) {
	s.queueTo(ss, id, nil, d, now)
}

// queueTo is queue for a datagram that names its flow's target (nil: the
// flow's, or the default target for a new flow).
func (s *Server) queueTo(ss *sess, id uint32, tg *wire.Target, d []byte, now time.Time) *flow {
	f := s.flowFor(ss, id, tg, now)
	if f == nil || !s.usable(f, d) {
		return f
	}
	if len(f.pending) == 0 {
		// Active from now: a flow with datagrams queued is never the
		// one that makes room for another before they are written.
		f.act.Touch(now.UnixNano())
		s.dirty = append(s.dirty, f)
	}
	f.pending = append(f.pending, udpio.Msg{Buf: d})
	return f
}

// queueCopy queues a copy of one of ss's datagrams that was put back
// together, whose buffer is reused after the call.
func (s *Server) queueCopy(ss *sess, id uint32, d []byte) {
	if cap(s.arena)-len(s.arena) < len(d) {
		// A new arena: what is queued from the old one keeps it.
		s.arena = make([]byte, 0, max(64<<10, len(d)))
	}
	start := len(s.arena)
	s.arena = append(s.arena, d...)
	s.queue(ss, id, s.arena[start:len(s.arena):len(s.arena)], time.Now())
}

// flush sends every flow's queued datagrams to the target, one write per
// flow; now is when the batch was read.
func (s *Server) flush(now time.Time) {
	for i, f := range s.dirty {
		f.act.Touch(now.UnixNano())
		f.act.Out(len(f.pending))
		s.writeTarget(f, f.pending)
		clear(f.pending)
		f.pending = f.pending[:0]
		s.dirty[i] = nil
	}
	s.dirty = s.dirty[:0]
	s.arena = s.arena[:0]
}

// deliver sends one of ss's datagrams to the target at once, for the
// reorder buffer, which hands them on from its timer as well as from the
// read goroutine.
func (s *Server) deliver(ss *sess, id uint32, d []byte) {
	now := time.Now()
	f := s.flowFor(ss, id, nil, now)
	if f == nil || !s.usable(f, d) {
		return
	}
	f.act.Touch(now.UnixNano())
	f.act.Out(1)
	s.writeTarget(f, []udpio.Msg{{Buf: d}})
}

// writeTarget writes msgs on flow f's socket toward the target.
func (s *Server) writeTarget(f *flow, msgs []udpio.Msg) {
	sent, bytes, err := udpio.Write(f.conn, msgs)
	f.ts.tx.Add(uint64(sent))
	s.cnt.Delivered.Add(uint64(sent))
	s.cnt.DeliveredBytes.Add(uint64(bytes))
	if errors.Is(err, udpio.ErrQueueFull) {
		s.cnt.QueueFull.Add(uint64(len(msgs) - sent))
		s.warn.Warn("queue-full", "flow send buffer full: datagrams for the target dropped (the target is slower than its traffic)", "target", f.name)
	} else if err != nil {
		s.cnt.SendErrors.Add(uint64(len(msgs) - sent))
		s.warn.Warn("target-write", "cannot send to target", "target", f.name, "err", err)
	}
}

// flowFor returns ss's flow id, opening it toward tg (nil: the default
// target) if it is new. The flow may not be ready yet, or refused.
func (s *Server) flowFor(ss *sess, id uint32, tg *wire.Target, now time.Time) *flow {
	// A session succeeded by a rekey hands its late packets to its
	// successor's flows; the chain is as long as the rekeys within one
	// RekeyGrace, so a few steps are plenty.
	for range 4 {
		if ss.pred.Load() != nil {
			s.adopt(ss, now)
		}
		ss.flowMu.Lock()
		if next := ss.succ; next != nil {
			ss.flowMu.Unlock()
			ss = next
			continue
		}
		// No defer: one in a loop is allocated on every call.
		f := s.flowLocked(ss, id, tg, now)
		ss.flowMu.Unlock()
		return f
	}
	return nil
}

// flowLocked returns ss's flow id, opening it if it is new; the caller holds
// ss.flowMu.
func (s *Server) flowLocked(ss *sess, id uint32, tg *wire.Target, now time.Time) *flow {
	if f := ss.flows[id]; f != nil {
		return f
	}
	if ss.closed {
		return nil
	}
	if tg == nil && id&wire.FlowNamed != 0 {
		// Plain data for a flow whose target the client names, which we
		// freed: it must not go to the default target. The client names
		// the target again once told.
		s.cnt.UnknownFlow.Add(1)
		if id != ss.goneID || now.Sub(ss.goneAt) >= retell {
			ss.goneID, ss.goneAt = id, now
			s.tellFlow(ss, id, wire.FlowClosed)
		}
		return nil
	}
	if len(ss.flows) >= s.cfg.MaxFlows && !s.evictLocked(ss, now) {
		s.cnt.FlowLimit.Add(1)
		s.warn.Warn("flows", "flow refused: flow limit reached, and every flow is busy", "session", ss.index, "limit", s.cfg.MaxFlows)
		if tg != nil {
			s.tellFlow(ss, id, wire.FlowLimit)
		}
		return nil
	}
	f := &flow{id: id}
	f.s.Store(ss)
	f.act.Touch(now.UnixNano())
	ss.flows[id] = f
	s.openFlow(ss, f, tg)
	return f
}

// evictLocked frees the least recently used of ss's flows that is idle
// (peer.FlowIdleAfter) to make room for a new one, and reports whether
// there was one; the caller holds ss.flowMu.
func (s *Server) evictLocked(ss *sess, now time.Time) bool {
	id, ok := peer.LeastRecent(ss.flows, func(f *flow) *peer.Activity { return &f.act }, now)
	if !ok {
		return false
	}
	s.freeFlowLocked(ss, ss.flows[id])
	s.cnt.FlowsEvicted.Add(1)
	return true
}

// freeFlowLocked closes flow f of ss, and its socket, and tells the client
// when it names f's target, so that it names it again; the caller holds
// ss.flowMu.
func (s *Server) freeFlowLocked(ss *sess, f *flow) {
	f.close()
	delete(ss.flows, f.id)
	s.cnt.FlowsFreed.Add(1)
	if f.id&wire.FlowNamed != 0 && !ss.closed {
		s.tellFlow(ss, f.id, wire.FlowClosed)
	}
}

// A flow's reader takes one datagram a read until the flow is busy: every
// slot of a batched read holds a whole 64 KiB datagram, too much memory for
// each of thousands of quiet flows. A flow that reads flowBusy datagrams
// within flowBusyWindow (32,000 a second) reads up to flowBatch at once, and
// goes back to single reads after flowQuiet without a read of more than one.
const (
	flowBatch      = 16
	flowBusy       = 64
	flowBusyWindow = 2 * time.Millisecond
	flowQuiet      = 5 * time.Second
)

// flowLoop carries the target's replies for one flow back over the session's paths.
func (s *Server) flowLoop(f *flow) {
	var (
		b        *session.Batch // one slot while the flow is quiet, flowBatch while busy
		in       []udpio.Msg    // b's slots
		winStart time.Time      // when the current count of single reads began
		winCount int
		lastMany time.Time // the last read of more than one datagram
	)
	slots := func(size int) {
		b, in = session.NewBatch(size), make([]udpio.Msg, size)
		for i := range in {
			in[i].Buf = b.Buf(i)
		}
	}
	slots(1)
	for {
		k, err := f.conn.ReadBatch(in)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// ICMP errors (target down) surface here; the flow stays.
			s.cnt.SendErrors.Add(1)
			s.warn.Warn("target-down", "the target does not answer (ICMP unreachable); the flow stays and works again when it returns", "target", f.name, "err", err)
			continue
		}
		now := time.Now()
		f.act.Touch(now.UnixNano())
		f.act.In(k)
		f.ts.rx.Add(uint64(k))
		s.reply(f.s.Load(), f, b, in[:k], now)
		switch {
		case b.Size() == 1:
			if now.Sub(winStart) > flowBusyWindow {
				winStart, winCount = now, 0
			}
			if winCount++; winCount >= flowBusy {
				slots(flowBatch)
				lastMany = now
			}
		case k > 1:
			lastMany = now
		case now.Sub(lastMany) > flowQuiet:
			slots(1)
			winCount = 0
		}
	}
}

// reply seals the datagrams the target sent flow f, read into b's slots,
// and sends them over ss's paths with one write.
func (s *Server) reply(ss *sess, f *flow, b *session.Batch, in []udpio.Msg, now time.Time) {
	maxPlain := wire.MaxPlaintext(s.cfg.MTU, ss.v6.Load())
	tx := ss.st.FECTx
	fec := tx != nil
	var forwarded uint64
	b.Reset()
	for i := range in {
		n := in[i].N
		if fec && n <= wire.MaxDatagram && session.FECFits(n, maxPlain) {
			// A shard, one path each; it goes at the flush below.
			if err := tx.Add(ss.st, f.id, in[i].Buf[:n], now); err != nil {
				s.log.Error("fec", "err", err)
				continue
			}
			forwarded++
			continue
		}
		err := b.Add(ss.st, i, f.id, n, maxPlain)
		if errors.Is(err, session.ErrBatchFull) {
			s.sendAll(ss, b.Pkts, fec)
			b.Reset()
			err = b.Add(ss.st, i, f.id, n, maxPlain)
		}
		if errors.Is(err, session.ErrOversize) {
			s.cnt.Oversize.Add(1)
			s.warn.Warn("oversize", "datagram from target too large for the tunnel, dropped", "limit", wire.MaxDatagram)
		}
		if err == nil {
			forwarded++
		}
	}
	if len(b.Pkts) > 0 {
		s.sendAll(ss, b.Pkts, fec)
	}
	if fec {
		tx.Flush(now)
	}
	s.cnt.Forwarded.Add(forwarded)
}

// newFEC gives ss the fec mode's sender and receiver: its shards go one
// path each, and its parity is flushed by a timer when a group does not fill
// in time.
func (s *Server) newFEC(ss *sess, p fec.Params, depth int) error {
	return session.EnableFEC(ss.st, p, 0, depth,
		func(pkts [][]byte, parity uint64) {
			s.sendAll(ss, pkts, false)
			s.cnt.FECParity.Add(parity)
		},
		func(err error) { s.log.Error("fec", "err", err) })
}

func (s *Server) janitor(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.expire(now)
		}
	}
}

func (s *Server) expire(now time.Time) {
	s.resp.Prune(now)
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, ss := range s.sessions {
		if now.Sub(time.Unix(0, ss.lastRx.Load())) > s.cfg.SessionTimeout {
			s.log.Info("session timed out", ss.who()...)
			s.closeSessionLocked(id, ss)
			continue
		}
		if r := ss.retireAt.Load(); r != 0 && now.UnixNano() > r {
			s.log.Debug("session retired", "session", status.SessionID(id))
			s.closeSessionLocked(id, ss)
			continue
		}
		ss.st.Reasm.Expire(now)
		ss.flowMu.Lock()
		for _, f := range ss.flows {
			if expired, reclaimed := f.act.Expired(now, s.cfg.FlowTimeout); expired {
				s.freeFlowLocked(ss, f)
				if reclaimed {
					s.cnt.FlowsReclaimed.Add(1)
				}
			}
		}
		ss.flowMu.Unlock()
	}
}

func (s *Server) closeSessionLocked(id uint32, ss *sess) {
	if s.sessions[id] != ss {
		return // closed already
	}
	delete(s.sessions, id)
	s.publishLocked()
	ss.st.Stop()
	if lin := ss.lin; lin != nil {
		for i, m := range lin.members {
			if m == ss {
				lin.members = append(lin.members[:i], lin.members[i+1:]...)
				break
			}
		}
		if len(lin.members) == 0 {
			if c := lin.client.Load(); c != nil {
				if s.byClient[c.Name]--; s.byClient[c.Name] <= 0 {
					delete(s.byClient, c.Name)
				}
			} else if s.byAddr[lin.origin]--; s.byAddr[lin.origin] <= 0 {
				delete(s.byAddr, lin.origin)
			}
			// Not under s.mu: the stream server's goroutines send.
			s.wg.Go(lin.streams.close)
		}
	}
	ss.flowMu.Lock()
	ss.closed = true
	for fid, f := range ss.flows {
		f.close()
		delete(ss.flows, fid)
		s.cnt.FlowsFreed.Add(1)
	}
	ss.flowMu.Unlock()
	s.cnt.SessionsFreed.Add(1)
}

func randUint32() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return binary.LittleEndian.Uint32(b[:])
}

// initsPerAddr bounds the initiations the replay memory keeps from one
// address: a sixteenth of it.
const initsPerAddr = handshake.DefaultMemory / 16

func newResponder(cfg Config, now time.Time) *handshake.Responder {
	r := handshake.NewResponder(cfg.Key, 0, 0)
	r.SetKeys(append([]handshake.Key{cfg.Key}, cfg.OldKeys...))
	r.Cipher = cfg.Cipher
	r.PerSource = initsPerAddr
	// The memory of initiations seen starts empty: refuse those made
	// before now, which a previous run may have seen (docs/SECURITY.md).
	r.NotBefore = now
	return r
}

// SetKeys replaces the keys new sessions are accepted under while the
// server runs: the current key first, then any older ones clients may still
// use. Sessions already up keep their own keys.
func (s *Server) SetKeys(keys []handshake.Key) {
	s.resp.SetKeys(keys)
	// Resets are made with the current key only: a client still on an
	// older one ignores them and handshakes after its silence timeout.
	// A server with identities makes them with its private key.
	if s.cfg.Private == nil {
		s.resetKey.Store(reset.NewKey(keys[0]))
	}
	s.psks.Store(&keys)
	psks := make([][32]byte, len(keys))
	for i, k := range keys {
		psks[i] = s.mac1Key(k)
	}
	if err := s.cookies.SetKeys(psks); err != nil {
		s.log.Error("keys", "err", err)
	}
}
