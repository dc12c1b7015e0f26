//go:build !linux

package client

import (
	"errors"
	"net"
)

// listenPath opens a path socket. Binding to an interface needs Linux.
func listenPath(network string, laddr *net.UDPAddr, dev string) (*net.UDPConn, error) {
	if dev != "" {
		return nil, errors.New("binding a path to an interface is supported on Linux only")
	}
	return net.ListenUDP(network, laddr)
}
