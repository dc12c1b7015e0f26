package control

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDefaultPath(t *testing.T) {
	env := func(vars map[string]string) func(string) string {
		return func(k string) string { return vars[k] }
	}
	for _, tc := range []struct {
		name string
		role string
		vars map[string]string
		uid  int
		want string
	}{
		{"xdg", "client", map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"}, 1000, "/run/user/1000/mptunnel/client.sock"},
		{"xdg wins over root", "server", map[string]string{"XDG_RUNTIME_DIR": "/run/user/0"}, 0, "/run/user/0/mptunnel/server.sock"},
		{"root", "server", nil, 0, "/run/mptunnel/server.sock"},
		{"relative xdg ignored", "client", map[string]string{"XDG_RUNTIME_DIR": "run"}, 0, "/run/mptunnel/client.sock"},
		{"user", "client", map[string]string{"TMPDIR": "/var/tmp"}, 1000, "/var/tmp/mptunnel-1000/client.sock"},
		{"user no TMPDIR", "server", nil, 1001, filepath.Join(os.TempDir(), "mptunnel-1001", "server.sock")},
		{"named", "client-127.0.0.1-3000", map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"}, 1000, "/run/user/1000/mptunnel/client-127.0.0.1-3000.sock"},
		{"named root", "vpn1", nil, 0, "/run/mptunnel/vpn1.sock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := DefaultPath(tc.role, env(tc.vars), tc.uid); got != tc.want {
				t.Errorf("DefaultPath(%q, %v, %d) = %q, want %q", tc.role, tc.vars, tc.uid, got, tc.want)
			}
		})
	}
}
