// Package impair is a userspace, netem-like UDP relay used to emulate
// lossy, slow and unreliable network paths on loopback without privileges.
//
// A Relay listens on one UDP address and forwards every datagram it
// receives to an upstream address, through a separate upstream socket per
// downstream peer, and relays the replies back. Each direction applies its
// own Config: random and bursty loss, fixed delay, jitter, reordering,
// duplication and a rate limit with a bounded queue. All random decisions
// come from a seeded generator per direction, so a given seed and input
// sequence always yield the same drop and duplicate decisions.
package impair

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mptunnel/mptunnel/internal/udpio"
)

// socketBuffer is the send and receive buffer size requested for every
// socket (the kernel may cap it).
const socketBuffer = 4 << 20

// Options configures a Relay.
type Options struct {
	// Listen is the local address downstream peers send to, e.g.
	// "127.0.0.1:0".
	Listen string
	// To is the upstream host:port.
	To string
	// Up applies to datagrams going downstream to upstream, Down to the
	// replies.
	Up, Down Config
	// Seed drives all randomness. The same seed and the same input
	// sequence give the same drop and duplicate decisions.
	Seed int64
	// Tap, when set, is called with every datagram received, before any
	// impairment; up is true for datagrams from downstream peers. It may be
	// called from several goroutines at once and must not retain pkt.
	Tap func(up bool, pkt []byte)
	// Hold, when set, is called after Tap with every datagram received;
	// when it returns true the datagram is held back: neither forwarded nor
	// counted, as if lost (the function may keep a copy to send later, as
	// an attacker on the path would). The same rules as Tap apply.
	Hold func(up bool, pkt []byte) bool
	// IdleTimeout closes a peer's upstream socket after this long without
	// traffic in either direction. Zero means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxPeers limits concurrent downstream peers. Zero means
	// DefaultMaxPeers. Datagrams from further peers are dropped and counted
	// in Stats.PeerLimitDrops.
	MaxPeers int
}

// DirStats are the counters of one direction. Each datagram received ends
// up forwarded (twice if duplicated) or counted in exactly one of the drop
// and error counters, so once traffic stops InFlight returns to zero.
type DirStats struct {
	Received     uint64 // datagrams read and handed to the impairments
	Forwarded    uint64 // datagrams written, duplicates included
	DroppedLoss  uint64 // dropped by Loss or BurstLoss
	DroppedQueue uint64 // dropped by the rate queue limit or a full delay line
	DroppedDown  uint64 // dropped because the relay was set down
	Duplicated   uint64 // extra copies made by Duplicate
	SendErrors   uint64 // writes that failed
}

// InFlight returns how many datagrams (duplicates included) are still
// waiting in the delay line or being written.
func (s DirStats) InFlight() uint64 {
	out := s.Forwarded + s.DroppedLoss + s.DroppedQueue + s.DroppedDown + s.SendErrors
	in := s.Received + s.Duplicated
	if out >= in {
		return 0
	}
	return in - out
}

// Stats is a snapshot of a relay's counters.
type Stats struct {
	Up   DirStats // downstream to upstream
	Down DirStats // upstream to downstream
	// Peers is the number of downstream peers with an upstream socket.
	Peers int
	// PeerLimitDrops counts datagrams from new peers dropped because
	// MaxPeers was reached. They are not part of Up.
	PeerLimitDrops uint64
	// PeerErrors counts datagrams dropped because no upstream socket could
	// be created for their peer. They are not part of Up.
	PeerErrors uint64
}

// peer is one downstream address and its upstream socket.
type peer struct {
	addr netip.AddrPort
	conn udpio.Conn   // the upstream socket, for reads and writes
	udp  *net.UDPConn // the same socket, for its read deadline
	last atomic.Int64 // time of last traffic, relative to Relay.epoch
}

