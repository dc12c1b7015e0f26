package udpio

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// bindToDevice binds a socket to a network interface (SO_BINDTODEVICE).
func bindToDevice(rc syscall.RawConn, dev string) error {
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), dev) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("bind to interface %s: %w", dev, serr)
	}
	return nil
}
