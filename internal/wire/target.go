package wire

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Target is where a flow's datagrams go on the server's side: an IP
// address, or a host name the server resolves, and a port.
type Target struct {
	Addr netip.Addr // valid unless Name is set
	Name string     // a host name, 1 to 255 bytes, when not an address
	Port uint16
}

// Target address types, as in SOCKS5 (RFC 1928).
const (
	atypIPv4 = 1
	atypName = 3
	atypIPv6 = 4
)

// ParseTargetString reads "host:port", the host an IP address (IPv6 in
// brackets) or a name.
func ParseTargetString(s string) (Target, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return Target{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return Target{}, &net.AddrError{Err: "bad port", Addr: s}
	}
	t := Target{Port: uint16(p)}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return Target{}, &net.AddrError{Err: "zoned address", Addr: s}
		}
		t.Addr = a.Unmap()
		return t, nil
	}
	if host == "" || len(host) > 255 || strings.ContainsAny(host, " \t\r\n\x00") {
		return Target{}, &net.AddrError{Err: "bad host name", Addr: s}
	}
	t.Name = host
	return t, nil
}

// Valid reports whether t names somewhere: an address or a name, and a port.
func (t Target) Valid() bool {
	return t.Port != 0 && (t.Addr.IsValid() != (t.Name != "")) && len(t.Name) <= 255
}

// String returns "host:port".
func (t Target) String() string {
	if t.Name != "" {
		return net.JoinHostPort(t.Name, strconv.Itoa(int(t.Port)))
	}
	return netip.AddrPortFrom(t.Addr, t.Port).String()
}

// AppendTarget encodes t (which must be Valid) after b: its type (1 IPv4,
// 3 name, 4 IPv6), the address or the name's length and bytes, then the
// port (BE16).
func AppendTarget(b []byte, t Target) []byte {
	switch {
	case t.Name != "":
		b = append(b, atypName, byte(len(t.Name)))
		b = append(b, t.Name...)
	case t.Addr.Is4():
		a := t.Addr.As4()
		b = append(append(b, atypIPv4), a[:]...)
	default:
		a := t.Addr.As16()
		b = append(append(b, atypIPv6), a[:]...)
	}
	return binary.BigEndian.AppendUint16(b, t.Port)
}

// ParseTarget decodes a target at the start of b and returns it with its
// encoded length. Port 0 and an IPv4 address given as IPv6 are refused: a
// target has one encoding.
func ParseTarget(b []byte) (Target, int, error) {
	t, n, err := ParseAddr(b)
	if err != nil {
		return Target{}, 0, err
	}
	if t.Port == 0 || t.Addr.Is4In6() {
		return Target{}, 0, ErrMalformed
	}
	return t, n, nil
}

// ParseAddr decodes an address and port in the target encoding, which is
// SOCKS5's (RFC 1928), as SOCKS5 allows them: any port, 0 included, and an
// IPv6 address as it is.
func ParseAddr(b []byte) (Target, int, error) {
	if len(b) < 1 {
		return Target{}, 0, ErrMalformed
	}
	var t Target
	n := 1
	switch b[0] {
	case atypIPv4:
		if len(b) < n+4 {
			return Target{}, 0, ErrMalformed
		}
		t.Addr = netip.AddrFrom4([4]byte(b[n : n+4]))
		n += 4
	case atypIPv6:
		if len(b) < n+16 {
			return Target{}, 0, ErrMalformed
		}
		t.Addr = netip.AddrFrom16([16]byte(b[n : n+16]))
		n += 16
	case atypName:
		if len(b) < n+1 || b[n] == 0 || len(b) < n+1+int(b[n]) {
			return Target{}, 0, ErrMalformed
		}
		t.Name = string(b[n+1 : n+1+int(b[n])])
		n += 1 + int(b[n])
	default:
		return Target{}, 0, ErrMalformed
	}
	if len(b) < n+2 {
		return Target{}, 0, ErrMalformed
	}
	t.Port = binary.BigEndian.Uint16(b[n:])
	return t, n + 2, nil
}
