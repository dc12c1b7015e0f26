package client

import (
	"time"

	"github.com/mptunnel/mptunnel/internal/status"
)

// targets returns each front's flows and traffic; the SOCKS5 front's
// associations count as one.
func (c *Client) targets() []status.Target {
	flows := make(map[*frontStats]int)
	c.flowMu.RLock()
	for k := range c.byPeer {
		flows[k.fr.stats]++
	}
	c.flowMu.RUnlock()
	entry := func(name, target string, s *frontStats) status.Target {
		return status.Target{Name: name, Target: target, Flows: flows[s], TxDatagrams: s.tx.Load(), RxDatagrams: s.rx.Load(), Refused: s.refused.Load()}
	}
	out := []status.Target{}
	for _, fr := range c.fronts {
		to := ""
		if fr.target.Valid() {
			to = fr.target.String()
		}
		out = append(out, entry(fr.conn.LocalAddr().String(), to, fr.stats))
	}
	if c.socks != nil {
		e := entry("socks "+c.socks.ln.Addr().String(), "*", &c.socks.stats)
		e.Streams = c.socks.streams.Status()
		out = append(out, e)
	}
	for _, tf := range c.tcpForwards {
		out = append(out, status.Target{Name: "tcp:" + tf.ln.Addr().String(), Target: tf.target.String(), Streams: tf.streams.Status()})
	}
	return out
}

// Status returns the client's state for the status socket.
func (c *Client) Status(version string, started time.Time) status.Status {
	st := status.NewStatus("client", version, started, c.cnt.Snapshot().Map())
	st.Targets = c.targets()
	s := c.sess.Load()
	if s == nil {
		return st
	}
	c.flowMu.RLock()
	flows := len(c.byID)
	c.flowMu.RUnlock()
	sess := status.Session{ID: status.SessionID(s.PeerIndex), Mode: c.cfg.Mode.String(), Cipher: s.Cipher.String(), Flows: flows}
	for _, p := range c.pathList() {
		sess.Paths = append(sess.Paths, p.Status(p.Addr().String(), p.Conn().LocalAddr().String()))
	}
	sess.SetShares()
	st.Sessions = append(st.Sessions, sess)
	return st
}
