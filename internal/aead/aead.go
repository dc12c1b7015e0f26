// Package aead names the transport ciphers a session may use, decides which
// one two ends agree on, and builds it.
//
// Both are AEADs with 32-byte keys, 12-byte nonces and 16-byte tags, so the
// wire format does not depend on the choice. AES-256-GCM is chosen only where
// the CPU has AES instructions: there it is more than twice as fast as
// ChaCha20-Poly1305, and without them Go's software AES is slower and not
// constant-time.
package aead

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/sys/cpu"
)

// Cipher is a transport cipher, or Auto.
type Cipher uint8

// The ciphers. Their values are bits of a Set on the wire.
const (
	// Auto offers ChaCha20-Poly1305, and AES-256-GCM where this CPU has
	// AES instructions; a server in Auto picks AES-256-GCM when it is
	// offered and the server's CPU has them.
	Auto             Cipher = 0
	ChaCha20Poly1305 Cipher = 1
	AES256GCM        Cipher = 2
)

// Set is a set of ciphers, as a client offers them.
type Set uint8

// Has reports whether c is in s.
func (s Set) Has(c Cipher) bool { return c != Auto && s&Set(c) != 0 }

// String returns the cipher's name as Parse accepts it.
func (c Cipher) String() string {
	switch c {
	case Auto:
		return "auto"
	case ChaCha20Poly1305:
		return "chacha20-poly1305"
	case AES256GCM:
		return "aes-256-gcm"
	}
	return fmt.Sprintf("cipher(%d)", uint8(c))
}

// Parse reads a cipher's name: auto, chacha20-poly1305 or aes-256-gcm.
func Parse(s string) (Cipher, error) {
	for _, c := range []Cipher{Auto, ChaCha20Poly1305, AES256GCM} {
		if strings.EqualFold(s, c.String()) {
			return c, nil
		}
	}
	return Auto, fmt.Errorf("unknown cipher %q: want auto, chacha20-poly1305 or aes-256-gcm", s)
}

// HardwareAES reports whether this CPU has instructions for AES and for
// GCM's carry-less multiplication.
func HardwareAES() bool {
	return (cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ) ||
		(cpu.ARM64.HasAES && cpu.ARM64.HasPMULL) ||
		(cpu.S390X.HasAES && cpu.S390X.HasAESGCM)
}

// Offer returns the ciphers a client configured with c offers.
func (c Cipher) Offer() Set {
	return c.offer(HardwareAES())
}

func (c Cipher) offer(hw bool) Set {
	if c != Auto {
		return Set(c)
	}
	s := Set(ChaCha20Poly1305)
	if hw {
		s |= Set(AES256GCM)
	}
	return s
}

// Choose returns the cipher a server configured with c uses for a client
// that offered offer, and false when they have none in common. An empty
// offer means ChaCha20-Poly1305 alone.
func (c Cipher) Choose(offer Set) (Cipher, bool) {
	return c.choose(offer, HardwareAES())
}

func (c Cipher) choose(offer Set, hw bool) (Cipher, bool) {
	if offer == 0 {
		offer = Set(ChaCha20Poly1305)
	}
	if c != Auto {
		return c, offer.Has(c)
	}
	switch {
	case hw && offer.Has(AES256GCM):
		return AES256GCM, true
	case offer.Has(ChaCha20Poly1305):
		return ChaCha20Poly1305, true
	case offer.Has(AES256GCM):
		return AES256GCM, true
	}
	return Auto, false
}

// New returns cipher c keyed with key, which must be 32 bytes.
func New(c Cipher, key []byte) (cipher.AEAD, error) {
	switch c {
	case ChaCha20Poly1305:
		a, err := chacha20poly1305.New(key)
		if err != nil {
			return nil, fmt.Errorf("aead: %s: %w", c, err)
		}
		return a, nil
	case AES256GCM:
		if len(key) != 32 {
			return nil, fmt.Errorf("aead: %s: key of %d bytes, want 32", c, len(key))
		}
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("aead: %s: %w", c, err)
		}
		a, err := cipher.NewGCM(b)
		if err != nil {
			return nil, fmt.Errorf("aead: %s: %w", c, err)
		}
		return a, nil
	}
	return nil, fmt.Errorf("aead: no cipher %s", c)
}
