package cli

import (
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

type aclEntry struct {
	tag, perm uint16
	id        uint32
}

// aclAttr encodes entries as Linux stores an access ACL.
func aclAttr(entries ...aclEntry) []byte {
	b := binary.LittleEndian.AppendUint32(nil, aclVersion)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b
}

// credentialACL is the ACL systemd gives a credential it hands to a service
// running as user uid: mode 0400, then a read entry for uid, which makes the
// mask r-- and the mode 0440.
func credentialACL(uid uint32, extra ...aclEntry) []byte {
	const none = ^uint32(0)
	es := []aclEntry{{aclUserObj, 4, none}, {aclUser, 4, uid}, {aclGroupObj, 0, none}}
	es = append(es, extra...)
	return aclAttr(append(es, aclEntry{aclMask, 4, none}, aclEntry{aclOther, 0, none})...)
}

func TestACLGrantsOnly(t *testing.T) {
	const none = ^uint32(0)
	for _, c := range []struct {
		name string
		attr []byte
		want bool
	}{
		{"systemd credential", credentialACL(1234), true},
		{"another user", credentialACL(1235), false},
		{"a named group", credentialACL(1234, aclEntry{aclGroup, 4, 100}), false},
		{"the owning group", aclAttr(aclEntry{aclUserObj, 6, none}, aclEntry{aclUser, 4, 1234}, aclEntry{aclGroupObj, 4, none}, aclEntry{aclMask, 4, none}, aclEntry{aclOther, 0, none}), false},
		{"another user, masked", aclAttr(aclEntry{aclUserObj, 6, none}, aclEntry{aclUser, 4, 1235}, aclEntry{aclGroupObj, 4, none}, aclEntry{aclMask, 0, none}, aclEntry{aclOther, 0, none}), true},
		{"others", aclAttr(aclEntry{aclUserObj, 6, none}, aclEntry{aclUser, 4, 1234}, aclEntry{aclGroupObj, 0, none}, aclEntry{aclMask, 4, none}, aclEntry{aclOther, 4, none}), false},
		{"no mask", aclAttr(aclEntry{aclUserObj, 6, none}, aclEntry{aclGroupObj, 4, none}, aclEntry{aclOther, 0, none}), false},
		{"unknown tag", credentialACL(1234, aclEntry{0x40, 0, 0}), false},
		{"bad version", append([]byte{1}, credentialACL(1234)[1:]...), false},
		{"truncated", credentialACL(1234)[:13], false},
		{"empty", nil, false},
	} {
		if got := aclGrantsOnly(c.attr, 1234); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestKeyFileCredentialACL: a key file laid out as systemd lays out a
// credential for a service's own user (LoadCredential= with User= or
// DynamicUser=: mode 0440 from an ACL whose only named entry is that user) is
// accepted; the same mode from an ACL that lets another user or a group
// read it is refused.
//
// Security review finding 8 (ef6581c): fails before the fix: the key file's mode was not checked.
func TestKeyFileCredentialACL(t *testing.T) {
	me := uint32(os.Geteuid())
	conf := writeFile(t, "c.conf", "127.0.0.1 9\n")
	for _, c := range []struct {
		name string
		attr []byte
		ok   bool
	}{
		{"this user", credentialACL(me), true},
		{"another user", credentialACL(me + 1), false},
		{"a group", credentialACL(me, aclEntry{aclGroup, 4, 4242}), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			kf := keyFileWithMode(t, 0o400)
			if err := unix.Setxattr(kf, "system.posix_acl_access", c.attr, 0); err != nil {
				if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
					t.Skipf("no ACLs on %s: %v", kf, err)
				}
				t.Fatal(err)
			}
			fi, err := os.Stat(kf)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o440 {
				t.Fatalf("the ACL left mode %04o, want 0440", uint32(fi.Mode().Perm()))
			}
			r := runBriefly(t, "client", "--key-file", kf, "--log-level", "error", "--control", "none", "--listen", "127.0.0.1:0", conf)
			if c.ok {
				if r.code != ExitOK {
					t.Fatalf("exit %d: %s", r.code, r.stderr)
				}
				return
			}
			if r.code != ExitUsage || !strings.Contains(r.stderr, "(mode 0440): run 'chmod 600 "+kf+"'") {
				t.Fatalf("exit %d, stderr %q; want the file refused", r.code, r.stderr)
			}
		})
	}
}
