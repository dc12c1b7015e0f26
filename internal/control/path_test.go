package control

import (
	"os"
	"path/filepath"
	"testing"
	"time"
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
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := DefaultPath(tc.role, env(tc.vars), tc.uid); got != tc.want {
				t.Errorf("DefaultPath(%q, %v, %d) = %q, want %q", tc.role, tc.vars, tc.uid, got, tc.want)
			}
		})
	}
}

func TestFormatTime(t *testing.T) {
	if got := FormatTime(time.Time{}); got != "" {
		t.Errorf("FormatTime(zero) = %q, want empty", got)
	}
	tm := time.Date(2024, 5, 1, 14, 0, 0, 123456789, time.FixedZone("CEST", 2*3600))
	if got, want := FormatTime(tm), "2024-05-01T12:00:00.123Z"; got != want {
		t.Errorf("FormatTime = %q, want %q", got, want)
	}
	if got, want := FormatTime(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)), "2024-05-01T12:00:00.000Z"; got != want {
		t.Errorf("FormatTime = %q, want %q", got, want)
	}
	if got := SessionID(0xdeadbeef); got != "deadbeef" {
		t.Errorf("SessionID = %q", got)
	}
	if got := SessionID(1); got != "00000001" {
		t.Errorf("SessionID = %q", got)
	}
}
