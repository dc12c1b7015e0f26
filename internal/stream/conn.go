// Package stream carries TCP connections through a tunnel session as QUIC
// streams (github.com/quic-go/quic-go): one QUIC connection a session, its
// packets riding the session as one internal flow, sealed, spread over the
// paths and deduplicated like any datagram, and one stream a TCP
// connection. QUIC brings what TCP needs and the tunnel lacks: reliable,
// ordered bytes, flow control and congestion control, per stream.
//
// PacketConn is what QUIC sees of the session; TLS binds QUIC's handshake to
// the session's keys; Open and Accept frame a stream's first bytes (the
// target, then the server's answer).
package stream

import (
	"encoding/binary"
	"net"
	"os"
	"sync"
	"time"
)

// Addr is the address of the far end of a PacketConn: the session itself.
type Addr struct{}

func (Addr) Network() string { return "mptunnel" }
func (Addr) String() string  { return "session" }

// queueLen bounds the datagrams a PacketConn holds for QUIC to read.
const queueLen = 1024

// seqLen is the size of the sequence number a PacketConn puts before each
// QUIC packet it sends (big-endian, one more each packet), by which the far
// end's puts them back in order (order).
const seqLen = 4

// ErrClosed is returned by a closed PacketConn.
var ErrClosed = net.ErrClosed

// PacketConn is a net.PacketConn whose datagrams go to and come from one
// session's stream flow: WriteTo hands a QUIC packet to send, Deliver
// hands it one that arrived. It is safe for concurrent use; a Deliver that
// finds the queue full drops the datagram (QUIC recovers it) and counts it.
type PacketConn struct {
	send func(b []byte) error

	// Batched sending (NewBatchPacketConn): WriteTo queues, a flusher
	// hands what queued to sendBatch in one call.
	sendBatch func(pkts [][]byte)
	out       [][]byte      // queued, under mu
	spare     [][]byte      // the flusher's other slice
	kick      chan struct{} // wakes the flusher
	flushed   sync.WaitGroup

	in    chan []byte
	order order
	done  chan struct{}
	once  sync.Once
	mu    sync.Mutex
	seq   uint32 // the next packet's sequence number, under mu
	// ReadFrom's pace (its one caller's): packets it may hand out before
	// QUIC shows it has processed some (a write to wrote).
	credit  int
	wrote   chan struct{}
	wake    chan struct{} // closed and remade when the read deadline changes
	dl      time.Time
	dropped uint64
}

// NewPacketConn returns a PacketConn that sends with send; send must not
// keep b after it returns.
func NewPacketConn(send func(b []byte) error) *PacketConn {
	c := &PacketConn{send: send, in: make(chan []byte, queueLen+orderSize), credit: readAhead, wrote: make(chan struct{}, 1), done: make(chan struct{}), wake: make(chan struct{})}
	c.order.deliver = c.push
	return c
}

// NewBatchPacketConn returns a PacketConn whose writes queue and go out
// together: a goroutine of its own hands each run that queued while it was
// busy to sendBatch, in one call, so that a burst of QUIC packets costs one
// write per path instead of one each. sendBatch must not keep the packets.
// Close stops the goroutine.
func NewBatchPacketConn(sendBatch func(pkts [][]byte)) *PacketConn {
	c := &PacketConn{sendBatch: sendBatch, kick: make(chan struct{}, 1), in: make(chan []byte, queueLen+orderSize), credit: readAhead, wrote: make(chan struct{}, 1), done: make(chan struct{}), wake: make(chan struct{})}
	c.order.deliver = c.push
	c.flushed.Go(c.flusher)
	return c
}

// flusher sends what WriteTo queued until the PacketConn closes.
func (c *PacketConn) flusher() {
	for {
		select {
		case <-c.kick:
		case <-c.done:
			return
		}
		c.mu.Lock()
		pkts := c.out
		c.out, c.spare = c.spare[:0], nil
		c.mu.Unlock()
		if len(pkts) > 0 {
			c.sendBatch(pkts)
		}
		clear(pkts)
		c.mu.Lock()
		c.spare = pkts[:0]
		c.mu.Unlock()
	}
}

// SetHold sets how long a packet missing from the far end's sequence may
// hold those after it (order): about how long the session takes to
// repair a packet every path lost; zero, or no hold, hands each packet to
// QUIC as it comes. Set it before the first Deliver.
func (c *PacketConn) SetHold(hold func() time.Duration) { c.order.hold = hold }

