package conffile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, text string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "mptunnel.toml")
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestExamples(t *testing.T) {
	c, err := LoadClient("../../examples/client.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:3000" || c.Mode != "redundant" || len(c.Paths) != 3 || c.Paths[2].Dev != "wwan0" ||
		c.Paths[2].Priority != 1 || c.FEC.Flush.D() != 5*time.Millisecond || c.Log.Format != "text" {
		t.Fatalf("client example read as %+v", c)
	}
	s, err := LoadServer("../../examples/server.toml")
	if err != nil {
		t.Fatal(err)
	}
	if s.Listen != ":2000" || s.Target != "127.0.0.1:1194" || s.KeyFile == "" {
		t.Fatalf("server example read as %+v", s)
	}
}

// TestBadFiles: every kind of mistake is an error naming the file, the line
// and the key.
func TestBadFiles(t *testing.T) {
	cases := []struct {
		name, text, want string
		server           bool
	}{
		{"unknown key", "listen = \"a:1\"\nlisten_addr = 2\n", ":2: listen_addr: unknown key", false},
		{"unknown key in a table", "[log]\nlevel = \"info\"\ncolour = true\n", ":3: log.colour: unknown key", false},
		{"unknown key in a path", "[[path]]\nremote = \"a:1\"\nport = 2\n", ":3: path.port: unknown key", false},
		{"wrong type", "mtu = \"big\"\n", ":1: mtu: cannot decode", false},
		{"bad duration", "flow_timeout = \"5 minutes\"\n", ":1: flow_timeout: ", false},
		{"negative duration", "reorder = \"-1s\"\n", ":1: reorder: ", false},
		{"bad mode", "mode = \"fastest\"\n", ":1: mode: unknown mode", false},
		{"bad cipher", "\ncipher = \"xor\"\n", ":2: cipher: unknown cipher", false},
		{"bad fec shape", "[fec]\nshape = \"8\"\n", ":2: fec.shape: ", false},
		{"bad log level", "[log]\nlevel = \"loud\"\n", ":2: log.level: ", false},
		{"bad log format", "[log]\n\nformat = \"xml\"\n", ":3: log.format: ", false},
		{"path without remote", "[[path]]\ndev = \"eth0\"\n", ":1: path.0: a [[path]] needs remote", false},
		{"path without port", "[[path]]\nremote = \"a:1\"\n[[path]]\nremote = \"host\"\n", ":4: path.1.remote: ", false},
		{"bad from", "[[path]]\nremote = \"a:1\"\nfrom = \"eth0\"\n", ":3: path.0.from: ", false},
		{"mtu too small", "mtu = 100\n", ":1: mtu: 100", false},
		{"target loss", "target_loss = 2.0\n", ":1: target_loss: ", false},
		{"syntax", "listen = \n", ":1: ", false},
		{"server target", "target = \"nowhere\"\n", ":1: target: ", true},
		{"server client key", "mode = \"fec\"\n", ":1: mode: unknown key", true},
		{"server bad metrics", "\n\nmetrics = \"localhost\"\n", ":3: metrics: ", true},
		{"forward without target", "[[forward]]\nlisten = \"127.0.0.1:5353\"\n", ":1: forward.0: a [[forward]] needs target", false},
		{"forward bad listen", "[[forward]]\nlisten = \"here\"\ntarget = \"10.0.0.53:53\"\n", ":2: forward.0.listen: ", false},
		{"forward bad protocol", "[[forward]]\nlisten = \"127.0.0.1:80\"\ntarget = \"10.0.0.53:80\"\nprotocol = \"sctp\"\n", ":4: forward.0.protocol: ", false},
		{"bad socks", "[socks]\nlisten = \"1080\"\n", ":2: socks.listen: ", false},
		{"bad name", "\nname = \"vpn/1\"\n", ":2: name: ", false},
		{"server name starting with a dot", "name = \".hidden\"\n", ":1: name: ", true},
		{"bad allow rule", "allow = [\"10.0.0.0/8:53\", \"10.0.0.0/8\"]\n", ":1: allow: rule 2: ", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := write(t, tc.text)
			var err error
			if tc.server {
				_, err = LoadServer(f)
			} else {
				_, err = LoadClient(f)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("%q: got %v, want a file error", tc.text, err)
			}
			if !strings.HasPrefix(err.Error(), f) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%q: error %q, want it to name %s and contain %q", tc.text, err, f, tc.want)
			}
		})
	}
	if _, err := LoadClient(filepath.Join(t.TempDir(), "missing.toml")); err == nil || !strings.Contains(err.Error(), "missing.toml") {
		t.Fatalf("missing file: %v", err)
	}
	big := write(t, "# "+strings.Repeat("x", MaxSize)+"\n")
	if _, err := LoadClient(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("huge file: %v", err)
	}
}

