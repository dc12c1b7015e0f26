package udpio

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The Linux Conn makes recvmmsg/sendmmsg (or recvmsg/sendmsg with
// Options.NoBatch) calls itself through the socket's syscall.RawConn, on
// message headers, iovecs, socket addresses and control buffers allocated
// once, so that steady-state reads and writes do not allocate.
// (golang.org/x/net's ipv4/ipv6 PacketConn.ReadBatch allocates a
// *net.UDPAddr per datagram and its WriteBatch takes net.Addr destinations
// and [][]byte buffers per message, and neither handles GSO or GRO.)

const (
	// readOOB is the control buffer per received datagram: room for
	// IPV6_PKTINFO (40 bytes with its header) and UDP_GRO (24), with spare.
	readOOB = 128
	// writeOOB is the control buffer per sent message: IPV6_PKTINFO or
	// IP_PKTINFO (at most 40 bytes) and UDP_SEGMENT (24).
	writeOOB = 64
	// groBufSize holds the largest coalesced read (the kernel caps GRO at
	// 64 KiB) or the largest single datagram.
	groBufSize = 1 << 16
	// groBufs is the most GRO buffers read per system call; each datagram
	// from a different flow takes a buffer of its own.
	groBufs = 8
	// writers is the number of writes that may run at once on one Conn; more
	// wait for a free set of buffers.
	writers = 4
)

type batchConn struct {
	uc    *net.UDPConn
	rc    syscall.RawConn
	laddr netip.AddrPort
	naddr net.Addr // for errors

	v6      bool // AF_INET6 socket: IPv4 peers as v4-mapped addresses
	batch   bool
	pktinfo bool
	gro     bool
	gso     atomic.Bool

	rmu   sync.Mutex
	r     *batchReader
	wfree chan *batchWriter
}

// NewConn wraps c, an unconnected UDP socket, for batched reads and writes.
// The options are independent: NoBatch still sends a run of equal datagrams
// as one GSO message unless NoGSO is set. With PktInfo, reads report the
// local address of every datagram (IP_PKTINFO/IPV6_PKTINFO) and writes with a
// valid Msg.Local send from it. c must not be read or written by other means
// afterwards; Close closes it.
func NewConn(c *net.UDPConn, opts Options) (Conn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var (
		domain       int
		derr         error
		gsoOK, groOK bool
	)
	err = rc.Control(func(fd uintptr) {
		domain, derr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if !opts.NoGSO {
			_, e := unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
			gsoOK = e == nil
		}
		if opts.NoGRO {
			// Someone else may have turned it on; reads would then come
			// back coalesced and unsplit.
			_ = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 0)
		} else {
			groOK = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1) == nil
		}
	})
	if err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("getsockopt", derr)
	}
	uc := &batchConn{
		uc:    c,
		rc:    rc,
		naddr: c.LocalAddr(),
		v6:    domain == unix.AF_INET6,
		batch: !opts.NoBatch,
		gro:   groOK,
	}
	if ua, ok := uc.naddr.(*net.UDPAddr); ok {
		uc.laddr = ua.AddrPort()
	}
	uc.gso.Store(gsoOK)
	if opts.PktInfo {
		_, uc.pktinfo = enablePktInfo(c)
	}
	bs := batchSize(opts)
	if opts.NoBatch {
		bs = 1
	}
	uc.r = newReader(uc, bs)
	wbs := batchSize(opts) // a NoBatch write still prepares a batch of messages, sent one by one
	uc.wfree = make(chan *batchWriter, writers)
	for range writers {
		uc.wfree <- newWriter(uc, wbs)
	}
	return uc, nil
}

func (c *batchConn) LocalAddr() netip.AddrPort { return c.laddr }

func (c *batchConn) Close() error { return c.uc.Close() }

// Features reports what the kernel gave this Conn. GSO turns off for good
// after the kernel refuses a segmented send.
func (c *batchConn) Features() Features {
	return Features{Batch: c.batch, GSO: c.gso.Load(), GRO: c.gro, PktInfo: c.pktinfo}
}

func (c *batchConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "udp", Source: c.naddr, Err: err}
}

// batchReader is the scratch of ReadBatch.
type batchReader struct {
	c     *batchConn
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	sas   []unix.RawSockaddrInet6
	oob   []byte // readOOB bytes per header, or none
	oobW  int
	bufs  [][]byte // GRO buffers, or none
	fn    func(uintptr) bool
	nh    int // headers offered to the kernel
	n     int // headers filled
	errno syscall.Errno

	// Datagrams read with GRO and not yet handed out: buffers pj..pn-1,
	// the first from byte off.
	pj, pn, off int
	from        []netip.AddrPort
	local       []netip.Addr
	seg         []int
}

