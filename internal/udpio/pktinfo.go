package udpio

import (
	"net"
	"net/netip"
)

// PktConn is a UDP socket that learns the local address each packet arrived
// on and can send from a chosen local address, so that a server with several
// addresses answers from the one its peer wrote to (IP_PKTINFO and
// IPV6_PKTINFO on Linux). Where the platform or socket cannot, it reads and
// writes plainly and reports no local address.
type PktConn struct {
	*net.UDPConn
	v6      bool // the socket is AF_INET6 (dual stack); else AF_INET
	enabled bool
}

// NewPktConn enables destination-address reporting on conn when it is bound
// to a wildcard address (a socket bound to one address needs none).
func NewPktConn(conn *net.UDPConn) *PktConn {
	c := &PktConn{UDPConn: conn}
	if la, ok := conn.LocalAddr().(*net.UDPAddr); ok && la.IP.IsUnspecified() {
		c.v6, c.enabled = enablePktInfo(conn)
	}
	return c
}

// OOBSize is the room ReadFrom needs for control messages.
const OOBSize = 64

// ReadFrom reads a packet and returns, when known, the local address it was
// sent to. oob is scratch of OOBSize bytes.
func (c *PktConn) ReadFrom(b, oob []byte) (n int, from netip.AddrPort, local netip.Addr, err error) {
	if !c.enabled {
		n, from, err = c.ReadFromUDPAddrPort(b)
		return n, from, netip.Addr{}, err
	}
	n, oobn, _, from, err := c.ReadMsgUDPAddrPort(b, oob)
	if err != nil {
		return n, from, netip.Addr{}, err
	}
	return n, from, parseDst(oob[:oobn]), nil
}

// SourceOOB returns the control message that makes WriteTo send from local,
// or nil when local is unknown or the socket does not need it.
func (c *PktConn) SourceOOB(local netip.Addr) []byte {
	if !c.enabled || !local.IsValid() {
		return nil
	}
	return sourceOOB(c.v6, local)
}

// WriteTo sends b to addr from the local address encoded in oob (see
// SourceOOB); a nil oob lets the kernel choose.
func (c *PktConn) WriteTo(b, oob []byte, addr netip.AddrPort) (int, error) {
	if oob == nil {
		return c.WriteToUDPAddrPort(b, addr)
	}
	n, _, err := c.WriteMsgUDPAddrPort(b, oob, addr)
	return n, err
}
