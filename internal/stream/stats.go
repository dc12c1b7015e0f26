package stream

import (
	"sync/atomic"

	"github.com/mptunnel/mptunnel/internal/status"
)

// ReasonName names a reply code for status output and metrics.
func ReasonName(code byte) string {
	switch code {
	case OK:
		return "ok"
	case NotAllowed:
		return "not_allowed"
	case NoName:
		return "no_name"
	case Refused:
		return "refused"
	case TimedOut:
		return "timed_out"
	case Unreachable:
		return "unreachable"
	case TooManyStreams:
		return "too_many_streams"
	}
	return "failed"
}

// Stats counts the streams of one front or target. Its zero value is
// ready; it is safe for concurrent use.
type Stats struct {
	open, opened       atomic.Int64
	refused            [TooManyStreams + 1]atomic.Uint64
	bytesUp, bytesDown atomic.Uint64
}

// Begin counts a stream the server answered with code: open when OK,
// refused otherwise.
func (s *Stats) Begin(code byte) {
	if code == OK {
		s.open.Add(1)
		s.opened.Add(1)
		return
	}
	s.refused[min(code, TooManyStreams)].Add(1)
}

// End counts the end of an open stream and the bytes it carried: up is
// client to server.
func (s *Stats) End(up, down int64) {
	s.open.Add(-1)
	s.bytesUp.Add(uint64(up))
	s.bytesDown.Add(uint64(down))
}

// Status returns the counts for status output, nil when no stream was ever
// answered.
func (s *Stats) Status() *status.Streams {
	out := &status.Streams{Open: int(s.open.Load()), Opened: uint64(s.opened.Load()), BytesUp: s.bytesUp.Load(), BytesDown: s.bytesDown.Load()}
	for code := range s.refused {
		if n := s.refused[code].Load(); n > 0 {
			if out.Refused == nil {
				out.Refused = map[string]uint64{}
			}
			out.Refused[ReasonName(byte(code))] = n
		}
	}
	if out.Opened == 0 && out.Refused == nil {
		return nil
	}
	return out
}
