package cli

import (
	"encoding/binary"
	"os"

	"golang.org/x/sys/unix"
)

// The POSIX access ACL as Linux stores it in the system.posix_acl_access
// extended attribute: a 4-byte version (2), then 8-byte entries of a tag, a
// permission set (rwx, 3 bits) and an id, all little-endian.
const (
	aclVersion  = 2
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
)

// aclPrivate reports whether f has an access ACL under which no one but its
// owner and the user uid gets any permission. With such an ACL the group bits
// of the file's mode are the ACL's mask, not the owning group's permissions.
func aclPrivate(f *os.File, uid int) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	var attr []byte
	var xerr error
	err = rc.Control(func(fd uintptr) {
		var n int
		if n, xerr = unix.Fgetxattr(int(fd), "system.posix_acl_access", nil); xerr != nil {
			return
		}
		attr = make([]byte, n)
		n, xerr = unix.Fgetxattr(int(fd), "system.posix_acl_access", attr)
		attr = attr[:max(n, 0)]
	})
	if err != nil || xerr != nil {
		return false
	}
	return aclGrantsOnly(attr, uid)
}

// aclGrantsOnly reports whether the ACL attribute b gives permissions to
// nobody but the file's owner and the user uid, once its mask is applied.
// A malformed attribute, or one without a mask, is not private.
func aclGrantsOnly(b []byte, uid int) bool {
	if len(b) < 4 || (len(b)-4)%8 != 0 || binary.LittleEndian.Uint32(b) != aclVersion {
		return false
	}
	type entry struct {
		tag, perm uint16
		id        uint32
	}
	var entries []entry
	mask, haveMask := uint16(0), false
	for e := b[4:]; len(e) > 0; e = e[8:] {
		en := entry{binary.LittleEndian.Uint16(e), binary.LittleEndian.Uint16(e[2:]) & 7, binary.LittleEndian.Uint32(e[4:])}
		if en.tag == aclMask {
			mask, haveMask = en.perm, true
		}
		entries = append(entries, en)
	}
	if !haveMask {
		return false
	}
	for _, en := range entries {
		switch en.tag {
		case aclUserObj, aclMask:
		case aclUser:
			if int64(en.id) != int64(uid) && en.perm&mask != 0 {
				return false
			}
		case aclGroupObj, aclGroup:
			if en.perm&mask != 0 {
				return false
			}
		case aclOther:
			if en.perm != 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}
