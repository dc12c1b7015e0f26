// Package control is the local status socket of mptunnel. Each daemon, client
// or server, serves a snapshot of its sessions and paths (package status) as
// one JSON document on a Unix domain socket; `mptunnel status` fetches it and
// prints it as a table or as the JSON itself.
//
// The wire exchange is minimal: the client connects, the server writes the
// snapshot as compact JSON followed by a newline and closes the connection.
// The client sends nothing.
//
// Each daemon is an instance with a name (Name, AddrName), and its default
// socket is NAME.sock in the user's status directory (DefaultPath), so that
// several daemons run side by side; `mptunnel status` finds them all there
// (SearchDirs, Sockets, FetchAll).
package control

import (
	"os"
	"path/filepath"
	"strconv"
)

// DefaultPath returns the default status socket path of the daemon named
// name (see CheckName), NAME.sock in the first of:
//
//   - $XDG_RUNTIME_DIR/mptunnel when XDG_RUNTIME_DIR is set to an absolute
//     path;
//   - /run/mptunnel when uid is 0;
//   - $HOME/.mptunnel when HOME is set to an absolute path naming an
//     existing directory that uid owns, and the socket's path fits in a
//     socket address;
//   - TMPDIR/mptunnel-UID otherwise, where TMPDIR is $TMPDIR or the system's
//     temporary directory.
//
// Every user can create names in the temporary directory, so another user
// could take mptunnel-UID first; the daemon then refuses to serve there (see
// Listen). The home directory comes before it for that reason: no one else
// can create .mptunnel in it. getenv is normally os.Getenv and uid
// os.Getuid(); the daemon and `mptunnel status` work the directories out
// alike (SearchDirs), so they agree on where the sockets are.
func DefaultPath(name string, getenv func(string) string, uid int) string {
	file := name + ".sock"
	if dir := xdgDir(getenv); dir != "" {
		return filepath.Join(dir, file)
	}
	if uid == 0 {
		return filepath.Join(rootDir, file)
	}
	if dir := homeDir(getenv, uid); dir != "" {
		if p := filepath.Join(dir, file); len(p) <= maxSocketPath() {
			return p
		}
	}
	return filepath.Join(tempDir(getenv, uid), file)
}

// rootDir is root's status directory when XDG_RUNTIME_DIR is not set.
const rootDir = "/run/mptunnel"

// unitDirs matches the runtime directories of the systemd units in dist/
// (RuntimeDirectory=mptunnel-client-NAME, mptunnel-server-NAME), whose
// daemons are given --control there.
const unitDirs = "/run/mptunnel-*"

// xdgDir is $XDG_RUNTIME_DIR/mptunnel, or "" when XDG_RUNTIME_DIR is not an
// absolute path.
func xdgDir(getenv func(string) string) string {
	if dir := getenv("XDG_RUNTIME_DIR"); dir != "" && filepath.IsAbs(dir) {
		return filepath.Join(dir, "mptunnel")
	}
	return ""
}

// homeDir is $HOME/.mptunnel when HOME is usable for uid (usableHome), else
// "".
func homeDir(getenv func(string) string, uid int) string {
	if home := getenv("HOME"); usableHome(home, uid) {
		return filepath.Join(home, ".mptunnel")
	}
	return ""
}

// tempDir is TMPDIR/mptunnel-UID.
func tempDir(getenv func(string) string, uid int) string {
	tmp := getenv("TMPDIR")
	if tmp == "" || !filepath.IsAbs(tmp) {
		tmp = os.TempDir()
	}
	return filepath.Join(tmp, "mptunnel-"+strconv.Itoa(uid))
}

// usableHome reports whether home can hold the status socket directory of
// user uid: an absolute path to an existing directory that uid owns (where
// the platform has owners). A home of another user, as left by su without a
// login shell, or one that does not exist, such as /nonexistent, is not.
func usableHome(home string, uid int) bool {
	if home == "" || !filepath.IsAbs(home) {
		return false
	}
	fi, err := os.Stat(home)
	if err != nil || !fi.IsDir() {
		return false
	}
	if owner, ok := ownerOf(fi); ok && owner != uid {
		return false
	}
	return true
}
