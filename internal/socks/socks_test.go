package socks

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/mptunnel/mptunnel/internal/wire"
)

func TestRequest(t *testing.T) {
	for _, c := range []struct {
		in   []byte
		want Request
		err  error
	}{
		{[]byte{5, 3, 0, 1, 0, 0, 0, 0, 0, 0}, Request{Cmd: 3, Atyp: 1, Dst: wire.Target{Addr: netip.IPv4Unspecified()}}, nil},
		{[]byte{5, 1, 0, 3, 3, 'a', '.', 'b', 0, 80}, Request{Cmd: 1, Atyp: 3, Dst: wire.Target{Name: "a.b", Port: 80}}, nil},
		{append(append([]byte{5, 2, 0, 4}, netip.MustParseAddr("2001:db8::1").AsSlice()...), 1, 0), Request{Cmd: 2, Atyp: 4, Dst: wire.Target{Addr: netip.MustParseAddr("2001:db8::1"), Port: 256}}, nil},
		{[]byte{5, 1, 0, 9, 1, 2}, Request{Cmd: 1, Atyp: 9}, ErrAddressType},
		{[]byte{4, 1, 0, 1, 0, 0, 0, 0, 0, 0}, Request{}, ErrMalformed},
		{[]byte{5, 1, 0, 3, 0, 0, 80}, Request{Cmd: 1, Atyp: 3}, ErrMalformed},
		{[]byte{5, 1, 0, 1, 1, 2}, Request{Cmd: 1, Atyp: 1}, errShort},
	} {
		got, err := ReadRequest(bytes.NewReader(c.in))
		if c.err == errShort {
			if err == nil {
				t.Errorf("%x: a short request read", c.in)
			}
			continue
		}
		if !errors.Is(err, c.err) || got != c.want {
			t.Errorf("%x: %+v %v, want %+v %v", c.in, got, err, c.want, c.err)
		}
	}
}

var errShort = errors.New("short")

func TestGreetingAndAuth(t *testing.T) {
	if m, err := ReadMethods(bytes.NewReader([]byte{5, 2, 0, 2})); err != nil || !bytes.Equal(m, []byte{0, 2}) {
		t.Fatalf("methods %x %v", m, err)
	}
	for _, b := range [][]byte{{4, 1, 0}, {5, 0}, {5, 2, 0}} {
		if _, err := ReadMethods(bytes.NewReader(b)); err == nil {
			t.Fatalf("%x read", b)
		}
	}
	if u, p, err := ReadUserPass(bytes.NewReader([]byte{1, 3, 'b', 'o', 'b', 2, 'p', 'w'})); err != nil || u != "bob" || p != "pw" {
		t.Fatalf("user/pass %q %q %v", u, p, err)
	}
	for _, b := range [][]byte{{2, 1, 'a', 1, 'b'}, {1, 0, 1, 'b'}, {1, 1, 'a', 0}, {1, 3, 'b'}} {
		if _, _, err := ReadUserPass(bytes.NewReader(b)); err == nil {
			t.Fatalf("%x read", b)
		}
	}
}

func TestReplyAndUDP(t *testing.T) {
	if got := Reply(RepSucceeded, netip.MustParseAddrPort("127.0.0.1:1081")); !bytes.Equal(got, []byte{5, 0, 0, 1, 127, 0, 0, 1, 4, 57}) {
		t.Fatalf("reply %x", got)
	}
	if got := Reply(RepCommandUnsupported, netip.AddrPort{}); !bytes.Equal(got, []byte{5, 7, 0, 1, 0, 0, 0, 0, 0, 0}) {
		t.Fatalf("reply %x", got)
	}
	for _, dst := range []wire.Target{{Addr: netip.MustParseAddr("10.0.0.53"), Port: 53}, {Name: "dns.example", Port: 53}, {Addr: netip.MustParseAddr("2001:db8::5"), Port: 5}} {
		d := AppendUDP(nil, dst, []byte("query"))
		h, body, err := ParseUDP(d)
		if err != nil || h.Frag != 0 || h.Dst != dst || string(body) != "query" {
			t.Fatalf("%v: %+v %q %v", dst, h, body, err)
		}
		for k := range d[:len(d)-len("query")] {
			if _, _, err := ParseUDP(d[:k]); err == nil {
				t.Fatalf("%v: a %d-byte prefix parsed", dst, k)
			}
		}
	}
	if _, _, err := ParseUDP([]byte{0, 0, 0, 1, 1, 2, 3, 4, 0, 0}); err == nil {
		t.Fatal("a datagram to port 0 parsed")
	}
}

