// Package cookie is a server's defence against floods of handshake
// initiations, after WireGuard's MACs and cookies. Every initiation ends
// with mac1, a MAC keyed by the shared key, so that a server can drop one
// made without the key at the cost of a hash, and answer nothing. Under load, a server
// answers an initiation that does not prove its source address with a small
// cookie reply instead of doing the handshake; the cookie is a MAC of the
// source address under a secret that changes every two minutes, so the
// server keeps no state for it. The client's next initiation carries a MAC of
// itself keyed with that cookie, which only someone receiving at that address
// could compute. The reply is sealed with a key derived from the shared key
// and bound to the initiation it answers, so nobody without the key can forge
// one, and it is smaller than the initiation: no amplification.
//
// The primitives are x/crypto's: BLAKE2s as a keyed MAC and hash, and
// XChaCha20-Poly1305 to seal the cookie.
package cookie

import (
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/mptunnel/mptunnel/internal/wire"
)

// Lifetime is how long a secret, and so a cookie, is good for.
const Lifetime = 2 * time.Minute

// sealKey derives the cookie sealing key from the shared key.
func sealKey(psk [32]byte) []byte {
	k := blake2s.Sum256(append([]byte("mptunnel cookie 1"), psk[:]...))
	return k[:]
}

// mac1Key derives the key of every initiation's mac1 from the shared key.
func mac1Key(psk [32]byte) []byte {
	k := blake2s.Sum256(append([]byte("mptunnel mac1 1"), psk[:]...))
	return k[:]
}

// mac is BLAKE2s keyed with key, truncated to wire.MACLen bytes.
func mac(key []byte, parts ...[]byte) []byte {
	h, err := blake2s.New128(key)
	if err != nil {
		panic(err) // key lengths here are fixed and valid
	}
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

// Checker is the server's side: it makes cookies for addresses and checks
// initiations' MACs. It is safe for concurrent use.
type Checker struct {
	mu0  sync.Mutex
	keys []keyset // the accepted keys' derived keys, current first

	mu      sync.Mutex
	secret  [32]byte
	prev    [32]byte // the secret before, still good for one lifetime
	changed time.Time
	// answered holds the mac1 of the latest initiations answered with a
	// cookie reply: a copy of one (a replay, perhaps from a spoofed
	// address) gets none.
	answered map[[wire.MACLen]byte]struct{}
	ring     [][wire.MACLen]byte // the same, oldest first from next
	next     int
}

// Answered is how many answered initiations a Checker remembers: a copy of
// one of them gets no second cookie reply.
const Answered = 16384

// ErrAnswered reports an initiation already answered with a cookie reply.
var ErrAnswered = errors.New("cookie: initiation already answered")

// answer records that the initiation whose mac1 is m gets a reply, or
// reports ErrAnswered when one was sent for it already; the caller holds mu.
func (c *Checker) answer(m [wire.MACLen]byte) error {
	if _, dup := c.answered[m]; dup {
		return ErrAnswered
	}
	if c.answered == nil {
		c.answered = make(map[[wire.MACLen]byte]struct{})
		c.ring = make([][wire.MACLen]byte, 0, Answered)
	}
	if len(c.ring) < Answered {
		c.ring = append(c.ring, m)
	} else {
		delete(c.answered, c.ring[c.next])
		c.ring[c.next] = m
		c.next = (c.next + 1) % Answered
	}
	c.answered[m] = struct{}{}
	return nil
}

// keyset is what one shared key gives: the mac1 key and the cookie sealer.
type keyset struct {
	mac1 []byte
	aead cipher.AEAD
}

func newKeyset(psk [32]byte) (keyset, error) {
	a, err := chacha20poly1305.NewX(sealKey(psk))
	if err != nil {
		return keyset{}, fmt.Errorf("cookie: %w", err)
	}
	return keyset{mac1: mac1Key(psk), aead: a}, nil
}

// NewChecker returns a Checker for the shared key psk.
func NewChecker(psk [32]byte) (*Checker, error) {
	ks, err := newKeyset(psk)
	if err != nil {
		return nil, err
	}
	return &Checker{keys: []keyset{ks}}, nil
}

// SetKeys replaces the shared keys initiations may be made with (key
// rotation); psks must not be empty.
func (c *Checker) SetKeys(psks [][32]byte) error {
	var keys []keyset
	for _, p := range psks {
		ks, err := newKeyset(p)
		if err != nil {
			return err
		}
		keys = append(keys, ks)
	}
	if len(keys) == 0 {
		return errors.New("cookie: no keys")
	}
	c.mu0.Lock()
	c.keys = keys
	c.mu0.Unlock()
	return nil
}

// Key identifies which of the Checker's keys made an initiation.
type Key int

// ValidMAC1 reports whether the initiation pkt was made with one of the
// shared keys, and which: its mac1 is right. A keyed hash a key; nothing
// else is worth doing for one that is not.
func (c *Checker) ValidMAC1(pkt []byte) (Key, bool) {
	if len(pkt) <= 2*wire.MACLen {
		return 0, false
	}
	end := len(pkt) - 2*wire.MACLen
	c.mu0.Lock()
	keys := c.keys
	c.mu0.Unlock()
	for i, ks := range keys {
		if hmac.Equal(mac(ks.mac1, pkt[:end]), pkt[end:end+wire.MACLen]) {
			return Key(i), true
		}
	}
	return 0, false
}

// secrets returns the current and the previous secret, changing them when
// the current one is older than Lifetime.
func (c *Checker) secrets(now time.Time) (cur, prev [32]byte, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.changed.IsZero() || now.Sub(c.changed) >= Lifetime {
		c.prev = c.secret
		if _, err := rand.Read(c.secret[:]); err != nil {
			return cur, prev, fmt.Errorf("cookie: %w", err)
		}
		c.changed = now
	}
	return c.secret, c.prev, nil
}

func addrBytes(a netip.AddrPort) []byte {
	ip := a.Addr().As16()
	return append(ip[:], byte(a.Port()>>8), byte(a.Port()))
}

// Valid reports whether the initiation pkt, from src, ends with the MAC a
// cookie for src gives.
func (c *Checker) Valid(pkt []byte, src netip.AddrPort, now time.Time) bool {
	if len(pkt) <= wire.MACLen {
		return false
	}
	cur, prev, err := c.secrets(now)
	if err != nil {
		return false
	}
	body, got := pkt[:len(pkt)-wire.MACLen], pkt[len(pkt)-wire.MACLen:]
	for _, s := range [][32]byte{cur, prev} {
		if s == ([32]byte{}) {
			continue
		}
		cookie := mac(s[:], addrBytes(src))
		if hmac.Equal(mac(cookie, body), got) {
			return true
		}
	}
	return false
}

// Reply appends to dst the cookie reply for the initiation pkt from src,
// sealed with k, the key its mac1 was made with. Each initiation is answered
// once: a copy of one of the latest Answered initiations answered, from
// whatever address, gets ErrAnswered and no reply.
func (c *Checker) Reply(dst, pkt []byte, src netip.AddrPort, k Key, now time.Time) ([]byte, error) {
	c.mu0.Lock()
	keys := c.keys
	c.mu0.Unlock()
	if int(k) < 0 || int(k) >= len(keys) {
		return dst, errors.New("cookie: no such key")
	}
	aead := keys[k].aead
	if len(pkt) <= 2*wire.MACLen {
		return dst, errors.New("cookie: initiation too short")
	}
	cur, _, err := c.secrets(now)
	if err != nil {
		return dst, err
	}
	end := len(pkt) - 2*wire.MACLen
	c.mu.Lock()
	err = c.answer([wire.MACLen]byte(pkt[end : end+wire.MACLen]))
	c.mu.Unlock()
	if err != nil {
		return dst, err
	}
	var nonce [wire.CookieNonceLen]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return dst, fmt.Errorf("cookie: %w", err)
	}
	cookie := mac(cur[:], addrBytes(src))
	sealed := aead.Seal(nil, nonce[:], cookie, pkt[:len(pkt)-wire.MACLen])
	return wire.AppendCookie(dst, nonce[:], sealed), nil
}

