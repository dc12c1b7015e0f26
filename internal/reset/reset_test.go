package reset

import (
	"bytes"
	"errors"
	"testing"

	"github.com/mptunnel/mptunnel/internal/wire"
)

func testKey(b byte) [32]byte {
	var k [32]byte
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

func TestToken(t *testing.T) {
	k := NewKey(testKey(1))
	a, b := k.Token(42), k.Token(43)
	if a == b {
		t.Fatal("two indices give the same token")
	}
	if again := NewKey(testKey(1)).Token(42); again != a {
		t.Fatal("the token is not a function of the key and the index alone")
	}
	if other := NewKey(testKey(2)).Token(42); other == a {
		t.Fatal("two keys give the same token")
	}
	if a == ([wire.ResetTokenLen]byte{}) {
		t.Fatal("zero token")
	}
}

func TestCheck(t *testing.T) {
	k := NewKey(testKey(1))
	const idx = 0x01020304
	pkt := k.Append(nil, idx)
	if len(pkt) != wire.ResetLen {
		t.Fatalf("reset of %d bytes, want %d", len(pkt), wire.ResetLen)
	}
	if err := k.Check(pkt, idx); err != nil {
		t.Fatalf("a right reset refused: %v", err)
	}
	flipped := bytes.Clone(pkt)
	flipped[len(flipped)-1] ^= 1
	for _, tc := range []struct {
		name string
		pkt  []byte
		idx  uint32
		want error
	}{
		{"another session's index", pkt, idx + 1, ErrIndex},
		{"made for another index", k.Append(nil, idx+1), idx, ErrIndex},
		{"token of another index", wire.AppendReset(nil, idx, func() []byte { t := k.Token(idx + 1); return t[:] }()), idx, ErrToken},
		{"another key", NewKey(testKey(2)).Append(nil, idx), idx, ErrToken},
		{"one bit off", flipped, idx, ErrToken},
		{"zero token", wire.AppendReset(nil, idx, make([]byte, wire.ResetTokenLen)), idx, ErrToken},
		{"short", pkt[:wire.ResetLen-1], idx, ErrLayout},
		{"long", append(bytes.Clone(pkt), 0), idx, ErrLayout},
		{"empty", nil, idx, ErrLayout},
		{"another type", append([]byte{wire.TypeCookie}, pkt[1:]...), idx, ErrLayout},
		{"reserved byte set", append([]byte{wire.TypeReset, 1}, pkt[2:]...), idx, ErrLayout},
	} {
		if err := k.Check(tc.pkt, tc.idx); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// FuzzCheck: nothing but the reset made with the key for the index is
// accepted.
func FuzzCheck(f *testing.F) {
	k := NewKey(testKey(1))
	f.Add(k.Append(nil, 7), uint32(7))
	f.Add(k.Append(nil, 7), uint32(8))
	f.Add(k.Append(nil, 7)[:wire.ResetLen-1], uint32(7))
	f.Add([]byte{}, uint32(0))
	f.Fuzz(func(t *testing.T, pkt []byte, idx uint32) {
		err := k.Check(pkt, idx)
		if want := k.Append(nil, idx); (err == nil) != bytes.Equal(pkt, want) {
			t.Fatalf("Check(%x, %d) = %v; the reset for %d is %x", pkt, idx, err, idx, want)
		}
	})
}

func TestServerKey(t *testing.T) {
	priv := testKey(5)
	k := NewServerKey(priv)
	if k.Token(42) != NewServerKey(priv).Token(42) {
		t.Fatal("a restarted server with the same private key makes another token")
	}
	if k.Token(42) == NewKey(priv).Token(42) {
		t.Fatal("the server key is not separated from a shared key's by its label")
	}
	const idx = 7
	token := k.Token(idx)
	pkt := k.Append(nil, idx)
	if err := CheckToken(pkt, idx, token); err != nil {
		t.Fatalf("the token given: %v", err)
	}
	if err := CheckToken(pkt, idx, NewServerKey(testKey(6)).Token(idx)); !errors.Is(err, ErrToken) {
		t.Fatalf("another server's token: %v, want ErrToken", err)
	}
	if err := CheckToken(pkt, idx+1, token); !errors.Is(err, ErrIndex) {
		t.Fatalf("another index: %v, want ErrIndex", err)
	}
	if err := CheckToken(pkt[:len(pkt)-1], idx, token); !errors.Is(err, ErrLayout) {
		t.Fatalf("short reset: %v, want ErrLayout", err)
	}
}
