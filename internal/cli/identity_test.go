package cli

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/conffile"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/server"
)

// newPair runs genkey --pair into a new file in dir and returns the file
// and the public key printed.
func newPair(t *testing.T, dir, name string) (string, handshake.PublicKey) {
	t.Helper()
	file := filepath.Join(dir, name)
	r := runCLI(t, context.Background(), nil, "mptunnel", "genkey", "--pair", "-o", file)
	if r.code != 0 {
		t.Fatalf("genkey --pair: exit %d: %s", r.code, r.stderr)
	}
	pub, err := handshake.ParsePublicKey(r.stdout)
	if err != nil {
		t.Fatalf("genkey --pair printed %q: %v", r.stdout, err)
	}
	return file, pub
}

func TestGenkeyPairAndPubkey(t *testing.T) {
	dir := t.TempDir()
	file, pub := newPair(t, dir, "client.key")
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: %v, mode %v; want 0600", err, st.Mode().Perm())
	}
	if r := runCLI(t, context.Background(), nil, "mptunnel", "pubkey", "--key-file", file); r.code != 0 || strings.TrimSpace(r.stdout) != pub.String() {
		t.Fatalf("pubkey --key-file: exit %d, %q; want %s", r.code, r.stdout+r.stderr, pub)
	}
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	code := Run("mptunnel", []string{"pubkey"}, Env{Stdout: &out, Stderr: io.Discard, Stdin: strings.NewReader(string(text)), Getenv: func(string) string { return "" }})
	if code != 0 || strings.TrimSpace(out.String()) != pub.String() {
		t.Fatalf("pubkey < file: exit %d, %q; want %s", code, out.String(), pub)
	}
	if _, other := newPair(t, dir, "other.key"); other == pub {
		t.Fatal("two key pairs are the same")
	}
	if r := runCLI(t, context.Background(), nil, "mptunnel", "genkey", "--pair"); r.code != 2 || !strings.Contains(r.stderr, "-o FILE") {
		t.Fatalf("genkey --pair without -o: exit %d: %s", r.code, r.stderr)
	}
	if r := runCLI(t, context.Background(), nil, "mptunnel", "genkey", "--pair", "-o", file); r.code != 2 {
		t.Fatalf("genkey --pair over an existing file: exit %d: %s", r.code, r.stderr)
	}
	if r := runCLI(t, context.Background(), nil, "mptunnel", "pubkey"); r.code != 2 {
		t.Fatalf("pubkey of nothing: exit %d: %s", r.code, r.stderr)
	}
}

// TestReloadClients: a server's client list comes from its file and its
// clients directory; a reload that removes a client's file keeps that client
// out from then on and lets the others in, and a bad client file changes
// nothing.
func TestReloadClients(t *testing.T) {
	dir := t.TempDir()
	clientsDir := filepath.Join(dir, "clients.d")
	if err := os.Mkdir(clientsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	srvKey, srvPub := newPair(t, dir, "server.key")
	aliceKey, alicePub := newPair(t, dir, "alice.key")
	bobKey, bobPub := newPair(t, dir, "bob.key")
	bobFile := filepath.Join(clientsDir, "bob.toml")
	if err := os.WriteFile(bobFile, []byte("public_key = \""+bobPub.String()+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srvFile := writeFile(t, "server.toml", "listen = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:9\"\nprivate_key_file = \""+srvKey+"\"\nclients_dir = \""+clientsDir+
		"\"\n[[client]]\nname = \"alice\"\npublic_key = \""+alicePub.String()+"\"\n")
	if r := runCLI(t, context.Background(), nil, "mptunnel", "check", "-c", srvFile); r.code != 0 || !strings.Contains(r.stdout, "with 2 clients") {
		t.Fatalf("check: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	file, err := conffile.LoadServer(srvFile)
	if err != nil {
		t.Fatal(err)
	}
	c := &common{file: srvFile, logLevel: "error", keyOptional: true}
	c.id.applyServerFile(map[string]bool{}, file)
	priv, err := c.id.private()
	if err != nil {
		t.Fatal(err)
	}
	clients, err := c.id.serverClients(file, srvFile)
	if err != nil {
		t.Fatal(err)
	}
	if got := clientNames(clients); got != "alice,bob" {
		t.Fatalf("clients %q, want alice,bob", got)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	srv := serveServer(t, server.Config{Listen: "127.0.0.1:0", Target: "127.0.0.1:9", Private: priv, Clients: clients, Logger: quiet})
	up := func(keyFile string, d time.Duration) bool {
		t.Helper()
		id := identity{privateKeyFile: keyFile, serverPublicKey: srvPub.String()}
		priv, pub, err := id.clientKeys()
		if err != nil {
			t.Fatal(err)
		}
		return sessionWithin(t, ctx, client.Config{Listen: "127.0.0.1:0", Paths: []client.PathConfig{{Remote: srv.Addr().String()}}, Private: priv, ServerPublic: pub, Logger: quiet, HandshakeRetry: 50 * time.Millisecond}, d)
	}
	if !up(aliceKey, 5*time.Second) || !up(bobKey, 5*time.Second) {
		t.Fatal("a listed client gets no session")
	}
	env := Env{Stdout: io.Discard, Stderr: io.Discard, Getenv: func(string) string { return "" }, Context: ctx}
	// A bad client file: the reload is refused whole, bob stays.
	if err := os.WriteFile(filepath.Join(clientsDir, "carol.toml"), []byte("public_key = \"nope\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.reloadServer(srv, &file, map[string]bool{}, env, quiet); err == nil || !strings.Contains(err.Error(), "carol.toml") {
		t.Fatalf("reload with a bad client file: %v", err)
	}
	if r := runCLI(t, context.Background(), nil, "mptunnel", "check", "-c", srvFile); r.code != 2 || !strings.Contains(r.stderr, "carol.toml:1: public_key") {
		t.Fatalf("check with a bad client file: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	if !up(bobKey, 5*time.Second) {
		t.Fatal("a refused reload removed bob")
	}
	os.Remove(filepath.Join(clientsDir, "carol.toml"))
	if err := os.Remove(bobFile); err != nil {
		t.Fatal(err)
	}
	if err := c.reloadServer(srv, &file, map[string]bool{}, env, quiet); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if up(bobKey, 500*time.Millisecond) {
		t.Fatal("bob, removed, still gets a session")
	}
	if !up(aliceKey, 5*time.Second) {
		t.Fatal("alice lost her place in the reload")
	}
}

// serveServer starts a server of cfg that serves until the test ends.
func serveServer(t *testing.T, cfg server.Config) *server.Server {
	t.Helper()
	srv, err := server.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	serving := make(chan error, 1)
	go func() { serving <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-serving; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	return srv
}

// sessionWithin reports whether a client of cfg gets a session within d.
func sessionWithin(t *testing.T, ctx context.Context, cfg client.Config, d time.Duration) bool {
	t.Helper()
	cl, err := client.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cl.Serve(cctx) }()
	defer func() {
		ccancel()
		<-done
	}()
	select {
	case <-cl.Up():
		return true
	case <-time.After(d):
		return false
	}
}
