package e2e

import (
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/aead"
	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/server"
)

// TestCiphers: the two ends agree on the cipher one of them insists on, and
// carry traffic with it; ends that insist on different ciphers get no
// session and the server counts the refusal.
func TestCiphers(t *testing.T) {
	cases := []struct {
		client, server aead.Cipher
		want           aead.Cipher
	}{
		{aead.ChaCha20Poly1305, aead.Auto, aead.ChaCha20Poly1305},
		{aead.AES256GCM, aead.Auto, aead.AES256GCM},
		{aead.Auto, aead.ChaCha20Poly1305, aead.ChaCha20Poly1305},
		{aead.AES256GCM, aead.AES256GCM, aead.AES256GCM},
	}
	for _, tc := range cases {
		t.Run(tc.client.String()+"/"+tc.server.String(), func(t *testing.T) {
			key, _, srv := echoServerWith(t, server.Config{Cipher: tc.server})
			paths := []client.PathConfig{{Remote: srv.Addr().String()}, {Remote: srv.Addr().String()}}
			cl := startClient(t, client.Config{Paths: paths, Key: key, Cipher: tc.client})
			pingPong(t, dial(t, cl), "cipher", 200)
			cs := cl.Status("test", time.Now())
			ss := srv.Status("test", time.Now())
			if len(cs.Sessions) != 1 || len(ss.Sessions) != 1 {
				t.Fatalf("sessions: client %d, server %d; want 1 each", len(cs.Sessions), len(ss.Sessions))
			}
			if got := cs.Sessions[0].Cipher; got != tc.want.String() {
				t.Errorf("client's session cipher %q, want %q", got, tc.want)
			}
			if got := ss.Sessions[0].Cipher; got != tc.want.String() {
				t.Errorf("server's session cipher %q, want %q", got, tc.want)
			}
		})
	}

	t.Run("mismatch", func(t *testing.T) {
		key, _, srv := echoServerWith(t, server.Config{Cipher: aead.AES256GCM})
		cl := serveClient(t, client.Config{
			Paths: []client.PathConfig{{Remote: srv.Addr().String()}},
			Key:   key, Cipher: aead.ChaCha20Poly1305, HandshakeRetry: 50 * time.Millisecond,
		})
		if !eventually(5*time.Second, func() bool { return srv.Counters().HandshakeBad.Load() >= 3 }) {
			t.Fatalf("server counted %d refused handshakes, want at least 3", srv.Counters().HandshakeBad.Load())
		}
		select {
		case <-cl.Up():
			t.Fatal("a session came up with no cipher in common")
		default:
		}
		if n := srv.Sessions(); n != 0 {
			t.Fatalf("server has %d sessions, want 0", n)
		}
	})
}

// TestKeyRotation: a server accepting an old and a new key serves clients of
// both; once the old key is dropped, a client still using it gets no new
// session, while the session it already has keeps working.
func TestKeyRotation(t *testing.T) {
	oldKey, newKey := testKey(t), testKey(t)
	echo := newEchoTarget(t)
	srv := startServer(t, server.Config{Target: echo.addr(), Key: newKey, OldKeys: []handshake.Key{oldKey}})
	paths := []client.PathConfig{{Remote: srv.Addr().String()}}
	oldCl := startClient(t, client.Config{Paths: paths, Key: oldKey})
	newCl := startClient(t, client.Config{Paths: paths, Key: newKey})
	pingPong(t, dial(t, oldCl), "old key", 50)
	pingPong(t, dial(t, newCl), "new key", 50)
	srv.SetKeys([]handshake.Key{newKey})
	oldApp := dial(t, oldCl)
	pingPong(t, oldApp, "old key, session already up", 50)
	late := serveClient(t, client.Config{Paths: paths, Key: oldKey, HandshakeRetry: 50 * time.Millisecond})
	bad := srv.Counters().HandshakeBad.Load()
	if !eventually(3*time.Second, func() bool { return srv.Counters().HandshakeBad.Load() > bad }) {
		t.Fatal("the dropped key's handshakes were not refused")
	}
	select {
	case <-late.Up():
		t.Fatal("a new session came up under a dropped key")
	default:
	}
}
