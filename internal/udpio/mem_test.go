package udpio

import (
	"errors"
	"net"
	"net/netip"
	"testing"
)

func TestMemNet(t *testing.T) {
	var nw MemNet
	a, err := nw.Listen(netip.AddrPort{}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := nw.Listen(netip.MustParseAddrPort("127.0.0.1:0"), "")
	if err != nil {
		t.Fatal(err)
	}
	if a.LocalAddr() == b.LocalAddr() {
		t.Fatal("two sockets share an address")
	}
	if _, err := nw.Listen(b.LocalAddr(), ""); err == nil {
		t.Fatal("an address in use was given out again")
	}
	if _, err := nw.Listen(netip.AddrPort{}, "eth0"); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("interface binding: %v", err)
	}
	out := []Msg{{Buf: []byte("one"), Addr: b.LocalAddr()}, {Buf: nil, Addr: b.LocalAddr()}, {Buf: []byte("x"), Addr: netip.MustParseAddrPort("127.0.0.1:9")}}
	if n, err := a.WriteBatch(out); err != nil || n != 3 {
		t.Fatalf("write: %d %v", n, err)
	}
	in := make([]Msg, 4)
	for i := range in {
		in[i].Buf = make([]byte, 16)
	}
	n, err := b.ReadBatch(in)
	if err != nil || n != 2 || string(in[0].Buf[:in[0].N]) != "one" || in[1].N != 0 || in[0].Addr != a.LocalAddr() {
		t.Fatalf("read: %d %v %+v", n, err, in[:n])
	}

	// A dialled socket hears only its peer, and writes only to it.
	d, err := nw.Dial(b.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	a.WriteBatch([]Msg{{Buf: []byte("stranger"), Addr: d.LocalAddr()}})
	b.WriteBatch([]Msg{{Buf: []byte("peer"), Addr: d.LocalAddr()}})
	if n, err := d.ReadBatch(in); err != nil || n != 1 || string(in[0].Buf[:in[0].N]) != "peer" {
		t.Fatalf("dialled read: %d %v %q", n, err, in[0].Buf[:in[0].N])
	}
	d.WriteBatch([]Msg{{Buf: []byte("back"), Addr: a.LocalAddr()}})
	if n, err := b.ReadBatch(in); err != nil || n != 1 || string(in[0].Buf[:in[0].N]) != "back" {
		t.Fatalf("dialled write went elsewhere: %d %v", n, err)
	}

	// A full queue drops; Close unblocks a reader.
	for i := 0; i < memQueueLen+10; i++ {
		a.WriteBatch([]Msg{{Buf: []byte{1}, Addr: b.LocalAddr()}})
	}
	if got := b.(*memConn).dropped; got != 10 {
		t.Fatalf("dropped %d, want 10", got)
	}
	done := make(chan error)
	c, _ := nw.Listen(netip.AddrPort{}, "")
	go func() {
		_, err := c.ReadBatch(in)
		done <- err
	}()
	c.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	b.Close()
}

// flaky is a Conn whose first read fails with a transient error.
type flaky struct {
	Conn
	failed bool
}

func (f *flaky) ReadBatch(msgs []Msg) (int, error) {
	if !f.failed {
		f.failed = true
		return 0, errors.New("connection refused")
	}
	return f.Conn.ReadBatch(msgs)
}

// TestRead: Read goes on after a transient error and ends when the socket
// closes.
func TestRead(t *testing.T) {
	var n MemNet
	a, err := n.Listen(netip.AddrPort{}, "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.Listen(netip.AddrPort{}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.WriteBatch([]Msg{{Buf: []byte("hi"), Addr: a.LocalAddr()}}); err != nil {
		t.Fatal(err)
	}
	in := []Msg{{Buf: make([]byte, 16)}}
	if got, ok := Read(&flaky{Conn: a}, in); !ok || got != 1 || string(in[0].Buf[:in[0].N]) != "hi" {
		t.Fatalf("Read = %d, %v, %q", got, ok, in[0].Buf[:in[0].N])
	}
	a.Close()
	if got, ok := Read(a, in); ok || got != 0 {
		t.Fatalf("Read after Close = %d, %v; want 0, false", got, ok)
	}
}
