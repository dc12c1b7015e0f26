//go:build unix

package cli

import (
	"io/fs"
	"os"
	"strings"
)

// checkPrivate refuses the opened secret file f when its mode gives the group
// or others any permission. Group bits that stand for an access ACL's mask
// are accepted when the ACL grants nothing to anyone but the owner and this
// process's user: that is how systemd hands a credential to a service running
// as another user (mode 0440, a read entry for the service's user only).
func checkPrivate(f *os.File, what, path string) error {
	fi, err := f.Stat()
	if err != nil {
		return usagef("cannot read %s: %w", what, err)
	}
	perm := fi.Mode().Perm()
	if perm&0o077 == 0 {
		return nil
	}
	if perm&0o007 == 0 && aclPrivate(f, os.Geteuid()) {
		return nil
	}
	return looseError(what, path, perm)
}

// looseError is the refusal of a secret file with permission bits for the
// group or others, with the command that fixes it.
func looseError(what, path string, perm fs.FileMode) error {
	open := "readable by others"
	if perm&0o044 == 0 {
		open = "writable by others"
		if perm&0o022 == 0 {
			open = "open to others"
		}
	}
	return usagef("%s %s is %s (mode %04o): run 'chmod 600 %s'", what, path, open, uint32(perm), shellQuote(path))
}

// shellQuote returns path as a shell word: unchanged when it holds only
// characters no shell treats specially, else in double quotes (the advice
// that carries it is already in single quotes).
func shellQuote(path string) string {
	safe := path != "" && strings.IndexFunc(path, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+,:@%=", r))
	}) < 0
	if safe {
		return path
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "$", `\$`, "`", "\\`")
	return `"` + r.Replace(path) + `"`
}
