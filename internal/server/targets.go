package server

import (
	"context"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/mptunnel/mptunnel/internal/session"
	"github.com/mptunnel/mptunnel/internal/status"
	"github.com/mptunnel/mptunnel/internal/udpio"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// Bounds on flows whose target's name is being resolved.
const (
	maxResolving = 64                     // names resolved at once, server-wide
	resolveLimit = 5 * time.Second        // the longest one lookup may take
	maxWaiting   = 16                     // datagrams a flow holds meanwhile
	waitBytes    = 64 << 10               // and their bytes
	retell       = 200 * time.Millisecond // least time between two MsgFlow for one flow
)

// statusPending is a flow's status before its fate is known.
const statusPending = 0xff

// openFlow starts flow f of ss toward tg (nil: the default target): at once
// for an address, after a lookup for a name. The caller holds ss.flowMu.
func (s *Server) openFlow(ss *sess, f *flow, tg *wire.Target) {
	f.status.Store(statusPending)
	switch {
	case tg == nil && s.target.IsValid():
		f.name = s.target.String()
	case tg == nil:
		f.name = "(no default target)"
	default:
		f.name = tg.String()
	}
	f.ts = s.targetStats(f.name)
	switch {
	case tg == nil:
		if !s.target.IsValid() {
			s.refuse(f, wire.FlowNoTarget)
			return
		}
		s.dial(f, s.target, false)
	case tg.Name != "":
		if !s.portAllowed(ss.lin, tg.Port) {
			s.refuse(f, wire.FlowNotAllowed)
			return
		}
		select {
		case s.resolving <- struct{}{}:
		default:
			s.warn.Warn("resolving", "flow refused: too many target names being resolved at once", "target", f.name, "limit", maxResolving)
			s.refuse(f, wire.FlowFailed)
			return
		}
		s.wg.Go(func() {
			defer func() { <-s.resolving }()
			s.resolveFlow(ss.lin, f, *tg)
		})
	default:
		dst := netip.AddrPortFrom(tg.Addr, tg.Port)
		if !s.allowed(ss.lin, "", dst) {
			s.refuse(f, wire.FlowNotAllowed)
			return
		}
		s.dial(f, dst, true)
	}
}

// allowed reports whether a flow may go to dst, named name by the client
// ("" for an address): the default target always, others by the rules.
// The rules are those of the client of lineage lin.
func (s *Server) allowed(lin *lineage, name string, dst netip.AddrPort) bool {
	return dst == s.target || s.rulesOf(lin).Allows(name, dst.Addr(), dst.Port())
}

// portAllowed reports whether any target on port may be allowed, so that
// a name is looked up only when its answer could be.
func (s *Server) portAllowed(lin *lineage, port uint16) bool {
	if s.target.IsValid() && s.target.Port() == port {
		return true
	}
	for _, r := range s.rulesOf(lin) {
		if port >= r.Lo && port <= r.Hi {
			return true
		}
	}
	return false
}

// resolveFlow looks up the name of f's target and opens f toward the first
// of its addresses the rules of lin's client allow.
func (s *Server) resolveFlow(lin *lineage, f *flow, tg wire.Target) {
	ctx, cancel := context.WithTimeout(s.ctx, resolveLimit)
	defer cancel()
	addrs, err := s.cfg.Resolver.LookupNetIP(ctx, "ip", tg.Name)
	if err != nil || len(addrs) == 0 {
		s.warn.Warn("resolve", "flow refused: the target's name does not resolve", "target", f.name, "err", err)
		s.refuse(f, wire.FlowNoName)
		return
	}
	// IPv4 first: most targets listen there, and UDP has no happy eyeballs.
	slices.SortStableFunc(addrs, func(a, b netip.Addr) int { return cmpBool(b.Unmap().Is4(), a.Unmap().Is4()) })
	for _, a := range addrs {
		dst := netip.AddrPortFrom(a.Unmap(), tg.Port)
		if s.allowed(lin, tg.Name, dst) {
			s.dial(f, dst, true)
			return
		}
	}
	s.refuse(f, wire.FlowNotAllowed)
}

// dial opens f's socket to dst, hands it what waited, starts its reply
// loop and, when tell, tells the client the flow is open.
func (s *Server) dial(f *flow, dst netip.AddrPort, tell bool) {
	conn, err := s.cfg.Net.Dial(dst)
	if err != nil {
		s.cnt.SendErrors.Add(1)
		s.warn.Warn("target-dial", "cannot open a socket to the target", "target", f.name, "err", err)
		s.refuse(f, wire.FlowFailed)
		return
	}
	f.waitMu.Lock()
	if f.closed {
		f.waitMu.Unlock()
		conn.Close()
		return
	}
	f.conn = conn
	f.status.Store(wire.FlowOK)
	f.ready.Store(true)
	if len(f.wait) > 0 {
		msgs := make([]udpio.Msg, len(f.wait))
		for i, d := range f.wait {
			msgs[i].Buf = d
		}
		s.writeTarget(f, msgs)
		f.wait = nil
	}
	f.waitMu.Unlock()
	if ss := f.s.Load(); ss != nil {
		s.log.Debug("flow open", "session", status.SessionID(ss.index), "flow", f.id, "target", f.name, "local", conn.LocalAddr().String())
	}
	s.wg.Go(func() { s.flowLoop(f) })
	if tell {
		s.tellFlowNow(f)
	}
}

// refuse marks f refused for why, logs it and tells the client.
func (s *Server) refuse(f *flow, why byte) {
	f.status.Store(uint32(why))
	f.waitMu.Lock()
	f.wait = nil
	f.waitMu.Unlock()
	s.warn.Warn("refused", "flow refused", "target", f.name, "why", wire.FlowFate(why))
	s.tellFlowNow(f)
}

// usable reports whether datagram d can go to f's socket now. A flow whose
// target's name is being resolved keeps a copy, a few at most; a refused
// flow drops it. Both count what they drop.
func (s *Server) usable(f *flow, d []byte) bool {
	if f.ready.Load() {
		return true
	}
	f.waitMu.Lock()
	defer f.waitMu.Unlock()
	if f.ready.Load() {
		// Opened meanwhile: it goes after what waited.
		s.writeTarget(f, []udpio.Msg{{Buf: d}})
		return false
	}
	if f.status.Load() != statusPending {
		s.cnt.TargetRefused.Add(1)
		f.ts.refused.Add(1)
		s.ackFlow(f, time.Now()) // in case the client missed it
		return false
	}
	held := 0
	for _, w := range f.wait {
		held += len(w)
	}
	if len(f.wait) >= maxWaiting || held+len(d) > waitBytes {
		s.cnt.TargetRefused.Add(1)
		return false
	}
	f.wait = append(f.wait, append([]byte(nil), d...))
	return false
}

// ackFlow tells the client f's fate again when it names the target once
// more (it has not heard yet), at most every retell.
func (s *Server) ackFlow(f *flow, now time.Time) {
	if f.status.Load() == statusPending || now.UnixNano()-f.statusAt.Load() < int64(retell) {
		return
	}
	s.tellFlowNow(f)
}

// tellFlowNow tells the client f's fate now.
func (s *Server) tellFlowNow(f *flow) {
	ss := f.s.Load()
	if ss == nil {
		return
	}
	f.statusAt.Store(time.Now().UnixNano())
	s.tellFlow(ss, f.id, byte(f.status.Load()))
}

// tellFlow sends a MsgFlow for flow id on every path of ss.
func (s *Server) tellFlow(ss *sess, id uint32, status byte) {
	buf := make([]byte, wire.HeaderLen+wire.FlowMsgLen+wire.TagLen)
	wire.PutFlow(buf[wire.HeaderLen:], id, status)
	var nonce session.Nonce
	pkt, err := ss.st.Seal(buf, wire.FlowMsgLen, &nonce)
	if err != nil {
		return
	}
	for _, p := range *ss.paths.Load() {
		s.w.SendPath(p, pkt)
	}
}

// close frees f's socket, if it has one, and what waited.
func (f *flow) close() {
	f.waitMu.Lock()
	defer f.waitMu.Unlock()
	f.closed = true
	f.wait = nil
	if f.conn != nil {
		f.conn.Close()
	}
}

// targetStats counts one target's datagrams for status.
type targetStats struct {
	tx, rx, refused atomic.Uint64
}

// maxTargetStats bounds the targets counted apart; the others share one
// entry.
const maxTargetStats = 1024

// targetStats returns the counters of target name.
func (s *Server) targetStats(name string) *targetStats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	if s.byTarget == nil {
		s.byTarget = make(map[string]*targetStats)
	}
	if ts := s.byTarget[name]; ts != nil {
		return ts
	}
	if len(s.byTarget) >= maxTargetStats {
		name = "other"
		if ts := s.byTarget[name]; ts != nil {
			return ts
		}
	}
	ts := new(targetStats)
	s.byTarget[name] = ts
	return ts
}

// cmpBool orders false before true.
func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}
