package server

import (
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/mptunnel/mptunnel/internal/status"
)

// Status returns the server's state for the status socket.
func (s *Server) Status(version string, started time.Time) status.Status {
	st := status.NewStatus("server", version, started, s.cnt.Snapshot().Map())
	local := s.Addr().String()
	byName := make(map[string]int)
	s.mu.RLock()
	for _, ss := range s.sessions {
		ss.flowMu.Lock()
		flows := len(ss.flows)
		for _, f := range ss.flows {
			byName[f.name]++
		}
		ss.flowMu.Unlock()
		cs := status.Session{ID: status.SessionID(ss.index), Client: ss.lin.clientName(), Mode: ss.spread.Mode().String(), Cipher: ss.st.Cipher.String(), Flows: flows, Paths: []status.Path{}}
		for _, p := range *ss.paths.Load() {
			l := local
			if a := p.Local(); a.IsValid() {
				l = netip.AddrPortFrom(a, s.Addr().Port()).String()
			}
			cs.Paths = append(cs.Paths, p.Status(p.Addr().String(), l))
		}
		sort.Slice(cs.Paths, func(i, j int) bool { return cs.Paths[i].ID < cs.Paths[j].ID })
		cs.SetShares()
		st.Sessions = append(st.Sessions, cs)
	}
	s.mu.RUnlock()
	sort.Slice(st.Sessions, func(i, j int) bool { return st.Sessions[i].ID < st.Sessions[j].ID })
	s.statsMu.Lock()
	for name, ts := range s.byTarget {
		to := name
		if name == s.target.String() {
			to = ""
		}
		st.Targets = append(st.Targets, status.Target{Name: name, Target: to, Flows: byName[name],
			TxDatagrams: ts.tx.Load(), RxDatagrams: ts.rx.Load(), Refused: ts.refused.Load()})
	}
	for name, ss := range s.byStream {
		st.Targets = append(st.Targets, status.Target{Name: name, Target: strings.TrimPrefix(name, "tcp:"), Streams: ss.Status()})
	}
	s.statsMu.Unlock()
	sort.Slice(st.Targets, func(i, j int) bool { return st.Targets[i].Name < st.Targets[j].Name })
	return st
}
