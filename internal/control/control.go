// Package control is the local status socket of mptunnel. Each daemon, client
// or server, serves a snapshot of its sessions and paths (package status) as
// one JSON document on a Unix domain socket; `mptunnel status` fetches it and
// prints it as a table or as the JSON itself.
//
// The wire exchange is minimal: the client connects, the server writes the
// snapshot as compact JSON followed by a newline and closes the connection.
// The client sends nothing.
package control

import (
	"os"
	"path/filepath"
	"strconv"
)

// DefaultPath returns the default status socket path for role ("client" or
// "server"), the first of:
//
//   - $XDG_RUNTIME_DIR/mptunnel/ROLE.sock when XDG_RUNTIME_DIR is set to an
//     absolute path;
//   - /run/mptunnel/ROLE.sock when uid is 0;
//   - $HOME/.mptunnel/ROLE.sock when HOME is set to an absolute path naming
//     an existing directory that uid owns, and the result fits in a socket
//     address;
//   - TMPDIR/mptunnel-UID/ROLE.sock otherwise, where TMPDIR is $TMPDIR or
//     the system's temporary directory.
//
// Every user can create names in the temporary directory, so another user
// could take mptunnel-UID first; the daemon then refuses to serve there (see
// Listen). The home directory comes before it for that reason: no one else
// can create .mptunnel in it. getenv is normally os.Getenv and uid
// os.Getuid(); the daemon and `mptunnel status` call DefaultPath alike, so
// they agree on the path.
func DefaultPath(role string, getenv func(string) string, uid int) string {
	name := role + ".sock"
	if dir := getenv("XDG_RUNTIME_DIR"); dir != "" && filepath.IsAbs(dir) {
		return filepath.Join(dir, "mptunnel", name)
	}
	if uid == 0 {
		return filepath.Join("/run", "mptunnel", name)
	}
	if home := getenv("HOME"); usableHome(home, uid) {
		if p := filepath.Join(home, ".mptunnel", name); len(p) <= maxSocketPath() {
			return p
		}
	}
	tmp := getenv("TMPDIR")
	if tmp == "" || !filepath.IsAbs(tmp) {
		tmp = os.TempDir()
	}
	return filepath.Join(tmp, "mptunnel-"+strconv.Itoa(uid), name)
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
