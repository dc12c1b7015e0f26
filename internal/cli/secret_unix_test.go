//go:build unix

package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/conffile"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/server"
)

// runBriefly runs mptunnel with args for 200 ms, or until it exits.
func runBriefly(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	return runCLI(t, ctx, nil, "mptunnel", args...)
}

// keyFileWithMode writes a new key to a file and gives it mode perm.
func keyFileWithMode(t *testing.T, perm os.FileMode) string {
	t.Helper()
	k, err := handshake.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	f := writeFile(t, "mptunnel.key", k.String()+"\n")
	if err := os.Chmod(f, perm); err != nil {
		t.Fatal(err)
	}
	return f
}

// wantRefused checks that r is the refusal of path at mode perm: exit 2 and
// a message naming the mode and the chmod that fixes it.
func wantRefused(t *testing.T, r result, what, path string, perm os.FileMode) {
	t.Helper()
	want := fmt.Sprintf("%s %s is readable by others (mode %04o): run 'chmod 600 %s'", what, path, uint32(perm), path)
	if r.code != ExitUsage || !strings.Contains(r.stderr, want) {
		t.Fatalf("exit %d, stderr %q; want exit 2 and %q", r.code, r.stderr, want)
	}
}

// TestKeyFileMode: a key file the group or others may read is refused, by
// both ends, from --key-file and from key_file in a TOML file; an
// owner-only one is accepted.
//
// Security review finding 8 (ef6581c): fails before the fix: the key file's mode was not checked.
func TestKeyFileMode(t *testing.T) {
	conf := writeFile(t, "c.conf", "127.0.0.1 9\n")
	srvArgs := func(kf string) []string {
		return []string{"server", "--key-file", kf, "--log-level", "error", "--control", "none", "-c", writeFile(t, "s.toml", "listen = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:9\"\n")}
	}
	cliArgs := func(kf string) []string {
		return []string{"client", "--key-file", kf, "--log-level", "error", "--control", "none", "--listen", "127.0.0.1:0", conf}
	}
	fromTOML := func(kf string) []string {
		return []string{"server", "--control", "none", "-c", writeFile(t, "s.toml", "listen = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:9\"\nkey_file = \""+kf+"\"\n[log]\nlevel = \"error\"\n")}
	}
	for _, perm := range []os.FileMode{0o644, 0o640, 0o604, 0o660, 0o444, 0o440, 0o707} {
		for name, args := range map[string]func(string) []string{"server": srvArgs, "client": cliArgs, "key_file": fromTOML} {
			t.Run(fmt.Sprintf("%s/%04o", name, uint32(perm)), func(t *testing.T) {
				kf := keyFileWithMode(t, perm)
				wantRefused(t, runBriefly(t, args(kf)...), "key file", kf, perm)
			})
		}
	}
	// Permissions other than read are refused too, with the same advice.
	kf := keyFileWithMode(t, 0o620)
	if r := runBriefly(t, cliArgs(kf)...); r.code != ExitUsage || !strings.Contains(r.stderr, "is writable by others (mode 0620): run 'chmod 600 "+kf+"'") {
		t.Fatalf("mode 0620: exit %d: %s", r.code, r.stderr)
	}
	for _, perm := range []os.FileMode{0o600, 0o400} {
		for name, args := range map[string]func(string) []string{"server": srvArgs, "client": cliArgs, "key_file": fromTOML} {
			t.Run(fmt.Sprintf("%s/%04o", name, uint32(perm)), func(t *testing.T) {
				if r := runBriefly(t, args(keyFileWithMode(t, perm))...); r.code != ExitOK {
					t.Fatalf("exit %d: %s", r.code, r.stderr)
				}
			})
		}
	}
	// MPTUNNEL_KEY is not a file: accepted as before.
	k, _ := handshake.GenerateKey()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if r := runCLI(t, ctx, map[string]string{"MPTUNNEL_KEY": k.String()}, "mptunnel", "client", "--log-level", "error", "--control", "none", "--listen", "127.0.0.1:0", conf); r.code != ExitOK {
		t.Fatalf("MPTUNNEL_KEY: exit %d: %s", r.code, r.stderr)
	}
}

