package client

import (
	"context"
	"crypto/subtle"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/mptunnel/mptunnel/internal/session"
	"github.com/mptunnel/mptunnel/internal/socks"
	"github.com/mptunnel/mptunnel/internal/stream"
	"github.com/mptunnel/mptunnel/internal/udpio"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// Bounds of the SOCKS5 front.
const (
	maxAssociations = 64               // UDP associations at once
	socksHandshake  = 10 * time.Second // the most a client may take to ask
)

// socksFront is the SOCKS5 listener and its live connections.
type socksFront struct {
	ln      net.Listener
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	assoc   int
	stats   frontStats   // of all its associations
	streams stream.Stats // of its CONNECTs
}

// listenSocks binds the SOCKS5 front: on loopback when addr names no host.
func (c *Client) listenSocks(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.Join(errors.New("bad socks address "+addr), err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return err
	}
	c.socks = &socksFront{ln: ln, conns: make(map[net.Conn]struct{})}
	return nil
}

// SocksAddr returns the SOCKS5 front's address, if it has one.
func (c *Client) SocksAddr() netip.AddrPort {
	if c.socks == nil {
		return netip.AddrPort{}
	}
	return c.socks.ln.Addr().(*net.TCPAddr).AddrPort()
}

// serveSocks accepts SOCKS5 clients until ctx ends, then closes every
// connection and waits for their handlers.
func (c *Client) serveSocks(ctx context.Context) {
	sf := c.socks
	serveConns(ctx, sf.ln, &sf.mu, sf.conns, c.socksConn)
}

// serveConns accepts connections on ln and serves each with handle, which
// closes nothing, until ctx ends; then it closes ln and every connection
// and waits for their handlers. conns (guarded by mu) holds the live ones.
func serveConns(ctx context.Context, ln net.Listener, mu *sync.Mutex, conns map[net.Conn]struct{}, handle func(net.Conn)) {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for conn := range conns {
			conn.Close()
		}
		mu.Unlock()
	})
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				break
			}
			continue
		}
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			conn.Close()
			break
		}
		conns[conn] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			handle(conn)
			mu.Lock()
			delete(conns, conn)
			mu.Unlock()
			conn.Close()
		})
	}
	ln.Close()
	wg.Wait()
}

// socksConn serves one SOCKS5 control connection: the method, the
// credentials when required, and one request. A CONNECT becomes a stream
// through the server; a UDP association lives until the connection closes;
// BIND is refused (command not supported).
func (c *Client) socksConn(conn net.Conn) {
	conn.SetDeadline(time.Now().Add(socksHandshake))
	methods, err := socks.ReadMethods(conn)
	if err != nil {
		return
	}
	want := byte(socks.MethodNoAuth)
	if c.cfg.SocksUser != "" {
		want = socks.MethodUserPass
	}
	if !slices.Contains(methods, want) {
		conn.Write([]byte{socks.Version, socks.MethodNone})
		c.warn.Warn("socks-method", "socks client refused: it offers no acceptable authentication method", "from", conn.RemoteAddr().String())
		return
	}
	if _, err := conn.Write([]byte{socks.Version, want}); err != nil {
		return
	}
	if want == socks.MethodUserPass {
		u, p, err := socks.ReadUserPass(conn)
		if err != nil {
			return
		}
		ok := subtle.ConstantTimeCompare([]byte(u), []byte(c.cfg.SocksUser))&subtle.ConstantTimeCompare([]byte(p), []byte(c.cfg.SocksPass)) == 1
		status := byte(0)
		if !ok {
			status = 1
		}
		conn.Write([]byte{1, status})
		if !ok {
			c.warn.Warn("socks-auth", "socks client refused: wrong username or password", "from", conn.RemoteAddr().String())
			return
		}
	}
	req, err := socks.ReadRequest(conn)
	switch {
	case errors.Is(err, socks.ErrAddressType):
		conn.Write(socks.Reply(socks.RepAddressUnsupported, netip.AddrPort{}))
		return
	case err != nil:
		return
	}
	switch req.Cmd {
	case socks.CmdConnect:
		c.socksConnect(conn, req)
		return
	case socks.CmdUDPAssociate:
	default:
		// BIND is not carried.
		conn.Write(socks.Reply(socks.RepCommandUnsupported, netip.AddrPort{}))
		return
	}
	fr, err := c.associate(conn, req)
	if err != nil {
		conn.Write(socks.Reply(socks.RepFailure, netip.AddrPort{}))
		c.warn.Warn("socks-assoc", "socks UDP association refused", "from", conn.RemoteAddr().String(), "err", err)
		return
	}
	defer c.dissociate(fr)
	if _, err := conn.Write(socks.Reply(socks.RepSucceeded, fr.conn.LocalAddr())); err != nil {
		return
	}
	conn.SetDeadline(time.Time{})
	// The association lasts as long as the connection.
	io.Copy(io.Discard, conn)
}

