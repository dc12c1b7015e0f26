package udpio

import "errors"

// Features reports which speed-ups a Conn obtained from the kernel.
type Features struct {
	Batch   bool // several datagrams per system call (recvmmsg/sendmmsg)
	GSO     bool // UDP segmentation offload on writes (UDP_SEGMENT)
	GRO     bool // UDP generic receive offload on reads (UDP_GRO)
	PktInfo bool // local addresses reported on reads and honoured on writes
}

// FeaturesOf reports what c obtained from the kernel; the zero Features for a
// Conn not made by NewConn.
func FeaturesOf(c Conn) Features {
	if f, ok := c.(interface{ Features() Features }); ok {
		return f.Features()
	}
	return Features{}
}

const (
	// defaultBatch is the number of datagrams per system call when
	// Options.BatchSize is zero.
	defaultBatch = 64
	// maxBatch bounds Options.BatchSize (the kernel's UIO_MAXIOV).
	maxBatch = 1024
	// maxSegments is the most datagrams coalesced into one GSO send.
	maxSegments = 64
	// maxGSOBytes is the most payload bytes in one GSO send.
	maxGSOBytes = 65000
)

var (
	errBadAddr = errors.New("udpio: invalid destination address")
	errNoIPv6  = errors.New("udpio: IPv6 destination on an IPv4 socket")
)

func batchSize(opts Options) int {
	n := opts.BatchSize
	if n <= 0 {
		n = defaultBatch
	}
	return min(n, maxBatch)
}
