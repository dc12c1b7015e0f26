// Package session holds the cryptographic state of one tunnel session: the
// transport keys from the handshake, the send counter and the receive replay
// window. A packet is sealed once and the same bytes go out on every path; the
// receiver opens the first copy and the replay window turns later copies into
// counted duplicates.
package session

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/mptunnel/mptunnel/internal/aead"
	"github.com/mptunnel/mptunnel/internal/frag"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/reorder"
	"github.com/mptunnel/mptunnel/internal/replay"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// Errors from Open. ErrDuplicate and ErrTooOld are returned only for packets
// that authenticate (unless the caller says it does not care): a copy of a
// packet the peer sealed. Anything else the replay window refuses is
// ErrAuth, so counts that steer paths (a path's received packets) can trust
// them.
var (
	ErrAuth      = errors.New("packet does not authenticate")
	ErrDuplicate = errors.New("duplicate packet")
	ErrTooOld    = errors.New("packet counter too old for the replay window")
)

// memoSize is how many accepted packets' tags a session remembers (a power
// of two). Copies arriving within that many packets of the first are
// recognised by their tag; later ones are opened again.
const memoSize = 512

// memoEntry is the counter of an accepted packet and its tag; a copy with
// the same counter and tag is the same sealed packet, as nobody without the
// key can make a tag (an off-path sender cannot even see one).
type memoEntry struct {
	counter uint64
	tag     [wire.TagLen]byte
}

// tagOf returns pkt's tag.
func tagOf(pkt []byte) [wire.TagLen]byte {
	return [wire.TagLen]byte(pkt[len(pkt)-wire.TagLen:])
}

// rejectAfter is the last counter a session may use; after it the session must
// be replaced by a new handshake.
const rejectAfter = 1<<64 - 1<<16

// ErrExhausted reports that a session has used all its counters.
var ErrExhausted = errors.New("session counters exhausted")

// State is one session's transport state. Seal and Open are safe for
// concurrent use.
type State struct {
	// PeerIndex is the index the peer chose: the receiver field of what we send.
	PeerIndex uint32
	// LocalIndex is the index this end chose: the receiver field of what it gets.
	LocalIndex uint32
	// Cipher is the transport cipher.
	Cipher  aead.Cipher
	send    cipher.AEAD
	recv    cipher.AEAD
	counter atomic.Uint64

	fragID atomic.Uint32

	mu     sync.Mutex
	window replay.Filter
	// memo holds the tags of the latest packets accepted, by counter, so
	// that a copy of one (the same bytes, sent on another path) proves
	// itself authentic without a second AEAD open. mu guards it.
	memo *[memoSize]memoEntry

	// Reasm reassembles the peer's fragmented datagrams.
	Reasm frag.Reassembler
	// FECRx rebuilds the peer's datagrams in fec mode; nil otherwise. Set it
	// before the first packet is received.
	FECRx *FECReceiver
	// FECTx seals this end's datagrams as FEC shards in fec mode; nil
	// otherwise. Set it before the session is used.
	FECTx *FECSender
	// Reorder puts the peer's datagrams back in order when this end asked
	// for a reorder buffer; nil otherwise. Set it before the first packet is
	// received.
	Reorder *reorder.Timed
	// Repair keeps this end's packets for the peer to ask for again and
	// asks for the peer's that every path lost; nil when repair is off.
	// Set it (EnableRepair) before the session is used.
	Repair *Repairer
	// ParityTx and ParityRx send and use parity on top of copies; nil when
	// off. Set them (EnableParity) before the session is used.
	ParityTx *ParitySender
	ParityRx *ParityReceiver
}

// NextFragID returns a fresh fragment ID for a datagram this end cuts.
func (c *State) NextFragID() uint32 { return c.fragID.Add(1) }

// New builds a session's transport state with cipher c. window is the replay
// window size in packets (replay.DefaultSize when zero).
func New(keys handshake.Keys, c aead.Cipher, peerIndex uint32, window int) (*State, error) {
	s, err := aead.New(c, keys.Send[:])
	if err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	r, err := aead.New(c, keys.Recv[:])
	if err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	st := &State{PeerIndex: peerIndex, Cipher: c, send: s, recv: r}
	st.window.Init(window)
	return st, nil
}