// associate opens the relay socket of a UDP association for the client at
// the far end of conn, beside the control connection's local address.
func (c *Client) associate(conn net.Conn, req socks.Request) (*front, error) {
	sf := c.socks
	sf.mu.Lock()
	if sf.assoc >= maxAssociations {
		sf.mu.Unlock()
		return nil, errors.New("too many UDP associations")
	}
	sf.assoc++
	sf.mu.Unlock()
	local := conn.LocalAddr().(*net.TCPAddr).AddrPort()
	remote := conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	uc, err := c.cfg.Net.Listen(netip.AddrPortFrom(local.Addr().Unmap(), 0), "")
	if err != nil {
		sf.mu.Lock()
		sf.assoc--
		sf.mu.Unlock()
		return nil, err
	}
	// The request names where the client will send from: an address of
	// all zeroes stands for the control connection's, and a port of 0
	// binds the association to the first sender from that address
	// (socksBatch). Its replies go to that one address and port only.
	peer := socks.Source(req.Dst, remote.Addr())
	fr := &front{conn: uc, socks: true, peer: peer, name: "socks " + remote.String(), stats: &sf.stats}
	c.wg.Go(func() { c.localLoop(fr) })
	c.log.Debug("socks UDP association", "client", remote.String(), "relay", uc.LocalAddr().String(), "source", peer.String())
	return fr, nil
}

// dissociate ends a UDP association: its socket and its flows.
func (c *Client) dissociate(fr *front) {
	fr.conn.Close()
	c.flowMu.Lock()
	for k, f := range c.byPeer {
		if k.fr == fr {
			delete(c.byPeer, k)
			delete(c.byID, f.id)
			c.cnt.FlowsFreed.Add(1)
		}
	}
	c.flowMu.Unlock()
	c.socks.mu.Lock()
	c.socks.assoc--
	c.socks.mu.Unlock()
}

// socksBatch seals the datagrams an association's client sent, each to the
// destination its header names, and sends them on every path. Datagrams
// from any other address and port than the association's source,
// fragmented ones (unsupported, as RFC 1928 allows) and malformed ones are
// dropped and counted. An association whose request named no port is
// bound here to the address and port of the first well-formed datagram
// from its address. Only the association's reader (localLoop) calls this,
// so it alone reads and writes fr.peer once the association is made.
func (c *Client) socksBatch(fr *front, st *session.State, in []udpio.Msg, sl *session.Sealer) {
	maxPlain := wire.MaxPlaintext(c.cfg.MTU, c.v6.Load())
	now := time.Now()
	for i := range in {
		from := netip.AddrPortFrom(in[i].Addr.Addr().Unmap(), in[i].Addr.Port())
		if !socks.Admits(fr.peer, from) {
			c.cnt.Malformed.Add(1)
			c.warn.Warn("socks-source", "socks datagram from another address or port than its association's, dropped", "from", from.String(), "association", fr.name)
			continue
		}
		h, data, err := socks.ParseUDP(in[i].Buf[:min(in[i].N, len(in[i].Buf))])
		if err != nil || h.Frag != 0 {
			c.cnt.Malformed.Add(1)
			continue
		}
		fr.peer = socks.Bind(fr.peer, from)
		f := c.flowTo(fr, from, h.Dst)
		if f == nil {
			continue
		}
		f.act.Touch(now.UnixNano())
		f.act.Out(1)
		if now.UnixNano() < f.refusedUntil.Load() {
			c.cnt.TargetRefused.Add(1)
			fr.stats.refused.Add(1)
			continue
		}
		if pkts, _, ok := c.sealFlow(sl, st, f, data, maxPlain); ok {
			c.sendLive(pkts, true)
		}
	}
}