// addSeeds adds the example file named example and the texts more to f's
// seed corpus.
func addSeeds(f *testing.F, example string, more ...string) {
	f.Helper()
	b, err := os.ReadFile(filepath.Join("../../examples", example))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(b))
	for _, text := range more {
		f.Add(text)
	}
}

func FuzzLoadClient(f *testing.F) {
	addSeeds(f, "client.toml", "[[path]]\nremote = \"[::1]:4000\"\n")
	f.Fuzz(func(t *testing.T, text string) {
		const file = "c.toml"
		c, err := ParseClient(file, []byte(text))
		if err != nil {
			if !strings.HasPrefix(err.Error(), file) {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		for _, p := range c.Paths {
			if p.Remote == "" {
				t.Fatal("a path without remote was accepted")
			}
		}
	})
}

func TestChanged(t *testing.T) {
	a := Client{Listen: "x", Mode: "fec", Paths: []Path{{Remote: "a:1"}}}
	b := a
	b.Paths = []Path{{Remote: "b:1"}}
	b.Log.Level = "debug"
	b.FEC.Shape = "10/4"
	b.MTU = 1300
	got := Changed(a, b)
	want := []string{"mtu", "log.level", "fec.shape", "path"}
	if len(got) != len(want) {
		t.Fatalf("changed %v, want %v", got, want)
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			t.Fatalf("changed %v, want %v", got, want)
		}
	}
	if c := Changed(a, a); len(c) != 0 {
		t.Fatalf("a file compared with itself changed %v", c)
	}
}

func FuzzLoadServer(f *testing.F) {
	addSeeds(f, "server.toml", "target = \"[::1]:1\"\nlisten = \":0\"\n")
	f.Fuzz(func(t *testing.T, text string) {
		const file = "s.toml"
		if _, err := ParseServer(file, []byte(text)); err != nil && !strings.HasPrefix(err.Error(), file) {
			t.Fatalf("error %q does not name the file", err)
		}
	})
}

func TestClientLists(t *testing.T) {
	const pubA = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
	const pubB = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="
	head := "target = \"a:1\"\nprivate_key_file = \"k\"\n"
	for _, tc := range []struct{ name, text, want string }{
		{"no name", head + "[[client]]\npublic_key = \"" + pubA + "\"\n", ":3: client.0: a client needs name"},
		{"bad key", head + "[[client]]\nname = \"a\"\npublic_key = \"nope\"\n", ":5: client.0.public_key: "},
		{"twice", head + "[[client]]\nname = \"a\"\npublic_key = \"" + pubA + "\"\n[[client]]\nname = \"a\"\npublic_key = \"" + pubB + "\"\n", ":7: client.1.name: client \"a\" is listed twice"},
		{"same key", head + "[[client]]\nname = \"a\"\npublic_key = \"" + pubA + "\"\n[[client]]\nname = \"b\"\npublic_key = \"" + pubA + "\"\n", ":8: client.1.public_key: clients \"a\" and \"b\""},
		{"bad rule", head + "[[client]]\nname = \"a\"\npublic_key = \"" + pubA + "\"\nallow = [\"x\"]\n", ":6: client.0.allow: rule 1"},
		{"no private key", "target = \"a:1\"\n[[client]]\nname = \"a\"\npublic_key = \"" + pubA + "\"\n", "client: a client list needs the server's private_key_file"},
		{"unknown key", head + "[[client]]\nname = \"a\"\npublic_key = \"" + pubA + "\"\nsessions = 2\n", ":6: client.sessions: unknown key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := LoadServer(write(t, tc.text)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	s, err := LoadServer(write(t, head+"[[client]]\nname = \"a\"\npublic_key = \""+pubA+"\"\nmax_sessions = 2\nrekey_min = \"1m\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	// A directory: the name from the file's, a file that says its own,
	// other files left alone; a name or key twice across both is refused.
	dir := t.TempDir()
	for name, text := range map[string]string{"b.toml": "public_key = \"" + pubB + "\"\n", "notes.txt": "not a client\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s.ClientsDir = dir
	all, err := s.AllClients("s.toml")
	if err != nil || len(all) != 2 || all[0].Name != "a" || all[0].MaxSessions != 2 || all[0].RekeyMin.D() != time.Minute || all[1].Name != "b" {
		t.Fatalf("clients %+v, %v", all, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "c.toml"), []byte("name = \"a\"\npublic_key = \""+pubB+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AllClients("s.toml"); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Fatalf("a name twice across the file and the directory: %v", err)
	}
	s.ClientsDir = filepath.Join(dir, "missing")
	if _, err := s.AllClients("s.toml"); err == nil || !strings.Contains(err.Error(), "clients_dir") {
		t.Fatalf("a missing directory: %v", err)
	}
	if _, err := ParseClient("c.toml", []byte("private_key_file = \"k\"\n")); err == nil || !strings.Contains(err.Error(), "go together") {
		t.Fatalf("a client private key without the server's public key: %v", err)
	}
}