// Stop stops the session's timers, the FEC sender's flush and the reorder
// buffer's release, for good: the one place a session that ends is stopped.
func (c *State) Stop() {
	if c.FECTx != nil {
		c.FECTx.Stop()
	}
	if c.Reorder != nil {
		c.Reorder.Stop()
	}
	if c.Repair != nil {
		c.Repair.stop()
	}
	if c.ParityTx != nil {
		c.ParityTx.stop()
	}
}

// Sent returns how many packets this end has sealed.
func (c *State) Sent() uint64 { return c.counter.Load() }

// Received returns the largest counter accepted from the peer: about how
// many packets the peer has sealed.
func (c *State) Received() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.window.Last()
}

// Window returns the effective replay window in packets.
func (c *State) Window() int { return c.window.Window() }

// Nonce is scratch space for one AEAD nonce. Callers keep one per goroutine so
// sealing and opening allocate nothing.
type Nonce [12]byte

func (n *Nonce) set(counter uint64) []byte {
	binary.LittleEndian.PutUint64(n[4:], counter)
	return n[:]
}

// Seal seals the plaintext held at buf[wire.HeaderLen:wire.HeaderLen+n] in
// place, writes the header, and returns the whole packet (a prefix of buf).
// buf must have room for the tag after the plaintext.
func (c *State) Seal(buf []byte, n int, nonce *Nonce) ([]byte, error) {
	ctr := c.counter.Add(1) - 1
	if ctr >= rejectAfter {
		return nil, ErrExhausted
	}
	wire.PutHeader(buf, wire.Header{Receiver: c.PeerIndex, Counter: ctr})
	plain := buf[wire.HeaderLen : wire.HeaderLen+n]
	keep := c.Repair != nil && n > 0 && keeps(plain[0])
	if keep && c.ParityTx != nil {
		c.ParityTx.add(ctr, plain)
	}
	out := c.send.Seal(plain[:0], nonce.set(ctr), plain, buf[:wire.HeaderLen])
	pkt := buf[:wire.HeaderLen+len(out)]
	if keep {
		c.Repair.Keep.Put(ctr, pkt)
	}
	return pkt, nil
}

// Open authenticates and decrypts a transport packet in place and returns its
// plaintext. The replay window is checked before the AEAD and updated only
// after it succeeds. A packet the window refuses is authenticated too, so
// that ErrDuplicate and ErrTooOld speak only of authentic copies: a copy of
// one of the latest packets accepted by its tag (no decryption), any other by
// an AEAD open; a forgery is ErrAuth.
//
// With uncheckedCopies, a packet the window refuses is reported as it says
// without authentication: for a caller to which where it came from counts
// for nothing, so a replay costs no AEAD open.
func (c *State) Open(pkt []byte, h wire.Header, nonce *Nonce, uncheckedCopies bool) ([]byte, error) {
	if len(pkt) < wire.Overhead {
		return nil, ErrAuth
	}
	c.mu.Lock()
	res := c.window.Check(h.Counter)
	if uncheckedCopies && res != replay.Accepted {
		c.mu.Unlock()
		return nil, resultErr(res)
	}
	known := false
	if res == replay.Duplicate && c.memo != nil {
		e := &c.memo[h.Counter&(memoSize-1)]
		known = e.counter == h.Counter && e.tag == tagOf(pkt)
	}
	c.mu.Unlock()
	if known {
		return nil, ErrDuplicate
	}
	tag := tagOf(pkt)
	ct := pkt[wire.HeaderLen:]
	plain, err := c.recv.Open(ct[:0], nonce.set(h.Counter), ct, pkt[:wire.HeaderLen])
	if err != nil {
		return nil, ErrAuth
	}
	if err := resultErr(res); err != nil {
		return nil, err
	}
	c.mu.Lock()
	res = c.window.Update(h.Counter)
	if res == replay.Accepted {
		if c.memo == nil {
			c.memo = new([memoSize]memoEntry)
		}
		c.memo[h.Counter&(memoSize-1)] = memoEntry{counter: h.Counter, tag: tag}
	}
	c.mu.Unlock()
	if err := resultErr(res); err != nil {
		return nil, err
	}
	return plain, nil
}

func resultErr(r replay.Result) error {
	switch r {
	case replay.Accepted:
		return nil
	case replay.Duplicate:
		return ErrDuplicate
	default:
		return ErrTooOld
	}
}
