package udpio

import (
	"errors"
	"net"
	"net/netip"
)

// Msg is one datagram in a batch.
type Msg struct {
	// Buf holds the datagram. For reads it is the buffer to fill (its full
	// length is offered to the kernel); for writes, the datagram itself.
	Buf []byte
	// N is the number of bytes read into Buf.
	N int
	// Addr is the source of a datagram read, or the destination of one written.
	Addr netip.AddrPort
	// Local is, for a read, the local address the datagram arrived on when
	// the socket reports it (see Options.PktInfo); for a write, the source
	// address to send from (the zero Addr lets the kernel choose).
	Local netip.Addr
}

// Conn is a UDP socket that moves datagrams in batches. Reads from one
// goroutine and writes from several are allowed at once.
type Conn interface {
	// ReadBatch reads at least one datagram into msgs, blocking until one
	// arrives, and returns how many it filled.
	ReadBatch(msgs []Msg) (int, error)
	// WriteBatch sends every datagram of msgs and returns how many were sent;
	// it stops at the first error.
	WriteBatch(msgs []Msg) (int, error)
	// LocalAddr is the address the socket is bound to.
	LocalAddr() netip.AddrPort
	// Close closes the socket; blocked calls return net.ErrClosed.
	Close() error
}

// Options tune a Conn. The zero value asks for every speed-up the kernel
// offers.
type Options struct {
	NoGSO     bool // never send with UDP segmentation offload
	NoGRO     bool // never receive with UDP generic receive offload
	NoBatch   bool // one datagram per system call (recvmsg/sendmsg), for comparison
	BatchSize int  // most datagrams per system call (64)
	PktInfo   bool // report each read's local address and honour Msg.Local on writes
	// SendBuffer is the most bytes a socket Listen opens holds unsent
	// (SO_SNDBUF; DefaultBuffer when 0). A write that finds it full drops
	// the rest of its batch with ErrQueueFull instead of waiting.
	SendBuffer int
}

// ErrQueueFull reports datagrams not sent because the socket's send buffer
// was full: the path or peer is slower than what is sent to it. Writes never
// wait for room, so one slow socket does not hold up the others; where the
// platform cannot tell (not Linux), writes wait as usual.
var ErrQueueFull = errors.New("send buffer full")

// Write sends msgs on c and returns how many went out, their total size, and
// the error that stopped the rest.
func Write(c Conn, msgs []Msg) (sent, bytes int, err error) {
	sent, err = c.WriteBatch(msgs)
	for i := range msgs[:sent] {
		bytes += len(msgs[i].Buf)
	}
	return sent, bytes, err
}

// Read reads a batch from c into msgs, reading again after an error other
// than the socket's closing (a transient one, such as an ICMP error surfacing
// on a connected socket), and returns how many arrived; ok is false once c is
// closed, which ends its reader.
func Read(c Conn, msgs []Msg) (n int, ok bool) {
	for {
		n, err := c.ReadBatch(msgs)
		if err == nil {
			return n, true
		}
		if errors.Is(err, net.ErrClosed) {
			return 0, false
		}
	}
}
