package wire

import (
	"bytes"
	"net/netip"
	"testing"
)

func TestTarget(t *testing.T) {
	for _, s := range []string{"10.0.0.53:53", "[2001:db8::1]:443", "dns.example:53", "localhost:7"} {
		tg, err := ParseTargetString(s)
		if err != nil || !tg.Valid() || tg.String() != s {
			t.Fatalf("%s: %+v %v", s, tg, err)
		}
		enc := AppendTarget([]byte{9}, tg)
		got, n, err := ParseTarget(enc[1:])
		if err != nil || n != len(enc)-1 || got != tg {
			t.Fatalf("%s: round trip gave %+v (%d bytes) %v", s, got, n, err)
		}
		for k := range enc[1:] {
			if _, _, err := ParseTarget(enc[1 : 1+k]); err == nil {
				t.Fatalf("%s: a %d-byte prefix parsed", s, k)
			}
		}
	}
	for _, s := range []string{"nohost", "h:0", "h:70000", ":53", "[fe80::1%eth0]:53", "a b:1"} {
		if _, err := ParseTargetString(s); err == nil {
			t.Fatalf("%q accepted", s)
		}
	}
	mapped := append(append([]byte{4}, netip.MustParseAddr("::ffff:1.2.3.4").AsSlice()...), 0, 53)
	for _, b := range [][]byte{{2, 1, 2, 3, 4, 0, 53}, {3, 0, 0, 53}, {1, 1, 2, 3, 4, 0, 0}, mapped} {
		if _, _, err := ParseTarget(b); err == nil {
			t.Fatalf("%x parsed", b)
		}
	}
	tg, _ := ParseTargetString("10.0.0.53:53")
	m, err := ParseMessage(append(AppendDataTo(nil, MsgDataTo, 7, tg), "query"...))
	if err != nil || m.Kind != MsgDataTo || m.Flow != 7 || m.Target != tg || string(m.Body) != "query" {
		t.Fatalf("data-to: %+v %v", m, err)
	}
	if m, err := ParseMessage(AppendDataTo(nil, MsgOpen, 7, tg)); err != nil || m.Kind != MsgOpen || m.Target != tg {
		t.Fatalf("open: %+v %v", m, err)
	}
	if _, err := ParseMessage(append(AppendDataTo(nil, MsgOpen, 7, tg), 'x')); err == nil {
		t.Fatal("an open with a body parsed")
	}
	fl := make([]byte, FlowMsgLen)
	PutFlow(fl, 9, FlowNotAllowed)
	if m, err := ParseMessage(fl); err != nil || m.Kind != MsgFlow || m.Flow != 9 || m.Status != FlowNotAllowed {
		t.Fatalf("flow: %+v %v", m, err)
	}
	if _, err := ParseMessage(fl[:5]); err == nil {
		t.Fatal("a short flow message parsed")
	}
}

// FuzzParseTarget: what parses re-encodes to the same bytes.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"10.0.0.53:53", "[2001:db8::1]:443", "dns.example:53", "a:1", "[::ffff:1.2.3.4]:9"} {
		tg, _ := ParseTargetString(s)
		enc := AppendTarget(nil, tg)
		f.Add(enc)
		f.Add(enc[:len(enc)-1]) // truncated
		f.Add(enc[:1])
		f.Add(append(enc, 1, 2, 3)) // with more after it
	}
	f.Add(append([]byte{3, 255}, bytes.Repeat([]byte{'x'}, 257)...)) // the longest name
	f.Add(append([]byte{4}, bytes.Repeat([]byte{0}, 10)...))
	f.Add([]byte{})
	f.Add([]byte{3, 255})
	f.Fuzz(func(t *testing.T, b []byte) {
		tg, n, err := ParseTarget(b)
		if err != nil {
			return
		}
		if !tg.Valid() {
			t.Fatalf("%x parsed to an invalid target %+v", b, tg)
		}
		if enc := AppendTarget(nil, tg); !bytes.Equal(enc, b[:n]) {
			t.Fatalf("%x parsed to %+v, which encodes to %x", b[:n], tg, enc)
		}
	})
}
