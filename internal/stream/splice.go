package stream

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"

	"github.com/quic-go/quic-go"
)

// resetCode is the QUIC stream error a reset of the TCP connection at one
// end becomes at the other.
const resetCode quic.StreamErrorCode = 1

// Splice carries bytes between a TCP connection and its stream until both
// directions end, and returns the bytes each way (TCP to stream, stream to
// TCP). The end of one direction (FIN) is passed on as the end of that
// direction only, so a half-closed connection goes on the other way; a
// reset is passed on as a reset.
func Splice(tc *net.TCPConn, s *quic.Stream) (up, down int64) {
	var wg sync.WaitGroup
	wg.Go(func() {
		n, err := io.Copy(s, tc)
		up = n
		if err == nil {
			s.Close() // FIN: the other end reads EOF
			return
		}
		// A reset of the TCP connection, or its end: reset the stream.
		s.CancelWrite(resetCode)
		s.CancelRead(resetCode)
	})
	n, err := io.Copy(tc, s)
	down = n
	var se *quic.StreamError
	switch {
	case err == nil:
		tc.CloseWrite()
	case errors.As(err, &se), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		// The far end reset: so does this one.
		tc.SetLinger(0)
		tc.Close()
		s.CancelWrite(resetCode)
	default:
		tc.SetLinger(0)
		tc.Close()
		s.CancelWrite(resetCode)
	}
	wg.Wait()
	tc.Close()
	return up, down
}
