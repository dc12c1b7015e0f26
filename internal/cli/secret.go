package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// readSecret reads a file holding a secret (what names it in messages: "key
// file", "socks auth file"). Where the platform has Unix permissions, a file
// that anyone but its owner may read, write or run is refused, as ssh refuses
// a private key others can read: the check is on the opened file, so the
// file read is the file checked.
func readSecret(what, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usagef("cannot read %s: %w", what, err)
	}
	defer f.Close()
	if err := checkPrivate(f, what, path); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, usagef("cannot read %s: %w", what, err)
	}
	return b, nil
}

// writeNewSecret writes text and a newline to path, which must not exist,
// creating it readable and writable by its owner only.
func writeNewSecret(path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return usagef("%s already exists; not overwriting it (remove it first, or choose another name)", path)
		}
		return err
	}
	_, err = fmt.Fprintln(f, text)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
