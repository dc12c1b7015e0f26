package client

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mptunnel/mptunnel/internal/session"
	"github.com/mptunnel/mptunnel/internal/socks"
	"github.com/mptunnel/mptunnel/internal/stream"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// connectTimeout bounds a stream's opening: the QUIC connection when there
// is none, and the server's dial of the target.
const connectTimeout = 15 * time.Second

// streams is the client's stream client (internal/stream) for the server
// it has a session with: made on the first TCP connection, kept across
// rekeys, replaced when a session is made from scratch (the server lost
// the old one's state, and its streams with it).
type streams struct {
	mu     sync.Mutex
	cl     *stream.Client
	secret [32]byte // of the session from scratch the streams belong to
	closed bool
}

// reset ends the stream client in use, if any: for a session made from
// scratch, whose keys give secret, or for good when secret is nil (the
// client closes).
func (h *streams) reset(secret *[32]byte) {
	h.mu.Lock()
	old := h.cl
	h.cl = nil
	if secret != nil {
		h.secret = *secret
	} else {
		h.closed = true
	}
	h.mu.Unlock()
	if old != nil {
		old.Close()
	}
}

// streamClient returns the stream client, making it if there is none.
func (c *Client) streamClient() (*stream.Client, error) {
	h := &c.streams
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, stream.ErrClientClosed
	}
	if h.cl == nil {
		sl := session.NewSealer() // the stream client's flusher's own
		h.cl = stream.NewClient(h.secret, stream.PacketSize(wire.MaxPlaintext(c.cfg.MTU, c.v6.Load())), func(pkts [][]byte) { c.streamOut(sl, pkts) },
			func() time.Duration { return c.sess.Load().RepairHold() })
	}
	return h.cl, nil
}

// streamOut seals a run of packets of the QUIC connection with sl under
// the current session and sends them as the mode says, in one write a
// path.
func (c *Client) streamOut(sl *session.Sealer, pkts [][]byte) {
	st := c.sess.Load()
	if st == nil {
		return // lost, as on a path: QUIC sends them again
	}
	if out := sl.SealStreams(st, pkts, wire.MaxPlaintext(c.cfg.MTU, c.v6.Load())); len(out) > 0 {
		c.sendLive(out, false)
	}
}

// streamIn hands a stream packet from the server to the stream client.
func (c *Client) streamIn(p []byte) {
	h := &c.streams
	h.mu.Lock()
	cl := h.cl
	h.mu.Unlock()
	if cl != nil {
		cl.Deliver(p)
	}
}

// socksConnect serves a SOCKS5 CONNECT: a stream to the target through the
// server, the server's answer as the SOCKS5 reply, then the bytes.
func (c *Client) socksConnect(conn net.Conn, req socks.Request) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		conn.Write(socks.Reply(socks.RepFailure, netip.AddrPort{}))
		return
	}
	cl, err := c.streamClient()
	if err != nil {
		conn.Write(socks.Reply(socks.RepFailure, netip.AddrPort{}))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	st, code, err := cl.Open(ctx, req.Dst)
	cancel()
	stats := &c.socks.streams
	stats.Begin(code)
	if err != nil || code != stream.OK {
		reason := stream.Reason(code)
		if err != nil {
			reason = err.Error()
		}
		c.warn.Warn("socks-connect", "socks CONNECT refused", "target", req.Dst.String(), "reason", reason)
		conn.Write(socks.Reply(stream.SocksReply(code), netip.AddrPort{}))
		return
	}
	if _, err := conn.Write(socks.Reply(socks.RepSucceeded, tc.LocalAddr().(*net.TCPAddr).AddrPort())); err != nil {
		st.CancelWrite(0)
		st.CancelRead(0)
		return
	}
	conn.SetDeadline(time.Time{})
	stats.End(cl.Splice(tc, st))
}

// tcpForward is a TCP port forward: each connection accepted on ln becomes
// a stream to target.
type tcpForward struct {
	ln      *net.TCPListener
	target  wire.Target
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	streams stream.Stats
}

// addTCPForward binds a TCP forward's listener.
func (c *Client) addTCPForward(listen string, tg wire.Target) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("forward tcp:%s: %w", listen, err)
	}
	tl := ln.(*net.TCPListener)
	c.tcpForwards = append(c.tcpForwards, &tcpForward{ln: tl, target: tg, conns: make(map[net.Conn]struct{})})
	c.forwardAddrs = append(c.forwardAddrs, tl.Addr().(*net.TCPAddr).AddrPort())
	return nil
}

// serveTCPForward accepts a TCP forward's connections until ctx ends, then
// closes them and waits for their handlers.
func (c *Client) serveTCPForward(ctx context.Context, tf *tcpForward) {
	serveConns(ctx, tf.ln, &tf.mu, tf.conns, func(conn net.Conn) { c.forwardConn(conn.(*net.TCPConn), tf.target, &tf.streams) })
}

// forwardConn carries one accepted connection as a stream to target; when
// the server refuses, the connection is reset. stats counts it.
func (c *Client) forwardConn(conn *net.TCPConn, target wire.Target, stats *stream.Stats) {
	cl, err := c.streamClient()
	if err != nil {
		conn.SetLinger(0)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	st, code, err := cl.Open(ctx, target)
	cancel()
	stats.Begin(code)
	if err != nil || code != stream.OK {
		reason := stream.Reason(code)
		if err != nil {
			reason = err.Error()
		}
		c.warn.Warn("tcp-forward", "tcp forward: connection refused", "target", target.String(), "reason", reason)
		conn.SetLinger(0)
		return
	}
	stats.End(cl.Splice(conn, st))
}