// Deliver takes a packet that arrived (b is copied): its sequence number,
// then a QUIC packet, which it hands to QUIC in sequence (SetHold). A
// packet too short to hold a sequence number is dropped and counted.
func (c *PacketConn) Deliver(b []byte) {
	if len(b) < seqLen {
		c.mu.Lock()
		c.dropped++
		c.mu.Unlock()
		return
	}
	c.order.arrive(binary.BigEndian.Uint32(b), append([]byte(nil), b[seqLen:]...), time.Now())
}

// push hands QUIC a packet, or drops and counts it when QUIC is that far
// behind.
func (c *PacketConn) push(buf []byte) {
	select {
	case c.in <- buf:
	case <-c.done:
	default:
		c.mu.Lock()
		c.dropped++
		c.mu.Unlock()
	}
}

// Dropped returns how many packets were dropped at a full queue, either
// way.
func (c *PacketConn) Dropped() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
func (timeoutError) Unwrap() error   { return os.ErrDeadlineExceeded }

// QUIC (quic-go) queues at most 256 packets a connection between reading
// them and processing them, and drops the rest, which it then counts lost
// and slows down for: a run of packets released at once (order, or a
// batch of the session's) must not reach it faster than it processes
// them. It processes 32 at a time and then sends what it has to, at least
// an acknowledgement of them. So ReadFrom hands out readAhead packets, and
// then readStep more each time QUIC writes, or after readWait without a
// write (a connection with nothing to say).
const (
	readAhead = 192
	readStep  = 32
	readWait  = time.Millisecond
)

// ReadFrom returns the next packet that arrived, as far as QUIC keeps up
// (readAhead); the reader must be one goroutine, as QUIC's is.
func (c *PacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if c.credit <= 0 {
		t := time.NewTimer(readWait)
		select {
		case <-c.wrote:
		case <-t.C:
		case <-c.done:
		}
		t.Stop()
		c.credit = readStep
	}
	c.credit--
	for {
		c.mu.Lock()
		dl, wake := c.dl, c.wake
		c.mu.Unlock()
		var t *time.Timer
		var expired <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, timeoutError{}
			}
			t = time.NewTimer(d)
			expired = t.C
		}
		select {
		case b := <-c.in:
			stop(t)
			return copy(p, b), Addr{}, nil
		case <-c.done:
			stop(t)
			return 0, nil, ErrClosed
		case <-expired:
			return 0, nil, timeoutError{}
		case <-wake:
			stop(t) // the deadline changed: look again
		}
	}
}

// stop stops t if there is one.
func stop(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// WriteTo sends p through the session; addr is ignored. A batched
// PacketConn queues a copy (at most queueLen packets: a write that finds
// the queue full is dropped, as a full socket buffer would).
func (c *PacketConn) WriteTo(p []byte, _ net.Addr) (int, error) {
	select {
	case <-c.done:
		return 0, ErrClosed
	default:
	}
	select {
	case c.wrote <- struct{}{}:
	default:
	}
	if c.sendBatch != nil {
		c.mu.Lock()
		if len(c.out) < queueLen {
			c.out = append(c.out, c.number(p))
		} else {
			c.dropped++ // not numbered: the far end sees no gap
		}
		c.mu.Unlock()
		select {
		case c.kick <- struct{}{}:
		default:
		}
		return len(p), nil
	}
	c.mu.Lock()
	b := c.number(p)
	c.mu.Unlock()
	if err := c.send(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

// number returns a copy of p after the next sequence number; the caller
// holds c.mu.
func (c *PacketConn) number(p []byte) []byte {
	b := make([]byte, seqLen+len(p))
	binary.BigEndian.PutUint32(b, c.seq)
	c.seq++
	copy(b[seqLen:], p)
	return b
}

// Close ends the PacketConn: reads and writes fail from now on.
func (c *PacketConn) Close() error {
	c.once.Do(func() { close(c.done) })
	c.order.close()
	c.flushed.Wait()
	return nil
}

// LocalAddr and the rest complete net.PacketConn.
func (c *PacketConn) LocalAddr() net.Addr { return Addr{} }

func (c *PacketConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

func (c *PacketConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.dl = t
	close(c.wake)
	c.wake = make(chan struct{})
	c.mu.Unlock()
	return nil
}

// SetReadBuffer and SetWriteBuffer are accepted and ignored: the queue is
// the PacketConn's own, and the session's sockets have their buffers.
func (c *PacketConn) SetReadBuffer(int) error  { return nil }
func (c *PacketConn) SetWriteBuffer(int) error { return nil }

// SetWriteDeadline is accepted and ignored: a write never blocks.
func (c *PacketConn) SetWriteDeadline(time.Time) error { return nil }
