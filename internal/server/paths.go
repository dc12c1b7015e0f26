package server

import (
	"context"
	"net/netip"
	"time"

	"github.com/mptunnel/mptunnel/internal/control"
	pathpkg "github.com/mptunnel/mptunnel/internal/path"
	"github.com/mptunnel/mptunnel/internal/sched"
	"github.com/mptunnel/mptunnel/internal/session"
	"github.com/mptunnel/mptunnel/internal/udpio"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// pathByAddr returns the path whose packets now come from addr, or nil.
func (ss *sess) pathByAddr(addr netip.AddrPort) *path {
	for _, p := range *ss.paths.Load() {
		if *p.addr.Load() == addr {
			return p
		}
	}
	return nil
}

// probed returns the path with the client's ID id after an authentic probe
// or probe reply (m) for it, sealed with counter ctr, arrived from addr, or
// nil when the packet must be ignored. Only authenticated packets reach here,
// so nothing unauthenticated can make or move a path.
//
// A path is made on first sight and is used for replies at once only while
// the session has no proven path. A path proves its address when an
// authentic probe reply comes from it: the client received our probe there.
// A path follows the client to a new address (NAT rebinding, a bridge
// restarted on another port) only when a packet newer than every packet
// accepted on it came from there, and only once the new address has proven
// itself by answering a probe sent to it (docs/PROTOCOL.md). So a packet held
// back by someone on the path and sent later from another address moves
// nothing, and reflects at most one probe-sized packet (a challenge) a probe
// interval. It returns nil too when the session has all the paths it may have.
func (s *Server) probed(ss *sess, m *wire.Message, ctr uint64, addr netip.AddrPort, now time.Time, sl *session.Sealer) *path {
	id := m.Probe.Path
	ss.pathMu.Lock()
	defer ss.pathMu.Unlock()
	old := *ss.paths.Load()
	for _, p := range old {
		if p.ID != id {
			continue
		}
		if *p.addr.Load() == addr {
			return p
		}
		if m.Kind == wire.MsgProbeReply && p.cand == addr && m.Probe.Seq == p.candSeq && !p.candAt.IsZero() {
			// The new address answered our challenge: move there.
			prev := *p.addr.Load()
			p.addr.Store(&addr)
			p.newest = ctr + 1
			p.cand, p.candAt = netip.AddrPort{}, time.Time{}
			p.proven.Store(true)
			s.log.Info("path moved", "session", control.SessionID(ss.index), "path", id, "from", prev.String(), "to", addr.String())
			return p
		}
		if ctr < p.newest {
			// Older than what the path's own address sent: held back
			// and replayed from elsewhere, or a late copy.
			s.cnt.PathMoves.Add(1)
			s.warn.Warn("path-move", "path move refused: the packet is older than the path's latest", "session", control.SessionID(ss.index), "path", id, "to", addr.String())
			return nil
		}
		if p.cand != addr || now.Sub(p.candAt) >= s.cfg.ProbeInterval {
			// Ask the new address to prove itself, once a probe interval.
			p.cand, p.candAt = addr, now
			pr := p.Probe(now)
			p.candSeq = pr.Seq
			s.challenge(ss, p, pr, addr, sl)
		}
		return nil
	}
	if len(old) >= s.cfg.MaxPaths {
		s.warn.Warn("paths", "path refused: path limit reached", "session", control.SessionID(ss.index), "limit", s.cfg.MaxPaths)
		return nil
	}
	p := &path{Link: pathpkg.NewLink(id, pathpkg.Params{ProbeInterval: s.cfg.ProbeInterval}, now)}
	p.addr.Store(&addr)
	p.local.Store(&netip.Addr{})
	p.newest = ctr + 1
	next := append(append(make([]*path, 0, len(old)+1), old...), p)
	ss.paths.Store(&next)
	if a := addr.Addr(); a.Is6() && !a.Is4In6() {
		ss.v6.Store(true)
	}
	s.log.Info("path new", "session", control.SessionID(ss.index), "path", id, "addr", addr.String())
	if m.Kind == wire.MsgProbe {
		// Prove the address at once rather than at the next probe round.
		s.challenge(ss, p, p.Probe(now), addr, sl)
	}
	return p
}

// challenge sends path p's probe pr to addr, which has not proven itself yet.
func (s *Server) challenge(ss *sess, p *path, pr wire.Probe, addr netip.AddrPort, sl *session.Sealer) {
	if pkt, err := sl.SealProbe(ss.st, wire.MsgProbe, pr); err == nil {
		p.CountTx(len(pkt))
		s.send(pkt, addr, *p.local.Load())
	}
}

// setLocal records that path p's packets reach us at local, so that what we
// send on p leaves from that address.
func (s *Server) setLocal(p *path, local netip.Addr) {
	if !local.IsValid() || *p.local.Load() == local {
		return
	}
	p.local.Store(&local)
}

// sendPath sends pkt on path p and counts it there.
func (s *Server) sendPath(pkt []byte, p *path) {
	p.CountTx(len(pkt))
	s.send(pkt, *p.addr.Load(), *p.local.Load())
}

// sendAll sends pkts on the paths the session's mode picks for each, all in
// one batch. out is the caller's scratch, returned for reuse.
func (s *Server) sendAll(ss *sess, pkts [][]byte, out []udpio.Msg, all bool) []udpio.Msg {
	out = out[:0]
	now := time.Now()
	last := ss.lastData.Load()
	ss.schedMu.Lock()
	paths := ss.provenPaths()
	ss.spaths = ss.spaths[:0]
	for _, p := range paths {
		sp := sched.FromStats(p.Stats(), p.Suspect(now))
		sp.Priority = int(p.ID) // the client's order
		sp.Preferred = p == last
		ss.spaths = append(ss.spaths, sp)
	}
	for len(ss.per) < len(paths) {
		ss.per = append(ss.per, nil)
	}
	var per [][]int
	if all {
		per = sched.SpreadAll(ss.spaths, len(pkts), ss.per[:len(paths)])
	} else {
		per = ss.sched.Spread(ss.spaths, len(pkts), now, ss.per[:len(paths)])
	}
	for i, p := range paths {
		if len(per[i]) == 0 {
			continue
		}
		to, local := *p.addr.Load(), *p.local.Load()
		var bytes int
		for _, k := range per[i] {
			out = append(out, udpio.Msg{Buf: pkts[k], Addr: to, Local: local})
			bytes += len(pkts[k])
		}
		p.CountTxBatch(len(per[i]), bytes)
	}
	ss.schedMu.Unlock()
	s.write(out)
	return out
}

// provenPaths returns the session's paths that have proven their address,
// or all of them while none has (the first round trip of a session). The
// caller holds ss.schedMu: the list is ss.proven, reused.
func (ss *sess) provenPaths() []*path {
	all := *ss.paths.Load()
	ss.proven = ss.proven[:0]
	for _, p := range all {
		if p.proven.Load() {
			ss.proven = append(ss.proven, p)
		}
	}
	if len(ss.proven) == 0 {
		return all
	}
	return ss.proven
}

// prober probes every path of every session and runs their state machines.
// fastProbes is how many times a probe interval failover probes the path it
// sends on.
const fastProbes = 5

func (s *Server) prober(ctx context.Context) {
	// Ticks come five times a probe interval: failover sessions probe the
	// path carrying their data at each, every path is probed when due.
	t := time.NewTicker(s.cfg.ProbeInterval / fastProbes)
	defer t.Stop()
	sl := session.NewSealer()
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
				failover := ss.sched.Mode() == sched.Failover
				for _, p := range *ss.paths.Load() {
					if failover && p.TxPackets.Load() != p.fastTx {
						if pkt, err := sl.SealProbe(ss.st, wire.MsgProbe, p.Probe(now)); err == nil {
							s.sendPath(pkt, p)
						}
					}
				}
				if tick%fastProbes != 0 {
					for _, p := range *ss.paths.Load() {
						p.fastTx = p.TxPackets.Load()
					}
					continue
				}
				for _, p := range *ss.paths.Load() {
					if p.ProbeDue(now) {
						if pkt, err := sl.SealProbe(ss.st, wire.MsgProbe, p.Probe(now)); err == nil {
							s.sendPath(pkt, p)
						}
					}
					if changed, from, to, reason := p.Tick(now); changed {
						s.log.Info("path state", "session", control.SessionID(ss.index), "path", p.ID, "addr", p.addr.Load().String(), "from", from.String(), "to", to.String(), "reason", reason)
					}
					p.fastTx = p.TxPackets.Load()
				}
			}
		}
	}
}
