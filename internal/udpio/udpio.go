// Package udpio holds the tunnel's socket-level plumbing: socket buffer sizes
// now, batched reads and writes later. Platform code lives in _linux.go files
// with a portable fallback.
package udpio

import "net"

// DefaultBuffer is the socket buffer size the tunnel asks for: several MiB,
// so that bursts (a fragmented 64 KiB datagram sent on three paths is about
// 150 packets) are not dropped by the kernel.
const DefaultBuffer = 4 << 20

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
