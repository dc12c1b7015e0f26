//go:build !linux

package udpio

import (
	"net"
	"net/netip"
	"sync"
)

// batchConn is the portable Conn: one datagram per system call, PktInfo where
// PktConn supports it.
type batchConn struct {
	pc    *PktConn
	laddr netip.AddrPort
	rmu   sync.Mutex
	oob   []byte
}

// NewConn wraps c, an unconnected UDP socket. Here every read returns one
// datagram and every write is a system call of its own; GSO and GRO are not
// available. c must not be read or written by other means afterwards; Close
// closes it.
func NewConn(c *net.UDPConn, opts Options) (Conn, error) {
	uc := &batchConn{oob: make([]byte, OOBSize)}
	if opts.PktInfo {
		uc.pc = NewPktConn(c)
	} else {
		uc.pc = &PktConn{UDPConn: c}
	}
	if ua, ok := c.LocalAddr().(*net.UDPAddr); ok {
		uc.laddr = ua.AddrPort()
	}
	return uc, nil
}

func (c *batchConn) LocalAddr() netip.AddrPort { return c.laddr }

func (c *batchConn) Close() error { return c.pc.Close() }

// Features reports what the platform gave this Conn.
func (c *batchConn) Features() Features { return Features{PktInfo: c.pc.enabled} }

func (c *batchConn) ReadBatch(msgs []Msg) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	m := &msgs[0]
	n, from, local, err := c.pc.ReadFrom(m.Buf, c.oob)
	if err != nil {
		return 0, err
	}
	m.N, m.Addr, m.Local = n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), local
	return 1, nil
}

func (c *batchConn) WriteBatch(msgs []Msg) (int, error) {
	for i := range msgs {
		m := &msgs[i]
		if !m.Addr.IsValid() {
			return i, &net.OpError{Op: "write", Net: "udp", Source: c.pc.LocalAddr(), Err: errBadAddr}
		}
		if _, err := c.pc.WriteTo(m.Buf, c.pc.SourceOOB(m.Local), m.Addr); err != nil {
			return i, err
		}
	}
	return len(msgs), nil
}
