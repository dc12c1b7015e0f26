package udpio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"
)

type mode struct {
	name string
	opts Options
}

var modes = []mode{
	{"NoBatch", Options{NoBatch: true, NoGSO: true, NoGRO: true}},
	{"Batch", Options{NoGSO: true, NoGRO: true}},
	{"GSO", Options{NoGRO: true}},
	{"GRO", Options{NoGSO: true}},
	{"GROGSO", Options{}},
}

// listen opens a Conn on network/addr with large buffers; the socket is
// returned too, for deadlines.
func listen(tb testing.TB, network, addr string, opts Options) (Conn, *net.UDPConn) {
	tb.Helper()
	uc, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		tb.Skipf("listen %s %s: %v", network, addr, err)
	}
	_ = SetBuffers(uc, 16<<20)
	c, err := NewConn(uc, opts)
	if err != nil {
		uc.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c, uc
}

// to is c's address as a peer on the loopback writes to it.
func to(c Conn, loop string) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(loop), c.LocalAddr().Port())
}

// fill writes a datagram that names its index and size.
func fill(b []byte, i int) {
	for j := range b {
		b[j] = byte(i*31 + j)
	}
	if len(b) >= 8 {
		binary.BigEndian.PutUint32(b, uint32(i))
		binary.BigEndian.PutUint32(b[4:], uint32(len(b)))
	}
}

func check(b []byte, i int) error {
	want := make([]byte, len(b))
	fill(want, i)
	for j := range b {
		if b[j] != want[j] {
			return fmt.Errorf("datagram %d (%d bytes): byte %d is %d, want %d", i, len(b), j, b[j], want[j])
		}
	}
	return nil
}

var mixed = []int{0, 1, 1200, 9000, 65507}

// sizesFor makes n sizes of the mixed set in runs of three, so that GSO has
// something to coalesce.
func sizesFor(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = mixed[(i/3)%len(mixed)]
	}
	return s
}

func outMsgs(sizes []int, dst netip.AddrPort) []Msg {
	msgs := make([]Msg, len(sizes))
	for i, n := range sizes {
		msgs[i] = Msg{Buf: make([]byte, n), Addr: dst}
		fill(msgs[i].Buf, i)
	}
	return msgs
}

func inMsgs(n, size int) []Msg {
	msgs := make([]Msg, n)
	for i := range msgs {
		msgs[i].Buf = make([]byte, size)
	}
	return msgs
}

// readN reads n datagrams from c, failing after a few seconds.
func readN(tb testing.TB, c Conn, uc *net.UDPConn, n int) []Msg {
	tb.Helper()
	_ = uc.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer uc.SetReadDeadline(time.Time{})
	in := inMsgs(64, 1<<16)
	var got []Msg
	for len(got) < n {
		k, err := c.ReadBatch(in[:min(len(in), n-len(got))])
		if err != nil {
			tb.Fatalf("read after %d of %d datagrams: %v", len(got), n, err)
		}
		if k == 0 {
			tb.Fatal("ReadBatch returned no datagram")
		}
		for _, m := range in[:k] {
			got = append(got, Msg{Buf: append([]byte(nil), m.Buf[:m.N]...), N: m.N, Addr: m.Addr, Local: m.Local})
		}
	}
	return got
}

