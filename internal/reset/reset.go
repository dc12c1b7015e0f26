// Package reset makes and checks stateless resets, after QUIC's: a server
// that gets a transport packet for a session it does not know (it restarted,
// or freed the session) answers with a small packet that tells the client to
// handshake again at once, rather than after seconds of silence.
//
// The reset carries a token that only a holder of the key can make: a
// BLAKE2s-128 MAC of the receiver index the packet named, keyed by a key
// derived from the shared key. The derivation lives here alone. A client
// acts on a reset only when its index is the one it currently sends on and
// its token is right (compared in constant time); the server picks a fresh
// random index for every session, so a reset seen once matches only the
// session it was made for, which the server had already forgotten.
//
// With key pairs (identity handshakes) no key is shared by the server and
// a client alone that the server could find again from an index after a
// restart, so the server derives the reset key from its static private key
// instead (NewServerKey; a label of its own) and hands each session's token
// to its client inside the handshake response, sealed, as QUIC hands out
// its tokens: only that client learns it, and it checks a reset against it
// (CheckToken). A restarted server with the same private key makes the same
// token for the same index.
//
// The primitives are x/crypto's BLAKE2s, as in internal/cookie.
package reset

import (
	"crypto/subtle"
	"encoding/binary"
	"errors"

	"golang.org/x/crypto/blake2s"

	"github.com/mptunnel/mptunnel/internal/wire"
)

// label separates the reset key from every other key derived from the
// shared key.
const label = "mptunnel reset 1"

// Key makes and checks the resets of one shared key.
type Key struct {
	k [blake2s.Size]byte
}

// NewKey derives the reset key from the shared key psk:
// BLAKE2s-256(label || psk).
func NewKey(psk [32]byte) *Key {
	return &Key{k: blake2s.Sum256(append([]byte(label), psk[:]...))}
}

// serverLabel separates the reset key derived from a server's private key.
const serverLabel = "mptunnel reset identity 1"

// NewServerKey derives the reset key of a server with identities from its
// static private key: BLAKE2s-256(label || private key), with a label of its
// own.
func NewServerKey(private [32]byte) *Key {
	return &Key{k: blake2s.Sum256(append([]byte(serverLabel), private[:]...))}
}

// Token returns the token of a reset for receiver index idx:
// BLAKE2s-128(key = the reset key; idx as 4 little-endian bytes).
func (k *Key) Token(idx uint32) [wire.ResetTokenLen]byte {
	h, err := blake2s.New128(k.k[:])
	if err != nil {
		panic(err) // the key's length is fixed and valid
	}
	var in [4]byte
	binary.LittleEndian.PutUint32(in[:], idx)
	h.Write(in[:])
	var t [wire.ResetTokenLen]byte
	h.Sum(t[:0])
	return t
}

// Append appends the reset for a packet that named receiver index idx to b.
func (k *Key) Append(b []byte, idx uint32) []byte {
	t := k.Token(idx)
	return wire.AppendReset(b, idx, t[:])
}

// Why a reset is refused.
var (
	ErrLayout = errors.New("reset: not a reset's size or layout")
	ErrIndex  = errors.New("reset: not for the session index in use")
	ErrToken  = errors.New("reset: wrong token")
)

// Check reports whether pkt is a reset, made with this key, for the
// session whose receiver index (the index this end sends on) is idx: nil if
// so, else why not. The token is compared in constant time.
func (k *Key) Check(pkt []byte, idx uint32) error {
	return CheckToken(pkt, idx, k.Token(idx))
}

// CheckToken is Check against a token the client was given (an identity
// handshake's response carries it) rather than one it makes.
func CheckToken(pkt []byte, idx uint32, want [wire.ResetTokenLen]byte) error {
	got, token, err := wire.ParseReset(pkt)
	switch {
	case err != nil:
		return ErrLayout
	case got != idx:
		return ErrIndex
	}
	if subtle.ConstantTimeCompare(token, want[:]) != 1 {
		return ErrToken
	}
	return nil
}