func newReader(c *batchConn, bs int) *batchReader {
	r := &batchReader{c: c}
	if c.gro {
		bs = min(bs, groBufs)
		r.bufs = make([][]byte, bs)
		for i := range r.bufs {
			r.bufs[i] = make([]byte, groBufSize)
		}
		r.from = make([]netip.AddrPort, bs)
		r.local = make([]netip.Addr, bs)
		r.seg = make([]int, bs)
	}
	r.hdrs = make([]unix.Mmsghdr, bs)
	r.iovs = make([]unix.Iovec, bs)
	r.sas = make([]unix.RawSockaddrInet6, bs)
	if c.gro || c.pktinfo {
		r.oobW = readOOB
		r.oob = make([]byte, bs*readOOB)
	}
	for i := range r.hdrs {
		h := &r.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&r.sas[i]))
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		if r.oobW > 0 {
			h.Control = &r.oob[i*r.oobW]
		}
		if r.bufs != nil {
			r.iovs[i].Base = &r.bufs[i][0]
			r.iovs[i].SetLen(groBufSize)
		}
	}
	r.fn = r.read
	return r
}

// read is the RawConn.Read callback: false asks the poller to wait.
func (r *batchReader) read(fd uintptr) bool {
	for {
		var n uintptr
		var e syscall.Errno
		if r.c.batch {
			n, _, e = unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(r.nh), 0, 0, 0)
		} else {
			n, _, e = unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0].Hdr)), 0)
			if e == 0 {
				r.hdrs[0].Len = uint32(n)
				n = 1
			}
		}
		switch e {
		case 0:
			r.n, r.errno = int(n), 0
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			r.n, r.errno = 0, e
			return true
		}
	}
}

// recv offers nh headers to the kernel and waits for at least one datagram.
func (r *batchReader) recv(nh int) (int, error) {
	r.nh = nh
	for i := range nh {
		h := &r.hdrs[i].Hdr
		h.Namelen = unix.SizeofSockaddrInet6
		h.SetControllen(r.oobW)
		h.Flags = 0
		r.hdrs[i].Len = 0
	}
	if err := r.c.rc.Read(r.fn); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		op := "recvmmsg"
		if !r.c.batch {
			op = "recvmsg"
		}
		return 0, r.c.opError("read", os.NewSyscallError(op, r.errno))
	}
	return r.n, nil
}

func (r *batchReader) control(i int) []byte {
	if r.oobW == 0 {
		return nil
	}
	n := min(int(r.hdrs[i].Hdr.Controllen), r.oobW)
	return r.oob[i*r.oobW : i*r.oobW+n]
}

func (c *batchConn) ReadBatch(msgs []Msg) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	r := c.r
	if r.bufs != nil {
		return r.readGRO(msgs)
	}
	nh := min(len(msgs), len(r.hdrs))
	for i := range nh {
		b := msgs[i].Buf
		if len(b) > 0 {
			r.iovs[i].Base = &b[0]
		} else {
			r.iovs[i].Base = nil
		}
		r.iovs[i].SetLen(len(b))
	}
	n, err := r.recv(nh)
	// The caller's buffers are not kept past the call.
	for i := range nh {
		r.iovs[i].Base = nil
	}
	if err != nil {
		return 0, err
	}
	for i := range n {
		m := &msgs[i]
		m.N = int(r.hdrs[i].Len)
		m.Addr = decodeSockaddr(&r.sas[i])
		m.Local = netip.Addr{}
		if c.pktinfo {
			m.Local = parseDst(r.control(i))
		}
	}
	return n, nil
}

// readGRO reads into the GRO buffers when none are pending, then splits
// them into msgs, keeping what does not fit for the next call.
func (r *batchReader) readGRO(msgs []Msg) (int, error) {
	if r.pj >= r.pn {
		n, err := r.recv(len(r.hdrs))
		if err != nil {
			return 0, err
		}
		for j := range n {
			oob := r.control(j)
			r.from[j] = decodeSockaddr(&r.sas[j])
			r.local[j] = netip.Addr{}
			if r.c.pktinfo {
				r.local[j] = parseDst(oob)
			}
			r.seg[j] = groSegment(oob)
		}
		r.pj, r.pn, r.off = 0, n, 0
	}
	out := 0
	for out < len(msgs) && r.pj < r.pn {
		j := r.pj
		size := int(r.hdrs[j].Len)
		end := size
		if s := r.seg[j]; s > 0 && r.off+s < size {
			end = r.off + s
		}
		m := &msgs[out]
		m.N = copy(m.Buf, r.bufs[j][r.off:end])
		m.Addr = r.from[j]
		m.Local = r.local[j]
		out++
		r.off = end
		if r.off >= size { // a 0-byte datagram is handed out once
			r.pj++
			r.off = 0
		}
	}
	return out, nil
}

