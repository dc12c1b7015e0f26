package stream

import (
	"errors"
	"fmt"
	"io"

	"github.com/mptunnel/mptunnel/internal/wire"
)

// A stream starts with the client's request, a version byte and the
// target (wire.AppendTarget's layout: type, address or name, port), and
// the server's reply, one byte: OK, or why the stream goes nowhere. Then
// the stream carries the TCP connection's bytes each way.

// version is the request layout's version.
const version = 1

// maxRequest is the longest request: version, name type, length, a
// 255-byte name, port.
const maxRequest = 1 + 1 + 1 + 255 + 2

// Reply codes: what the server says of a stream's target.
const (
	OK             byte = 0
	NotAllowed     byte = 1 // the server's rules refuse the target
	NoName         byte = 2 // the target's name does not resolve
	Refused        byte = 3 // the target refused the connection
	TimedOut       byte = 4 // the target did not answer in time
	Unreachable    byte = 5 // no route to the target's host or network
	Failed         byte = 6 // anything else
	TooManyStreams byte = 7 // the session has all the streams it may have
)

// Reason describes a reply code.
func Reason(code byte) string {
	switch code {
	case OK:
		return "connected"
	case NotAllowed:
		return "target not allowed by the server's rules"
	case NoName:
		return "target name does not resolve on the server"
	case Refused:
		return "connection refused by the target"
	case TimedOut:
		return "connection to the target timed out"
	case Unreachable:
		return "target unreachable from the server"
	case TooManyStreams:
		return "the server's stream limit is reached"
	}
	return "connection failed"
}

// SocksReply maps a reply code to a SOCKS5 reply (RFC 1928, 6): 0x02 for
// the server's rules, 0x04 for a name or host it cannot reach, 0x05 for a
// refusal, 0x06 (TTL expired, the nearest RFC 1928 has) for a dial that
// timed out, 0x01 for the rest.
func SocksReply(code byte) byte {
	switch code {
	case OK:
		return 0x00
	case NotAllowed:
		return 0x02
	case NoName, Unreachable:
		return 0x04
	case Refused:
		return 0x05
	case TimedOut:
		return 0x06
	}
	return 0x01
}

// ErrRequest reports a malformed request.
var ErrRequest = errors.New("stream: malformed request")

// WriteRequest writes the request for target t to w.
func WriteRequest(w io.Writer, t wire.Target) error {
	_, err := w.Write(wire.AppendTarget([]byte{version}, t))
	return err
}

// ReadRequest reads a request from r, no more than it holds.
func ReadRequest(r io.Reader) (wire.Target, error) {
	var b [maxRequest]byte
	// Version, type, and the first byte of the address or the name's
	// length: enough to know the rest's length.
	if _, err := io.ReadFull(r, b[:3]); err != nil {
		return wire.Target{}, err
	}
	if b[0] != version {
		return wire.Target{}, fmt.Errorf("%w: version %d", ErrRequest, b[0])
	}
	var n int
	switch b[1] {
	case 1: // IPv4
		n = 4 + 2
	case 4: // IPv6
		n = 16 + 2
	case 3: // name
		n = 1 + int(b[2]) + 2
	default:
		return wire.Target{}, fmt.Errorf("%w: address type %d", ErrRequest, b[1])
	}
	if _, err := io.ReadFull(r, b[3:2+n]); err != nil {
		return wire.Target{}, err
	}
	t, used, err := wire.ParseTarget(b[1 : 2+n])
	if err != nil || used != 1+n {
		return wire.Target{}, fmt.Errorf("%w: %v", ErrRequest, err)
	}
	return t, nil
}

// WriteReply writes reply code to w.
func WriteReply(w io.Writer, code byte) error {
	_, err := w.Write([]byte{code})
	return err
}

// ReadReply reads the server's reply code from r.
func ReadReply(r io.Reader) (byte, error) {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, err
	}
	return b[0], nil
}
