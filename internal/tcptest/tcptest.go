// Package tcptest serves TCP in tests: a server on loopback that hands each
// connection to a function, and an echo server made of it that answers with
// what it reads and then half-closes, as the tests of TCP streams need.
package tcptest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Serve starts a server on loopback that runs handle for each connection,
// which it closes after, and returns its address; the server stops, its
// connections close and its goroutines end when the test ends.
func Serve(tb testing.TB, handle func(*net.TCPConn)) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				handle(c.(*net.TCPConn))
			})
		}
	})
	return ln.Addr().String()
}

// Echo starts an echo server on loopback and returns its address.
func Echo(tb testing.TB) string {
	tb.Helper()
	return Serve(tb, func(c *net.TCPConn) {
		io.Copy(c, c)
		c.CloseWrite()
	})
}