// Relay forwards datagrams between downstream peers that send to its
// listen address and an upstream address, keeping one upstream socket per
// downstream peer, applying Up impairments to datagrams going downstream
// to upstream and Down impairments to replies.
type Relay struct {
	ln       udpio.Conn
	addr     netip.AddrPort
	to       netip.AddrPort // upstream address, IPv4 unmapped
	toNet    string         // "udp4" or "udp6": the family of upstream sockets
	tap      func(bool, []byte)
	hold     func(bool, []byte) bool
	idle     time.Duration
	maxPeers int
	epoch    time.Time

	up, dn *direction
	pool   bufPool
	down   atomic.Bool

	peerLimitDrops atomic.Uint64
	peerErrors     atomic.Uint64

	mu     sync.Mutex
	peers  map[netip.AddrPort]*peer
	closed bool

	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// New binds the listen address and starts the relay.
func New(opts Options) (*Relay, error) {
	if err := opts.Up.Validate(); err != nil {
		return nil, fmt.Errorf("impair: up config: %w", err)
	}
	if err := opts.Down.Validate(); err != nil {
		return nil, fmt.Errorf("impair: down config: %w", err)
	}
	if opts.To == "" {
		return nil, errors.New("impair: no upstream address")
	}
	to, err := net.ResolveUDPAddr("udp", opts.To)
	if err != nil {
		return nil, fmt.Errorf("impair: resolve upstream %s: %w", opts.To, err)
	}
	laddr, err := net.ResolveUDPAddr("udp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("impair: listen %s: %w", opts.Listen, err)
	}
	toAddr, toNet := upstreamAddr(to)
	uc, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("impair: listen %s: %w", opts.Listen, err)
	}
	setBuffers(uc)
	addr := uc.LocalAddr().(*net.UDPAddr).AddrPort()
	ln, err := udpio.NewConn(uc, udpio.Options{})
	if err != nil {
		_ = uc.Close()
		return nil, fmt.Errorf("impair: listen %s: %w", opts.Listen, err)
	}

	r := &Relay{
		ln:       ln,
		addr:     addr,
		to:       toAddr,
		toNet:    toNet,
		tap:      opts.Tap,
		hold:     opts.Hold,
		idle:     opts.IdleTimeout,
		maxPeers: opts.MaxPeers,
		epoch:    time.Now(),
		peers:    make(map[netip.AddrPort]*peer),
		done:     make(chan struct{}),
	}
	if r.idle <= 0 {
		r.idle = DefaultIdleTimeout
	}
	if r.maxPeers <= 0 {
		r.maxPeers = DefaultMaxPeers
	}
	s := splitmix64(uint64(opts.Seed))
	r.up = newDirection(r, true, opts.Up, splitmix64(s^1), splitmix64(s^2))
	r.dn = newDirection(r, false, opts.Down, splitmix64(s^3), splitmix64(s^4))

	r.wg.Add(3)
	go r.up.run()
	go r.dn.run()
	go r.readDownstream()
	return r, nil
}

// splitmix64 is one step of the SplitMix64 mixer, used to derive
// independent generator seeds from Options.Seed.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// upstreamAddr returns the address datagrams are sent upstream to, with
// IPv4 unmapped and an unspecified address (which the kernel reaches on
// the local host) replaced by the loopback address, and the network of the
// sockets that send them.
func upstreamAddr(to *net.UDPAddr) (netip.AddrPort, string) {
	ip, ok := netip.AddrFromSlice(to.IP)
	ip = ip.Unmap()
	if !ok || ip.IsUnspecified() {
		if ip.Is6() {
			ip = netip.IPv6Loopback()
		} else {
			ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		}
	}
	network := "udp4"
	if ip.Is6() {
		network = "udp6"
		if to.Zone != "" {
			ip = ip.WithZone(to.Zone)
		}
	}
	return netip.AddrPortFrom(ip, uint16(to.Port)), network
}

// fromUpstream reports whether a datagram read on an upstream socket comes
// from the upstream address. The sockets are not connected, so they
// filter replies themselves.
func (r *Relay) fromUpstream(from netip.AddrPort) bool {
	return from.Port() == r.to.Port() && from.Addr().WithZone("") == r.to.Addr().WithZone("")
}

func setBuffers(c *net.UDPConn) {
	// Best effort: the kernel caps the sizes and a failure only means
	// more drops under bursts.
	_ = c.SetReadBuffer(socketBuffer)
	_ = c.SetWriteBuffer(socketBuffer)
}

// Addr returns the listen address.
func (r *Relay) Addr() netip.AddrPort { return r.addr }

// SetDown takes the relay down (a dead path) or back up. While down, every
// datagram is dropped in both directions, including those already waiting
// in the delay lines. Safe for concurrent use.
func (r *Relay) SetDown(down bool) {
	r.down.Store(down)
	if down {
		r.up.flush()
		r.dn.flush()
	}
}

// SetConfig changes the impairments of both directions; it applies to
// datagrams received from then on. Out-of-range values are clamped. Safe
// for concurrent use.
func (r *Relay) SetConfig(up, down Config) {
	r.up.setConfig(up.sanitize())
	r.dn.setConfig(down.sanitize())
}

// Stats returns a snapshot of the counters.
func (r *Relay) Stats() Stats {
	r.mu.Lock()
	n := len(r.peers)
	r.mu.Unlock()
	return Stats{
		Up:             r.up.stats.snapshot(),
		Down:           r.dn.stats.snapshot(),
		Peers:          n,
		PeerLimitDrops: r.peerLimitDrops.Load(),
		PeerErrors:     r.peerErrors.Load(),
	}
}

