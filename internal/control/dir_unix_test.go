//go:build unix

package control

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/mptunnel/mptunnel/internal/status"
)

// otherUID stands for another local user: nobody on most systems.
const otherUID = 65534

// fakeUID is the user DefaultPath is asked about when the tests run as root,
// for whom DefaultPath never looks at the home directory.
const fakeUID = 4242

// ownHome makes a home directory under t.TempDir() and returns it with the
// non-root uid that owns it: this user's when not root; as root, fakeUID,
// to which it is given.
func ownHome(t *testing.T) (home string, uid int) {
	t.Helper()
	home = filepath.Join(t.TempDir(), "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	uid = os.Getuid()
	if uid == 0 {
		uid = fakeUID
		if err := os.Chown(home, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	return home, uid
}

// mkdirMode makes dir with exactly mode perm, whatever the umask.
func mkdirMode(t *testing.T, dir string, perm fs.FileMode) {
	t.Helper()
	if err := os.Mkdir(dir, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, perm); err != nil {
		t.Fatal(err)
	}
}

// symlink makes link a symbolic link to target.
func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// wantRefused checks that Listen at a socket in dir fails with an error
// naming dir and containing why, and that no socket was left anywhere in
// check (the directory the socket would really have gone into).
func wantRefused(t *testing.T, dir, why, check string) {
	t.Helper()
	s, err := Listen(filepath.Join(dir, "client.sock"))
	if err == nil {
		s.Close()
		t.Fatalf("Listen in %s succeeded, want it refused (%s)", dir, why)
	}
	if !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), why) {
		t.Errorf("Listen in %s: error %q, want one naming the directory and saying %q", dir, err, why)
	}
	if check == "" {
		return
	}
	entries, err := os.ReadDir(check)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("%s holds %v after the refusal, want nothing", check, entries)
	}
}

// Security review finding 9 (ef6581c): fails before the fix: prepareDir used
// os.Stat, so it followed a symbolic link at the directory path, saw the
// (owner-only, our own) directory it points to and served the socket there.
// Whoever places such a link decides where the socket goes.
func TestPrepareDirRefusesSymlink(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	mkdirMode(t, real, 0o700)
	link := filepath.Join(base, "link")
	symlink(t, real, link)
	wantRefused(t, link, "symbolic link", real)

	// A link to nowhere was refused before the fix too (MkdirAll failed
	// on it); this guards that it is never followed to create its target.
	t.Run("dangling", func(t *testing.T) {
		missing := filepath.Join(base, "missing")
		dangling := filepath.Join(base, "dangling")
		symlink(t, missing, dangling)
		wantRefused(t, dangling, "symbolic link", "")
		if _, err := os.Lstat(missing); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the link's target %s was created: %v", missing, err)
		}
	})
}

// TestPrepareDirRefusesOtherOwner: a directory, or a symbolic link, that
// another user owns is refused.
func TestPrepareDirRefusesOtherOwner(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to give a directory to another uid; the symlink and mode tests cover the rest as any user")
	}
	t.Run("directory", func(t *testing.T) {
		// The ownership check existed before the fix; this guards it.
		dir := filepath.Join(t.TempDir(), "theirs")
		mkdirMode(t, dir, 0o700)
		if err := os.Chown(dir, otherUID, otherUID); err != nil {
			t.Fatal(err)
		}
		wantRefused(t, dir, "belongs to uid "+strconv.Itoa(otherUID), dir)
	})
	// Security review finding 9 (ef6581c): fails before the fix: os.Stat
	// followed another user's link to a directory of root's, which passed
	// the ownership check, and the socket went where the link pointed.
	t.Run("their link to our directory", func(t *testing.T) {
		base := t.TempDir()
		ours := filepath.Join(base, "ours")
		mkdirMode(t, ours, 0o700)
		link := filepath.Join(base, "link")
		symlink(t, ours, link)
		if err := os.Lchown(link, otherUID, otherUID); err != nil {
			t.Fatal(err)
		}
		wantRefused(t, link, "symbolic link", ours)
	})
}