// Jar is the client's side: it keeps the cookie the server last gave and
// MACs initiations with it. It is safe for concurrent use.
type Jar struct {
	aead cipher.AEAD
	mac1 []byte

	mu     sync.Mutex
	cookie []byte
	got    time.Time
}

// NewJar returns a Jar for the shared key psk.
func NewJar(psk [32]byte) (*Jar, error) {
	a, err := chacha20poly1305.NewX(sealKey(psk))
	if err != nil {
		return nil, fmt.Errorf("cookie: %w", err)
	}
	return &Jar{aead: a, mac1: mac1Key(psk)}, nil
}

// ErrNotOurs reports a cookie reply that answers none of our initiations, or
// that was not sealed with the shared key.
var ErrNotOurs = errors.New("cookie reply for no initiation of ours")

// Take opens the cookie reply pkt, which must answer the initiation init,
// and keeps its cookie.
func (j *Jar) Take(pkt, init []byte, now time.Time) error {
	nonce, sealed, err := wire.ParseCookie(pkt)
	if err != nil || len(init) <= wire.MACLen {
		return ErrNotOurs
	}
	cookie, err := j.aead.Open(nil, nonce, sealed, init[:len(init)-wire.MACLen])
	if err != nil {
		return ErrNotOurs
	}
	j.mu.Lock()
	j.cookie, j.got = cookie, now
	j.mu.Unlock()
	return nil
}

// Sign fills the MACs at the end of the initiation pkt: mac1 with the
// shared key, and mac2 with the cookie held if one younger than Lifetime is.
// It reports whether it filled mac2; otherwise that stays zero.
func (j *Jar) Sign(pkt []byte, now time.Time) bool {
	if len(pkt) <= 2*wire.MACLen {
		return false
	}
	end := len(pkt) - 2*wire.MACLen
	copy(pkt[end:], mac(j.mac1, pkt[:end]))
	j.mu.Lock()
	cookie, fresh := j.cookie, j.cookie != nil && now.Sub(j.got) < Lifetime
	j.mu.Unlock()
	if !fresh {
		return false
	}
	copy(pkt[len(pkt)-wire.MACLen:], mac(cookie, pkt[:len(pkt)-wire.MACLen]))
	return true
}
