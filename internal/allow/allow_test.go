package allow

import (
	"net/netip"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRules(t *testing.T) {
	rs, err := ParseAll([]string{"10.0.0.53:53", "192.168.0.0/16:1000-2000", "DNS.example.:53", "[2001:db8::/32]:*", "[::ffff:172.16.0.0/108]:7"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		addr string
		port uint16
		want bool
	}{
		{"", "10.0.0.53", 53, true},
		{"", "10.0.0.53", 54, false},
		{"", "10.0.0.54", 53, false},
		{"", "::ffff:10.0.0.53", 53, true},
		{"", "192.168.7.7", 1000, true},
		{"", "192.168.7.7", 2000, true},
		{"", "192.168.7.7", 2001, false},
		{"dns.example", "203.0.113.9", 53, true},
		{"DNS.Example.", "", 53, true},
		{"dns.example", "203.0.113.9", 80, false},
		{"other.example", "10.0.0.53", 53, true}, // its address is allowed
		{"other.example", "203.0.113.9", 53, false},
		{"", "2001:db8::1", 9, true},
		{"", "2001:db9::1", 9, false},
		{"", "172.16.3.4", 7, true},
		{"", "172.32.3.4", 7, false},
	} {
		var a netip.Addr
		if c.addr != "" {
			a = netip.MustParseAddr(c.addr)
		}
		if got := rs.Allows(c.name, a, c.port); got != c.want {
			t.Errorf("Allows(%q, %s, %d) = %v, want %v", c.name, c.addr, c.port, got, c.want)
		}
	}
	if (Rules{}).Allows("", netip.MustParseAddr("10.0.0.53"), 53) {
		t.Fatal("no rules allowed something")
	}
	for _, s := range []string{"10.0.0.53", "10.0.0.53:0", "10.0.0.53:9-8", "10.0.0.0/33:53", ":53", "h:x", "h:1-x"} {
		if _, err := Parse(s); err == nil {
			t.Errorf("%q parsed", s)
		}
	}
	for _, s := range []string{"10.0.0.53:53", "192.168.0.0/16:1000-2000", "dns.example:53", "[2001:db8::/32]:*"} {
		r, err := Parse(s)
		if err != nil || r.String() != s {
			t.Errorf("%q: %v %v", s, r, err)
		}
	}
}

// TestProto: a rule allows UDP unless it says tcp: or any:, and prints as
// it was written.
func TestProto(t *testing.T) {
	rs, err := ParseAll([]string{"10.0.0.1:53", "tcp:10.0.0.2:22", "any:web.lan:443", "udp:10.0.0.3:*"})
	if err != nil {
		t.Fatal(err)
	}
	a1, a2, a3 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	for _, c := range []struct {
		proto Proto
		name  string
		addr  netip.Addr
		port  uint16
		want  bool
	}{
		{UDP, "", a1, 53, true}, {TCP, "", a1, 53, false},
		{TCP, "", a2, 22, true}, {UDP, "", a2, 22, false},
		{TCP, "web.lan", netip.Addr{}, 443, true}, {UDP, "WEB.lan.", netip.Addr{}, 443, true},
		{UDP, "", a3, 9, true}, {TCP, "", a3, 9, false},
	} {
		if got := rs.AllowsProto(c.proto, c.name, c.addr, c.port); got != c.want {
			t.Errorf("%v %q %v:%d: %v, want %v", c.proto, c.name, c.addr, c.port, got, c.want)
		}
	}
	if !rs.Allows("", a1, 53) || rs.Allows("", a2, 22) {
		t.Error("Allows is not AllowsProto(UDP)")
	}
	for _, s := range []string{"10.0.0.1:53", "tcp:10.0.0.2:22", "any:web.lan:443"} {
		r, _ := Parse(s)
		if r.String() != s {
			t.Errorf("%q prints as %q", s, r.String())
		}
	}
	for _, bad := range []string{"tcp:", "tcp:10.0.0.1", "sctp:10.0.0.1:1"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
