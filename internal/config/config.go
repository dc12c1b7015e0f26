// Package config reads the client path list in the format of the original
// C mptunnel: one path per line, written as
//
//	HOST PORT [dev IFACE] [from ADDR]
//
// where HOST is a host name, an IPv4 address, or an IPv6 address written bare
// (::1) or in brackets ([::1]), and PORT is a UDP port from 1 to 65535. The
// optional "dev IFACE" and "from ADDR" words, in either order, name the local
// interface and the local source address to send that path's packets from.
// A # starts a comment that runs to the end of the line; blank lines are
// ignored. Host names are not resolved here.
package config

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/mptunnel/mptunnel/internal/wire"
)

const (
	// MaxPaths is the largest number of paths a file may list: as many as
	// a session has.
	MaxPaths = wire.MaxPaths

	// MaxLineLen is the longest line, in bytes without its line ending,
	// that a file may contain.
	MaxLineLen = 4096
)

// Path is one tunnel path: a remote server address, optionally bound to a
// local interface or source address.
type Path struct {
	Host string // as written (name or literal), brackets removed
	Port uint16
	Dev  string // optional local interface
	From string // optional local source address (validated as an IP literal)
	Line int    // 1-based line number in the file
}

// Address returns the remote address in the form accepted by net.Dial:
// "host:port", with an IPv6 host in brackets.
func (p Path) Address() string {
	return net.JoinHostPort(p.Host, strconv.Itoa(int(p.Port)))
}

// Error is a config error with position; its Error() reads
// "FILE:LINE: message" (LINE omitted when 0), one clear sentence a user can
// act on.
type Error struct {
	File string // file name as given to ParsePaths or LoadPaths
	Line int    // 1-based line number, or 0 if the error is not about a line
	Msg  string // what is wrong
	Err  error  // underlying error, if any, returned by Unwrap
}

// Error formats the error as "FILE:LINE: message".
func (e *Error) Error() string {
	switch {
	case e.File != "" && e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	case e.File != "":
		return e.File + ": " + e.Msg
	case e.Line > 0:
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	default:
		return e.Msg
	}
}

// Unwrap returns the underlying error, if any.
func (e *Error) Unwrap() error { return e.Err }

// LoadPaths reads the path list from file. Errors are *Error values naming
// the file.
func LoadPaths(file string) ([]Path, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, &Error{File: file, Msg: "cannot open file: " + causeText(err), Err: err}
	}
	defer f.Close()
	return ParsePaths(file, f)
}

// ParsePaths reads the original HOST PORT format. name is used in error messages.
// It returns at least one path, or an *Error.
func ParsePaths(name string, r io.Reader) ([]Path, error) {
	sc := bufio.NewScanner(r)
	// Room for the longest allowed line plus "\r\n"; longer lines make
	// the scanner stop with bufio.ErrTooLong.
	sc.Buffer(make([]byte, 0, 512), MaxLineLen+2)
	var paths []Path
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text() // without "\n" or "\r\n"
		if len(text) > MaxLineLen {
			return nil, tooLong(name, line)
		}
		if line == 1 {
			text = strings.TrimPrefix(text, "\uFEFF") // byte order mark
		}
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		words := strings.Fields(text)
		if len(words) == 0 {
			continue
		}
		p, msg := parseWords(words)
		if msg != "" {
			return nil, &Error{File: name, Line: line, Msg: msg}
		}
		if len(paths) == MaxPaths {
			return nil, &Error{File: name, Line: line,
				Msg: fmt.Sprintf("too many paths; at most %d are allowed", MaxPaths)}
		}
		p.Line = line
		paths = append(paths, p)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, tooLong(name, line+1)
		}
		return nil, &Error{File: name, Msg: "cannot read file: " + causeText(err), Err: err}
	}
	if len(paths) == 0 {
		return nil, &Error{File: name, Msg: "no paths; add at least one line of the form HOST PORT"}
	}
	return paths, nil
}

func tooLong(name string, line int) *Error {
	return &Error{File: name, Line: line,
		Msg: fmt.Sprintf("line is longer than %d bytes", MaxLineLen)}
}

