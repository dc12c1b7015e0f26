package bench

import (
	"fmt"
	"net"

	"github.com/mptunnel/mptunnel/internal/udpio"
)

// listenBatch binds a UDP socket on an ephemeral loopback port with large
// buffers and returns it as a batched udpio.Conn.
func listenBatch(opts udpio.Options) (udpio.Conn, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("bind loopback socket: %w", err)
	}
	_ = udpio.SetBuffers(c, udpio.DefaultBuffer) // best effort: the kernel may cap it
	bc, err := udpio.NewConn(c, opts)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("batched socket: %w", err)
	}
	return bc, nil
}
