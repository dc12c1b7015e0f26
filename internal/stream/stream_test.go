package stream

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/mptunnel/mptunnel/internal/wire"
)

// pipe returns two PacketConns, each delivering what the other writes.
func pipe() (a, b *PacketConn) {
	a = NewPacketConn(func(p []byte) error { b.Deliver(p); return nil })
	b = NewPacketConn(func(p []byte) error { a.Deliver(p); return nil })
	return a, b
}

// connect runs a QUIC server on one end of a pipe with serverSecret and
// dials it from the other with clientSecret.
func connect(t *testing.T, serverSecret, clientSecret [32]byte) (client, server *quic.Conn, err error) {
	t.Helper()
	ca, sa := pipe()
	ctr, str := &quic.Transport{Conn: ca}, &quic.Transport{Conn: sa}
	t.Cleanup(func() {
		ctr.Close()
		str.Close()
		ca.Close()
		sa.Close()
	})
	stls, err := ServerTLS(serverSecret)
	if err != nil {
		t.Fatal(err)
	}
	conf := &quic.Config{InitialPacketSize: 1300, DisablePathMTUDiscovery: true, HandshakeIdleTimeout: 2 * time.Second}
	ln, err := str.Listen(stls, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan *quic.Conn, 1)
	go func() {
		c, err := ln.Accept(context.Background())
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	client, err = ctr.Dial(ctx, Addr{}, ClientTLS(clientSecret), conf)
	if err != nil {
		ln.Close()
		<-accepted
		return nil, nil, err
	}
	t.Cleanup(func() { client.CloseWithError(0, "") })
	server = <-accepted
	if server != nil {
		t.Cleanup(func() { server.CloseWithError(0, "") })
	}
	return client, server, nil
}

// TestStreamOverPacketConns: a QUIC connection over two PacketConns, TLS
// bound to the session's secret; a stream carries the request, the reply,
// data both ways, and a half-close each way.
func TestStreamOverPacketConns(t *testing.T) {
	var k1, k2 [32]byte
	rand.Read(k1[:])
	rand.Read(k2[:])
	secret := Secret(k1, k2)
	cc, sc, err := connect(t, secret, secret)
	if err != nil {
		t.Fatal(err)
	}
	target := wire.Target{Name: "example.org", Port: 443}
	big := make([]byte, 1<<20)
	rand.Read(big)
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			s, err := sc.AcceptStream(context.Background())
			if err != nil {
				return err
			}
			got, err := ReadRequest(s)
			if err != nil {
				return err
			}
			if got != target {
				return errors.New("wrong target " + got.String())
			}
			if err := WriteReply(s, OK); err != nil {
				return err
			}
			// Echo everything, then close our side after the client's EOF.
			if _, err := io.Copy(s, s); err != nil {
				return err
			}
			return s.Close()
		}()
	}()
	s, err := cc.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteRequest(s, target); err != nil {
		t.Fatal(err)
	}
	if code, err := ReadReply(s); err != nil || code != OK {
		t.Fatalf("reply %d %v", code, err)
	}
	go func() {
		s.Write(big)
		s.Close() // half-close: the server sees EOF, and still answers
	}()
	back, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, big) {
		t.Fatalf("%d bytes echoed, want the %d sent", len(back), len(big))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestWrongSecret: a client with another session's secret refuses the
// server's certificate; no connection.
func TestWrongSecret(t *testing.T) {
	var k1, k2, k3 [32]byte
	rand.Read(k1[:])
	rand.Read(k2[:])
	rand.Read(k3[:])
	if _, _, err := connect(t, Secret(k1, k2), Secret(k1, k3)); err == nil {
		t.Fatal("connected with the wrong secret")
	}
}

// TestRequestFraming: requests round-trip for each address type, and
// malformed ones are refused without reading past them.
func TestRequestFraming(t *testing.T) {
	for _, tg := range []wire.Target{
		{Addr: netip.MustParseAddr("192.0.2.1"), Port: 80},
		{Addr: netip.MustParseAddr("2001:db8::1"), Port: 8443},
		{Name: "a", Port: 1},
		{Name: string(bytes.Repeat([]byte("n"), 255)), Port: 65535},
	} {
		var b bytes.Buffer
		if err := WriteRequest(&b, tg); err != nil {
			t.Fatal(err)
		}
		b.WriteString("after")
		got, err := ReadRequest(&b)
		if err != nil || got != tg {
			t.Fatalf("%v: read %v, %v", tg, got, err)
		}
		if b.String() != "after" {
			t.Fatalf("%v: read past the request: %q left", tg, b.String())
		}
	}
	for _, bad := range [][]byte{
		{2, 1, 1, 2, 3, 4, 0, 80}, // version
		{1, 9, 0},                 // address type
		{1, 1, 1, 2, 3, 4, 0, 0},  // port 0
		{1, 3, 0, 0, 80},          // empty name
		{1, 1, 1},                 // truncated
	} {
		if _, err := ReadRequest(bytes.NewReader(bad)); err == nil {
			t.Fatalf("% x: accepted", bad)
		}
	}
	for code := range byte(8) {
		if Reason(code) == "" {
			t.Fatalf("code %d has no reason", code)
		}
	}
	if SocksReply(NotAllowed) != 2 || SocksReply(Refused) != 5 || SocksReply(TimedOut) != 6 || SocksReply(NoName) != 4 {
		t.Fatal("SOCKS5 reply codes do not say what RFC 1928 says")
	}
}
