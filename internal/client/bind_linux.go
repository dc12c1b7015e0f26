package client

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenPath opens a path socket, bound to the local interface dev when set.
func listenPath(network string, laddr *net.UDPAddr, dev string) (*net.UDPConn, error) {
	lc := net.ListenConfig{}
	if dev != "" {
		lc.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.BindToDevice(int(fd), dev)
			}); err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("bind to interface %s: %w", dev, serr)
			}
			return nil
		}
	}
	addr := ""
	if laddr != nil {
		addr = laddr.String()
	}
	pc, err := lc.ListenPacket(context.Background(), network, addr)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}
