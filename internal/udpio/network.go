package udpio

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// Network opens the sockets a tunnel end uses. OS is the operating system's
// network; MemNet is an in-memory one for measuring the pipeline alone.
type Network interface {
	// Listen opens a socket bound to laddr. An invalid laddr.Addr() means
	// every address of both families; port 0 means any port. dev, when not
	// empty, binds the socket to that interface.
	Listen(laddr netip.AddrPort, dev string) (Conn, error)
	// Dial opens a socket that talks to raddr only: writes go to raddr
	// whatever Msg.Addr says, and reads report errors the peer's host
	// returns (such as ICMP port unreachable) where the platform does.
	Dial(raddr netip.AddrPort) (Conn, error)
}

// OS is the operating system's network. Its Options apply to every Listen.
type OS struct {
	Options Options
}

// Listen opens a UDP socket with several MiB of buffers and batched I/O.
func (o OS) Listen(laddr netip.AddrPort, dev string) (Conn, error) {
	laddr = netip.AddrPortFrom(laddr.Addr().Unmap(), laddr.Port())
	network, addr := "udp", ""
	switch {
	case !laddr.Addr().IsValid():
		addr = fmt.Sprintf(":%d", laddr.Port())
	case laddr.Addr().Is4():
		network, addr = "udp4", laddr.String()
	default:
		network, addr = "udp6", laddr.String()
	}
	lc := net.ListenConfig{}
	if dev != "" {
		lc.Control = func(_, _ string, rc syscall.RawConn) error { return bindToDevice(rc, dev) }
	}
	pc, err := lc.ListenPacket(context.Background(), network, addr)
	if err != nil {
		return nil, err
	}
	uc := pc.(*net.UDPConn)
	_ = SetBuffers(uc, DefaultBuffer) // best effort: the kernel may cap it
	c, err := NewConn(uc, o.Options)
	if err != nil {
		uc.Close()
		return nil, err
	}
	return c, nil
}

// Dial opens a connected UDP socket to raddr.
func (o OS) Dial(raddr netip.AddrPort) (Conn, error) {
	uc, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(raddr))
	if err != nil {
		return nil, err
	}
	_ = SetBuffers(uc, DefaultBuffer)
	return &dialConn{conn: uc, remote: raddr}, nil
}

// dialConn is a connected socket moving one datagram per call: a flow toward
// a target carries one peer's traffic, and a connected socket reports the
// target's ICMP errors.
type dialConn struct {
	conn   *net.UDPConn
	remote netip.AddrPort
}

func (d *dialConn) ReadBatch(msgs []Msg) (int, error) {
	n, err := d.conn.Read(msgs[0].Buf)
	if err != nil {
		return 0, err
	}
	msgs[0].N, msgs[0].Addr, msgs[0].Local = n, d.remote, netip.Addr{}
	return 1, nil
}

func (d *dialConn) WriteBatch(msgs []Msg) (int, error) {
	for i := range msgs {
		if _, err := d.conn.Write(msgs[i].Buf); err != nil {
			return i, err
		}
	}
	return len(msgs), nil
}

func (d *dialConn) LocalAddr() netip.AddrPort { return d.conn.LocalAddr().(*net.UDPAddr).AddrPort() }
func (d *dialConn) Close() error              { return d.conn.Close() }

// Dial opens a Conn that talks to raddr only.
func (n *MemNet) Dial(raddr netip.AddrPort) (Conn, error) {
	c, err := n.Listen(netip.AddrPortFrom(netip.IPv4Unspecified(), 0), "")
	if err != nil {
		return nil, err
	}
	return &memDial{Conn: c, remote: raddr}, nil
}

type memDial struct {
	Conn
	remote netip.AddrPort
}

func (d *memDial) WriteBatch(msgs []Msg) (int, error) {
	for i := range msgs {
		msgs[i].Addr = d.remote
	}
	return d.Conn.WriteBatch(msgs)
}

func (d *memDial) ReadBatch(msgs []Msg) (int, error) {
	for {
		n, err := d.Conn.ReadBatch(msgs)
		if err != nil {
			return n, err
		}
		k := 0
		for i := 0; i < n; i++ {
			if msgs[i].Addr == d.remote {
				if k != i {
					msgs[k].N = copy(msgs[k].Buf, msgs[i].Buf[:msgs[i].N])
					msgs[k].Addr = msgs[i].Addr
				}
				k++
			}
		}
		if k > 0 {
			return k, nil
		}
	}
}

// ErrNoDevice reports a network that cannot bind sockets to interfaces.
var ErrNoDevice = errors.New("binding to an interface is not supported here")
