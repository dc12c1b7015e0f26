// Package handshake establishes mptunnel session keys with the Noise NNpsk0
// handshake (flynn/noise: X25519, ChaCha20-Poly1305, BLAKE2s) and the shared
// key mixed in as the pre-shared key. Only a holder of the shared key can make
// an initiation the server accepts or a response the client accepts; each
// session gets fresh keys with forward secrecy.
//
// An initiation carries a timestamp and the initiator's session index, sealed.
// The Responder accepts each initiation once: it remembers the initiator
// ephemeral keys it has seen for as long as their timestamps stay acceptable,
// so a replayed initiation gets no answer and creates no state.
package handshake

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/flynn/noise"

	"github.com/mptunnel/mptunnel/internal/aead"
)

// KeyLen is the length of the shared key.
const KeyLen = 32

// Key is the shared secret both ends hold.
type Key [KeyLen]byte

// GenerateKey returns a new random key.
func GenerateKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

// String returns the key's text form, as `mptunnel genkey` prints it.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// ParseKeys reads one key a line, as a key file holds them: the first is the
// one this end uses, the others are also accepted from peers (key rotation).
// Blank lines and lines starting with # are skipped.
func ParseKeys(s string) ([]Key, error) {
	var keys []Key
	for i, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := ParseKey(line)
		if err != nil {
			if strings.Count(strings.TrimSpace(s), "\n") == 0 {
				return nil, err // a one-line key file: no line number needed
			}
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("the key is empty")
	}
	return keys, nil
}

// ParseKey reads the text form of a key; surrounding white space is ignored.
func ParseKey(s string) (Key, error) {
	var k Key
	s = strings.TrimSpace(s)
	if s == "" {
		return k, errors.New("the key is empty")
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != KeyLen {
		return k, errors.New("the key is not valid: expected the 44-character base64 text that 'mptunnel genkey' prints")
	}
	copy(k[:], b)
	return k, nil
}

// Keys are one session's transport keys.
type Keys struct {
	Send, Recv [32]byte
}

const prologue = "mptunnel 1"

// Payload sizes inside the Noise messages.
const (
	initPayloadLen = 16 // version, mode, ciphers offered, reserved, sender index, timestamp
	respPayloadLen = 8  // sender index, cipher chosen, 3 reserved
	version        = 1
	// InitLen and ResponseLen are the sizes of the Noise messages.
	InitLen     = 32 + initPayloadLen + 16
	ResponseLen = 32 + respPayloadLen + 16
)

var suite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)

func newState(key Key, initiator bool) (*noise.HandshakeState, error) {
	return noise.NewHandshakeState(noise.Config{
		CipherSuite:           suite,
		Random:                rand.Reader,
		Pattern:               noise.HandshakeNN,
		Initiator:             initiator,
		Prologue:              []byte(prologue),
		PresharedKey:          key[:],
		PresharedKeyPlacement: 0,
	})
}

// Initiation is a client's handshake in progress.
type Initiation struct {
	Index uint32 // the initiator's session index, chosen at random
	Msg   []byte // the Noise message to send
	hs    *noise.HandshakeState
	offer aead.Set
	ik    bool // an identity handshake (InitiateIK)
}

// Initiate starts a handshake. mode is carried to the server for the session's
// scheduling mode (0 for the default); offer is the transport ciphers this
// end accepts (ChaCha20-Poly1305 alone when empty).
func Initiate(key Key, mode byte, offer aead.Set, now time.Time) (*Initiation, error) {
	return InitiateWith(key, Hello{Mode: mode, Ciphers: offer}, now)
}

// Hello is what a client asks of the server in its initiation.
type Hello struct {
	Mode    byte     // the scheduling mode (0 for the default)
	Ciphers aead.Set // the transport ciphers accepted (ChaCha20-Poly1305 alone when empty)
	FEC     byte     // the fec mode's group shape, k<<4 | m (0 for the default)
}

// InitiateWith starts a handshake asking for h.
func InitiateWith(key Key, h Hello, now time.Time) (*Initiation, error) {
	hs, err := newState(key, true)
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	return initiate(hs, h, now)
}

