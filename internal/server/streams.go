package server

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mptunnel/mptunnel/internal/allow"
	"github.com/mptunnel/mptunnel/internal/session"
	"github.com/mptunnel/mptunnel/internal/stream"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// streams is a lineage's stream server (internal/stream): made when the
// client's first stream packet comes, kept across rekeys, closed with the
// lineage's last session.
type streams struct {
	secret [32]byte             // from the lineage's first session's keys
	cur    atomic.Pointer[sess] // the session that seals the server's packets

	mu     sync.Mutex
	srv    *stream.Server
	closed bool
	sl     *session.Sealer // the stream server's flusher's own
}

// streamIn hands a stream packet from ss's client to its lineage's stream
// server, starting it on the first.
func (s *Server) streamIn(ss *sess, p []byte) {
	lin := ss.lin
	h := lin.streams
	h.mu.Lock()
	if h.srv == nil && !h.closed {
		srv, err := stream.NewServer(h.secret, func(pkts [][]byte) { s.streamOut(h, pkts) }, stream.ServerConfig{
			PacketSize:  stream.PacketSize(wire.MaxPlaintext(s.cfg.MTU, ss.v6.Load())),
			MaxStreams:  s.cfg.MaxStreams,
			DialTimeout: s.cfg.DialTimeout,
			Hold:        func() time.Duration { return h.cur.Load().st.RepairHold() },
			Lookup: func(ctx context.Context, name string) ([]netip.Addr, error) {
				return s.cfg.Resolver.LookupNetIP(ctx, "ip", name)
			},
			Allowed: func(name string, addr netip.Addr, port uint16) bool {
				return s.rulesOf(lin).AllowsProto(allow.TCP, name, addr, port)
			},
			Log: s.log,
			Opened: func(tg wire.Target, code byte) {
				if code == stream.OK {
					s.cnt.StreamsOpened.Add(1)
				} else {
					s.cnt.StreamsRefused.Add(1)
				}
				s.streamStats(tg).Begin(code)
			},
			Done: func(tg wire.Target, up, down int64) {
				s.cnt.StreamBytesUp.Add(uint64(up))
				s.cnt.StreamBytesDown.Add(uint64(down))
				s.streamStats(tg).End(up, down)
			},
		})
		if err != nil {
			s.log.Error("streams", "err", err)
			h.closed = true
		}
		h.srv = srv
	}
	srv := h.srv
	h.mu.Unlock()
	if srv != nil {
		srv.Deliver(p)
	}
}

// streamOut seals a run of packets of h's QUIC connection under the
// lineage's current session and puts them on its paths, in one write a
// path. The stream server's one flusher goroutine calls it.
func (s *Server) streamOut(h *streams, pkts [][]byte) {
	ss := h.cur.Load()
	if h.sl == nil {
		h.sl = session.NewSealer()
	}
	if out := h.sl.SealStreams(ss.st, pkts, wire.MaxPlaintext(s.cfg.MTU, ss.v6.Load())); len(out) > 0 {
		s.sendAll(ss, out, false)
	}
}

// closeStreams ends a lineage's streams (its last session closed).
func (h *streams) close() {
	h.mu.Lock()
	srv := h.srv
	h.closed = true
	h.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// maxStreamTargets bounds the TCP targets whose streams the status lists;
// beyond it, streams are counted under "tcp:*".
const maxStreamTargets = 1024

// streamStats returns the stream counts of TCP target tg.
func (s *Server) streamStats(tg wire.Target) *stream.Stats {
	name := "tcp:" + tg.String()
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	if s.byStream == nil {
		s.byStream = make(map[string]*stream.Stats)
	}
	st := s.byStream[name]
	if st == nil {
		if len(s.byStream) >= maxStreamTargets {
			name = "tcp:*"
			if st = s.byStream[name]; st != nil {
				return st
			}
		}
		st = new(stream.Stats)
		s.byStream[name] = st
	}
	return st
}
