package control

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/mptunnel/mptunnel/internal/status"
)

// SearchDirs returns the directories where the daemons of user uid put
// their default sockets, in the order `mptunnel status` lists them: every
// directory DefaultPath picks in some environment of that user, since the
// daemon's may not be the reader's (a daemon started by systemd has no
// XDG_RUNTIME_DIR; root's login shell has one).
//
//   - $XDG_RUNTIME_DIR/mptunnel when XDG_RUNTIME_DIR is set to an absolute
//     path;
//   - for root, /run/mptunnel, then each /run/mptunnel-* directory (the
//     runtime directories of the systemd units in dist/);
//   - for other users, $HOME/.mptunnel when the home is usable, then
//     TMPDIR/mptunnel-UID.
//
// Directories that do not exist are left in: Sockets skips them.
func SearchDirs(getenv func(string) string, uid int) []string {
	var dirs []string
	add := func(d string) {
		if d != "" && !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	add(xdgDir(getenv))
	if uid == 0 {
		add(rootDir)
		units, _ := filepath.Glob(unitDirs) // the pattern is well formed
		slices.Sort(units)
		for _, d := range units {
			add(d)
		}
		return dirs
	}
	add(homeDir(getenv, uid))
	add(tempDir(getenv, uid))
	return dirs
}

// Sockets returns the status sockets in dirs, in the order of dirs and by
// name within each: every socket file named *.sock, owned by uid (any owner
// when uid is 0), in a directory that is not a symbolic link and that group
// and others cannot write to, owned by uid or root (any owner when uid is 0).
// Whatever fails these checks is skipped: no daemon of this user serves
// there (Listen refuses such a directory), so what is there is not one's.
func Sockets(dirs []string, uid int) []string {
	var out []string
	for _, dir := range dirs {
		fi, err := os.Lstat(dir)
		if err != nil || !searchable(fi, uid) {
			continue
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries { // sorted by name
			if !strings.HasSuffix(e.Name(), ".sock") || e.Type()&fs.ModeSocket == 0 {
				continue
			}
			p := filepath.Join(dir, e.Name())
			fi, err := os.Lstat(p)
			if err != nil || fi.Mode()&fs.ModeSocket == 0 || !ownedBy(fi, uid) {
				continue
			}
			out = append(out, p)
		}
	}
	return out
}

// searchable reports whether a directory described by fi (from Lstat) may
// hold the sockets of uid's daemons. See Sockets.
func searchable(fi os.FileInfo, uid int) bool {
	if !fi.IsDir() || fi.Mode()&fs.ModeSymlink != 0 {
		return false
	}
	owner, ok := ownerOf(fi)
	if !ok {
		return true // no Unix owners or modes on this platform
	}
	return fi.Mode().Perm()&0o022 == 0 && (uid == 0 || owner == uid || owner == 0)
}

// ownedBy reports whether a socket described by fi may be one of uid's
// daemons'.
func ownedBy(fi os.FileInfo, uid int) bool {
	owner, ok := ownerOf(fi)
	return !ok || uid == 0 || owner == uid
}

// Result is what FetchAll got from one socket.
type Result struct {
	Path   string
	Status status.Status
	Err    error // from Fetch; wraps ErrNotRunning for a stale socket
}

// FetchAll fetches the status at each of paths at once and returns the
// results in the order of paths, once every fetch has ended.
func FetchAll(ctx context.Context, paths []string) []Result {
	out := make([]Result, len(paths))
	var wg sync.WaitGroup
	for i, p := range paths {
		wg.Go(func() {
			st, err := Fetch(ctx, p)
			out[i] = Result{Path: p, Status: st, Err: err}
		})
	}
	wg.Wait()
	return out
}
