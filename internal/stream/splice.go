package stream

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
)

// resetCode is the QUIC stream error a reset of the TCP connection at one
// end becomes at the other.
const resetCode quic.StreamErrorCode = 1

// IdleTimeout is how long a stream may carry nothing either way before both
// ends reset it: long enough for an interactive session left alone, short
// enough that a forgotten one does not hold a target's socket for good.
const IdleTimeout = time.Hour

// Splice carries bytes between a TCP connection and its stream until both
// directions end, and returns the bytes each way (TCP to stream, stream to
// TCP). The end of one direction (FIN) is passed on as the end of that
// direction only, so a half-closed connection goes on the other way; a
// reset is passed on as a reset; IdleTimeout without a byte either way
// resets both.
func (c *Client) Splice(tc *net.TCPConn, s *quic.Stream) (up, down int64) {
	return splice(tc, s, IdleTimeout, &c.bufs)
}

func splice(tc *net.TCPConn, s *quic.Stream, idle time.Duration, bufs *buffers) (up, down int64) {
	var last atomic.Int64 // unix ns of the latest byte either way
	last.Store(time.Now().UnixNano())
	var timer *time.Timer
	timer = time.AfterFunc(idle, func() {
		if d := time.Since(time.Unix(0, last.Load())); d < idle {
			timer.Reset(idle - d)
			return
		}
		tc.SetLinger(0)
		tc.Close()
		s.CancelRead(resetCode)
		s.CancelWrite(resetCode)
	})
	defer timer.Stop()
	var wg sync.WaitGroup
	wg.Go(func() {
		n, err := bufs.copy(s, activity{tc, &last})
		up = n
		if err == nil {
			s.Close() // FIN: the other end reads EOF
			return
		}
		// A reset of the TCP connection, or its end: reset the stream.
		s.CancelWrite(resetCode)
		s.CancelRead(resetCode)
	})
	n, err := bufs.copy(tc, activity{s, &last})
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

// A splice reads into a small buffer of its own while bytes come a few at
// a time, and into a large one, borrowed, while they come faster than it
// copies them (a read filled the buffer): QUIC takes what one write gives
// it as data ready to send, and a stream written in small pieces leaves
// its connection waiting for the next (too little to send to use its
// congestion window, which then does not grow). An idle stream holds the
// small buffers only.
const (
	smallBuf = 16 << 10
	largeBuf = 256 << 10
)

// buffers lends the large buffers of an endpoint's splices; the zero value
// is ready.
type buffers struct{ pool sync.Pool }

func (b *buffers) get() *[]byte {
	if bp, ok := b.pool.Get().(*[]byte); ok {
		return bp
	}
	buf := make([]byte, largeBuf)
	return &buf
}

// copy is io.Copy through a small buffer, or a large one borrowed from b
// while reads fill what they are given.
func (b *buffers) copy(dst io.Writer, src io.Reader) (int64, error) {
	var n int64
	small := make([]byte, smallBuf)
	var large *[]byte
	defer func() {
		if large != nil {
			b.pool.Put(large)
		}
	}()
	for {
		buf := small
		if large != nil {
			buf = *large
		}
		nr, rerr := src.Read(buf)
		var werr error
		if nr > 0 {
			var nw int
			nw, werr = dst.Write(buf[:nr])
			n += int64(nw)
		}
		switch {
		case nr == len(buf) && large == nil:
			large = b.get()
		case nr < len(buf) && large != nil:
			b.pool.Put(large)
			large = nil
		}
		switch {
		case werr != nil:
			return n, werr
		case rerr == io.EOF:
			return n, nil
		case rerr != nil:
			return n, rerr
		}
	}
}

// activity is a reader that notes the time of each read that brings bytes.
type activity struct {
	r    io.Reader
	last *atomic.Int64
}

func (a activity) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if n > 0 {
		a.last.Store(time.Now().UnixNano())
	}
	return n, err
}