// initiate writes the initiation of hs asking for h.
func initiate(hs *noise.HandshakeState, h Hello, now time.Time) (*Initiation, error) {
	mode, offer := h.Mode, h.Ciphers
	var idx [4]byte
	if _, err := rand.Read(idx[:]); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	var p [initPayloadLen]byte
	p[0] = version
	p[1] = mode
	p[2] = byte(offer)
	p[3] = h.FEC
	copy(p[4:8], idx[:])
	binary.LittleEndian.PutUint64(p[8:16], uint64(now.UnixNano()))
	msg, _, _, err := hs.WriteMessage(nil, p[:])
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	if offer == 0 {
		offer = aead.Set(aead.ChaCha20Poly1305)
	}
	return &Initiation{Index: binary.LittleEndian.Uint32(idx[:]), Msg: msg, hs: hs, offer: offer}, nil
}

// ErrAuth reports a handshake message that does not authenticate with the key.
var ErrAuth = errors.New("handshake message does not authenticate")

// Finished is a completed handshake, as the initiator sees it.
type Finished struct {
	Keys      Keys        // Send is initiator to responder
	PeerIndex uint32      // the responder's session index
	Cipher    aead.Cipher // the transport cipher the responder chose
	// ResetToken is the token of the server's stateless resets for this
	// session, which an identity response carries (HasToken).
	ResetToken [ResetTokenLen]byte
	HasToken   bool
}

// Finish reads the server's response and returns the session keys, the
// server's session index and the cipher it chose among those offered.
func (in *Initiation) Finish(msg []byte) (Finished, error) {
	want := ResponseLen
	if in.ik {
		want = ResponseIKLen
	}
	if len(msg) != want {
		return Finished{}, ErrAuth
	}
	p, c1, c2, err := in.hs.ReadMessage(nil, msg)
	if err != nil || c1 == nil {
		return Finished{}, ErrAuth
	}
	f, err := in.finishPayload(p)
	if err != nil {
		return Finished{}, err
	}
	f.Keys = Keys{Send: c1.UnsafeKey(), Recv: c2.UnsafeKey()}
	return f, nil
}

// Accepted is an initiation the Responder accepted, with its answer.
type Accepted struct {
	Keys      Keys   // the responder's keys: Send is responder to initiator
	PeerIndex uint32 // the initiator's session index
	Index     uint32 // the index the responder chose
	Mode      byte
	FEC       byte        // the fec mode's group shape the client asked for, k<<4 | m (0: the default)
	Cipher    aead.Cipher // the transport cipher chosen
	Response  []byte      // the Noise response message to send
	// Peer is the client's public key, for an identity handshake (IK).
	Peer PublicKey
	IK   bool
}

// Errors a Responder returns for initiations it refuses.
var (
	ErrReplay    = errors.New("handshake initiation replayed")
	ErrStale     = errors.New("handshake initiation timestamp outside the allowed window")
	ErrCacheFull = errors.New("too many recent handshakes")
	ErrVersion   = errors.New("handshake from an incompatible protocol version")
	ErrCipher    = errors.New("handshake offers no cipher this end accepts")
	// ErrBeforeStart reports an initiation stamped before the Responder's
	// NotBefore: made before a restart, so possibly a replay the memory
	// of the previous run would have refused.
	ErrBeforeStart = errors.New("handshake initiation made before this server started")
	// ErrSourceFull reports that the initiations remembered from one
	// source address have reached the Responder's PerSource bound.
	ErrSourceFull = errors.New("too many recent handshakes from this address")
)

// DefaultWindow is how far an initiation's timestamp may be from the
// responder's clock.
const DefaultWindow = 2 * time.Minute

