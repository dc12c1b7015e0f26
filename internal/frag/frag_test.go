package frag

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/wire"
)

// cut splits d as a sender would and returns the pieces as parsed messages.
func cut(t *testing.T, d []byte, maxPlain int, flow, id uint32) []wire.Message {
	t.Helper()
	count, chunk := Plan(len(d), maxPlain)
	if count < 2 {
		t.Fatalf("%d bytes with %d of plaintext should be cut", len(d), maxPlain)
	}
	var out []wire.Message
	for i := 0; i < count; i++ {
		piece := d[i*chunk : min((i+1)*chunk, len(d))]
		p := make([]byte, wire.FragHeaderLen+len(piece))
		wire.PutFragment(p, wire.Fragment{Flow: flow, ID: id, Index: uint8(i), Count: uint8(count), Total: uint16(len(d))})
		copy(p[wire.FragHeaderLen:], piece)
		if len(p) > maxPlain {
			t.Fatalf("piece of %d bytes over the %d limit", len(p), maxPlain)
		}
		m, err := wire.ParseMessage(p)
		if err != nil {
			t.Fatalf("piece %d/%d of %d bytes: %v", i, count, len(d), err)
		}
		out = append(out, m)
	}
	return out
}

func TestPlanAndReassemble(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var r Reassembler
	now := time.Now()
	for _, maxPlain := range []int{wire.MaxPlaintext(wire.MinMTU, true), wire.MaxPlaintext(1400, false), 9000} {
		for _, n := range []int{maxPlain - wire.DataHeaderLen + 1, 2000, 8000, 60000, wire.MaxDatagram} {
			if n+wire.DataHeaderLen <= maxPlain {
				continue // fits one packet
			}
			d := make([]byte, n)
			for i := range d {
				d[i] = byte(rng.Uint32())
			}
			pieces := cut(t, d, maxPlain, 5, uint32(n))
			rng.Shuffle(len(pieces), func(i, j int) { pieces[i], pieces[j] = pieces[j], pieces[i] })
			var got []byte
			for i, m := range pieces {
				done := r.Add(m.Fragment, m.Body, now, func(flow uint32, b []byte) {
					if flow != 5 {
						t.Fatalf("flow %d", flow)
					}
					got = append([]byte(nil), b...)
				})
				if done != (i == len(pieces)-1) {
					t.Fatalf("%d bytes: complete after piece %d of %d", n, i+1, len(pieces))
				}
			}
			if !bytes.Equal(got, d) {
				t.Fatalf("%d bytes with %d of plaintext: reassembled datagram differs", n, maxPlain)
			}
		}
	}
	if d, b := r.Pending(); d != 0 || b != 0 {
		t.Fatalf("%d datagrams, %d bytes left pending", d, b)
	}
}

func TestReassemblerBounds(t *testing.T) {
	var r Reassembler
	r.SetLimits(Limits{Datagrams: 4, Bytes: 100000, Timeout: time.Second})
	now := time.Now()
	d := make([]byte, 20000)
	nothing := func(uint32, []byte) { t.Fatal("nothing should complete") }
	// Many incomplete datagrams: only the last four stay.
	for id := uint32(0); id < 50; id++ {
		m := cut(t, d, 1000, 1, id)[0]
		r.Add(m.Fragment, m.Body, now, nothing)
		if n, b := r.Pending(); n > 4 || b > 100000 {
			t.Fatalf("%d datagrams, %d bytes pending past the limits", n, b)
		}
	}
	if r.Evicted() != 46 {
		t.Fatalf("evicted %d, want 46", r.Evicted())
	}
	// Age evicts the rest.
	r.Expire(now.Add(2 * time.Second))
	if n, _ := r.Pending(); n != 0 {
		t.Fatalf("%d pending after the timeout", n)
	}
	// A duplicate piece does not complete a datagram twice, nor count twice.
	pieces := cut(t, make([]byte, 3000), 1000, 2, 9)
	completed := 0
	for _, m := range append(pieces[:1], pieces...) {
		if r.Add(m.Fragment, m.Body, now, func(uint32, []byte) { completed++ }) {
			continue
		}
	}
	if completed != 1 {
		t.Fatalf("completed %d times, want 1", completed)
	}
}
