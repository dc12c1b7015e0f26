package wire

import (
	"bytes"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	b := make([]byte, Overhead)
	h := Header{Receiver: 0xdeadbeef, Counter: 1<<63 + 5}
	PutHeader(b, h)
	got, err := ParseHeader(b)
	if err != nil || got != h {
		t.Fatalf("got %+v, %v; want %+v", got, err, h)
	}
	for _, bad := range [][]byte{nil, b[:Overhead-1], append([]byte{TypeInit}, b[1:]...), append([]byte{TypeTransport, 1}, b[2:]...)} {
		if _, err := ParseHeader(bad); err == nil {
			t.Fatalf("ParseHeader(%x) accepted a malformed header", bad)
		}
	}
}

func TestHandshakeFraming(t *testing.T) {
	msg := bytes.Repeat([]byte{7}, 64)
	init := AppendInit(nil, msg)
	if len(init) != InitPrefixLen+len(msg)+2*MACLen {
		t.Fatalf("initiation of %d bytes", len(init))
	}
	if got, macs, err := ParseInit(init); err != nil || !bytes.Equal(got, msg) || !bytes.Equal(macs, make([]byte, 2*MACLen)) {
		t.Fatalf("ParseInit: %v", err)
	}
	resp := AppendResponse(nil, 42, msg)
	idx, got, err := ParseResponse(resp)
	if err != nil || idx != 42 || !bytes.Equal(got, msg) {
		t.Fatalf("ParseResponse: %d %v", idx, err)
	}
	if _, _, err := ParseInit(init[:InitPrefixLen+2*MACLen]); err == nil {
		t.Fatal("empty initiation accepted")
	}
	// Security review finding 6 (ef6581c): fails before the fix: any
	// initiation longer than the MACs parsed, so a short one with a right
	// mac1 drew a cookie reply larger than itself.
	if len(init) != InitLen {
		t.Fatalf("initiation of %d bytes, want InitLen %d", len(init), InitLen)
	}
	for _, n := range []int{InitPrefixLen + 2*MACLen + 1, CookieLen, InitLen - 1, InitLen + 1} {
		b := AppendInit(nil, bytes.Repeat([]byte{7}, n-InitPrefixLen-2*MACLen))
		if _, _, err := ParseInit(b); err == nil {
			t.Fatalf("a %d-byte initiation parsed; only %d bytes is one", n, InitLen)
		}
	}
	// An identity initiation has its own type and size; neither size
	// parses under the other's type.
	ik := AppendInit(nil, bytes.Repeat([]byte{8}, InitIKNoiseLen))
	if len(ik) != InitIKLen || Type(ik) != TypeInitIK {
		t.Fatalf("identity initiation of %d bytes, type %d", len(ik), Type(ik))
	}
	if got, _, err := ParseInit(ik); err != nil || len(got) != InitIKNoiseLen {
		t.Fatalf("ParseInit of an identity initiation: %v", err)
	}
	for _, b := range [][]byte{append([]byte{TypeInit}, ik[1:]...), append([]byte{TypeInitIK}, init[1:]...)} {
		if _, _, err := ParseInit(b); err == nil {
			t.Fatalf("a %d-byte initiation of type %d parsed", len(b), b[0])
		}
	}
	ck := AppendCookie(nil, bytes.Repeat([]byte{1}, CookieNonceLen), bytes.Repeat([]byte{2}, SealedCookieLen))
	if len(ck) != CookieLen || len(ck) >= len(init) {
		t.Fatalf("cookie reply of %d bytes for an initiation of %d: amplification", len(ck), len(init))
	}
	if _, _, err := ParseCookie(ck[:CookieLen-1]); err == nil {
		t.Fatal("a short cookie reply was accepted")
	}
	if _, _, err := ParseResponse(init); err == nil {
		t.Fatal("initiation parsed as a response")
	}
}