// groSegment finds the UDP_GRO segment size in control messages; 0 when the
// read was not coalesced.
func groSegment(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		var h unix.Cmsghdr
		copy((*[unix.SizeofCmsghdr]byte)(unsafe.Pointer(&h))[:], oob)
		hl := int(uint64(h.Len))
		if hl < unix.SizeofCmsghdr || hl > len(oob) {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && hl >= unix.CmsgLen(4) {
			return int(int32(binary.NativeEndian.Uint32(oob[unix.CmsgLen(0):])))
		}
		next := unix.CmsgSpace(hl - unix.CmsgLen(0))
		if next >= len(oob) {
			return 0
		}
		oob = oob[next:]
	}
	return 0
}

// decodeSockaddr turns a socket address filled in by the kernel into an
// AddrPort, unmapping v4-mapped addresses, without allocating (but for
// IPv6 zones with interface indexes of 100 and more).
func decodeSockaddr(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET6:
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		a := netip.AddrFrom16(sa.Addr).Unmap()
		if sa.Scope_id != 0 && a.Is6() {
			a = a.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
		}
		return netip.AddrPortFrom(a, uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// encodeSockaddr fills sa with ap for the socket's family and returns its
// length: IPv4 destinations as v4-mapped addresses on an AF_INET6 socket.
func (c *batchConn) encodeSockaddr(sa *unix.RawSockaddrInet6, ap netip.AddrPort) (uint32, error) {
	a := ap.Addr()
	if !a.IsValid() {
		return 0, errBadAddr
	}
	port := ap.Port()
	if c.v6 {
		*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.As16()}
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		if z := a.Zone(); z != "" {
			sa.Scope_id = zoneIndex(z)
		}
		return unix.SizeofSockaddrInet6, nil
	}
	a = a.Unmap()
	if !a.Is4() {
		return 0, errNoIPv6
	}
	sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
	*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
	p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
	p[0], p[1] = byte(port>>8), byte(port)
	return unix.SizeofSockaddrInet4, nil
}

// zoneIndex is the interface index of an IPv6 zone, a number or a name.
func zoneIndex(z string) uint32 {
	if n, err := strconv.ParseUint(z, 10, 32); err == nil {
		return uint32(n)
	}
	if ifi, err := net.InterfaceByName(z); err == nil {
		return uint32(ifi.Index)
	}
	return 0
}

// putSourceCmsg writes into b the control message that sends from local
// (the layout of sourceOOB) and returns its length, or 0 when the socket
// cannot send from local.
func putSourceCmsg(b []byte, v6 bool, local netip.Addr) int {
	if v6 {
		data, n := putCmsg(b, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, unix.SizeofInet6Pktinfo)
		a := local.As16()
		copy(data, a[:])
		return n
	}
	local = local.Unmap()
	if !local.Is4() {
		return 0
	}
	data, n := putCmsg(b, unix.IPPROTO_IP, unix.IP_PKTINFO, unix.SizeofInet4Pktinfo)
	a := local.As4()
	copy(data[4:], a[:]) // spec_dst, after the interface index
	return n
}

// putSegmentCmsg writes the UDP_SEGMENT control message for segments of
// size bytes and returns its length.
func putSegmentCmsg(b []byte, size int) int {
	data, n := putCmsg(b, unix.SOL_UDP, unix.UDP_SEGMENT, 2)
	binary.NativeEndian.PutUint16(data, uint16(size))
	return n
}

// putCmsg writes into b the header of a control message of the given level
// and type with size bytes of zeroed data, and returns the data and the
// message's length with its padding.
func putCmsg(b []byte, level, typ int32, size int) (data []byte, n int) {
	n = unix.CmsgSpace(size)
	clear(b[:n])
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(size))
	return b[unix.CmsgLen(0):unix.CmsgLen(size)], n
}

// batchWriter is the scratch of one WriteBatch.
type batchWriter struct {
	c     *batchConn
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	sas   []unix.RawSockaddrInet6
	oob   []byte // writeOOB bytes per header
	cnt   []int  // datagrams per header
	fn    func(uintptr) bool
	nh    int // headers prepared
	done  int // headers sent
	errno syscall.Errno
}