// causeText returns the message of err without the file name that an
// *fs.PathError repeats.
func causeText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// parseWords parses the words of one non-empty line. On failure it returns
// a message describing the problem.
func parseWords(words []string) (Path, string) {
	var p Path
	if len(words) < 2 {
		return p, fmt.Sprintf("expected HOST PORT, got %q", clip(words[0]))
	}
	host, msg := parseHost(words[0])
	if msg != "" {
		return p, msg
	}
	p.Host = host
	if p.Port, msg = parsePort(words[1]); msg != "" {
		return p, msg
	}
	for i := 2; i < len(words); i += 2 {
		key := words[i]
		if key != "dev" && key != "from" {
			return p, fmt.Sprintf("unknown word %q after HOST PORT; expected \"dev IFACE\" or \"from ADDR\"", clip(key))
		}
		if i+1 == len(words) || isKeyword(words[i+1]) {
			if key == "dev" {
				return p, `"dev" must be followed by an interface name`
			}
			return p, `"from" must be followed by a local IP address`
		}
		val := words[i+1]
		switch key {
		case "dev":
			if p.Dev != "" {
				return p, `"dev" is given more than once`
			}
			p.Dev = val
		case "from":
			if p.From != "" {
				return p, `"from" is given more than once`
			}
			if p.From, msg = parseFrom(val, p.Host); msg != "" {
				return p, msg
			}
		}
	}
	return p, ""
}

func isKeyword(w string) bool { return w == "dev" || w == "from" }

// parseHost validates a HOST word and returns it without brackets.
func parseHost(w string) (string, string) {
	if strings.HasPrefix(w, "[") {
		if !strings.HasSuffix(w, "]") {
			return "", fmt.Sprintf("host %q has \"[\" without a closing \"]\"", clip(w))
		}
		h := w[1 : len(w)-1]
		if h == "" {
			return "", "host is empty"
		}
		if a, err := netip.ParseAddr(h); err != nil || !a.Is6() {
			return "", fmt.Sprintf("host %q: brackets are only for IPv6 addresses", clip(w))
		} else if !validZone(a.Zone()) {
			return "", fmt.Sprintf("host %q: bad zone (interface name)", clip(w))
		}
		return h, ""
	}
	if strings.ContainsAny(w, "[]") {
		return "", fmt.Sprintf("host %q has a stray bracket", clip(w))
	}
	if strings.Contains(w, ":") {
		if a, err := netip.ParseAddr(w); err != nil || !a.Is6() {
			return "", fmt.Sprintf("host %q is not a valid IPv6 address; give the port as a separate word: HOST PORT", clip(w))
		} else if !validZone(a.Zone()) {
			return "", fmt.Sprintf("host %q: bad zone (interface name)", clip(w))
		}
		return w, ""
	}
	if _, err := netip.ParseAddr(w); err == nil {
		return w, ""
	}
	if !validHostName(w) {
		return "", fmt.Sprintf("host %q is not a valid host name or IP address", clip(w))
	}
	return w, ""
}

// validZone reports whether an IPv6 zone is empty or looks like an
// interface name or index: letters, digits, '-', '_', '.' and '@'.
func validZone(z string) bool {
	for _, r := range z {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.@", r)) {
			return false
		}
	}
	return true
}

// validHostName reports whether s is a syntactically valid DNS host name:
// dot-separated labels of 1 to 63 letters, digits, '-' or '_', not starting
// or ending with '-', at most 253 bytes, with an optional final dot.
func validHostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
			if !ok {
				return false
			}
		}
	}
	return true
}

// parsePort validates a PORT word.
func parsePort(w string) (uint16, string) {
	for i := 0; i < len(w); i++ {
		if w[i] < '0' || w[i] > '9' {
			return 0, fmt.Sprintf("port %q is not a number", clip(w))
		}
	}
	n, err := strconv.ParseUint(w, 10, 16)
	if err != nil || n > 65535 {
		return 0, fmt.Sprintf("port %s is out of range; use a port from 1 to 65535", clip(w))
	}
	if n == 0 {
		return 0, "port 0 is not allowed; use a port from 1 to 65535"
	}
	return uint16(n), ""
}

// parseFrom validates the value of "from" and returns it without brackets.
// If host is an IP literal, the source address must be of the same family.
func parseFrom(w, host string) (string, string) {
	v := w
	if strings.HasPrefix(v, "[") && strings.HasSuffix(v, "]") {
		v = v[1 : len(v)-1]
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return "", fmt.Sprintf("from address %q is not an IP address", clip(w))
	}
	if h, err := netip.ParseAddr(host); err == nil && h.Unmap().Is4() != a.Unmap().Is4() {
		return "", fmt.Sprintf("from address %s and host %s are not of the same IP version", v, host)
	}
	return v, ""
}

// clip shortens s for quoting in a message.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}
