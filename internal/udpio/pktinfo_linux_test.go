package udpio

import (
	"net/netip"
	"testing"
)

func TestParseDst(t *testing.T) {
	for _, a := range []string{"127.0.0.2", "::1", "2001:db8::7"} {
		want := netip.MustParseAddr(a)
		oob := sourceOOB(true, want) // IPV6_PKTINFO has the same layout both ways
		if got := parseDst(oob); got != want {
			t.Fatalf("parseDst(sourceOOB(%s)) = %s", want, got)
		}
	}
	if oob := sourceOOB(false, netip.MustParseAddr("::1")); oob != nil {
		t.Fatal("an IPv4 socket was given an IPv6 source")
	}
}

func FuzzParseDst(f *testing.F) {
	f.Add(sourceOOB(true, netip.MustParseAddr("10.0.0.1")))
	f.Add(sourceOOB(false, netip.MustParseAddr("10.0.0.1")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, oob []byte) {
		parseDst(oob) // must not panic, whatever the kernel (or a fuzzer) hands it
	})
}
