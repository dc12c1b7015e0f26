package handshake

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func mustPair(t testing.TB) (PrivateKey, PublicKey) {
	priv, pub, err := GeneratePair()
	if err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

// identityResponder is a server holding srv that lets in the keys of known.
func identityResponder(srv PrivateKey, known ...PublicKey) *Responder {
	r := NewResponder(Key{}, 0, 0)
	r.IdentityOnly = true
	r.ResetToken = func(idx uint32) [ResetTokenLen]byte { return [ResetTokenLen]byte{byte(idx), 9} }
	r.SetIdentity(srv, func(p PublicKey) error {
		for _, k := range known {
			if k == p {
				return nil
			}
		}
		return ErrUnknownPeer
	})
	return r
}

func TestIdentityHandshake(t *testing.T) {
	srvPriv, srvPub := mustPair(t)
	cliPriv, cliPub := mustPair(t)
	psk := mustKey(t)
	now := time.Now()
	r := identityResponder(srvPriv, cliPub)
	in, err := InitiateIK(cliPriv, srvPub, psk, Hello{Mode: 2}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Msg) != InitIKLen {
		t.Fatalf("identity initiation is %d bytes, want %d", len(in.Msg), InitIKLen)
	}
	a, _, err := r.AcceptRequest(Request{Msg: in.Msg, PSK: psk}, now, fixedIndex)
	if err != nil {
		t.Fatal(err)
	}
	if !a.IK || a.Peer != cliPub || a.Mode != 2 || a.PeerIndex != in.Index || len(a.Response) != ResponseIKLen {
		t.Fatalf("accepted %+v", a)
	}
	fin, err := in.Finish(a.Response)
	if err != nil {
		t.Fatal(err)
	}
	if fin.Keys.Send != a.Keys.Recv || fin.Keys.Recv != a.Keys.Send || fin.PeerIndex != 77 {
		t.Fatal("the two ends disagree on keys or index")
	}
	if !fin.HasToken || fin.ResetToken != [ResetTokenLen]byte{77, 9} {
		t.Fatalf("reset token %x (%v), want the responder's for index 77", fin.ResetToken, fin.HasToken)
	}
	if _, _, err := r.AcceptRequest(Request{Msg: in.Msg, PSK: psk}, now, fixedIndex); !errors.Is(err, ErrReplay) {
		t.Fatalf("replayed identity initiation: %v, want ErrReplay", err)
	}

	// Without a shared key on either end (the zero Key): still works.
	in, _ = InitiateIK(cliPriv, srvPub, Key{}, Hello{}, now)
	a, _, err = r.AcceptRequest(Request{Msg: in.Msg}, now, fixedIndex)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Finish(a.Response); err != nil {
		t.Fatal(err)
	}
}

func TestIdentityRefusals(t *testing.T) {
	srvPriv, srvPub := mustPair(t)
	cliPriv, cliPub := mustPair(t)
	strangerPriv, _ := mustPair(t)
	otherSrvPriv, otherSrvPub := mustPair(t)
	psk := mustKey(t)
	now := time.Now()
	r := identityResponder(srvPriv, cliPub)

	// A client the server does not know, with the right shared key: refused.
	in, _ := InitiateIK(strangerPriv, srvPub, psk, Hello{}, now)
	if _, _, err := r.AcceptRequest(Request{Msg: in.Msg, PSK: psk}, now, fixedIndex); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("unknown client: %v, want ErrUnknownPeer", err)
	}
	if r.Recent() != 0 {
		t.Fatal("an unknown client's initiation took a place in the memory")
	}
	// A client pinned to another server's key: this server cannot read it.
	in, _ = InitiateIK(cliPriv, otherSrvPub, psk, Hello{}, now)
	if _, _, err := r.AcceptRequest(Request{Msg: in.Msg, PSK: psk}, now, fixedIndex); !errors.Is(err, ErrAuth) {
		t.Fatalf("initiation for another server: %v, want ErrAuth", err)
	}
	// ...and a server holding another private key (a client posing as the
	// server, say) cannot answer it.
	in, _ = InitiateIK(cliPriv, srvPub, psk, Hello{}, now)
	if _, _, err := identityResponder(otherSrvPriv, cliPub).AcceptRequest(Request{Msg: in.Msg, PSK: psk}, now, fixedIndex); !errors.Is(err, ErrAuth) {
		t.Fatalf("impostor server read the initiation: %v", err)
	}
	// A server with another shared key: the client refuses its response.
	a, _, err := r.AcceptRequest(Request{Msg: in.Msg, PSK: mustKey(t)}, now, fixedIndex)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Finish(a.Response); !errors.Is(err, ErrAuth) {
		t.Fatalf("response under another shared key: %v, want ErrAuth", err)
	}
	// A shared-key initiation to an identity-only server: refused.
	nn, _ := Initiate(psk, 0, 0, now)
	if _, _, err := r.Accept(nn.Msg, now, fixedIndex); !errors.Is(err, ErrShared) {
		t.Fatalf("shared-key initiation: %v, want ErrShared", err)
	}
	// A server without a private key takes no identity initiation.
	in, _ = InitiateIK(cliPriv, srvPub, psk, Hello{}, now)
	if _, _, err := NewResponder(psk, 0, 0).AcceptRequest(Request{Msg: in.Msg, PSK: psk}, now, fixedIndex); !errors.Is(err, ErrAuth) {
		t.Fatalf("identity initiation to a shared-key server: %v, want ErrAuth", err)
	}
	// A shared-key response does not finish an identity initiation.
	nnr := NewResponder(psk, 0, 0)
	nn, _ = Initiate(psk, 0, 0, now)
	na, _, _ := nnr.Accept(nn.Msg, now, fixedIndex)
	if _, err := in.Finish(na.Response); !errors.Is(err, ErrAuth) {
		t.Fatalf("shared-key response to an identity initiation: %v, want ErrAuth", err)
	}
}