// Security review finding 9 (ef6581c): fails before the fix: the mode of an
// existing directory was never looked at, so a directory that group or
// others may write to (where they can replace the socket or plant their own)
// was accepted.
func TestPrepareDirRefusesWritableDir(t *testing.T) {
	for _, perm := range []fs.FileMode{0o770, 0o720, 0o707, 0o702, 0o777, 0o777 | fs.ModeSticky} {
		t.Run(perm.String(), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "shared")
			mkdirMode(t, dir, perm)
			wantRefused(t, dir, "written by group or others", dir)
		})
	}
	// Read and search bits for group or others let no one change the
	// directory (a systemd RuntimeDirectory is 0750 or 0755): accepted.
	for _, perm := range []fs.FileMode{0o700, 0o750, 0o755} {
		t.Run(perm.String(), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ok")
			mkdirMode(t, dir, perm)
			s, err := Listen(filepath.Join(dir, "client.sock"))
			if err != nil {
				t.Fatalf("Listen in a directory of mode %#o: %v", perm.Perm(), err)
			}
			if err := s.Close(); err != nil {
				t.Error(err)
			}
		})
	}
}

// Security review finding 9 (ef6581c): fails before the fix: the directory
// was made with the umask applied (here 0500, which only root can use) and
// neither checked nor corrected once made; now it is 0700 whatever the umask.
func TestPrepareDirCreatesOwnerOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mptunnel")
	old := syscall.Umask(0o277)
	err := prepareDir(dir)
	syscall.Umask(old)
	if err != nil {
		t.Fatalf("prepareDir: %v", err)
	}
	fi := lstat(t, dir)
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("created %s as %v, want a directory of mode 0700", dir, fi.Mode())
	}
	if owner, _ := ownerOf(fi); owner != os.Getuid() {
		t.Errorf("created %s owned by uid %d, want %d", dir, owner, os.Getuid())
	}
	// prepareDir accepts what it made.
	if err := prepareDir(dir); err != nil {
		t.Errorf("prepareDir on the directory it made: %v", err)
	}
}

// TestCheckCreated: what is found right after making the directory must be
// that directory; a link or a file put there meanwhile is refused.
func TestCheckCreated(t *testing.T) {
	base := t.TempDir()
	link := filepath.Join(base, "link")
	symlink(t, base, link)
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{link, file} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkCreated(p, fi); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("checkCreated(%s) = %v, want an error naming it", p, err)
		}
	}
	if err := checkCreated(base, lstat(t, base)); err != nil {
		t.Errorf("checkCreated on a directory of ours: %v", err)
	}
	if os.Getuid() == 0 {
		theirs := filepath.Join(base, "theirs")
		mkdirMode(t, theirs, 0o700)
		if err := os.Chown(theirs, otherUID, otherUID); err != nil {
			t.Fatal(err)
		}
		if err := checkCreated(theirs, lstat(t, theirs)); err == nil {
			t.Error("checkCreated accepted a directory of another uid")
		}
	}
}

