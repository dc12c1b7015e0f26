package handshake

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/flynn/noise"
	"golang.org/x/crypto/curve25519"

	"github.com/mptunnel/mptunnel/internal/aead"
)

// Identities: each client and the server hold an X25519 key pair, and the
// handshake is Noise IKpsk2 (as WireGuard's): the client knows the server's
// public key beforehand and sends its own, sealed, in the initiation; the
// shared key, when one is configured, is the pre-shared key mixed into the
// response (all zeros when none is, which Noise defines as no pre-shared
// key). Only the holder of the server's private key can read an initiation
// or make a response, and only the holder of a client's private key can
// make an initiation under that client's public key.

// PrivateKey is an X25519 private key; PublicKey an X25519 public key.
type (
	PrivateKey [32]byte
	PublicKey  [32]byte
)

// GeneratePair returns a new key pair.
func GeneratePair() (PrivateKey, PublicKey, error) {
	kp, err := noise.DH25519.GenerateKeypair(rand.Reader)
	if err != nil {
		return PrivateKey{}, PublicKey{}, fmt.Errorf("generate key pair: %w", err)
	}
	return PrivateKey(kp.Private), PublicKey(kp.Public), nil
}

// Public returns the public key of k.
func (k PrivateKey) Public() PublicKey {
	p, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		// Only a low-order point makes X25519 fail, and the base point
		// is not one.
		panic(err)
	}
	return PublicKey(p)
}

// String returns the private key's text form, as a private key file holds it.
func (k PrivateKey) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// String returns the public key's text form, as `mptunnel pubkey` prints it.
func (k PublicKey) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// IsZero reports whether k is the zero key: the value of no key configured.
func (k Key) IsZero() bool { return k == Key{} }

func parse32(s, what, hint string) ([32]byte, error) {
	var k [32]byte
	b, err := base64.StdEncoding.DecodeString(s)
	if s == "" {
		return k, fmt.Errorf("the %s is empty", what)
	}
	if err != nil || len(b) != 32 {
		return k, fmt.Errorf("the %s is not valid: expected the 44-character base64 text that %s prints", what, hint)
	}
	copy(k[:], b)
	return k, nil
}

// ParsePrivateKey reads the text form of a private key: the first line that
// is not blank or a # comment.
func ParsePrivateKey(s string) (PrivateKey, error) {
	k, err := parse32(firstLine(s), "private key", "'mptunnel genkey --pair'")
	return PrivateKey(k), err
}

// ParsePublicKey reads the text form of a public key; surrounding white
// space is ignored.
func ParsePublicKey(s string) (PublicKey, error) {
	k, err := parse32(firstLine(s), "public key", "'mptunnel pubkey'")
	if err == nil && k == [32]byte{} {
		return PublicKey{}, errors.New("the public key is all zeros")
	}
	return PublicKey(k), err
}

func firstLine(s string) string {
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			return line
		}
	}
	return ""
}

// Sizes of the identity handshake's messages.
const (
	respIKPayloadLen = respPayloadLen + ResetTokenLen // the response's payload and the session's reset token
	// ResetTokenLen is the stateless reset token a response carries.
	ResetTokenLen = 16
	// InitIKLen and ResponseIKLen are the sizes of the Noise IKpsk2
	// messages: e, s sealed, payload sealed; e, payload sealed.
	InitIKLen     = 32 + 32 + 16 + initPayloadLen + 16
	ResponseIKLen = 32 + respIKPayloadLen + 16
)

func newIKState(static noise.DHKey, peer []byte, psk Key, initiator bool) (*noise.HandshakeState, error) {
	return noise.NewHandshakeState(noise.Config{
		CipherSuite:           suite,
		Random:                rand.Reader,
		Pattern:               noise.HandshakeIK,
		Initiator:             initiator,
		Prologue:              []byte(prologue),
		StaticKeypair:         static,
		PeerStatic:            peer,
		PresharedKey:          psk[:],
		PresharedKeyPlacement: 2,
	})
}

