//go:build unix

package control

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/mptunnel/mptunnel/internal/status"
)

func TestSearchDirs(t *testing.T) {
	home, uid := ownHome(t)
	tmp := t.TempDir()
	env := func(vars map[string]string) func(string) string {
		return func(k string) string { return vars[k] }
	}
	inTmp := filepath.Join(tmp, "mptunnel-"+strconv.Itoa(uid))
	for _, tc := range []struct {
		name string
		vars map[string]string
		uid  int
		want []string
	}{
		{"user", map[string]string{"HOME": home, "TMPDIR": tmp}, uid, []string{filepath.Join(home, ".mptunnel"), inTmp}},
		{"user with xdg", map[string]string{"XDG_RUNTIME_DIR": "/run/user/7", "HOME": home, "TMPDIR": tmp}, uid,
			[]string{"/run/user/7/mptunnel", filepath.Join(home, ".mptunnel"), inTmp}},
		{"user without home", map[string]string{"TMPDIR": tmp}, uid, []string{inTmp}},
		{"relative xdg ignored", map[string]string{"XDG_RUNTIME_DIR": "run", "TMPDIR": tmp}, uid, []string{inTmp}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := SearchDirs(env(tc.vars), tc.uid); !slices.Equal(got, tc.want) {
				t.Errorf("SearchDirs = %q, want %q", got, tc.want)
			}
			// The daemon's default directory is always among them.
			if d := filepath.Dir(DefaultPath("x", env(tc.vars), tc.uid)); !slices.Contains(SearchDirs(env(tc.vars), tc.uid), d) {
				t.Errorf("DefaultPath's directory %s is not searched", d)
			}
		})
	}
	// Root: the xdg directory, /run/mptunnel, then the units' directories
	// (whatever this machine has of them), never the home or temp ones.
	got := SearchDirs(env(map[string]string{"XDG_RUNTIME_DIR": "/run/user/0", "HOME": home, "TMPDIR": tmp}), 0)
	if len(got) < 2 || got[0] != "/run/user/0/mptunnel" || got[1] != rootDir {
		t.Fatalf("root's SearchDirs = %q, want /run/user/0/mptunnel, %s first", got, rootDir)
	}
	for _, d := range got[2:] {
		if ok, _ := filepath.Match(unitDirs, d); !ok {
			t.Errorf("root's SearchDirs has %s, neither /run/mptunnel nor a unit's directory", d)
		}
	}
}

// TestSockets: every socket named *.sock in a directory fit to hold status
// sockets is found, stale ones too; other files, links, and directories
// others could have made are passed over; a user other than root sees only
// sockets of their own.
func TestSockets(t *testing.T) {
	base := t.TempDir()
	good := filepath.Join(base, "good")
	mkdirMode(t, good, 0o700)
	_, a := listen(t)
	defer a.Close()
	live := filepath.Join(good, "b.sock")
	if err := os.Rename(a.Path(), live); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(good, "a.sock")
	makeStaleSocket(t, stale)
	makeStaleSocket(t, filepath.Join(good, "other")) // not *.sock
	if err := os.WriteFile(filepath.Join(good, "file.sock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	symlink(t, live, filepath.Join(good, "link.sock"))
	if err := os.Mkdir(filepath.Join(good, ".mpt123"), 0o700); err != nil {
		t.Fatal(err)
	}

	open := filepath.Join(base, "open") // group and others may write
	mkdirMode(t, open, 0o777)
	makeStaleSocket(t, filepath.Join(open, "x.sock"))
	linked := filepath.Join(base, "linked") // a link to good
	symlink(t, good, linked)
	missing := filepath.Join(base, "missing")

	uid := os.Getuid()
	got := Sockets([]string{missing, open, linked, good}, uid)
	if want := []string{stale, live}; !slices.Equal(got, want) {
		t.Errorf("Sockets = %q, want %q", got, want)
	}
	// Another user finds none of this user's sockets.
	other := otherUID
	if uid == other {
		other = fakeUID
	}
	if got := Sockets([]string{good}, other); len(got) != 0 {
		t.Errorf("Sockets for uid %d = %q, want none (they are uid %d's)", other, got, uid)
	}
	if uid == 0 {
		// Root sees the sockets of other users' daemons, in their
		// directories (as the dist units' dynamic users make them).
		if err := os.Chown(live, fakeUID, fakeUID); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(good, fakeUID, fakeUID); err != nil {
			t.Fatal(err)
		}
		if got := Sockets([]string{good}, 0); !slices.Equal(got, []string{stale, live}) {
			t.Errorf("root's Sockets in uid %d's directory = %q, want %q", fakeUID, got, []string{stale, live})
		}
	}
}

// TestFetchAll: each socket's status or error, in order; a stale socket's
// error is ErrNotRunning.
func TestFetchAll(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	makeStaleSocket(t, stale)
	var paths []string
	for _, role := range []string{"client", "server"} {
		p := filepath.Join(dir, role+".sock")
		s, err := Listen(p)
		if err != nil {
			t.Fatal(err)
		}
		runServer(t, s, func() status.Status { return status.Status{Role: role, Name: role + "-x"} })
		paths = append(paths, p)
	}
	res := FetchAll(context.Background(), []string{paths[0], stale, paths[1]})
	if len(res) != 3 {
		t.Fatalf("%d results, want 3", len(res))
	}
	if r := res[0]; r.Err != nil || r.Path != paths[0] || r.Status.Role != "client" || r.Status.Name != "client-x" {
		t.Errorf("first result %+v", r)
	}
	if r := res[1]; !errors.Is(r.Err, ErrNotRunning) || r.Path != stale {
		t.Errorf("stale socket's result %+v, want ErrNotRunning", r)
	}
	if r := res[2]; r.Err != nil || r.Status.Role != "server" {
		t.Errorf("third result %+v", r)
	}
	if len(FetchAll(context.Background(), nil)) != 0 {
		t.Error("FetchAll of nothing returned something")
	}
}
