package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/mptunnel/mptunnel/internal/wire"
)

// Defaults of a session's streams.
const (
	DefaultMaxStreams  = 1024             // streams at once, per session
	DefaultDialTimeout = 10 * time.Second // the server's dial of a target
	// The flow-control windows bound what a slow reader makes the other
	// end hold: a stream, and the connection's streams together. A
	// stream's starts smaller and grows as its reader keeps up.
	initialStreamWindow = 512 << 10
	streamWindow        = 4 << 20
	connectionWindow    = 16 << 20
	requestTimeout      = 10 * time.Second
	idleTimeout         = 60 * time.Second
)

// quicConfig returns the QUIC configuration of a session's connection,
// whose packets are at most packetSize bytes (what one tunnel packet
// carries, so none is cut).
func quicConfig(packetSize, maxStreams int) *quic.Config {
	return &quic.Config{
		InitialPacketSize:              uint16(max(1200, packetSize)),
		DisablePathMTUDiscovery:        true,
		MaxIncomingStreams:             int64(maxStreams),
		MaxIncomingUniStreams:          -1,
		InitialStreamReceiveWindow:     initialStreamWindow,
		MaxStreamReceiveWindow:         streamWindow,
		InitialConnectionReceiveWindow: 1 << 20,
		MaxConnectionReceiveWindow:     connectionWindow,
		MaxIdleTimeout:                 idleTimeout,
		KeepAlivePeriod:                idleTimeout / 4,
		HandshakeIdleTimeout:           10 * time.Second,
	}
}

// PacketSize returns the largest QUIC packet a tunnel packet of maxPlain
// plaintext bytes carries: a stream message's kind byte and the packet's
// sequence number aside, and small enough that parity covers it (a parity
// packet has a header of its own besides the XOR of what it covers).
func PacketSize(maxPlain int) int { return maxPlain - 1 - seqLen - wire.ParityHeaderLen }

// ServerConfig configures a session's stream server.
type ServerConfig struct {
	// Allowed reports whether a stream may go to addr:port, asked for as
	// name ("" when the client gave an address).
	Allowed func(name string, addr netip.Addr, port uint16) bool
	// PacketSize is the largest QUIC packet (PacketSize of the tunnel's
	// plaintext).
	PacketSize  int
	MaxStreams  int           // DefaultMaxStreams when 0
	DialTimeout time.Duration // DefaultDialTimeout when 0
	IdleTimeout time.Duration // IdleTimeout when 0
	// Dial, when set, connects to a target the rules allow, within ctx's
	// deadline (DialTimeout); a net.Dialer otherwise. Its error decides
	// the reply: refused, unreachable, timed out or failed.
	Dial func(ctx context.Context, addr netip.AddrPort) (*net.TCPConn, error)
	// Hold, when set, is how long a packet missing from the client's
	// sequence may hold the packets after it (PacketConn.SetHold).
	Hold func() time.Duration
	// Lookup, when set, resolves a name a client asked for; the default
	// resolver otherwise.
	Lookup func(ctx context.Context, name string) ([]netip.Addr, error)
	Log    *slog.Logger
	// Opened, when set, is told of each stream's reply: its target and the
	// code the client got. Done, when set, is told of the end of each
	// stream that connected, with the bytes each way (up: client to
	// target).
	Opened func(target wire.Target, code byte)
	Done   func(target wire.Target, up, down int64)
}

// Server accepts a session's QUIC connection and serves its streams: each
// names a target, which the server checks, dials and splices.
type Server struct {
	cfg    ServerConfig
	pc     *PacketConn
	tr     *quic.Transport
	ln     *quic.Listener
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	bufs   buffers
}

// NewServer starts a stream server whose packets go out through send, a
// run at a time (NewBatchPacketConn).
func NewServer(secret [32]byte, send func(pkts [][]byte), cfg ServerConfig) (*Server, error) {
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = IdleTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Dial == nil {
		cfg.Dial = dialTCP
	}
	if cfg.Lookup == nil {
		cfg.Lookup = func(ctx context.Context, name string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", name)
		}
	}
	tlsConf, err := ServerTLS(secret)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, pc: NewBatchPacketConn(send)}
	s.pc.SetHold(cfg.Hold)
	s.tr = &quic.Transport{Conn: s.pc}
	s.ln, err = s.tr.Listen(tlsConf, quicConfig(cfg.PacketSize, cfg.MaxStreams))
	if err != nil {
		s.pc.Close()
		return nil, fmt.Errorf("stream: listen: %w", err)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Go(s.acceptConns)
	return s, nil
}

// Deliver hands the server a QUIC packet that came through the session.
func (s *Server) Deliver(b []byte) { s.pc.Deliver(b) }

// Close ends every stream and the connection, and waits for them.
func (s *Server) Close() error {
	s.cancel()
	s.ln.Close()
	s.tr.Close()
	s.pc.Close()
	s.wg.Wait()
	return nil
}

func (s *Server) acceptConns() {
	for {
		conn, err := s.ln.Accept(s.ctx)
		if err != nil {
			return
		}
		s.wg.Go(func() {
			defer conn.CloseWithError(0, "")
			for {
				st, err := conn.AcceptStream(s.ctx)
				if err != nil {
					return
				}
				s.wg.Go(func() { s.serve(st) })
			}
		})
	}
}

