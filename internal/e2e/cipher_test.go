package e2e

import (
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/aead"
	"github.com/mptunnel/mptunnel/internal/client"
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
			key := testKey(t)
			echo := newEchoTarget(t)
			srv := startServer(t, server.Config{Target: echo.addr(), Key: key, Cipher: tc.server})
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
		key := testKey(t)
		echo := newEchoTarget(t)
		srv := startServer(t, server.Config{Target: echo.addr(), Key: key, Cipher: aead.AES256GCM})
		cl, err := client.Listen(client.Config{
			Listen: "127.0.0.1:0", Paths: []client.PathConfig{{Remote: srv.Addr().String()}},
			Key: key, Cipher: aead.ChaCha20Poly1305, Logger: quietLogger(), HandshakeRetry: 50 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		run(t, cl.Serve)
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
