package handshake

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/aead"
	"github.com/mptunnel/mptunnel/internal/wire"
)

func mustKey(t testing.TB) Key {
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func fixedIndex() uint32 { return 77 }

func TestHandshake(t *testing.T) {
	key := mustKey(t)
	now := time.Now()
	in, err := Initiate(key, 3, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Msg) != InitLen {
		t.Fatalf("initiation is %d bytes, want %d", len(in.Msg), InitLen)
	}
	r := NewResponder(key, 0, 0)
	a, _, err := r.Accept(in.Msg, now, fixedIndex)
	if err != nil {
		t.Fatal(err)
	}
	if a.PeerIndex != in.Index || a.Index != 77 || a.Mode != 3 {
		t.Fatalf("accepted %+v", a)
	}
	fin, err := in.Finish(a.Response)
	if err != nil {
		t.Fatal(err)
	}
	keys, idx := fin.Keys, fin.PeerIndex
	if fin.Cipher != aead.ChaCha20Poly1305 || a.Cipher != fin.Cipher {
		t.Fatalf("an empty offer gave ciphers %v and %v, want chacha20-poly1305", a.Cipher, fin.Cipher)
	}
	if idx != 77 || keys.Send != a.Keys.Recv || keys.Recv != a.Keys.Send || keys.Send == keys.Recv {
		t.Fatal("the two ends disagree on keys or index")
	}
	// The same initiation again is a replay: no answer.
	if _, _, err := r.Accept(in.Msg, now, fixedIndex); !errors.Is(err, ErrReplay) {
		t.Fatalf("replayed initiation: %v, want ErrReplay", err)
	}
	// A second handshake gives other keys.
	in2, _ := Initiate(key, 0, 0, now)
	a2, _, err := r.Accept(in2.Msg, now, fixedIndex)
	if err != nil || a2.Keys == a.Keys {
		t.Fatalf("second handshake: %v (same keys: %v)", err, a2.Keys == a.Keys)
	}
}

func TestHandshakeRefusals(t *testing.T) {
	key := mustKey(t)
	now := time.Now()
	r := NewResponder(key, time.Minute, 2)

	other, _ := Initiate(mustKey(t), 0, 0, now)
	if _, _, err := r.Accept(other.Msg, now, fixedIndex); !errors.Is(err, ErrAuth) {
		t.Fatalf("wrong key: %v, want ErrAuth", err)
	}
	old, _ := Initiate(key, 0, 0, now.Add(-2*time.Minute))
	if _, skew, err := r.Accept(old.Msg, now, fixedIndex); !errors.Is(err, ErrStale) || skew > -time.Minute {
		t.Fatalf("old timestamp: %v skew %v, want ErrStale", err, skew)
	}
	in, _ := Initiate(key, 0, 0, now)
	tampered := append([]byte(nil), in.Msg...)
	tampered[40] ^= 1
	if _, _, err := r.Accept(tampered, now, fixedIndex); !errors.Is(err, ErrAuth) {
		t.Fatalf("tampered: %v, want ErrAuth", err)
	}
	// The memory of recent initiations is bounded.
	for i := 0; i < 2; i++ {
		in, _ := Initiate(key, 0, 0, now)
		if _, _, err := r.Accept(in.Msg, now, fixedIndex); err != nil {
			t.Fatal(err)
		}
	}
	in3, _ := Initiate(key, 0, 0, now)
	if _, _, err := r.Accept(in3.Msg, now, fixedIndex); !errors.Is(err, ErrCacheFull) {
		t.Fatalf("past the bound: %v, want ErrCacheFull", err)
	}
	// Once their timestamps leave the window they are forgotten.
	later := now.Add(3 * time.Minute)
	r.Prune(later)
	if n := r.Recent(); n != 0 {
		t.Fatalf("%d initiations remembered after the window", n)
	}
	// A response made with another key does not finish the handshake.
	mine, _ := Initiate(key, 0, 0, now)
	theirKey := mustKey(t)
	theirs := NewResponder(theirKey, 0, 0)
	in4, _ := Initiate(theirKey, 0, 0, now)
	a, _, err := theirs.Accept(in4.Msg, now, fixedIndex)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mine.Finish(a.Response); !errors.Is(err, ErrAuth) {
		t.Fatalf("foreign response: %v, want ErrAuth", err)
	}
}

func TestParseKey(t *testing.T) {
	k := mustKey(t)
	got, err := ParseKey("  " + k.String() + "\n")
	if err != nil || got != k {
		t.Fatalf("round trip: %v", err)
	}
	for _, bad := range []string{"", "  \n", "not base64!", "c2hvcnQ=", strings.Repeat("A", 44)} {
		if _, err := ParseKey(bad); err == nil {
			t.Fatalf("ParseKey(%q) accepted", bad)
		}
	}
}

func FuzzAccept(f *testing.F) {
	key := Key{1, 2, 3}
	now := time.Unix(1_800_000_000, 0)
	in, _ := Initiate(key, 0, 0, now)
	f.Add(in.Msg)
	f.Add(in.Msg[:10])
	f.Fuzz(func(t *testing.T, msg []byte) {
		r := NewResponder(key, 0, 0)
		a, _, err := r.Accept(msg, now, fixedIndex)
		if err == nil && len(a.Response) != ResponseLen {
			t.Fatalf("accepted with a %d-byte response", len(a.Response))
		}
	})
}

func FuzzFinish(f *testing.F) {
	key := Key{1, 2, 3}
	now := time.Unix(1_800_000_000, 0)
	in, _ := Initiate(key, 0, 0, now)
	a, _, _ := NewResponder(key, 0, 0).Accept(in.Msg, now, fixedIndex)
	f.Add(a.Response)
	f.Add(a.Response[:5])
	f.Fuzz(func(t *testing.T, msg []byte) {
		in, err := Initiate(key, 0, 0, now)
		if err != nil {
			t.Fatal(err)
		}
		// A fresh initiation's ephemeral key differs from the one any
		// stored response answered, so nothing may finish it.
		if _, err := in.Finish(msg); err == nil {
			t.Fatal("a response not made for this initiation was accepted")
		}
	})
}

func TestCipherNegotiation(t *testing.T) {
	key := mustKey(t)
	now := time.Now()
	both := aead.Set(aead.ChaCha20Poly1305) | aead.Set(aead.AES256GCM)
	cases := []struct {
		server aead.Cipher
		offer  aead.Set
		want   aead.Cipher // aead.Auto: refused
	}{
		{aead.AES256GCM, both, aead.AES256GCM},
		{aead.ChaCha20Poly1305, both, aead.ChaCha20Poly1305},
		{aead.AES256GCM, aead.Set(aead.AES256GCM), aead.AES256GCM},
		{aead.AES256GCM, aead.Set(aead.ChaCha20Poly1305), aead.Auto},
		{aead.ChaCha20Poly1305, aead.Set(aead.AES256GCM), aead.Auto},
	}
	for _, tc := range cases {
		r := NewResponder(key, 0, 0)
		r.Cipher = tc.server
		in, err := Initiate(key, 0, tc.offer, now)
		if err != nil {
			t.Fatal(err)
		}
		a, _, err := r.Accept(in.Msg, now, fixedIndex)
		if tc.want == aead.Auto {
			if !errors.Is(err, ErrCipher) {
				t.Errorf("server %v, offer %b: %v, want ErrCipher", tc.server, tc.offer, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("server %v, offer %b: %v", tc.server, tc.offer, err)
		}
		fin, err := in.Finish(a.Response)
		if err != nil || fin.Cipher != tc.want || a.Cipher != tc.want {
			t.Errorf("server %v, offer %b: %v, %v and %v; want %v", tc.server, tc.offer, err, a.Cipher, fin.Cipher, tc.want)
		}
	}
	// A response naming a cipher that was not offered is refused, even when
	// it authenticates.
	in, _ := Initiate(key, 0, aead.Set(aead.ChaCha20Poly1305), now)
	// Build the response to in by hand with a cipher in does not accept.
	hs, err := newState(key, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := hs.ReadMessage(nil, in.Msg); err != nil {
		t.Fatal(err)
	}
	var rp [respPayloadLen]byte
	rp[4] = byte(aead.AES256GCM)
	resp, _, _, err := hs.WriteMessage(nil, rp[:])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Finish(resp); !errors.Is(err, ErrVersion) {
		t.Fatalf("a response with a cipher not offered: %v, want ErrVersion", err)
	}
}

// TestKeyRotation: a responder with two keys accepts initiations under
// either; after SetKeys drops one, initiations under it are refused.
func TestKeyRotation(t *testing.T) {
	oldKey, newKey := mustKey(t), mustKey(t)
	now := time.Now()
	r := NewResponder(oldKey, 0, 0)
	r.SetKeys([]Key{newKey, oldKey})
	for _, k := range []Key{oldKey, newKey} {
		in, _ := Initiate(k, 0, 0, now)
		a, _, err := r.Accept(in.Msg, now, fixedIndex)
		if err != nil {
			t.Fatalf("refused an initiation under an accepted key: %v", err)
		}
		if _, err := in.Finish(a.Response); err != nil {
			t.Fatalf("the initiator cannot read the response: %v", err)
		}
	}
	r.SetKeys([]Key{newKey})
	in, _ := Initiate(oldKey, 0, 0, now)
	if _, _, err := r.Accept(in.Msg, now, fixedIndex); !errors.Is(err, ErrAuth) {
		t.Fatalf("an initiation under a dropped key: %v, want ErrAuth", err)
	}
	keys, err := ParseKeys("# current\n" + newKey.String() + "\n\n" + oldKey.String() + "\n")
	if err != nil || len(keys) != 2 || keys[0] != newKey || keys[1] != oldKey {
		t.Fatalf("ParseKeys: %v %v", keys, err)
	}
	if _, err := ParseKeys(newKey.String() + "\nnot a key\n"); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("a bad second line: %v", err)
	}
	if _, err := ParseKeys("# nothing\n"); err == nil {
		t.Fatal("a file without keys was accepted")
	}
}

// TestResponderBounds: the memory of initiations is shared fairly and holds
// only what it must. Security review finding 2 (ef6581c): fails before the
// fix: rekeys took a place in the memory (their replays are the session's
// window's to refuse), and one source address could fill it all.
func TestResponderBounds(t *testing.T) {
	key := mustKey(t)
	now := time.Now()
	r := NewResponder(key, time.Minute, 8)
	r.PerSource = 3
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for i := 0; i < 3; i++ {
		in, _ := Initiate(key, 0, 0, now)
		if _, _, err := r.AcceptFrom(in.Msg, a, now, fixedIndex); err != nil {
			t.Fatal(err)
		}
		if !r.Seen(in.Msg) {
			t.Fatal("an accepted initiation is not seen")
		}
	}
	in, _ := Initiate(key, 0, 0, now)
	if r.Seen(in.Msg) {
		t.Fatal("a new initiation is seen")
	}
	if _, _, err := r.AcceptFrom(in.Msg, a, now, fixedIndex); !errors.Is(err, ErrSourceFull) {
		t.Fatalf("a fourth from one address: %v, want ErrSourceFull", err)
	}
	// Another address is not locked out, and a refused initiation took no
	// place: it is accepted from there.
	if _, _, err := r.AcceptFrom(in.Msg, b, now, fixedIndex); err != nil {
		t.Fatalf("from another address: %v", err)
	}
	// Rekeys take no place, and are still checked.
	before := r.Recent()
	for i := 0; i < 20; i++ {
		in, _ := Initiate(key, 0, 0, now)
		if _, _, err := r.AcceptRekey(in.Msg, now, fixedIndex); err != nil {
			t.Fatal(err)
		}
	}
	if r.Recent() != before {
		t.Fatalf("rekeys took %d places in the memory", r.Recent()-before)
	}
	stale, _ := Initiate(key, 0, 0, now.Add(-2*time.Minute))
	if _, _, err := r.AcceptRekey(stale.Msg, now, fixedIndex); !errors.Is(err, ErrStale) {
		t.Fatalf("a stale rekey: %v, want ErrStale", err)
	}
	// Places are given back as initiations leave the window.
	r.Prune(now.Add(3 * time.Minute))
	in, _ = Initiate(key, 0, 0, now.Add(3*time.Minute))
	if _, _, err := r.AcceptFrom(in.Msg, a, now.Add(3*time.Minute), fixedIndex); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}

// TestNotBefore: an initiation made before the responder's start is refused,
// so one captured before a server restart cannot be replayed after it.
// Security review finding 4 (ef6581c): fails before the fix: the memory of
// initiations seen was lost with a restart and nothing else refused it.
func TestNotBefore(t *testing.T) {
	key := mustKey(t)
	start := time.Now()
	captured, _ := Initiate(key, 0, 0, start.Add(-time.Second))
	first := NewResponder(key, 0, 0)
	if _, _, err := first.Accept(captured.Msg, start, fixedIndex); err != nil {
		t.Fatal(err)
	}
	// The server restarts: a new responder, with no memory.
	restarted := NewResponder(key, 0, 0)
	restarted.NotBefore = start
	if _, _, err := restarted.Accept(captured.Msg, start.Add(time.Second), fixedIndex); !errors.Is(err, ErrBeforeStart) {
		t.Fatalf("replayed after the restart: %v, want ErrBeforeStart", err)
	}
	fresh, _ := Initiate(key, 0, 0, start.Add(time.Second))
	if _, _, err := restarted.Accept(fresh.Msg, start.Add(time.Second), fixedIndex); err != nil {
		t.Fatalf("a fresh initiation: %v", err)
	}
}

// TestInitLenMatchesWire: the wire layout's initiation length is this
// package's.
func TestInitLenMatchesWire(t *testing.T) {
	if InitLen != wire.InitNoiseLen {
		t.Fatalf("handshake.InitLen %d, wire.InitNoiseLen %d", InitLen, wire.InitNoiseLen)
	}
}
