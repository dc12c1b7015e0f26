// Package udptest serves UDP sockets in tests: a goroutine reads a socket's
// datagrams and hands each to a function until the test ends.
package udptest

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
)

// Serve reads the datagrams conn receives in a goroutine and hands each,
// with its sender, to handle until conn is closed; b is only valid during
// the call. The stop it returns closes conn and waits for the goroutine; it
// runs when the test ends too.
func Serve(tb testing.TB, conn *net.UDPConn, handle func(b []byte, from netip.AddrPort)) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // transient for a datagram socket
			}
			handle(buf[:n], from)
		}
	}()
	stop = sync.OnceFunc(func() {
		_ = conn.Close()
		<-done
	})
	tb.Cleanup(stop)
	return stop
}

// Echo serves conn by sending every datagram back to its sender, and
// returns conn's address.
func Echo(tb testing.TB, conn *net.UDPConn) string {
	Serve(tb, conn, func(b []byte, from netip.AddrPort) { _, _ = conn.WriteToUDPAddrPort(b, from) })
	return conn.LocalAddr().String()
}
