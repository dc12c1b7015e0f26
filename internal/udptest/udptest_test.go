package udptest

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func listen(t *testing.T) *net.UDPConn {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestEcho: every datagram comes back whole; once stopped, the socket is
// closed and its goroutine gone (goleak checks the latter).
func TestEcho(t *testing.T) {
	addr := Echo(t, listen(t))
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 65536)
	for _, n := range []int{0, 1, 1500, 65507} {
		msg := make([]byte, n)
		for i := range msg {
			msg[i] = byte(i * n)
		}
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, err := c.Read(buf)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if string(buf[:k]) != string(msg) {
			t.Fatalf("%d bytes: got %d bytes back, not the same", n, k)
		}
	}
}

// TestServeStop: handle sees each datagram with its sender; stop closes the
// socket and may be called again.
func TestServeStop(t *testing.T) {
	conn := listen(t)
	got := make(chan netip.AddrPort, 1)
	stop := Serve(t, conn, func(b []byte, from netip.AddrPort) {
		if string(b) == "hi" {
			got <- from
		}
	})
	c := listen(t)
	defer c.Close()
	if _, err := c.WriteToUDPAddrPort([]byte("hi"), conn.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	select {
	case from := <-got:
		if from != c.LocalAddr().(*net.UDPAddr).AddrPort() {
			t.Fatalf("sender %v, want %v", from, c.LocalAddr())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handle never saw the datagram")
	}
	stop()
	stop()
	if _, _, err := conn.ReadFromUDPAddrPort(make([]byte, 1)); err == nil {
		t.Fatal("the socket is still open after stop")
	}
}