func TestKeyPairText(t *testing.T) {
	priv, pub := mustPair(t)
	if priv.Public() != pub {
		t.Fatal("Public does not give the generated public key")
	}
	p2, err := ParsePrivateKey("# mine\n\n " + priv.String() + "\n")
	if err != nil || p2 != priv {
		t.Fatalf("private key round trip: %v", err)
	}
	q2, err := ParsePublicKey(pub.String())
	if err != nil || q2 != pub {
		t.Fatalf("public key round trip: %v", err)
	}
	for _, bad := range []string{"", "nope", strings.Repeat("A", 44)} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Fatalf("ParsePublicKey(%q) accepted", bad)
		}
	}
}

func FuzzAcceptIK(f *testing.F) {
	srv := PrivateKey{4, 5, 6}
	cli := PrivateKey{7, 8, 9}
	psk := Key{1, 2, 3}
	now := time.Unix(1_800_000_000, 0)
	in, _ := InitiateIK(cli, srv.Public(), psk, Hello{}, now)
	f.Add(in.Msg)
	f.Add(in.Msg[:InitLen])
	f.Add(in.Msg[:40])
	f.Fuzz(func(t *testing.T, msg []byte) {
		r := identityResponder(srv, cli.Public())
		r.IdentityOnly = false
		a, _, err := r.AcceptRequest(Request{Msg: msg, PSK: psk}, now, fixedIndex)
		if err == nil && (len(a.Response) != ResponseIKLen || a.Peer != cli.Public()) {
			t.Fatalf("accepted from %x with a %d-byte response", a.Peer, len(a.Response))
		}
	})
}

func FuzzFinishIK(f *testing.F) {
	srv := PrivateKey{4, 5, 6}
	cli := PrivateKey{7, 8, 9}
	now := time.Unix(1_800_000_000, 0)
	in, _ := InitiateIK(cli, srv.Public(), Key{}, Hello{}, now)
	a, _, _ := identityResponder(srv, cli.Public()).AcceptRequest(Request{Msg: in.Msg}, now, fixedIndex)
	f.Add(a.Response)
	f.Add(a.Response[:ResponseLen])
	f.Fuzz(func(t *testing.T, msg []byte) {
		in, err := InitiateIK(cli, srv.Public(), Key{}, Hello{}, now)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := in.Finish(msg); err == nil {
			t.Fatal("a response not made for this initiation was accepted")
		}
	})
}

// BenchmarkHandshake and BenchmarkHandshakeIK measure a whole handshake
// (initiation, acceptance, response read) on one core: ns/op is the cost
// of one, both ends' work together.
func BenchmarkHandshake(b *testing.B) {
	key := mustKey(b)
	r := NewResponder(key, 0, 1<<30)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		in, err := Initiate(key, 0, 0, now)
		if err != nil {
			b.Fatal(err)
		}
		a, _, err := r.Accept(in.Msg, now, fixedIndex)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := in.Finish(a.Response); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHandshakeIK(b *testing.B) {
	srv, _ := mustPair(b)
	cli, cliPub := mustPair(b)
	key := mustKey(b)
	r := identityResponder(srv, cliPub)
	r.IdentityOnly = false
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		in, err := InitiateIK(cli, srv.Public(), key, Hello{}, now)
		if err != nil {
			b.Fatal(err)
		}
		a, _, err := r.AcceptRequest(Request{Msg: in.Msg, PSK: key}, now, fixedIndex)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := in.Finish(a.Response); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAccept and BenchmarkAcceptIK measure the server's part of a
// handshake alone: reading an initiation and writing the response. The same
// initiation is taken as a rekey, which the memory of initiations does not
// refuse, so the loop does nothing else.
func BenchmarkAccept(b *testing.B) {
	key := mustKey(b)
	r := NewResponder(key, 0, 0)
	now := time.Now()
	in, _ := Initiate(key, 0, 0, now)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := r.AcceptRequest(Request{Msg: in.Msg, Rekey: true}, now, fixedIndex); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAcceptIK(b *testing.B) {
	srv, _ := mustPair(b)
	cli, cliPub := mustPair(b)
	key := mustKey(b)
	r := identityResponder(srv, cliPub)
	now := time.Now()
	in, _ := InitiateIK(cli, srv.Public(), key, Hello{}, now)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := r.AcceptRequest(Request{Msg: in.Msg, PSK: key, Rekey: true}, now, fixedIndex); err != nil {
			b.Fatal(err)
		}
	}
}