// serve reads a stream's request, dials its target and splices them.
func (s *Server) serve(st *quic.Stream) {
	st.SetReadDeadline(time.Now().Add(requestTimeout))
	tg, err := ReadRequest(st)
	if err != nil {
		st.CancelRead(resetCode)
		st.CancelWrite(resetCode)
		return
	}
	st.SetReadDeadline(time.Time{})
	tc, code := s.dial(tg)
	err = WriteReply(st, code)
	if err != nil && code == OK {
		code = Failed
	}
	if s.cfg.Opened != nil {
		s.cfg.Opened(tg, code)
	}
	if code != OK {
		if tc != nil {
			tc.Close()
		}
		st.Close()
		st.CancelRead(0)
		return
	}
	// Closing the server closes the connection, which ends the stream.
	stop := context.AfterFunc(s.ctx, func() { tc.Close() })
	defer stop()
	// Splice's first count is what the client sent: the stream's bytes
	// toward the target.
	down, up := splice(tc, st, s.cfg.IdleTimeout, &s.bufs)
	if s.cfg.Done != nil {
		s.cfg.Done(tg, up, down)
	}
}

// dial checks the target against the rules, resolving a name first, and
// dials it; the reply code says why it failed.
func (s *Server) dial(tg wire.Target) (*net.TCPConn, byte) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
	defer cancel()
	addrs := []netip.Addr{tg.Addr}
	if tg.Name != "" {
		// A name rule allows the name whatever it resolves to (Allowed
		// sees both); a name that does not resolve is refused as not
		// allowed unless a rule names it.
		ips, err := s.cfg.Lookup(ctx, tg.Name)
		if err != nil || len(ips) == 0 {
			if ctx.Err() != nil {
				return nil, TimedOut
			}
			if s.cfg.Allowed == nil || !s.cfg.Allowed(tg.Name, netip.Addr{}, tg.Port) {
				return nil, NotAllowed
			}
			return nil, NoName
		}
		addrs = ips
	}
	// The addresses the rules allow, each tried in turn until one
	// connects (a name may resolve to an address its server does not
	// listen on, such as ::1 besides 127.0.0.1), within the one timeout.
	code := NotAllowed
	for _, a := range addrs {
		a = a.Unmap()
		if s.cfg.Allowed == nil || !s.cfg.Allowed(tg.Name, a, tg.Port) {
			continue
		}
		c, err := s.cfg.Dial(ctx, netip.AddrPortFrom(a, tg.Port))
		if err == nil {
			return c, OK
		}
		code = dialCode(err)
		if ctx.Err() != nil {
			break
		}
	}
	if code == NotAllowed {
		s.cfg.Log.Info("stream refused: target not allowed", "target", tg.String())
	}
	return nil, code
}

// dialTCP connects to addr with a net.Dialer.
func dialTCP(ctx context.Context, addr netip.AddrPort) (*net.TCPConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// dialCode maps a dial error to a reply code.
func dialCode(err error) byte {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return Unreachable
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return TimedOut
	}
	return Failed
}

// Client opens streams on a session's QUIC connection, dialed on first need.
type Client struct {
	secret     [32]byte
	packetSize int
	pc         *PacketConn
	tr         *quic.Transport
	bufs       buffers

	mu     sync.Mutex
	conn   *quic.Conn
	closed bool
}

// NewClient returns a stream client whose packets, at most packetSize
// bytes each, go out through send, a run at a time; hold, when not nil, is
// how long a packet missing from the server's sequence may hold the
// packets after it (PacketConn.SetHold).
func NewClient(secret [32]byte, packetSize int, send func(pkts [][]byte), hold func() time.Duration) *Client {
	c := &Client{secret: secret, packetSize: packetSize, pc: NewBatchPacketConn(send)}
	c.pc.SetHold(hold)
	c.tr = &quic.Transport{Conn: c.pc}
	return c
}

// Deliver hands the client a QUIC packet that came through the session.
func (c *Client) Deliver(b []byte) { c.pc.Deliver(b) }

// ErrClientClosed reports a stream opened on a closed Client.
var ErrClientClosed = errors.New("stream: the session's streams are closed")

// connect returns the QUIC connection, dialing it if there is none alive.
func (c *Client) connect(ctx context.Context) (*quic.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClientClosed
	}
	if c.conn != nil && c.conn.Context().Err() == nil {
		return c.conn, nil
	}
	conn, err := c.tr.Dial(ctx, Addr{}, ClientTLS(c.secret), quicConfig(c.packetSize, 0))
	if err != nil {
		return nil, fmt.Errorf("stream: connect: %w", err)
	}
	c.conn = conn
	return conn, nil
}

// Open opens a stream to target and returns it with the server's reply;
// the stream is nil unless the reply is OK.
func (c *Client) Open(ctx context.Context, target wire.Target) (*quic.Stream, byte, error) {
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, Failed, err
	}
	st, err := conn.OpenStream()
	if errors.Is(err, &quic.StreamLimitReachedError{}) {
		// The server takes MaxStreams at once: say so now rather than
		// wait for one to end.
		return nil, TooManyStreams, nil
	}
	if err != nil {
		return nil, Failed, fmt.Errorf("stream: open: %w", err)
	}
	if err := WriteRequest(st, target); err != nil {
		st.CancelWrite(resetCode)
		return nil, Failed, err
	}
	if dl, ok := ctx.Deadline(); ok {
		st.SetReadDeadline(dl)
	}
	code, err := ReadReply(st)
	if err != nil {
		st.CancelRead(resetCode)
		st.CancelWrite(resetCode)
		return nil, Failed, fmt.Errorf("stream: reply: %w", err)
	}
	st.SetReadDeadline(time.Time{})
	if code != OK {
		st.CancelRead(0)
		st.Close()
		return nil, code, nil
	}
	return st, OK, nil
}

// Close ends the connection and every stream on it.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		conn.CloseWithError(0, "")
	}
	c.tr.Close()
	c.pc.Close()
	return nil
}
