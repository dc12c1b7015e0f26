// Package udpio holds the tunnel's socket-level plumbing: socket buffer
// sizes and batched reads and writes with segmentation and receive offload.
// Platform code lives in _linux.go files with a portable fallback.
package udpio

import "net"

// DefaultBuffer is the socket buffer size the tunnel asks for on the sockets
// that carry every path: 16 MiB, about 7,000 datagrams of 1,200 bytes, or
// 10 ms at 700,000 packets a second, so that a reader descheduled for a few
// milliseconds on a busy machine loses nothing (4 MiB lost 0.1% and more at
// those rates).
const DefaultBuffer = 16 << 20

// FlowBuffer is the socket buffer size of a socket that carries one flow.
const FlowBuffer = 4 << 20

// setSendBuffer sets conn's send buffer alone, past the system's limit
// where the process may.
func setSendBuffer(conn *net.UDPConn, size int) error {
	if err := forceSendBuffer(conn, size); err == nil {
		return nil
	}
	return conn.SetWriteBuffer(size)
}

// SetBuffers asks for receive and send buffers of size bytes on conn. Where
// the process may (root on Linux) it goes past the system's limit; elsewhere
// the kernel caps it silently. It returns the first error.
func SetBuffers(conn *net.UDPConn, size int) error {
	if err := forceBuffers(conn, size); err == nil {
		return nil
	}
	if err := conn.SetReadBuffer(size); err != nil {
		return err
	}
	return conn.SetWriteBuffer(size)
}
