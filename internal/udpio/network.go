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
	if o.Options.SendBuffer > 0 {
		_ = setSendBuffer(uc, o.Options.SendBuffer)
	}
	c, err := NewConn(uc, o.Options)
	if err != nil {
		uc.Close()
		return nil, err
	}
	return c, nil
}

// dialBatch is the batch size of dialled sockets: there is one per flow, so
// each keeps its scratch small.
const dialBatch = 8

// Dial opens a connected UDP socket to raddr: the kernel filters what it
// reads to raddr's datagrams and reports raddr's ICMP errors on it. Its
// batches are small and it does no GRO, since a server holds one per flow.
func (o OS) Dial(raddr netip.AddrPort) (Conn, error) {
	raddr = netip.AddrPortFrom(raddr.Addr().Unmap(), raddr.Port())
	uc, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(raddr))
	if err != nil {
		return nil, err
	}
	_ = SetBuffers(uc, FlowBuffer)
	opts := o.Options
	opts.NoGRO, opts.BatchSize, opts.PktInfo = true, dialBatch, false
	c, err := NewConn(uc, opts)
	if err != nil {
		uc.Close()
		return nil, err
	}
	return &dialConn{Conn: c, remote: raddr}, nil
}

// dialConn sends everything to its one peer.
type dialConn struct {
	Conn
	remote netip.AddrPort
}

func (d *dialConn) WriteBatch(msgs []Msg) (int, error) {
	for i := range msgs {
		msgs[i].Addr = d.remote
	}
	return d.Conn.WriteBatch(msgs)
}

// Dial opens a Conn that talks to raddr only.
func (n *MemNet) Dial(raddr netip.AddrPort) (Conn, error) {
	c, err := n.Listen(netip.AddrPortFrom(netip.IPv4Unspecified(), 0), "")
	if err != nil {
		return nil, err
	}
	return &memDial{dialConn{Conn: c, remote: raddr}}, nil
}

// memDial is a dialConn on the in-memory network, which has no kernel to
// filter what it reads: it drops what others send.
type memDial struct {
	dialConn
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