func dhKey(k PrivateKey) noise.DHKey {
	pub := k.Public()
	return noise.DHKey{Private: append([]byte(nil), k[:]...), Public: pub[:]}
}

// InitiateIK starts an identity handshake: self is this client's private
// key, server the server's public key it pins, psk the shared key (the zero
// Key when none is configured).
func InitiateIK(self PrivateKey, server PublicKey, psk Key, h Hello, now time.Time) (*Initiation, error) {
	hs, err := newIKState(dhKey(self), server[:], psk, true)
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	in, err := initiate(hs, h, now)
	if err != nil {
		return nil, err
	}
	in.ik = true
	return in, nil
}

// token returns a Responder's reset token for the session index idx, or
// the zero token when the Responder has no ResetToken.
func (r *Responder) token(idx uint32) [ResetTokenLen]byte {
	if r.ResetToken == nil {
		return [ResetTokenLen]byte{}
	}
	return r.ResetToken(idx)
}

// SetIdentity gives the Responder the server's private key, so that it
// accepts identity (IKpsk2) initiations, from the clients authorize lets in.
// authorize is called with each authentic initiation's client public key;
// it returns nil for a client allowed in, ErrUnknownPeer or another error
// otherwise. Set it before the first Accept.
func (r *Responder) SetIdentity(k PrivateKey, authorize func(PublicKey) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := dhKey(k)
	r.static = &s
	r.authorize = authorize
}

// ErrUnknownPeer reports an authentic identity initiation from a client
// public key the server does not know (or has disabled).
var ErrUnknownPeer = errors.New("handshake from a client public key not on the server's list")

// ErrShared reports a shared-key initiation to a server that takes only
// identity handshakes.
var ErrShared = errors.New("shared-key handshake refused: this server takes identity handshakes only")

// readIK reads an identity initiation with the pre-shared key psk.
func (r *Responder) readIK(msg []byte, psk Key) (*noise.HandshakeState, []byte, PublicKey, error) {
	r.mu.Lock()
	static, authorize := r.static, r.authorize
	r.mu.Unlock()
	if static == nil {
		return nil, nil, PublicKey{}, ErrAuth
	}
	hs, err := newIKState(*static, nil, psk, false)
	if err != nil {
		return nil, nil, PublicKey{}, fmt.Errorf("handshake: %w", err)
	}
	p, _, _, err := hs.ReadMessage(nil, msg)
	if err != nil || len(p) != initPayloadLen {
		return nil, nil, PublicKey{}, ErrAuth
	}
	peer := PublicKey(hs.PeerStatic())
	if authorize != nil {
		if err := authorize(peer); err != nil {
			return nil, nil, peer, err
		}
	}
	return hs, p, peer, nil
}

// respPayload is the response's payload: the responder's index, the cipher
// chosen and, for an identity handshake, the session's reset token.
func (r *Responder) respPayload(a *Accepted, ik bool) []byte {
	rp := make([]byte, respPayloadLen, respIKPayloadLen)
	binary.LittleEndian.PutUint32(rp, a.Index)
	rp[4] = byte(a.Cipher)
	if ik {
		t := r.token(a.Index)
		rp = append(rp, t[:]...)
	}
	return rp
}

// finishPayload reads a response's payload.
func (in *Initiation) finishPayload(p []byte) (Finished, error) {
	want := respPayloadLen
	if in.ik {
		want = respIKPayloadLen
	}
	if len(p) != want {
		return Finished{}, ErrAuth
	}
	c := aead.Cipher(p[4])
	if !in.offer.Has(c) || p[5]|p[6]|p[7] != 0 {
		// Authentic, so the server speaks another version of the protocol.
		return Finished{}, ErrVersion
	}
	f := Finished{PeerIndex: binary.LittleEndian.Uint32(p), Cipher: c}
	if in.ik {
		f.ResetToken = [ResetTokenLen]byte(p[respPayloadLen:])
		f.HasToken = true
	}
	return f, nil
}