// TestSocksAuthFileMode: the SOCKS5 password file is held to the same rule
// as the key file, from --socks-auth-file and from [socks] auth_file.
//
// Security review finding 8 (ef6581c): fails before the fix: the key file's mode was not checked.
func TestSocksAuthFileMode(t *testing.T) {
	kf := keyFileWithMode(t, 0o600)
	conf := writeFile(t, "c.conf", "127.0.0.1 9\n")
	flags := func(auth string) []string {
		return []string{"client", "--key-file", kf, "--log-level", "error", "--control", "none", "--listen", "127.0.0.1:0", "--socks", "127.0.0.1:0", "--socks-auth-file", auth, conf}
	}
	file := func(auth string) []string {
		return []string{"client", "--control", "none", "-c", writeFile(t, "c.toml", "listen = \"127.0.0.1:0\"\nkey_file = \""+kf+"\"\n[socks]\nlisten = \"127.0.0.1:0\"\nauth_file = \""+auth+"\"\n[log]\nlevel = \"error\"\n[[path]]\nremote = \"127.0.0.1:9\"\n")}
	}
	for name, args := range map[string]func(string) []string{"flag": flags, "auth_file": file} {
		for _, perm := range []os.FileMode{0o644, 0o640, 0o600} {
			t.Run(fmt.Sprintf("%s/%04o", name, uint32(perm)), func(t *testing.T) {
				auth := writeFile(t, "socks.auth", "alice:s3cret\n")
				if err := os.Chmod(auth, perm); err != nil {
					t.Fatal(err)
				}
				r := runBriefly(t, args(auth)...)
				if perm == 0o600 {
					if r.code != ExitOK {
						t.Fatalf("exit %d: %s", r.code, r.stderr)
					}
					return
				}
				wantRefused(t, r, "socks auth file", auth, perm)
			})
		}
	}
}

// TestGenkeyOut: genkey -o writes a new key to a file of mode 0600 whatever
// the umask, which the daemons then accept; it never overwrites a file.
//
// Security review finding 8 (ef6581c): fails before the fix: the key file's mode was not checked.
func TestGenkeyOut(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	for _, flag := range []string{"-o", "--out"} {
		kf := filepath.Join(dir, "key"+flag)
		r := runCLI(t, context.Background(), nil, "mptunnel", "genkey", flag, kf)
		if r.code != ExitOK || r.stdout != "" {
			t.Fatalf("genkey %s: exit %d, stdout %q, stderr %q", flag, r.code, r.stdout, r.stderr)
		}
		fi, err := os.Stat(kf)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != 0o600 {
			t.Fatalf("genkey %s made a file of mode %v, want -rw-------", flag, fi.Mode())
		}
		text, err := os.ReadFile(kf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := handshake.ParseKey(string(text)); err != nil || !strings.HasSuffix(string(text), "=\n") {
			t.Fatalf("genkey %s wrote %q: %v", flag, text, err)
		}
		if r := runBriefly(t, "client", "--key-file", kf, "--log-level", "error", "--control", "none", "--listen", "127.0.0.1:0", writeFile(t, "c.conf", "127.0.0.1 9\n")); r.code != ExitOK {
			t.Fatalf("client with the key genkey %s made: exit %d: %s", flag, r.code, r.stderr)
		}
		// A second run refuses to overwrite the file, and leaves it alone.
		r = runCLI(t, context.Background(), nil, "mptunnel", "genkey", flag, kf)
		if r.code != ExitUsage || !strings.Contains(r.stderr, kf+" already exists; not overwriting it") {
			t.Fatalf("genkey %s over an existing file: exit %d: %s", flag, r.code, r.stderr)
		}
		if again, _ := os.ReadFile(kf); string(again) != string(text) {
			t.Fatalf("the existing key file changed: %q, was %q", again, text)
		}
	}
	// Nor does it follow a dangling symbolic link to create the file elsewhere.
	link := filepath.Join(dir, "link")
	if err := os.Symlink(filepath.Join(dir, "elsewhere"), link); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, context.Background(), nil, "mptunnel", "genkey", "-o", link); r.code != ExitUsage {
		t.Fatalf("genkey -o a dangling link: exit %d: %s", r.code, r.stderr)
	}
	if _, err := os.Lstat(filepath.Join(dir, "elsewhere")); err == nil {
		t.Fatal("genkey -o followed a dangling link")
	}
	if r := runCLI(t, context.Background(), nil, "mptunnel", "genkey", "-o", filepath.Join(dir, "no", "such", "dir")); r.code != ExitRuntime || !strings.Contains(r.stderr, "no such file or directory") {
		t.Fatalf("genkey -o into a missing directory: exit %d: %s", r.code, r.stderr)
	}
	if r := runCLI(t, context.Background(), nil, "mptunnel", "genkey", "extra"); r.code != ExitUsage || !strings.Contains(r.stderr, "genkey takes no arguments") {
		t.Fatalf("genkey extra: exit %d: %s", r.code, r.stderr)
	}
	for _, h := range []string{"-h", "--help"} {
		if r := runCLI(t, context.Background(), nil, "mptunnel", "genkey", h); r.code != ExitOK || !strings.Contains(r.stdout, "usage: mptunnel genkey [-o FILE]") || !strings.Contains(r.stdout, "mode 0600") {
			t.Fatalf("genkey %s: exit %d: %q %q", h, r.code, r.stdout, r.stderr)
		}
	}
}