// Responder answers initiations. Its zero value is not usable; see NewResponder.
type Responder struct {
	// Cipher is the transport cipher this end insists on, or aead.Auto.
	// Set it before the first Accept.
	Cipher aead.Cipher
	// NotBefore, when set, refuses initiations stamped before it
	// (ErrBeforeStart). A server sets it to its start: the memory of
	// initiations seen is lost with a restart, and this keeps one
	// captured before the restart from being replayed after it. Set it
	// before the first Accept.
	NotBefore time.Time
	// PerSource, when positive, bounds the initiations remembered from one
	// source address (AcceptFrom), so that no one sender can fill the
	// memory and lock everyone else out. Set it before the first Accept.
	PerSource int

	// ResetToken, when set, makes the stateless reset token an identity
	// response carries for the session index it names. Set it before the
	// first Accept.
	ResetToken func(idx uint32) [ResetTokenLen]byte
	// IdentityOnly refuses shared-key initiations (ErrShared): a server
	// with a client list takes its listed clients only. Set it before the
	// first Accept.
	IdentityOnly bool

	window time.Duration
	max    int

	mu        sync.Mutex
	keys      []Key                 // accepted keys, tried in order; replaced whole by SetKeys
	static    *noise.DHKey          // the server's key pair, for identity handshakes (SetIdentity)
	authorize func(PublicKey) error // which client public keys are let in
	seen      map[[32]byte]entry    // initiator ephemeral key -> its memory
	bySource  map[netip.Addr]int    // initiations remembered per source address
}

// entry is one remembered initiation: when it may be forgotten and where it
// came from.
type entry struct {
	until time.Time
	from  netip.Addr
}

// DefaultMemory is how many recent initiations a Responder remembers unless
// told otherwise.
const DefaultMemory = 65536

// NewResponder returns a Responder for key. window bounds the clock difference
// it accepts (DefaultWindow when zero); maxRecent bounds how many recent
// initiations it remembers (DefaultMemory when zero).
func NewResponder(key Key, window time.Duration, maxRecent int) *Responder {
	if window <= 0 {
		window = DefaultWindow
	}
	if maxRecent <= 0 {
		maxRecent = DefaultMemory
	}
	return &Responder{keys: []Key{key}, window: window, max: maxRecent, seen: make(map[[32]byte]entry), bySource: make(map[netip.Addr]int)}
}

// Accept checks an initiation and, when it is authentic, fresh and new,
// returns the session keys and the response to send. index picks the
// responder's session index. skew is the clock difference measured for an
// authentic initiation, for error messages. It is AcceptFrom with no source
// address, so no PerSource bound.
func (r *Responder) Accept(msg []byte, now time.Time, index func() uint32) (a Accepted, skew time.Duration, err error) {
	return r.AcceptRequest(Request{Msg: msg}, now, index)
}

// AcceptFrom is Accept for an initiation from the address from: the
// initiations remembered from one address are bounded by PerSource.
func (r *Responder) AcceptFrom(msg []byte, from netip.Addr, now time.Time, index func() uint32) (a Accepted, skew time.Duration, err error) {
	return r.AcceptRequest(Request{Msg: msg, From: from}, now, index)
}

// AcceptRekey is Accept for an initiation that arrived sealed inside a live
// session (a rekey): the session's replay window already refuses copies of
// it, so it takes no place in the memory of initiations seen, which stays
// for those that come in the clear.
func (r *Responder) AcceptRekey(msg []byte, now time.Time, index func() uint32) (a Accepted, skew time.Duration, err error) {
	return r.AcceptRequest(Request{Msg: msg, Rekey: true}, now, index)
}

// Request is an initiation to answer and what is known of it.
type Request struct {
	Msg   []byte     // the Noise message: a shared-key (InitLen) or identity (InitIKLen) initiation
	From  netip.Addr // where it came from (PerSource), if known
	Rekey bool       // it came sealed in a live session (AcceptRekey)
	// PSK is the pre-shared key of an identity handshake: the shared key
	// the initiation's mac1 was made with, or the zero Key when none is
	// configured.
	PSK Key
}

// IsInit reports whether msg has the size of an initiation's Noise message,
// shared-key or identity.
func IsInit(msg []byte) bool { return len(msg) == InitLen || len(msg) == InitIKLen }

