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
