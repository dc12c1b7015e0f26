package control

import (
	"net/netip"
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"vpn1", "site-a", "client-127.0.0.1-3000", "_x", "A.b_c-9", strings.Repeat("n", MaxName)} {
		if err := CheckName(ok); err != nil {
			t.Errorf("CheckName(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", ".hidden", "-flag", "a/b", "..", "a b", "vpn@1", "tab\t", "é", strings.Repeat("n", MaxName+1)} {
		if err := CheckName(bad); err == nil {
			t.Errorf("CheckName(%q) = nil, want an error", bad)
		}
	}
}

func TestSanitize(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"client-127.0.0.1-3000", "client-127.0.0.1-3000"},
		{"client-::1-3000", "client-__1-3000"},
		{"../etc/passwd", "_._etc_passwd"},
		{"-x", "_x"},
		{"", "_"},
		{"a b/c\x00é", "a_b_c___"},
	} {
		got := Sanitize(tc.in)
		if got != tc.want {
			t.Errorf("Sanitize(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if err := CheckName(got); err != nil {
			t.Errorf("Sanitize(%q) = %q, which CheckName refuses: %v", tc.in, got, err)
		}
	}
	// Long strings are cut, and ones that differ only past the cut still
	// give different names.
	long := strings.Repeat("x", 100)
	a, b := Sanitize(long+"a"), Sanitize(long+"b")
	if len(a) != MaxName || a == b || !strings.HasPrefix(a, strings.Repeat("x", 55)+"-") {
		t.Errorf("long names: %q and %q", a, b)
	}
	if err := CheckName(a); err != nil {
		t.Errorf("Sanitize of a long string = %q, which CheckName refuses: %v", a, err)
	}
	if Sanitize(long+"a") != a {
		t.Error("Sanitize is not stable")
	}
}

func TestAddrName(t *testing.T) {
	for _, tc := range []struct {
		prefix, addr, want string
	}{
		{"client", "127.0.0.1:3000", "client-127.0.0.1-3000"},
		{"server", "0.0.0.0:2000", "server-2000"},
		{"server", "[::]:2000", "server-2000"},
		{"server", "[::ffff:0.0.0.0]:2000", "server-2000"},
		{"server", "192.0.2.1:2000", "server-192.0.2.1-2000"},
		{"client", "[::1]:3000", "client-__1-3000"},
		{"client", "[::ffff:127.0.0.1]:3000", "client-127.0.0.1-3000"},
		{"client", "[fe80::1%eth0]:3000", "client-fe80__1_eth0-3000"},
		{"client-socks", "127.0.0.1:1080", "client-socks-127.0.0.1-1080"},
	} {
		if got := AddrName(tc.prefix, netip.MustParseAddrPort(tc.addr)); got != tc.want {
			t.Errorf("AddrName(%q, %s) = %q, want %q", tc.prefix, tc.addr, got, tc.want)
		}
	}
}
