package cookie

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/wire"
)

// checkerAndJar returns a checker and a jar that share psk.
func checkerAndJar(t *testing.T, psk [32]byte) (*Checker, *Jar) {
	t.Helper()
	c, err := NewChecker(psk)
	if err != nil {
		t.Fatal(err)
	}
	j, err := NewJar(psk)
	if err != nil {
		t.Fatal(err)
	}
	return c, j
}

func TestCookieRoundTrip(t *testing.T) {
	c, j := checkerAndJar(t, [32]byte{1, 2, 3})
	src := netip.MustParseAddrPort("192.0.2.7:4000")
	now := time.Unix(1000, 0)
	init := wire.AppendInit(nil, bytes.Repeat([]byte{9}, 64))
	if c.Valid(init, src, now) {
		t.Fatal("an initiation without a cookie MAC is valid")
	}
	reply, err := c.Reply(nil, init, src, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(reply) >= len(init) {
		t.Fatalf("a %d-byte reply to a %d-byte initiation: amplification", len(reply), len(init))
	}
	if err := j.Take(reply, init, now); err != nil {
		t.Fatal(err)
	}
	next := wire.AppendInit(nil, bytes.Repeat([]byte{8}, 64))
	j.Sign(next, now)
	if !c.Valid(next, src, now) {
		t.Fatal("an initiation signed with the cookie is not valid")
	}
	// From another address the same MAC is worthless.
	if c.Valid(next, netip.MustParseAddrPort("192.0.2.7:4001"), now) {
		t.Fatal("a cookie MAC is valid from another port")
	}
	// Tampered initiation.
	bad := append([]byte(nil), next...)
	bad[10] ^= 1
	if c.Valid(bad, src, now) {
		t.Fatal("a changed initiation kept its MAC")
	}
	// Still good in the next lifetime (the previous secret), not after.
	if !c.Valid(next, src, now.Add(Lifetime+time.Second)) {
		t.Fatal("a cookie expired one lifetime early")
	}
	if c.Valid(next, src, now.Add(2*Lifetime+2*time.Second)) {
		t.Fatal("a cookie outlived two secrets")
	}
	// A stale cookie is not used.
	stale := wire.AppendInit(nil, bytes.Repeat([]byte{7}, 64))
	j.Sign(stale, now.Add(Lifetime))
	if !bytes.Equal(stale[len(stale)-wire.MACLen:], make([]byte, wire.MACLen)) {
		t.Fatal("a stale cookie was used")
	}
}

func TestMAC1(t *testing.T) {
	c, _ := NewChecker([32]byte{1})
	mine, _ := NewJar([32]byte{1})
	theirs, _ := NewJar([32]byte{2})
	init := wire.AppendInit(nil, bytes.Repeat([]byte{9}, 64))
	if _, ok := c.ValidMAC1(init); ok {
		t.Fatal("an initiation without mac1 passed")
	}
	other := append([]byte(nil), init...)
	theirs.Sign(other, time.Now())
	if _, ok := c.ValidMAC1(other); ok {
		t.Fatal("mac1 made with another key passed")
	}
	mine.Sign(init, time.Now())
	if k, ok := c.ValidMAC1(init); !ok || k != 0 {
		t.Fatal("mac1 made with the key failed")
	}
	// Key rotation: both keys pass, each named.
	if err := c.SetKeys([][32]byte{{2}, {1}}); err != nil {
		t.Fatal(err)
	}
	if k, ok := c.ValidMAC1(other); !ok || k != 0 {
		t.Fatalf("the new key's mac1: %d %v", k, ok)
	}
	if k, ok := c.ValidMAC1(init); !ok || k != 1 {
		t.Fatalf("the old key's mac1: %d %v", k, ok)
	}
	init[5] ^= 1
	if _, ok := c.ValidMAC1(init); ok {
		t.Fatal("a changed initiation kept its mac1")
	}
}

func TestForgedReply(t *testing.T) {
	c, _ := NewChecker([32]byte{1})
	j, _ := NewJar([32]byte{2}) // another key
	src := netip.MustParseAddrPort("[2001:db8::1]:9")
	init := wire.AppendInit(nil, bytes.Repeat([]byte{9}, 64))
	reply, _ := c.Reply(nil, init, src, 0, time.Now())
	if err := j.Take(reply, init, time.Now()); err == nil {
		t.Fatal("a reply sealed with another key was taken")
	}
	right, _ := NewJar([32]byte{1})
	other := wire.AppendInit(nil, bytes.Repeat([]byte{5}, 64))
	if err := right.Take(reply, other, time.Now()); err == nil {
		t.Fatal("a reply to another initiation was taken")
	}
	if err := right.Take(reply[:len(reply)-1], init, time.Now()); err == nil {
		t.Fatal("a truncated reply was taken")
	}
}

func FuzzTake(f *testing.F) {
	c, _ := NewChecker([32]byte{1})
	init := wire.AppendInit(nil, bytes.Repeat([]byte{9}, 64))
	reply, _ := c.Reply(nil, init, netip.MustParseAddrPort("127.0.0.1:1"), 0, time.Now())
	f.Add(reply)
	f.Add(reply[:10])
	f.Fuzz(func(t *testing.T, pkt []byte) {
		j, _ := NewJar([32]byte{1})
		if err := j.Take(pkt, init, time.Now()); err == nil && !bytes.Equal(pkt[:4], reply[:4]) {
			t.Fatal("a reply with another prefix was taken")
		}
	})
}

// TestReplyOnce: an initiation gets one cookie reply, whatever address its
// copies come from, until Answered others have been answered since.
// Security review finding 5 (ef6581c): fails before the fix: every copy of a
// captured initiation drew a reply, so one capture kept a server under load
// bouncing replies at any spoofed address.
func TestReplyOnce(t *testing.T) {
	c, j := checkerAndJar(t, [32]byte{4, 5, 6})
	now := time.Unix(1000, 0)
	sign := func(i int) []byte {
		b := bytes.Repeat([]byte{byte(i)}, 64)
		b[0], b[1], b[2] = byte(i>>16), byte(i>>8), byte(i)
		init := wire.AppendInit(nil, b)
		j.Sign(init, now)
		return init
	}
	init := sign(0)
	if _, err := c.Reply(nil, init, netip.MustParseAddrPort("192.0.2.7:4000"), 0, now); err != nil {
		t.Fatal(err)
	}
	for _, to := range []string{"192.0.2.7:4000", "198.51.100.1:53"} {
		if out, err := c.Reply(nil, init, netip.MustParseAddrPort(to), 0, now); err != ErrAnswered || len(out) != 0 {
			t.Fatalf("a copy from %s: %d bytes, %v; want no reply", to, len(out), err)
		}
	}
	// The memory is bounded: the oldest is forgotten first.
	for i := 1; i <= Answered; i++ {
		if _, err := c.Reply(nil, sign(i), netip.MustParseAddrPort("192.0.2.8:4000"), 0, now); err != nil {
			t.Fatalf("initiation %d: %v", i, err)
		}
	}
	if len(c.answered) != Answered {
		t.Fatalf("%d remembered, want %d", len(c.answered), Answered)
	}
	if _, err := c.Reply(nil, init, netip.MustParseAddrPort("192.0.2.7:4000"), 0, now); err != nil {
		t.Fatalf("after %d others: %v", Answered, err)
	}
}