// Seen reports whether the initiation msg (a Noise message) is one already
// accepted, by its ephemeral key, which travels in the clear: a replay can be
// told apart for the cost of a map lookup, before any cryptography.
func (r *Responder) Seen(msg []byte) bool {
	if !IsInit(msg) {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, dup := r.seen[[32]byte(msg[:32])]
	return dup
}

// AcceptRequest checks an initiation, shared-key or identity by its size,
// and, when it is authentic, fresh and new, returns the session keys and the
// response to send.
func (r *Responder) AcceptRequest(q Request, now time.Time, index func() uint32) (a Accepted, skew time.Duration, err error) {
	msg := q.Msg
	var hs *noise.HandshakeState
	var p []byte
	switch len(msg) {
	case InitLen:
		if r.IdentityOnly {
			return a, 0, ErrShared
		}
		r.mu.Lock()
		keys := r.keys
		r.mu.Unlock()
		for _, k := range keys {
			st, err := newState(k, false)
			if err != nil {
				return a, 0, fmt.Errorf("handshake: %w", err)
			}
			if q, _, _, err := st.ReadMessage(nil, msg); err == nil {
				hs, p = st, q
				break
			}
		}
		if hs == nil || len(p) != initPayloadLen {
			return a, 0, ErrAuth
		}
	case InitIKLen:
		hs, p, a.Peer, err = r.readIK(msg, q.PSK)
		if err != nil {
			return a, 0, err
		}
		a.IK = true
	default:
		return a, 0, ErrAuth
	}
	if p[0] != version {
		return a, 0, ErrVersion
	}
	c, ok := r.Cipher.Choose(aead.Set(p[2]))
	if !ok {
		return a, 0, ErrCipher
	}
	ts := time.Unix(0, int64(binary.LittleEndian.Uint64(p[8:16])))
	skew = ts.Sub(now)
	if skew > r.window || skew < -r.window {
		return a, skew, ErrStale
	}
	if ts.Before(r.NotBefore) {
		return a, skew, ErrBeforeStart
	}
	if !q.Rekey {
		var eph [32]byte
		copy(eph[:], hs.PeerEphemeral())
		if err := r.remember(eph, q.From, ts, now); err != nil {
			return a, skew, err
		}
	}

	a.PeerIndex = binary.LittleEndian.Uint32(p[4:8])
	a.Mode = p[1]
	a.FEC = p[3]
	a.Cipher = c
	a.Index = index()
	resp, c1, c2, err := hs.WriteMessage(nil, r.respPayload(&a, a.IK))
	if err != nil || c1 == nil {
		return a, skew, fmt.Errorf("handshake: respond: %w", err)
	}
	a.Keys = Keys{Send: c2.UnsafeKey(), Recv: c1.UnsafeKey()}
	a.Response = resp
	return a, skew, nil
}

// remember records the initiation with ephemeral key eph from from, stamped
// ts, until its timestamp leaves the window, or says why it cannot.
func (r *Responder) remember(eph [32]byte, from netip.Addr, ts, now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.seen[eph]; dup {
		return ErrReplay
	}
	if r.PerSource > 0 && from.IsValid() && r.bySource[from] >= r.PerSource {
		// Prune does its work once a second; one sender at its bound
		// does not get to make us scan the whole memory.
		return ErrSourceFull
	}
	if len(r.seen) >= r.max {
		r.pruneLocked(now)
		if len(r.seen) >= r.max {
			return ErrCacheFull
		}
	}
	r.seen[eph] = entry{until: ts.Add(r.window), from: from}
	if from.IsValid() {
		r.bySource[from]++
	}
	return nil
}

// SetKeys replaces the keys the Responder accepts initiations under: the
// current key and, while clients move from one to another, the others. An
// initiation is tried with each in turn. keys must not be empty.
func (r *Responder) SetKeys(keys []Key) {
	if len(keys) == 0 {
		return
	}
	r.mu.Lock()
	r.keys = append([]Key(nil), keys...)
	r.mu.Unlock()
}

// Prune forgets initiations whose timestamps have left the window.
func (r *Responder) Prune(now time.Time) {
	r.mu.Lock()
	r.pruneLocked(now)
	r.mu.Unlock()
}

func (r *Responder) pruneLocked(now time.Time) {
	for k, e := range r.seen {
		if now.After(e.until) {
			delete(r.seen, k)
			if e.from.IsValid() {
				if r.bySource[e.from]--; r.bySource[e.from] <= 0 {
					delete(r.bySource, e.from)
				}
			}
		}
	}
}

// Recent returns how many initiations the Responder remembers.
func (r *Responder) Recent() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}