func roundTrip(t *testing.T, snd, rcv Conn, rcvUC *net.UDPConn, dst, from netip.AddrPort, sizes []int) {
	t.Helper()
	out := outMsgs(sizes, dst)
	n, err := snd.WriteBatch(out)
	if err != nil || n != len(out) {
		t.Fatalf("WriteBatch = %d, %v; want %d", n, err, len(out))
	}
	got := readN(t, rcv, rcvUC, len(sizes))
	for i, m := range got {
		if m.N != sizes[i] {
			t.Fatalf("datagram %d: %d bytes, want %d", i, m.N, sizes[i])
		}
		if err := check(m.Buf, i); err != nil {
			t.Fatal(err)
		}
		if m.Addr != from {
			t.Fatalf("datagram %d from %s, want %s", i, m.Addr, from)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	type pair struct {
		name           string
		sndNet, sndAdr string
		rcvNet, rcvAdr string
		loop           string // the loopback address both use
	}
	pairs := []pair{
		{"IPv4", "udp4", "127.0.0.1:0", "udp4", "127.0.0.1:0", "127.0.0.1"},
		{"IPv6", "udp6", "[::1]:0", "udp6", "[::1]:0", "::1"},
		{"DualToIPv4", "udp", "[::]:0", "udp4", "127.0.0.1:0", "127.0.0.1"},
		{"IPv4ToDual", "udp4", "127.0.0.1:0", "udp", "[::]:0", "127.0.0.1"},
	}
	for _, md := range modes {
		for _, p := range pairs {
			t.Run(md.name+"/"+p.name, func(t *testing.T) {
				snd, _ := listen(t, p.sndNet, p.sndAdr, md.opts)
				rcv, rcvUC := listen(t, p.rcvNet, p.rcvAdr, md.opts)
				dst, from := to(rcv, p.loop), to(snd, p.loop)
				for _, n := range []int{1, 7, 64, 200} {
					roundTrip(t, snd, rcv, rcvUC, dst, from, sizesFor(n))
				}
			})
		}
	}
}

func TestFeatures(t *testing.T) {
	for _, md := range modes {
		c, _ := listen(t, "udp", "[::]:0", Options{NoBatch: md.opts.NoBatch, NoGSO: md.opts.NoGSO, NoGRO: md.opts.NoGRO, PktInfo: true})
		f := FeaturesOf(c)
		t.Logf("%s: %+v", md.name, f)
		if f.Batch == md.opts.NoBatch || (md.opts.NoGSO && f.GSO) || (md.opts.NoGRO && f.GRO) {
			t.Errorf("%s: features %+v do not follow the options", md.name, f)
		}
	}
}

// TestGSORuns sends a run of equal datagrams and a shorter one, and
// interleaved destinations.
func TestGSORuns(t *testing.T) {
	for _, md := range modes {
		t.Run(md.name, func(t *testing.T) {
			snd, _ := listen(t, "udp4", "127.0.0.1:0", md.opts)
			a, aUC := listen(t, "udp4", "127.0.0.1:0", md.opts)
			b, bUC := listen(t, "udp4", "127.0.0.1:0", md.opts)
			from := to(snd, "127.0.0.1")

			var out []Msg
			var wantA, wantB []int // sizes in order
			add := func(dst netip.AddrPort, n int, want *[]int) {
				m := Msg{Buf: make([]byte, n), Addr: dst}
				fill(m.Buf, len(*want))
				*want = append(*want, n)
				out = append(out, m)
			}
			for range 50 {
				add(a.LocalAddr(), 1200, &wantA)
			}
			add(a.LocalAddr(), 700, &wantA)
			for i := range 40 { // alternating destinations
				if i%2 == 0 {
					add(a.LocalAddr(), 1000, &wantA)
				} else {
					add(b.LocalAddr(), 1000, &wantB)
				}
			}
			for i := range 30 { // runs of five per destination
				if i/5%2 == 0 {
					add(a.LocalAddr(), 1300, &wantA)
				} else {
					add(b.LocalAddr(), 1300, &wantB)
				}
			}
			for range 70 { // longer than one GSO send
				add(b.LocalAddr(), 900, &wantB)
			}
			if n, err := snd.WriteBatch(out); err != nil || n != len(out) {
				t.Fatalf("WriteBatch = %d, %v", n, err)
			}
			for _, r := range []struct {
				c    Conn
				uc   *net.UDPConn
				want []int
			}{{a, aUC, wantA}, {b, bUC, wantB}} {
				got := readN(t, r.c, r.uc, len(r.want))
				for i, m := range got {
					if m.N != r.want[i] || m.Addr != from {
						t.Fatalf("datagram %d: %d bytes from %s, want %d from %s", i, m.N, m.Addr, r.want[i], from)
					}
					if err := check(m.Buf, i); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	}
}

// TestPktInfo checks that a socket bound to a wildcard learns the address a
// datagram was sent to and can answer from it.
func TestPktInfo(t *testing.T) {
	for _, md := range modes {
		for _, wild := range []string{"[::]:0", "0.0.0.0:0"} {
			t.Run(md.name+"/"+wild, func(t *testing.T) {
				opts := md.opts
				opts.PktInfo = true
				nw := "udp"
				if wild == "0.0.0.0:0" {
					nw = "udp4"
				}
				srv, srvUC := listen(t, nw, wild, opts)
				if !FeaturesOf(srv).PktInfo {
					t.Fatal("no PktInfo")
				}
				cli, cliUC := listen(t, "udp4", "127.0.0.1:0", md.opts)
				dst := to(srv, "127.0.0.2")
				if _, err := cli.WriteBatch(outMsgs([]int{10, 10}, dst)); err != nil {
					t.Fatal(err)
				}
				got := readN(t, srv, srvUC, 2)
				for _, m := range got {
					if m.Local != dst.Addr() || m.Addr != cli.LocalAddr() {
						t.Fatalf("datagram from %s to %s; want from %s to %s", m.Addr, m.Local, cli.LocalAddr(), dst.Addr())
					}
				}
				// Answer from the address written to, with a run GSO may
				// coalesce.
				reply := outMsgs([]int{50, 50, 50, 20}, got[0].Addr)
				for i := range reply {
					reply[i].Local = got[0].Local
				}
				if n, err := srv.WriteBatch(reply); err != nil || n != len(reply) {
					t.Fatalf("WriteBatch = %d, %v", n, err)
				}
				for i, m := range readN(t, cli, cliUC, len(reply)) {
					if m.Addr != dst || m.N != len(reply[i].Buf) {
						t.Fatalf("reply %d: %d bytes from %s, want %d from %s", i, m.N, m.Addr, len(reply[i].Buf), dst)
					}
				}
			})
		}
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	for _, md := range modes {
		c, _ := listen(t, "udp", "[::]:0", md.opts)
		errc := make(chan error, 1)
		go func() {
			_, err := c.ReadBatch(inMsgs(4, 100))
			errc <- err
		}()
		time.Sleep(20 * time.Millisecond)
		c.Close()
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("%s: ReadBatch after Close: %v, want net.ErrClosed", md.name, err)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("%s: ReadBatch still blocked after Close", md.name)
		}
		if _, err := c.WriteBatch(outMsgs([]int{1}, netip.MustParseAddrPort("127.0.0.1:9"))); !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s: WriteBatch after Close: %v, want net.ErrClosed", md.name, err)
		}
	}
}

func TestEmptyDatagrams(t *testing.T) {
	for _, md := range modes {
		snd, _ := listen(t, "udp4", "127.0.0.1:0", md.opts)
		rcv, rcvUC := listen(t, "udp4", "127.0.0.1:0", md.opts)
		roundTrip(t, snd, rcv, rcvUC, rcv.LocalAddr(), snd.LocalAddr(), []int{0, 0, 0, 5, 0})
	}
}

func TestWriteErrors(t *testing.T) {
	c, _ := listen(t, "udp4", "127.0.0.1:0", Options{})
	rcv, rcvUC := listen(t, "udp4", "127.0.0.1:0", Options{})
	msgs := outMsgs([]int{1, 1, 1}, rcv.LocalAddr())
	msgs[2].Addr = netip.MustParseAddrPort("[::1]:9")
	n, err := c.WriteBatch(msgs)
	if n != 2 || err == nil {
		t.Fatalf("WriteBatch to an IPv6 address on an IPv4 socket = %d, %v", n, err)
	}
	readN(t, rcv, rcvUC, 2)
	if n, err := c.WriteBatch([]Msg{{Buf: []byte{1}}}); n != 0 || err == nil {
		t.Fatalf("WriteBatch to no address = %d, %v", n, err)
	}
}

// TestConcurrentWrites writes from several goroutines at once.
func TestConcurrentWrites(t *testing.T) {
	for _, md := range modes {
		snd, _ := listen(t, "udp4", "127.0.0.1:0", md.opts)
		rcv, rcvUC := listen(t, "udp4", "127.0.0.1:0", md.opts)
		const writers, each = 6, 100
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i += 10 {
					msgs := make([]Msg, 10)
					for j := range msgs {
						msgs[j] = Msg{Buf: make([]byte, 100), Addr: rcv.LocalAddr()}
						msgs[j].Buf[0], msgs[j].Buf[1] = byte(w), byte(i+j)
					}
					if _, err := snd.WriteBatch(msgs); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		got := readN(t, rcv, rcvUC, writers*each)
		wg.Wait()
		next := make([]int, writers)
		for _, m := range got {
			w, i := int(m.Buf[0]), int(m.Buf[1])
			if i != next[w] {
				t.Fatalf("%s: writer %d: datagram %d, want %d", md.name, w, i, next[w])
			}
			next[w]++
		}
	}
}

// exchange writes out and reads as many datagrams into in.
func exchange(tb testing.TB, snd, rcv Conn, out, in []Msg) {
	if n, err := snd.WriteBatch(out); err != nil || n != len(out) {
		tb.Fatalf("WriteBatch = %d, %v", n, err)
	}
	for got := 0; got < len(out); {
		n, err := rcv.ReadBatch(in[:min(len(in), len(out)-got)])
		if err != nil {
			tb.Fatal(err)
		}
		got += n
	}
}

func TestAllocs(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the portable Conn allocates")
	}
	for _, md := range modes {
		for _, pkt := range []bool{false, true} {
			opts := md.opts
			opts.PktInfo = pkt
			snd, _ := listen(t, "udp", "[::]:0", opts)
			rcv, rcvUC := listen(t, "udp", "[::]:0", opts)
			out := outMsgs(sizesFor(64)[:0], netip.AddrPort{})
			for range 64 {
				m := Msg{Buf: make([]byte, 1200), Addr: to(rcv, "127.0.0.1")}
				if pkt {
					m.Local = netip.MustParseAddr("127.0.0.1")
				}
				out = append(out, m)
			}
			in := inMsgs(64, 1500)
			_ = rcvUC.SetReadDeadline(time.Now().Add(10 * time.Second))
			for _, batch := range []int{1, 64} {
				allocs := testing.AllocsPerRun(50, func() { exchange(t, snd, rcv, out[:batch], in) })
				if allocs != 0 {
					t.Errorf("%s PktInfo=%v, %d datagrams: %v allocations per exchange", md.name, pkt, batch, allocs)
				}
			}
		}
	}
}

func benchWriteRead(b *testing.B, opts Options) {
	snd, _ := listen(b, "udp4", "127.0.0.1:0", opts)
	rcv, _ := listen(b, "udp4", "127.0.0.1:0", opts)
	if b.N == 1 {
		b.Logf("features: %+v", FeaturesOf(snd))
	}
	const batch, size = 64, 1200
	out := make([]Msg, batch)
	for i := range out {
		out[i] = Msg{Buf: make([]byte, size), Addr: rcv.LocalAddr()}
	}
	in := inMsgs(batch, 1500)
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for sent := 0; sent < b.N; sent += batch {
		exchange(b, snd, rcv, out[:min(batch, b.N-sent)], in)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
}

func BenchmarkWriteReadNoBatch(b *testing.B) {
	benchWriteRead(b, Options{NoBatch: true, NoGSO: true, NoGRO: true})
}
func BenchmarkWriteReadBatch(b *testing.B)  { benchWriteRead(b, Options{NoGSO: true, NoGRO: true}) }
func BenchmarkWriteReadGSO(b *testing.B)    { benchWriteRead(b, Options{NoGRO: true}) }
func BenchmarkWriteReadGROGSO(b *testing.B) { benchWriteRead(b, Options{}) }