func TestResetFraming(t *testing.T) {
	token := bytes.Repeat([]byte{5}, ResetTokenLen)
	rs := AppendReset(nil, 0xa1b2c3d4, token)
	if len(rs) != ResetLen {
		t.Fatalf("reset of %d bytes, want %d", len(rs), ResetLen)
	}
	if ResetLen >= Overhead {
		t.Fatalf("a reset (%d bytes) is not smaller than the smallest transport packet (%d)", ResetLen, Overhead)
	}
	idx, tok, err := ParseReset(rs)
	if err != nil || idx != 0xa1b2c3d4 || !bytes.Equal(tok, token) {
		t.Fatalf("ParseReset: %x %x %v", idx, tok, err)
	}
	bad := [][]byte{nil, rs[:ResetLen-1], append(rs[:ResetLen:ResetLen], 0), append([]byte{TypeCookie}, rs[1:]...), append([]byte{TypeReset, 0, 1}, rs[3:]...)}
	for _, b := range bad {
		if _, _, err := ParseReset(b); err == nil {
			t.Fatalf("ParseReset(%x) accepted", b)
		}
	}
}

func TestMessages(t *testing.T) {
	p := make([]byte, DataHeaderLen+3)
	PutData(p, 9)
	copy(p[DataHeaderLen:], "abc")
	m, err := ParseMessage(p)
	if err != nil || m.Kind != MsgData || m.Flow != 9 || string(m.Body) != "abc" {
		t.Fatalf("data: %+v %v", m, err)
	}
	// 10 bytes in 4 pieces: 3, 3, 3, 1.
	for i, n := range []int{3, 3, 3, 1} {
		f := Fragment{Flow: 1, ID: 2, Index: uint8(i), Count: 4, Total: 10}
		q := make([]byte, FragHeaderLen+n)
		PutFragment(q, f)
		m, err := ParseMessage(q)
		if err != nil || m.Fragment != f || len(m.Body) != n {
			t.Fatalf("fragment %d: %+v %v", i, m, err)
		}
		// A piece of the wrong size is refused.
		if _, err := ParseMessage(q[:len(q)-1]); err == nil {
			t.Fatalf("fragment %d one byte short accepted", i)
		}
	}
	pr := make([]byte, ProbeLen)
	want := Probe{Path: 3, Seq: 9, Sent: -5, Tx: 1 << 40, Rx: 7}
	PutProbe(pr, MsgProbeReply, want)
	if m, err := ParseMessage(pr); err != nil || m.Kind != MsgProbeReply || m.Probe != want {
		t.Fatalf("probe reply: %+v %v", m, err)
	}
	shard := []byte{MsgFEC, 0, 0, 0, 1, 0, 8, 4, 'h', 'i'}
	if m, err := ParseMessage(shard); err != nil || m.Kind != MsgFEC || string(m.Body) != string(shard[1:]) {
		t.Fatalf("fec shard: %+v %v", m, err)
	}
	rk := []byte{MsgRekey, 1, 2, 3}
	if m, err := ParseMessage(rk); err != nil || m.Kind != MsgRekey || string(m.Body) != string(rk[1:]) {
		t.Fatalf("rekey: %+v %v", m, err)
	}
	asked := []uint64{7, 1 << 40, 9}
	rp := AppendRepair(nil, asked)
	if m, err := ParseMessage(rp); err != nil || m.Kind != MsgRepair || len(m.Body) != 8*len(asked) {
		t.Fatalf("repair: %+v %v", m, err)
	} else {
		for i, c := range asked {
			if got := RepairCounter(m.Body, i); got != c {
				t.Fatalf("repair counter %d: %d, want %d", i, got, c)
			}
		}
	}
	tooMany := AppendRepair(nil, make([]uint64, MaxRepair+1))
	bad := [][]byte{nil, {0}, {99}, {MsgData, 1, 2}, {MsgFragment, 0, 0, 0, 1}, pr[:ProbeLen-1], {MsgClose, 0}, {MsgFEC, 0, 0, 0, 0, 0, 0}, {MsgRekey},
		{MsgRepair}, {MsgRepair, 0}, rp[:len(rp)-1], append(rp[:len(rp):len(rp)], 0), tooMany}
	for _, b := range bad {
		if _, err := ParseMessage(b); err == nil {
			t.Fatalf("ParseMessage(%x) accepted", b)
		}
	}
}

