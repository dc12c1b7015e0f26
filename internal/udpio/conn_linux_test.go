package udpio

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// noChecksum turns off UDP checksums on sends, which the kernel refuses to
// combine with segmentation offload.
func noChecksum(uc *net.UDPConn) error {
	rc, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1)
	}); err != nil {
		return err
	}
	return serr
}

// TestGSOCoalesce checks how a batch is cut into GSO sends.
func TestGSOCoalesce(t *testing.T) {
	c, _ := listen(t, "udp4", "127.0.0.1:0", Options{BatchSize: 256})
	bc := c.(*batchConn)
	if !bc.Features().GSO {
		t.Skip("no GSO")
	}
	a := netip.MustParseAddrPort("127.0.0.1:9")
	b := netip.MustParseAddrPort("127.0.0.1:10")
	mk := func(spec ...any) []Msg {
		var msgs []Msg
		for i := 0; i < len(spec); i += 3 {
			for range spec[i].(int) {
				msgs = append(msgs, Msg{Buf: make([]byte, spec[i+1].(int)), Addr: spec[i+2].(netip.AddrPort)})
			}
		}
		return msgs
	}
	for _, tc := range []struct {
		name string
		msgs []Msg
		want []int // datagrams per header
	}{
		{"run and a shorter one", mk(50, 1200, a, 1, 700, a), []int{51}},
		{"shorter one ends the run", mk(3, 1200, a, 1, 700, a, 2, 1200, a), []int{4, 2}},
		{"longer one starts a run", mk(3, 1000, a, 2, 1200, a), []int{3, 2}},
		{"segment limit", mk(70, 100, a), []int{64, 6}},
		{"byte limit", mk(10, 9000, a), []int{7, 3}},
		{"alternating", mk(1, 100, a, 1, 100, b, 1, 100, a), []int{1, 1, 1}},
		{"empty datagrams alone", mk(2, 0, a, 2, 5, a), []int{1, 1, 2}},
		{"large ones alone", mk(2, 65507, a), []int{1, 1}},
	} {
		w := <-bc.wfree
		nh, err := w.prepare(tc.msgs, true)
		got := append([]int(nil), w.cnt[:nh]...)
		w.release()
		bc.wfree <- w
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: headers %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
}

// TestGSOFallback makes the kernel refuse segmentation (SO_NO_CHECK) and
// checks that the datagrams still go, one by one.
func TestGSOFallback(t *testing.T) {
	snd, sndUC := listen(t, "udp4", "127.0.0.1:0", Options{NoGRO: true})
	if !FeaturesOf(snd).GSO {
		t.Skip("no GSO")
	}
	if err := noChecksum(sndUC); err != nil {
		t.Skip(err)
	}
	rcv, rcvUC := listen(t, "udp4", "127.0.0.1:0", Options{NoGRO: true})
	sizes := make([]int, 20)
	for i := range sizes {
		sizes[i] = 1200
	}
	roundTrip(t, snd, rcv, rcvUC, rcv.LocalAddr(), snd.LocalAddr(), sizes)
	if FeaturesOf(snd).GSO {
		t.Error("GSO still on after the kernel refused it")
	}
}

// TestGRO sends a burst from a GSO sender to a GRO receiver: the kernel hands
// the receiver coalesced buffers, which must come out as the datagrams sent.
func TestGRO(t *testing.T) {
	for _, net6 := range []bool{false, true} {
		nw, addr, loop := "udp4", "127.0.0.1:0", "127.0.0.1"
		if net6 {
			nw, addr, loop = "udp6", "[::1]:0", "::1"
		}
		snd, _ := listen(t, nw, addr, Options{NoGRO: true})
		rcv, rcvUC := listen(t, nw, addr, Options{NoGSO: true})
		if !FeaturesOf(snd).GSO || !FeaturesOf(rcv).GRO {
			t.Skip("no GSO or GRO")
		}
		var sizes []int
		for range 3 {
			for range 40 {
				sizes = append(sizes, 1200)
			}
			sizes = append(sizes, 333)
		}
		out := outMsgs(sizes, to(rcv, loop))
		if n, err := snd.WriteBatch(out); err != nil || n != len(out) {
			t.Fatalf("WriteBatch = %d, %v", n, err)
		}
		// Read in small batches, so that coalesced buffers outlast a call.
		_ = rcvUC.SetReadDeadline(time.Now().Add(5 * time.Second))
		in := inMsgs(5, 2000)
		r := rcv.(*batchConn).r
		got, coalesced := 0, false
		for got < len(sizes) {
			n, err := rcv.ReadBatch(in)
			if err != nil {
				t.Fatalf("after %d datagrams: %v", got, err)
			}
			for j := range r.pn {
				coalesced = coalesced || r.seg[j] > 0
			}
			for _, m := range in[:n] {
				if m.N != sizes[got] || m.Addr != to(snd, loop) {
					t.Fatalf("datagram %d: %d bytes from %s, want %d from %s", got, m.N, m.Addr, sizes[got], to(snd, loop))
				}
				if err := check(m.Buf[:m.N], got); err != nil {
					t.Fatal(err)
				}
				got++
			}
		}
		if !coalesced {
			t.Errorf("%s: the kernel coalesced nothing", nw)
		}
	}
}
