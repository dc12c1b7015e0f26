// Package socks is the SOCKS5 protocol (RFC 1928) as far as mptunnel's
// client speaks it: method negotiation, username/password authentication
// (RFC 1929), requests and their replies, and the header of UDP datagrams
// relayed for an association. It does no I/O beyond the reader and writer
// it is given; every decoder checks lengths before it trusts a byte.
package socks

import (
	"errors"
	"io"
	"net/netip"

	"github.com/mptunnel/mptunnel/internal/wire"
)

// Version is SOCKS protocol version 5.
const Version = 5

// Methods (RFC 1928 section 3).
const (
	MethodNoAuth   = 0x00
	MethodUserPass = 0x02
	MethodNone     = 0xff // no acceptable method
)

// Commands (RFC 1928 section 4).
const (
	CmdConnect      = 1
	CmdBind         = 2
	CmdUDPAssociate = 3
)

// Replies (RFC 1928 section 6).
const (
	RepSucceeded          = 0x00
	RepFailure            = 0x01
	RepNotAllowed         = 0x02 // connection not allowed by ruleset
	RepHostUnreachable    = 0x04
	RepRefused            = 0x05
	RepTTLExpired         = 0x06 // what a connection that timed out gets
	RepCommandUnsupported = 0x07
	RepAddressUnsupported = 0x08
)

// ErrMalformed reports bytes that are not SOCKS5.
var ErrMalformed = errors.New("socks: malformed message")

// ReadMethods reads a client's greeting: the version and the methods it
// offers.
func ReadMethods(r io.Reader) ([]byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	if h[0] != Version || h[1] == 0 {
		return nil, ErrMalformed
	}
	m := make([]byte, h[1])
	if _, err := io.ReadFull(r, m); err != nil {
		return nil, err
	}
	return m, nil
}

// ReadUserPass reads an RFC 1929 username/password request.
func ReadUserPass(r io.Reader) (user, pass string, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return "", "", err
	}
	if h[0] != 1 || h[1] == 0 {
		return "", "", ErrMalformed
	}
	u := make([]byte, int(h[1])+1)
	if _, err := io.ReadFull(r, u); err != nil {
		return "", "", err
	}
	p := make([]byte, u[len(u)-1])
	if len(p) == 0 {
		return "", "", ErrMalformed
	}
	if _, err := io.ReadFull(r, p); err != nil {
		return "", "", err
	}
	return string(u[:len(u)-1]), string(p), nil
}

// Request is a client's request: a command and an address.
type Request struct {
	Cmd  byte
	Dst  wire.Target
	Atyp byte // the address type as sent, for the reply when it is not one we know
}

// ReadRequest reads a request. A request with an address type this package
// does not know returns ErrAddressType with the command filled in, so the
// caller can reply RepAddressUnsupported.
func ReadRequest(r io.Reader) (Request, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Request{}, err
	}
	if h[0] != Version || h[2] != 0 {
		return Request{}, ErrMalformed
	}
	req := Request{Cmd: h[1], Atyp: h[3]}
	var n int
	switch h[3] {
	case 1:
		n = 4 + 2
	case 4:
		n = 16 + 2
	case 3:
		var l [1]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return req, err
		}
		if l[0] == 0 {
			return req, ErrMalformed
		}
		b := make([]byte, 2+int(l[0])+2)
		b[0], b[1] = 3, l[0]
		if _, err := io.ReadFull(r, b[2:]); err != nil {
			return req, err
		}
		return req, parseAddr(&req, b)
	default:
		return req, ErrAddressType
	}
	b := make([]byte, 1+n)
	b[0] = h[3]
	if _, err := io.ReadFull(r, b[1:]); err != nil {
		return req, err
	}
	return req, parseAddr(&req, b)
}

// ErrAddressType reports an address type that is not IPv4, IPv6 or a name.
var ErrAddressType = errors.New("socks: unknown address type")

func parseAddr(req *Request, b []byte) error {
	t, n, err := parseTarget(b)
	if err != nil {
		return err
	}
	if n != len(b) {
		return ErrMalformed
	}
	req.Dst = t
	return nil
}

// parseTarget reads a SOCKS address and port: wire's target encoding with
// any port (a UDP ASSOCIATE may not know its port yet), an IPv4 address
// sent as IPv6 taken as IPv4.
func parseTarget(b []byte) (wire.Target, int, error) {
	t, n, err := wire.ParseAddr(b)
	if err != nil {
		return wire.Target{}, 0, ErrMalformed
	}
	t.Addr = t.Addr.Unmap()
	return t, n, nil
}

// appendAddr appends t as a SOCKS address and port.
func appendAddr(b []byte, t wire.Target) []byte {
	t.Addr = t.Addr.Unmap()
	return wire.AppendTarget(b, t)
}

// Reply returns a reply with code rep and the bound address bnd (the zero
// address 0.0.0.0:0 when there is none).
func Reply(rep byte, bnd netip.AddrPort) []byte {
	a := bnd.Addr()
	if !a.IsValid() {
		a = netip.IPv4Unspecified()
	}
	return appendAddr([]byte{Version, rep, 0}, wire.Target{Addr: a, Port: bnd.Port()})
}

// UDPHeader is the header of a datagram relayed for a UDP association.
type UDPHeader struct {
	Frag byte // fragment number; 0 for a whole datagram
	Dst  wire.Target
}

// ParseUDP reads a relayed datagram's header and returns it with the
// payload, which aliases b.
func ParseUDP(b []byte) (UDPHeader, []byte, error) {
	if len(b) < 4 || b[0] != 0 || b[1] != 0 {
		return UDPHeader{}, nil, ErrMalformed
	}
	t, n, err := parseTarget(b[3:])
	if err != nil {
		return UDPHeader{}, nil, err
	}
	if t.Port == 0 {
		return UDPHeader{}, nil, ErrMalformed
	}
	return UDPHeader{Frag: b[2], Dst: t}, b[3+n:], nil
}

// AppendUDP appends a whole datagram's header for source src, then data.
func AppendUDP(b []byte, src wire.Target, data []byte) []byte {
	b = appendAddr(append(b, 0, 0, 0), src)
	return append(b, data...)
}

// Source returns the address a UDP association's datagrams must come from,
// from what its request names (RFC 1928: DST.ADDR and DST.PORT of a UDP
// ASSOCIATE are where the client will send from, zeros when it does not
// know) and the address ctrl its control connection comes from. An address
// of all zeros, or a name, is taken as not known: ctrl's address stands for
// it.
// A port of 0 is not known either: the association then belongs to the
// first sender from the address (see Admits and Bind).
func Source(dst wire.Target, ctrl netip.Addr) netip.AddrPort {
	a := dst.Addr.Unmap()
	if dst.Name != "" || !a.IsValid() || a.IsUnspecified() {
		a = ctrl.Unmap()
	}
	return netip.AddrPortFrom(a, dst.Port)
}

// Admits reports whether a datagram from from may use an association
// whose source is src: from must be src exactly, or, while src's port is
// not known (0), come from src's address.
func Admits(src, from netip.AddrPort) bool {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	if src.Port() == 0 {
		return from.Addr() == src.Addr()
	}
	return from == src
}

// Bind returns the association's source once it has taken a datagram from
// from (which Admits): src when its port is known, otherwise from, which
// the association then belongs to.
func Bind(src, from netip.AddrPort) netip.AddrPort {
	if src.Port() != 0 {
		return src
	}
	return netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
}