func FuzzParseHeader(f *testing.F) {
	good := make([]byte, Overhead+10)
	PutHeader(good, Header{Receiver: 1, Counter: 2})
	f.Add(good)
	f.Add(good[:Overhead])
	f.Add(good[:Overhead-1])
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			return
		}
		out := make([]byte, HeaderLen)
		PutHeader(out, h)
		if !bytes.Equal(out, b[:HeaderLen]) {
			t.Fatalf("header %x decodes to %+v which encodes to %x", b[:HeaderLen], h, out)
		}
	})
}

func FuzzParseMessage(f *testing.F) {
	f.Add([]byte{MsgData, 0, 0, 0, 1, 'x'})
	f.Add([]byte{MsgClose})
	f.Add([]byte{MsgRekey, 7})
	f.Add([]byte{MsgFEC, 0, 0, 0, 1, 0, 8, 4, 0, 0, 0, 7, 'h', 'i'})
	pr := make([]byte, ProbeLen)
	PutProbe(pr, MsgProbe, Probe{Path: 1, Seq: 2, Sent: 3, Tx: 4, Rx: 5})
	f.Add(pr)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMessage(b)
		if err != nil {
			return
		}
		if m.Kind == MsgFragment {
			f := m.Fragment
			chunk := ChunkLen(int(f.Total), int(f.Count))
			if int(f.Index)*chunk+len(m.Body) > int(f.Total) || f.Count < 2 || f.Index >= f.Count {
				t.Fatalf("accepted fragment does not fit its datagram: %+v body %d", f, len(m.Body))
			}
		}
	})
}

// FuzzParseHandshake: the handshake packets' outer layout; what parses
// rebuilds the same bytes.
func FuzzParseHandshake(f *testing.F) {
	f.Add(AppendInit(nil, bytes.Repeat([]byte{7}, 64)))
	f.Add(AppendInit(nil, bytes.Repeat([]byte{8}, InitIKNoiseLen)))
	f.Add(AppendResponse(nil, 42, bytes.Repeat([]byte{9}, 56)))
	f.Add(AppendCookie(nil, bytes.Repeat([]byte{1}, CookieNonceLen), bytes.Repeat([]byte{2}, SealedCookieLen)))
	f.Add(AppendReset(nil, 7, bytes.Repeat([]byte{3}, ResetTokenLen)))
	f.Fuzz(func(t *testing.T, b []byte) {
		if rcv, token, err := ParseReset(b); err == nil {
			if out := AppendReset(nil, rcv, token); !bytes.Equal(out, b) {
				t.Fatalf("reset %x parses to %d %x which appends to %x", b, rcv, token, out)
			}
		}
		if msg, macs, err := ParseInit(b); err == nil {
			out := AppendInit(nil, msg)
			copy(out[len(out)-2*MACLen:], macs)
			if !bytes.Equal(out, b) {
				t.Fatalf("init %x parses to %x which appends to %x", b, msg, out)
			}
		}
		if nonce, sealed, err := ParseCookie(b); err == nil {
			if out := AppendCookie(nil, nonce, sealed); !bytes.Equal(out, b) {
				t.Fatalf("cookie reply %x parses to %x %x which appends to %x", b, nonce, sealed, out)
			}
		}
		if rcv, msg, err := ParseResponse(b); err == nil {
			if out := AppendResponse(nil, rcv, msg); !bytes.Equal(out, b) {
				t.Fatalf("response %x parses to %d %x which appends to %x", b, rcv, msg, out)
			}
		}
	})
}
