package udpio

import (
	"net"

	"golang.org/x/sys/unix"
)

// forceSendBuffer sets the send buffer with SO_SNDBUFFORCE.
func forceSendBuffer(conn *net.UDPConn, size int) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size)
	}); err != nil {
		return err
	}
	return serr
}

// forceBuffers sets the buffers with SO_RCVBUFFORCE and SO_SNDBUFFORCE, which
// ignore net.core.rmem_max and wmem_max but need CAP_NET_ADMIN.
func forceBuffers(conn *net.UDPConn, size int) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size); serr != nil {
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size)
	})
	if err != nil {
		return err
	}
	return serr
}
