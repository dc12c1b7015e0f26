//go:build unix

package control

import (
	"os"
	"syscall"
)

// ownerOf returns the uid owning the file described by fi.
func ownerOf(fi os.FileInfo) (uid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}
