package udpio

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// MemNet is an in-memory UDP network: Conns on it exchange datagrams by
// copying them into each other's queues, with no system calls. It exists so
// that the tunnel's whole pipeline can be measured without the kernel. A full
// queue drops, as a socket buffer would. The zero value is ready.
type MemNet struct {
	mu    sync.RWMutex
	conns map[netip.AddrPort]*memConn
	port  uint16
}

// memQueueLen is how many datagrams a MemNet Conn holds unread.
const memQueueLen = 4096

// Listen returns a Conn bound to addr; port 0 picks a free port. An invalid
// address stands for 127.0.0.1. Interfaces are not supported.
func (n *MemNet) Listen(addr netip.AddrPort, dev string) (Conn, error) {
	if dev != "" {
		return nil, ErrNoDevice
	}
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	if !addr.Addr().IsValid() || addr.Addr().IsUnspecified() {
		addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), addr.Port())
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.conns == nil {
		n.conns = make(map[netip.AddrPort]*memConn)
	}
	if addr.Port() == 0 {
		for {
			n.port++
			if n.port < 1024 {
				n.port = 1024
			}
			addr = netip.AddrPortFrom(addr.Addr(), n.port)
			if n.conns[addr] == nil {
				break
			}
		}
	}
	if n.conns[addr] != nil {
		return nil, fmt.Errorf("memnet: %s in use", addr)
	}
	c := &memConn{net: n, addr: addr, slots: make([]memSlot, memQueueLen)}
	c.cond.L = &c.mu
	n.conns[addr] = c
	return c, nil
}

type memSlot struct {
	buf  []byte
	from netip.AddrPort
}

type memConn struct {
	net  *MemNet
	addr netip.AddrPort

	mu     sync.Mutex
	cond   sync.Cond
	slots  []memSlot
	head   int // next slot to read
	count  int
	closed bool
	// Dropped counts datagrams that found the queue full.
	dropped uint64
}

func (c *memConn) LocalAddr() netip.AddrPort { return c.addr }

func (c *memConn) Close() error {
	c.net.mu.Lock()
	if c.net.conns[c.addr] == c {
		delete(c.net.conns, c.addr)
	}
	c.net.mu.Unlock()
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cond.Broadcast()
	return nil
}

func (c *memConn) ReadBatch(msgs []Msg) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.count == 0 && !c.closed {
		c.cond.Wait()
	}
	if c.closed {
		return 0, net.ErrClosed
	}
	n := 0
	for n < len(msgs) && c.count > 0 {
		s := &c.slots[c.head]
		m := &msgs[n]
		m.N = copy(m.Buf, s.buf)
		m.Addr = s.from
		m.Local = c.addr.Addr()
		c.head = (c.head + 1) % len(c.slots)
		c.count--
		n++
	}
	return n, nil
}

func (c *memConn) WriteBatch(msgs []Msg) (int, error) {
	for i := range msgs {
		c.net.mu.RLock()
		dst := c.net.conns[msgs[i].Addr]
		c.net.mu.RUnlock()
		if dst == nil {
			continue // no one listens: gone, as UDP would be
		}
		dst.push(msgs[i].Buf, c.addr)
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	return len(msgs), nil
}

func (c *memConn) push(b []byte, from netip.AddrPort) {
	c.mu.Lock()
	if c.closed || c.count == len(c.slots) {
		c.dropped++
		c.mu.Unlock()
		return
	}
	s := &c.slots[(c.head+c.count)%len(c.slots)]
	if cap(s.buf) < len(b) {
		s.buf = make([]byte, len(b), max(len(b), 2048))
	}
	s.buf = s.buf[:len(b)]
	copy(s.buf, b)
	s.from = from
	c.count++
	c.mu.Unlock()
	c.cond.Signal()
}

// SendFrom delivers b to the Conn bound to to as if from had sent it, and
// reports whether one was there. It stands for a sender that forges its
// source address, as anyone can on a real network, so that tests can play
// the off-path attacker.
func (n *MemNet) SendFrom(from, to netip.AddrPort, b []byte) bool {
	n.mu.RLock()
	dst := n.conns[to]
	n.mu.RUnlock()
	if dst == nil {
		return false
	}
	dst.push(b, from)
	return true
}