// FuzzParseUDP: no panic, and what parses re-encodes to the same header.
func FuzzParseUDP(f *testing.F) {
	for _, dst := range []wire.Target{{Addr: netip.MustParseAddr("10.0.0.53"), Port: 53}, {Name: "dns.example", Port: 53}, {Addr: netip.MustParseAddr("2001:db8::5"), Port: 5}} {
		d := AppendUDP(nil, dst, []byte("query"))
		f.Add(d)
		f.Add(d[:4])
		f.Add(d[:len(d)-6])
		f.Add(append(d, make([]byte, 2000)...))
		d[2] = 1
		f.Add(d)
	}
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 3, 255})
	f.Add([]byte{0, 0, 0, 9})
	f.Add([]byte{1, 0, 0, 1, 1, 2, 3, 4, 0, 53})
	f.Add(append([]byte{0, 0, 0, 3, 255}, make([]byte, 257)...)) // the longest name, oversized payload after
	f.Add([]byte{0, 0, 0, 4, 1})                                 // a truncated IPv6 address
	f.Fuzz(func(t *testing.T, b []byte) {
		h, body, err := ParseUDP(b)
		if err != nil {
			return
		}
		if h.Dst.Port == 0 || (h.Dst.Name == "") == !h.Dst.Addr.IsValid() {
			t.Fatalf("%x parsed to %+v", b, h)
		}
		if len(body) > len(b) {
			t.Fatalf("body longer than the datagram")
		}
	})
}

// FuzzReadRequest: no panic on any bytes.
func FuzzReadRequest(f *testing.F) {
	for _, b := range [][]byte{{5, 3, 0, 1, 0, 0, 0, 0, 0, 0}, {5, 1, 0, 3, 3, 'a', '.', 'b', 0, 80}, {5, 1, 0, 9}, {5}, {}, {5, 1, 0, 3, 255}} {
		f.Add(b)
	}
	for k := range 14 {
		f.Add(append(append([]byte{5, 2, 0, 4}, netip.MustParseAddr("2001:db8::1").AsSlice()...), 1, 0)[:k+4])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := ReadRequest(bytes.NewReader(b))
		if err == nil && req.Dst.Name == "" && !req.Dst.Addr.IsValid() {
			t.Fatalf("%x read to %+v with no address", b, req)
		}
	})
}

// TestSocksAssociationSource: the source of a UDP association is what its
// request names, the control connection's address standing for an address
// of zeros (or a name), and a port of 0 binds it to the first sender. The
// end-to-end checks against a running client are TestSocksSource and
// TestSocksSourcePySocks in internal/e2e.
func TestSocksAssociationSource(t *testing.T) {
	ctrl := netip.MustParseAddr("127.0.0.1")
	ap := netip.MustParseAddrPort
	for _, c := range []struct {
		dst  wire.Target
		want netip.AddrPort
	}{
		{wire.Target{Addr: netip.IPv4Unspecified(), Port: 4000}, ap("127.0.0.1:4000")},
		{wire.Target{Addr: netip.IPv6Unspecified(), Port: 4000}, ap("127.0.0.1:4000")},
		{wire.Target{Addr: netip.IPv4Unspecified()}, ap("127.0.0.1:0")},
		{wire.Target{}, ap("127.0.0.1:0")},
		{wire.Target{Name: "client.lan", Port: 4000}, ap("127.0.0.1:4000")},
		{wire.Target{Addr: netip.MustParseAddr("127.0.0.1"), Port: 4000}, ap("127.0.0.1:4000")},
		{wire.Target{Addr: netip.MustParseAddr("::ffff:127.0.0.1"), Port: 4000}, ap("127.0.0.1:4000")},
		{wire.Target{Addr: netip.MustParseAddr("192.0.2.7"), Port: 4000}, ap("192.0.2.7:4000")},
		{wire.Target{Addr: netip.MustParseAddr("192.0.2.7")}, ap("192.0.2.7:0")},
	} {
		if got := Source(c.dst, ctrl); got != c.want {
			t.Errorf("Source(%+v): %v, want %v", c.dst, got, c.want)
		}
	}
	if got := Source(wire.Target{Port: 4000}, netip.MustParseAddr("::ffff:127.0.0.1")); got != ap("127.0.0.1:4000") {
		t.Errorf("a mapped control address: %v", got)
	}

	for _, c := range []struct {
		src, from netip.AddrPort
		admits    bool
		bound     netip.AddrPort
	}{
		{ap("127.0.0.1:4000"), ap("127.0.0.1:4000"), true, ap("127.0.0.1:4000")},
		{ap("127.0.0.1:4000"), ap("[::ffff:127.0.0.1]:4000"), true, ap("127.0.0.1:4000")},
		{ap("127.0.0.1:4000"), ap("127.0.0.1:4001"), false, ap("127.0.0.1:4000")},
		{ap("127.0.0.1:4000"), ap("127.0.0.2:4000"), false, ap("127.0.0.1:4000")},
		{ap("127.0.0.1:0"), ap("127.0.0.1:5000"), true, ap("127.0.0.1:5000")},
		{ap("127.0.0.1:0"), ap("[::ffff:127.0.0.1]:5000"), true, ap("127.0.0.1:5000")},
		{ap("127.0.0.1:0"), ap("127.0.0.2:5000"), false, ap("127.0.0.1:0")},
	} {
		if got := Admits(c.src, c.from); got != c.admits {
			t.Errorf("Admits(%v, %v): %v", c.src, c.from, got)
		}
		if !c.admits {
			continue
		}
		bound := Bind(c.src, c.from)
		if bound != c.bound {
			t.Errorf("Bind(%v, %v): %v, want %v", c.src, c.from, bound, c.bound)
		}
		// Once bound, the association takes its first sender only.
		if other := netip.AddrPortFrom(bound.Addr(), bound.Port()+1); Admits(bound, other) {
			t.Errorf("bound to %v, admits %v", bound, other)
		}
	}
}
