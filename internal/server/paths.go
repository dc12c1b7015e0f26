package server

import (
	"context"
	"net/netip"
	"time"

	"github.com/mptunnel/mptunnel/internal/peer"
	"github.com/mptunnel/mptunnel/internal/sched"
	"github.com/mptunnel/mptunnel/internal/session"
	"github.com/mptunnel/mptunnel/internal/status"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// pathByAddr returns the path whose packets now come from addr, or nil.
func (ss *sess) pathByAddr(addr netip.AddrPort) *peer.Path {
	for _, p := range *ss.paths.Load() {
		if p.Addr() == addr {
			return p
		}
	}
	return nil
}

// probed returns the path with the client's ID that the authentic probe or
// probe reply m, sealed with counter ctr, names after it arrived from addr,
// or nil when the packet must be ignored. Only authenticated packets reach
// here, so nothing unauthenticated can make or move a path.
//
// A path is made on first sight, and carries replies once it has proven its
// address (peer.Spreader). A known path follows the client to a new address
// (NAT rebinding, a bridge restarted on another port) only as peer.Path's
// Follow allows: a newer packet from there, then an answer to the challenge
// sent there. It returns nil too when the session has all the paths it may
// have.
func (s *Server) probed(ss *sess, m wire.Message, ctr uint64, addr netip.AddrPort, now time.Time, sl *session.Sealer) *peer.Path {
	id := m.Probe.Path
	ss.pathMu.Lock()
	defer ss.pathMu.Unlock()
	old := *ss.paths.Load()
	for _, p := range old {
		if p.ID != id {
			continue
		}
		if p.Addr() == addr {
			return p
		}
		prev := p.Addr()
		moved, refused, challenge := p.Follow(m, ctr, addr, s.cfg.ProbeInterval, now)
		switch {
		case moved:
			s.log.Info("path moved", append(ss.who(), "path", id, "from", prev.String(), "to", addr.String())...)
			return p
		case refused:
			// Older than what the path's own address sent: held back
			// and replayed from elsewhere, or a late copy.
			s.cnt.PathMoveRefused.Add(1)
			s.warn.Warn("path-move", "path move refused: the packet is older than the path's latest", "session", status.SessionID(ss.index), "path", id, "to", addr.String())
		case challenge != nil:
			s.challenge(ss, p, *challenge, addr, sl)
		}
		return nil
	}
	if len(old) >= s.cfg.MaxPaths {
		s.warn.Warn("paths", "path refused: path limit reached", "session", status.SessionID(ss.index), "limit", s.cfg.MaxPaths)
		return nil
	}
	p := peer.NewPath(id, "", s.conn, addr, s.cfg.ProbeInterval, now)
	next := append(append(make([]*peer.Path, 0, len(old)+1), old...), p)
	ss.paths.Store(&next)
	if a := addr.Addr(); a.Is6() && !a.Is4In6() {
		ss.v6.Store(true)
	}
	s.log.Info("path new", append(ss.who(), "path", id, "addr", addr.String())...)
	if m.Kind == wire.MsgProbe {
		// Prove the address at once rather than at the next probe round.
		s.challenge(ss, p, p.Probe(now), addr, sl)
	}
	return p
}

// challenge sends path p's probe pr to addr, which has not proven itself yet.
func (s *Server) challenge(ss *sess, p *peer.Path, pr wire.Probe, addr netip.AddrPort, sl *session.Sealer) {
	if pkt, err := sl.SealProbe(ss.st, wire.MsgProbe, pr); err == nil {
		p.CountTx(len(pkt))
		s.send(pkt, addr, p.Local())
	}
}

// prober probes every path of every session and runs their state machines:
// its ticks come peer.FastProbes times a probe interval; failover sessions
// probe the paths carrying their data at each, every path is probed when due
// at every FastProbes-th.
func (s *Server) prober(ctx context.Context) {
	t := time.NewTicker(s.cfg.ProbeInterval / peer.FastProbes)
	defer t.Stop()
	pr := peer.NewProber(s.w, s.log)
	var list []*sess
	for tick := 0; ; tick++ {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			list = list[:0]
			s.mu.RLock()
			for _, ss := range s.sessions {
				list = append(list, ss)
			}
			s.mu.RUnlock()
			for _, ss := range list {
				if ss.pred.Load() != nil || ss.retireAt.Load() != 0 {
					// A rekey's session the client has not used yet (it
					// may never have it), or one a rekey replaced.
					continue
				}
				paths := *ss.paths.Load()
				switch {
				case tick%peer.FastProbes == 0:
					pr.Round(ss.st, paths, false, now, "session", status.SessionID(ss.index))
				case ss.spread.Mode() == sched.Failover:
					pr.Fast(ss.st, paths, now)
				default:
					pr.Fast(nil, paths, now)
				}
			}
		}
	}
}