// Close stops every goroutine the relay started, closes its sockets and
// waits for them. Queued datagrams are discarded. It is idempotent and
// returns the same result every time.
func (r *Relay) Close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		peers := make([]*peer, 0, len(r.peers))
		for _, p := range r.peers {
			peers = append(peers, p)
		}
		clear(r.peers)
		r.mu.Unlock()

		close(r.done)
		if err := r.ln.Close(); err != nil {
			r.closeErr = fmt.Errorf("impair: close %s: %w", r.addr, err)
		}
		for _, p := range peers {
			_ = p.conn.Close()
		}
		r.wg.Wait()
	})
	return r.closeErr
}

func (r *Relay) now() time.Duration { return time.Since(r.epoch) }

// readDownstream reads batches of datagrams from downstream peers and
// sends each batch's immediate ones upstream together.
func (r *Relay) readDownstream() {
	defer r.wg.Done()
	out := outbox{d: r.up}
	readBatches(r.ln, func(msgs []udpio.Msg) bool {
		// One clock reading a batch, and one peer lookup for each run of
		// datagrams from the same peer.
		now := r.now()
		var p *peer
		for i := range msgs {
			m := &msgs[i]
			pkt := m.Buf[:m.N]
			if r.tap != nil {
				r.tap(true, pkt)
			}
			if r.hold != nil && r.hold(true, pkt) {
				continue
			}
			if p != nil && p.addr == m.Addr {
				r.up.process(pkt, p, &out, now)
				continue
			}
			var err error
			p, err = r.peerFor(m.Addr, now)
			if err != nil {
				switch {
				case errors.Is(err, errPeerLimit):
					r.peerLimitDrops.Add(1)
				case errors.Is(err, errClosed):
					out.flush()
					return false
				default:
					r.peerErrors.Add(1)
				}
				continue
			}
			r.up.process(pkt, p, &out, now)
		}
		out.flush()
		return true
	})
}

var (
	errPeerLimit = errors.New("impair: peer limit reached")
	errClosed    = errors.New("impair: relay closed")
)

// peerFor returns the peer for addr, creating it and its upstream socket
// when needed; now is the relay's time.
func (r *Relay) peerFor(addr netip.AddrPort, now time.Duration) (*peer, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.peers[addr]; ok {
		p.last.Store(int64(now))
		return p, nil
	}
	if r.closed {
		return nil, errClosed
	}
	if len(r.peers) >= r.maxPeers {
		return nil, errPeerLimit
	}
	// An unconnected socket: a batched write names its destination, which
	// a connected socket does not accept everywhere.
	uc, err := net.ListenUDP(r.toNet, nil)
	if err != nil {
		return nil, fmt.Errorf("impair: dial upstream %s: %w", r.to, err)
	}
	setBuffers(uc)
	conn, err := udpio.NewConn(uc, udpio.Options{})
	if err != nil {
		_ = uc.Close()
		return nil, fmt.Errorf("impair: dial upstream %s: %w", r.to, err)
	}
	p := &peer{addr: addr, conn: conn, udp: uc}
	p.last.Store(int64(now))
	r.peers[addr] = p
	r.wg.Add(1)
	go r.readUpstream(p)
	return p, nil
}

// readUpstream reads the replies for one peer, a batch at a time, until
// its socket is closed or it has been idle for IdleTimeout. Datagrams from
// other sources than the upstream address are ignored.
func (r *Relay) readUpstream(p *peer) {
	defer r.wg.Done()
	msgs := newReadBatch()
	out := outbox{d: r.dn}
	_ = p.udp.SetReadDeadline(time.Now().Add(r.idle))
	for {
		n, err := p.conn.ReadBatch(msgs)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if r.expire(p) {
					return
				}
			}
			// Anything else is transient for a datagram socket.
			continue
		}
		now := r.now()
		seen := false
		for i := range msgs[:n] {
			m := &msgs[i]
			if !r.fromUpstream(m.Addr) {
				continue
			}
			if !seen {
				p.last.Store(int64(now))
				seen = true
			}
			pkt := m.Buf[:m.N]
			if r.tap != nil {
				r.tap(false, pkt)
			}
			if r.hold != nil && r.hold(false, pkt) {
				continue
			}
			r.dn.process(pkt, p, &out, now)
		}
		out.flush()
	}
}

// expire removes and closes p if it has been idle for IdleTimeout, and
// reports whether its reader should stop. Otherwise it re-arms the read
// deadline.
func (r *Relay) expire(p *peer) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		// Close owns the socket now.
		return true
	}
	idle := r.now() - time.Duration(p.last.Load())
	if idle >= r.idle {
		delete(r.peers, p.addr)
		_ = p.conn.Close()
		return true
	}
	_ = p.udp.SetReadDeadline(time.Now().Add(r.idle - idle))
	return false
}