// Security review finding 9 (ef6581c): fails before the fix: without
// XDG_RUNTIME_DIR a user's default was always TMPDIR/mptunnel-UID, a name any
// local user can take first; the daemon then refused to start (another
// user's directory) or, given a link, served wherever it pointed. Now the
// default is in the user's home, where no one else can create it, and
// `mptunnel status` finds it there with the same DefaultPath.
func TestDefaultPathSurvivesPrecreatedTempDir(t *testing.T) {
	home, uid := ownHome(t)
	base := t.TempDir()
	tmp := filepath.Join(base, "tmp")
	mkdirMode(t, tmp, 0o777|fs.ModeSticky)
	taken := filepath.Join(tmp, "mptunnel-"+strconv.Itoa(uid))
	elsewhere := filepath.Join(base, "elsewhere")
	mkdirMode(t, elsewhere, 0o700)
	if os.Getuid() == 0 {
		// Another user's directory at the name.
		mkdirMode(t, taken, 0o700)
		if err := os.Chown(taken, otherUID, otherUID); err != nil {
			t.Fatal(err)
		}
	} else {
		// Without root no directory can be given away; another user's
		// link at the name stands in for it.
		symlink(t, elsewhere, taken)
	}
	env := func(vars map[string]string) func(string) string {
		return func(k string) string { return vars[k] }
	}
	withHome := env(map[string]string{"HOME": home, "TMPDIR": tmp})

	path := DefaultPath("client", withHome, uid)
	if want := filepath.Join(home, ".mptunnel", "client.sock"); path != want {
		t.Fatalf("DefaultPath = %q, want %q (in the home directory, away from the taken %s)", path, want, taken)
	}
	s, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen at the default path %s: %v", path, err)
	}
	stop := runServer(t, s, func() status.Status { return status.Status{Role: "client", Version: "home"} })
	// mptunnel status computes the same default and finds the daemon.
	st, err := Fetch(context.Background(), DefaultPath("client", withHome, uid))
	if err != nil || st.Version != "home" {
		t.Errorf("Fetch at the default path: %+v, %v", st, err)
	}
	if err := stop(); err != nil {
		t.Errorf("Serve: %v", err)
	}
	if entries, err := os.ReadDir(elsewhere); err != nil || len(entries) != 0 {
		t.Errorf("%s holds %v (%v), want nothing", elsewhere, entries, err)
	}

	// Without a usable home the temporary directory is the last resort, and
	// a taken name there is refused with a message naming it.
	noHome := env(map[string]string{"TMPDIR": tmp})
	path = DefaultPath("client", noHome, uid)
	if want := filepath.Join(taken, "client.sock"); path != want {
		t.Fatalf("DefaultPath without HOME = %q, want %q", path, want)
	}
	if s, err := Listen(path); err == nil {
		s.Close()
		t.Errorf("Listen in the taken %s succeeded", taken)
	} else if !strings.Contains(err.Error(), taken) || !strings.Contains(err.Error(), "--control") {
		t.Errorf("Listen in the taken %s: %v, want an error naming it and --control", taken, err)
	}
}

// TestDefaultPathHome covers which home directories DefaultPath uses.
func TestDefaultPathHome(t *testing.T) {
	home, uid := ownHome(t)
	tmp := "/var/tmp"
	inTmp := filepath.Join(tmp, "mptunnel-"+strconv.Itoa(uid), "server.sock")
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// A home long enough that the socket path would not fit in a socket
	// address.
	long := home
	for len(filepath.Join(long, ".mptunnel", "server.sock")) <= maxSocketPath() {
		long = filepath.Join(long, strings.Repeat("l", 40))
	}
	if err := os.MkdirAll(long, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		if err := os.Chown(long, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		home string
		want string
	}{
		{"own home", home, filepath.Join(home, ".mptunnel", "server.sock")},
		{"unset", "", inTmp},
		{"relative", "home", inTmp},
		{"missing", filepath.Join(home, "missing"), inTmp},
		{"not a directory", file, inTmp},
		{"another user's", "/", inTmp},
		{"too long for a socket", long, inTmp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vars := map[string]string{"HOME": tc.home, "TMPDIR": tmp}
			got := DefaultPath("server", func(k string) string { return vars[k] }, uid)
			if got != tc.want {
				t.Errorf("DefaultPath with HOME=%q = %q, want %q", tc.home, got, tc.want)
			}
		})
	}
	// XDG_RUNTIME_DIR and root come first, as before.
	vars := map[string]string{"HOME": home, "XDG_RUNTIME_DIR": "/run/user/1000"}
	if got, want := DefaultPath("client", func(k string) string { return vars[k] }, uid), "/run/user/1000/mptunnel/client.sock"; got != want {
		t.Errorf("DefaultPath with XDG_RUNTIME_DIR = %q, want %q", got, want)
	}
	if got, want := DefaultPath("client", func(k string) string { return vars[k] }, 0), "/run/user/1000/mptunnel/client.sock"; got != want {
		t.Errorf("DefaultPath as root = %q, want %q", got, want)
	}
	delete(vars, "XDG_RUNTIME_DIR")
	if got, want := DefaultPath("client", func(k string) string { return vars[k] }, 0), "/run/mptunnel/client.sock"; got != want {
		t.Errorf("DefaultPath as root = %q, want %q", got, want)
	}
}
