package udpio

import (
	"encoding/binary"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// enablePktInfo asks for the destination address of every packet: with
// IPV6_RECVPKTINFO on a dual-stack socket (IPv4 packets come as v4-mapped
// addresses), else IP_PKTINFO on an IPv4 socket.
func enablePktInfo(conn *net.UDPConn) (v6, ok bool) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return false, false
	}
	_ = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1) == nil {
			v6, ok = true, true
			return
		}
		ok = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1) == nil
	})
	return v6, ok
}

// parseDst finds the destination address in control messages, without
// allocating.
func parseDst(oob []byte) netip.Addr {
	for len(oob) >= unix.SizeofCmsghdr {
		var h unix.Cmsghdr // copied out: oob need not be aligned
		copy((*[unix.SizeofCmsghdr]byte)(unsafe.Pointer(&h))[:], oob)
		if h.Len < unix.SizeofCmsghdr || uint64(h.Len) > uint64(len(oob)) {
			return netip.Addr{}
		}
		data := oob[unix.CmsgLen(0):h.Len]
		switch {
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			return netip.AddrFrom16([16]byte(data[:16])).Unmap()
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
			return netip.AddrFrom4([4]byte(data[8:12]))
		}
		next := unix.CmsgSpace(int(h.Len) - unix.CmsgLen(0))
		if next >= len(oob) {
			return netip.Addr{}
		}
		oob = oob[next:]
	}
	return netip.Addr{}
}

// sourceOOB builds the control message that sets a packet's source address.
func sourceOOB(v6 bool, local netip.Addr) []byte {
	if v6 {
		b := make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
		a := local.As16() // IPv4 as v4-mapped, which the kernel accepts for IPv4 peers
		copy(b[unix.CmsgLen(0):], a[:])
		return b
	}
	if !local.Is4() {
		return nil
	}
	b := make([]byte, unix.CmsgSpace(unix.SizeofInet4Pktinfo))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
	a := local.As4()
	// spec_dst is the source address to use.
	copy(b[unix.CmsgLen(0)+4:], a[:])
	binary.NativeEndian.PutUint32(b[unix.CmsgLen(0):], 0)
	return b
}
