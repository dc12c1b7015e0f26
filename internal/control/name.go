package control

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"strconv"
)

// MaxName is the longest instance name, in bytes.
const MaxName = 64

// nameByte reports whether b may appear in an instance name: an ASCII
// letter or digit, '.', '_' or '-'.
func nameByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '.' || b == '_' || b == '-'
}

// CheckName reports whether name can name a daemon (--name): 1 to MaxName
// ASCII letters, digits, '.', '_' and '-', not starting with '.' or '-', so
// that NAME.sock is a plain file name that no listing hides.
func CheckName(name string) error {
	if name == "" {
		return fmt.Errorf("empty name: want 1 to %d letters, digits, '.', '_' or '-'", MaxName)
	}
	if len(name) > MaxName {
		return fmt.Errorf("name %q is %d bytes long: at most %d", name, len(name), MaxName)
	}
	for i := range len(name) {
		if !nameByte(name[i]) {
			return fmt.Errorf("name %q has %q: want only letters, digits, '.', '_' or '-'", name, name[i])
		}
	}
	if name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("name %q starts with %q: start it with a letter, a digit or '_'", name, name[0])
	}
	return nil
}

// Sanitize turns s into a name CheckName accepts: every byte it does not
// allow becomes '_', as does a leading '.' or '-'; "" becomes "_". A string
// longer than MaxName keeps its first 55 bytes followed by '-' and 8 hex
// digits of a hash of the whole, so that long strings that differ only at
// the end still give different names.
func Sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !nameByte(c) {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	if b[0] == '.' || b[0] == '-' {
		b[0] = '_'
	}
	if len(b) > MaxName {
		h := fnv.New32a()
		_, _ = h.Write([]byte(s))
		b = fmt.Appendf(b[:MaxName-9], "-%08x", h.Sum32())
	}
	return string(b)
}

// AddrName is the name of a daemon known by the address it listens on:
// prefix, the host unless it is unspecified (0.0.0.0, ::), and the port,
// joined by '-' and sanitized: "client-127.0.0.1-3000", "server-2000",
// "client-__1-3000" for [::1]:3000.
func AddrName(prefix string, a netip.AddrPort) string {
	s := prefix + "-"
	if addr := a.Addr().Unmap(); addr.IsValid() && !addr.IsUnspecified() {
		s += addr.String() + "-"
	}
	return Sanitize(s + strconv.Itoa(int(a.Port())))
}
