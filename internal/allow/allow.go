// Package allow holds a server's rules for which targets clients may reach:
// a list of host and port patterns, such as "10.0.0.53:53",
// "10.0.0.0/8:1000-2000", "dns.example:53" or "[2001:db8::/32]:*", each for
// UDP unless it starts with "tcp:" (or "any:", both).
package allow

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Proto is what a rule allows: UDP flows, TCP streams, or both.
type Proto uint8

const (
	UDP Proto = 1 << iota
	TCP
	Any = UDP | TCP
)

// Rule allows one host pattern on a range of ports.
type Rule struct {
	Prefix netip.Prefix // valid for an address or CIDR rule
	Name   string       // a host name, lower case, for a name rule
	Lo, Hi uint16       // the ports allowed, inclusive
	Proto  Proto        // what it allows (0: UDP, as a rule with no prefix)
}

// protos are the prefixes a rule may start with.
var protos = []struct {
	prefix string
	proto  Proto
}{{"udp:", UDP}, {"tcp:", TCP}, {"any:", Any}}

// Rules is a list of rules; a target is allowed when any rule allows it.
// The zero value allows nothing.
type Rules []Rule

// Parse reads one rule, [PROTO:]HOST:PORTS. PROTO is udp (the default),
// tcp or any; HOST is an IP address, a CIDR prefix (an IPv6 one in
// brackets) or a host name; PORTS is a port, a range LO-HI, or * for all.
func Parse(s string) (Rule, error) {
	proto, rest := UDP, s
	for _, p := range protos {
		if r, ok := strings.CutPrefix(s, p.prefix); ok {
			proto, rest = p.proto, r
			break
		}
	}
	r, err := parseHostPorts(rest)
	if err != nil {
		return Rule{}, fmt.Errorf("allow rule %q: %w", s, err)
	}
	r.Proto = proto
	return r, nil
}

// parseHostPorts reads HOST:PORTS.
func parseHostPorts(s string) (Rule, error) {
	host, ports, err := net.SplitHostPort(s)
	if err != nil {
		return Rule{}, fmt.Errorf("want [tcp:|any:]HOST:PORTS, such as 10.0.0.0/8:53 or tcp:dns.example:1000-2000: %w", err)
	}
	var r Rule
	switch lo, hi, ok := strings.Cut(ports, "-"); {
	case ports == "*":
		r.Lo, r.Hi = 1, 65535
	case ok:
		a, err1 := parsePort(lo)
		b, err2 := parsePort(hi)
		if err1 != nil || err2 != nil || a > b {
			return Rule{}, fmt.Errorf("bad port range %q", ports)
		}
		r.Lo, r.Hi = a, b
	default:
		p, err := parsePort(ports)
		if err != nil {
			return Rule{}, fmt.Errorf("bad port %q", ports)
		}
		r.Lo, r.Hi = p, p
	}
	switch {
	case strings.Contains(host, "/"):
		pf, err := netip.ParsePrefix(host)
		if err != nil {
			return Rule{}, err
		}
		r.Prefix = netip.PrefixFrom(pf.Addr().Unmap(), pf.Bits()-unmapBits(pf.Addr())).Masked()
	case host == "":
		return Rule{}, fmt.Errorf("no host")
	default:
		if a, err := netip.ParseAddr(host); err == nil {
			a = a.Unmap()
			r.Prefix = netip.PrefixFrom(a, a.BitLen())
		} else {
			r.Name = strings.ToLower(strings.TrimSuffix(host, "."))
		}
	}
	return r, nil
}

// unmapBits is how many prefix bits an IPv4-mapped IPv6 address spends on
// the mapping.
func unmapBits(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}

func parsePort(s string) (uint16, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || p == 0 {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return uint16(p), nil
}

// ParseAll reads a list of rules.
func ParseAll(list []string) (Rules, error) {
	rs := make(Rules, 0, len(list))
	for _, s := range list {
		r, err := Parse(s)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// Allows reports whether a UDP flow may go to addr:port, asked for as name
// (the host name the client gave, or "" when it gave an address).
func (rs Rules) Allows(name string, addr netip.Addr, port uint16) bool {
	return rs.AllowsProto(UDP, name, addr, port)
}

// AllowsProto is Allows for proto (UDP or TCP).
func (rs Rules) AllowsProto(proto Proto, name string, addr netip.Addr, port uint16) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	addr = addr.Unmap()
	for _, r := range rs {
		if port < r.Lo || port > r.Hi || r.proto()&proto == 0 {
			continue
		}
		if r.Name != "" && r.Name == name && name != "" {
			return true
		}
		if r.Prefix.IsValid() && addr.IsValid() && r.Prefix.Contains(addr) {
			return true
		}
	}
	return false
}

// proto returns what r allows.
func (r Rule) proto() Proto {
	if r.Proto == 0 {
		return UDP
	}
	return r.Proto
}

// String returns the rule as Parse reads it.
func (r Rule) String() string {
	ports := strconv.Itoa(int(r.Lo))
	switch {
	case r.Lo == 1 && r.Hi == 65535:
		ports = "*"
	case r.Lo != r.Hi:
		ports += "-" + strconv.Itoa(int(r.Hi))
	}
	host := r.Name
	if host == "" {
		host = r.Prefix.String()
		if r.Prefix.IsSingleIP() {
			host = r.Prefix.Addr().String()
		}
	}
	s := net.JoinHostPort(host, ports)
	switch r.proto() {
	case TCP:
		s = "tcp:" + s
	case Any:
		s = "any:" + s
	}
	return s
}
