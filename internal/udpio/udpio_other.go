//go:build !linux

package udpio

import (
	"errors"
	"net"
)

func forceBuffers(*net.UDPConn, int) error {
	return errors.New("not supported")
}

func forceSendBuffer(*net.UDPConn, int) error {
	return errors.New("not supported")
}
