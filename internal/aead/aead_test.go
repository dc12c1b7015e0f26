package aead

import (
	"bytes"
	"testing"
)

func TestParseString(t *testing.T) {
	for _, c := range []Cipher{Auto, ChaCha20Poly1305, AES256GCM} {
		got, err := Parse(c.String())
		if err != nil || got != c {
			t.Errorf("Parse(%q) = %v, %v; want %v", c.String(), got, err, c)
		}
	}
	if _, err := Parse("xor"); err == nil {
		t.Error("Parse accepted an unknown cipher")
	}
}

func TestOfferChoose(t *testing.T) {
	both := Set(ChaCha20Poly1305) | Set(AES256GCM)
	if got := Auto.offer(false); got != Set(ChaCha20Poly1305) {
		t.Errorf("auto offer without AES hardware = %b", got)
	}
	if got := Auto.offer(true); got != both {
		t.Errorf("auto offer with AES hardware = %b", got)
	}
	if got := AES256GCM.offer(false); got != Set(AES256GCM) {
		t.Errorf("forced offer = %b", got)
	}
	cases := []struct {
		server Cipher
		offer  Set
		hw     bool
		want   Cipher
		ok     bool
	}{
		{Auto, both, true, AES256GCM, true},
		{Auto, both, false, ChaCha20Poly1305, true},
		{Auto, Set(ChaCha20Poly1305), true, ChaCha20Poly1305, true},
		{Auto, Set(AES256GCM), false, AES256GCM, true},
		{Auto, 0, true, ChaCha20Poly1305, true},
		{Auto, Set(0x80), true, Auto, false},
		{ChaCha20Poly1305, both, true, ChaCha20Poly1305, true},
		{ChaCha20Poly1305, Set(AES256GCM), true, ChaCha20Poly1305, false},
		{AES256GCM, Set(ChaCha20Poly1305), true, AES256GCM, false},
		{AES256GCM, 0, true, AES256GCM, false},
	}
	for _, tc := range cases {
		got, ok := tc.server.choose(tc.offer, tc.hw)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("%v.choose(%b, hw=%v) = %v, %v; want %v, %v", tc.server, tc.offer, tc.hw, got, ok, tc.want, tc.ok)
		}
	}
}

func TestNew(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	for _, c := range []Cipher{ChaCha20Poly1305, AES256GCM} {
		a, err := New(c, key)
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		if a.NonceSize() != 12 || a.Overhead() != 16 {
			t.Errorf("%v: nonce %d, overhead %d; want 12, 16", c, a.NonceSize(), a.Overhead())
		}
		nonce := make([]byte, 12)
		ct := a.Seal(nil, nonce, []byte("datagram"), []byte("header"))
		pt, err := a.Open(nil, nonce, ct, []byte("header"))
		if err != nil || string(pt) != "datagram" {
			t.Errorf("%v: round trip = %q, %v", c, pt, err)
		}
		ct[0] ^= 1
		if _, err := a.Open(nil, nonce, ct, []byte("header")); err == nil {
			t.Errorf("%v: a tampered ciphertext opened", c)
		}
		if _, err := New(c, key[:16]); err == nil {
			t.Errorf("%v: a 16-byte key was accepted", c)
		}
	}
	// The two ciphers differ: what one seals the other does not open.
	c1, _ := New(ChaCha20Poly1305, key)
	c2, _ := New(AES256GCM, key)
	ct := c1.Seal(nil, make([]byte, 12), []byte("x"), nil)
	if _, err := c2.Open(nil, make([]byte, 12), ct, nil); err == nil {
		t.Error("AES-256-GCM opened a ChaCha20-Poly1305 ciphertext")
	}
	if _, err := New(Auto, key); err == nil {
		t.Error("New(Auto) built a cipher")
	}
}