func newWriter(c *batchConn, bs int) *batchWriter {
	w := &batchWriter{
		c:    c,
		hdrs: make([]unix.Mmsghdr, bs),
		// However few headers, room for a whole GSO run.
		iovs: make([]unix.Iovec, max(bs, maxSegments)),
		sas:  make([]unix.RawSockaddrInet6, bs),
		oob:  make([]byte, bs*writeOOB),
		cnt:  make([]int, bs),
	}
	for i := range w.hdrs {
		w.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&w.sas[i]))
	}
	w.fn = w.write
	return w
}

// write is the RawConn.Write callback: false asks the poller to wait.
func (w *batchWriter) write(fd uintptr) bool {
	for w.done < w.nh {
		var n uintptr
		var e syscall.Errno
		if w.c.batch {
			n, _, e = unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.hdrs[w.done])), uintptr(w.nh-w.done), 0, 0, 0)
		} else {
			_, _, e = unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&w.hdrs[w.done].Hdr)), 0)
			n = 1
		}
		switch e {
		case 0:
			w.done += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			// The send buffer is full: drop, do not wait (ErrQueueFull).
			w.errno = e
			return true
		default:
			w.errno = e
			return true
		}
	}
	return true
}

// prepare fills headers for the first datagrams of msgs (at most a batch),
// coalescing runs for GSO, and returns how many headers it filled. It stops
// before a datagram it cannot address, failing if that is the first.
func (w *batchWriter) prepare(msgs []Msg, gso bool) (int, error) {
	c := w.c
	nh, iv, i := 0, 0, 0
	for i < len(msgs) && nh < len(w.hdrs) && iv < len(w.iovs) {
		m := &msgs[i]
		namelen, err := c.encodeSockaddr(&w.sas[nh], m.Addr)
		if err != nil {
			if nh == 0 {
				return 0, err
			}
			break
		}
		k, seg := 1, len(m.Buf)
		if gso && seg > 0 {
			total := seg
			for i+k < len(msgs) && k < maxSegments && iv+k < len(w.iovs) {
				next := &msgs[i+k]
				l := len(next.Buf)
				if l == 0 || l > seg || total+l > maxGSOBytes || next.Addr != m.Addr || next.Local != m.Local {
					break
				}
				total += l
				k++
				if l < seg { // a shorter datagram ends the run
					break
				}
			}
		}
		for j := range k {
			b := msgs[i+j].Buf
			v := &w.iovs[iv+j]
			if len(b) > 0 {
				v.Base = &b[0]
			} else {
				v.Base = nil
			}
			v.SetLen(len(b))
		}
		h := &w.hdrs[nh].Hdr
		h.Namelen = namelen
		h.Iov = &w.iovs[iv]
		h.SetIovlen(k)
		oob := w.oob[nh*writeOOB : (nh+1)*writeOOB]
		o := 0
		if c.pktinfo && m.Local.IsValid() {
			o += putSourceCmsg(oob, c.v6, m.Local)
		}
		if k > 1 {
			o += putSegmentCmsg(oob[o:], seg)
		}
		if o > 0 {
			h.Control = &oob[0]
		} else {
			h.Control = nil
		}
		h.SetControllen(o)
		h.Flags = 0
		w.cnt[nh] = k
		nh++
		iv += k
		i += k
	}
	return nh, nil
}

// sent is the number of datagrams in the headers sent.
func (w *batchWriter) sent() int {
	n := 0
	for _, k := range w.cnt[:w.done] {
		n += k
	}
	return n
}

func (w *batchWriter) release() {
	// The caller's buffers are not kept past the call.
	for i := range w.iovs {
		w.iovs[i].Base = nil
	}
}

func (c *batchConn) WriteBatch(msgs []Msg) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	w := <-c.wfree
	defer func() { c.wfree <- w }()
	sent := 0
	for sent < len(msgs) {
		gso := c.gso.Load()
		nh, err := w.prepare(msgs[sent:], gso)
		if err != nil {
			w.release()
			return sent, c.opError("write", err)
		}
		w.nh, w.done, w.errno = nh, 0, 0
		err = c.rc.Write(w.fn)
		sent += w.sent()
		if err != nil {
			w.release()
			return sent, err
		}
		if w.errno != 0 {
			if gso && w.cnt[w.done] > 1 && (w.errno == unix.EIO || w.errno == unix.EINVAL) {
				// No segmentation offload on this route (EIO) or for this
				// segment size (EINVAL): send datagram by datagram from now on.
				c.gso.Store(false)
				continue
			}
			if w.errno == unix.EAGAIN {
				w.release()
				return sent, c.opError("write", ErrQueueFull)
			}
			op := "sendmmsg"
			if !c.batch {
				op = "sendmsg"
			}
			w.release()
			return sent, c.opError("write", os.NewSyscallError(op, w.errno))
		}
	}
	w.release()
	return sent, nil
}