// TestReloadLooseKeyFile: a SIGHUP reload that finds the server's key file
// open to others is refused: the server keeps the keys it has (a client with
// the old key still gets a session, one with the new key does not) until the
// file is owner-only again.
//
// Security review finding 8 (ef6581c): fails before the fix: the key file's mode was not checked.
func TestReloadLooseKeyFile(t *testing.T) {
	oldKey, _ := handshake.GenerateKey()
	newKey, _ := handshake.GenerateKey()
	kf := writeFile(t, "mptunnel.key", oldKey.String()+"\n")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	srv := serveServer(t, server.Config{Listen: "127.0.0.1:0", Target: "127.0.0.1:9", Key: oldKey, Logger: quiet})
	// up reports whether a client with key k gets a session within d.
	up := func(k handshake.Key, d time.Duration) bool {
		t.Helper()
		return sessionWithin(t, ctx, client.Config{Listen: "127.0.0.1:0", Paths: []client.PathConfig{{Remote: srv.Addr().String()}}, Key: k, Logger: quiet, HandshakeRetry: 50 * time.Millisecond}, d)
	}
	c := &common{keyFile: kf, logLevel: "error"}
	var file conffile.Server
	var logged strings.Builder
	log := slog.New(slog.NewTextHandler(&logged, nil))
	env := Env{Stdout: io.Discard, Stderr: io.Discard, Getenv: func(string) string { return "" }, Context: ctx}

	if err := os.WriteFile(kf, []byte(newKey.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(kf, 0o644); err != nil {
		t.Fatal(err)
	}
	err := c.reloadServer(srv, &file, map[string]bool{}, env, log)
	if err == nil || !strings.Contains(err.Error(), "(mode 0644): run 'chmod 600 "+kf+"'") {
		t.Fatalf("reload of a key file of mode 0644: %v", err)
	}
	if !up(oldKey, 5*time.Second) {
		t.Fatal("after the refused reload, a client with the old key gets no session")
	}
	if up(newKey, 500*time.Millisecond) {
		t.Fatal("the refused reload's key was taken")
	}
	if err := os.Chmod(kf, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.reloadServer(srv, &file, map[string]bool{}, env, log); err != nil {
		t.Fatalf("reload of an owner-only key file: %v", err)
	}
	if !up(newKey, 5*time.Second) {
		t.Fatal("after the reload, a client with the new key gets no session")
	}
	if !strings.Contains(logged.String(), "configuration reloaded") {
		t.Fatalf("no reload logged: %s", logged.String())
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"mptunnel.key":            "mptunnel.key",
		"/etc/mptunnel/a-b_c.key": "/etc/mptunnel/a-b_c.key",
		"/tmp/my key":             `"/tmp/my key"`,
		"it's":                    `"it's"`,
		"$HOME/`x`\"\\":           "\"\\$HOME/\\`x\\`\\\"\\\\\"",
		"":                        `""`,
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
	err := looseError("key file", "/tmp/my key", 0o640)
	if want := `key file /tmp/my key is readable by others (mode 0640): run 'chmod 600 "/tmp/my key"'`; err.Error() != want {
		t.Fatalf("%s\nwant %s", err, want)
	}
}
