package client

import (
	"time"

	"github.com/mptunnel/mptunnel/internal/control"
)

// Status returns the client's state for the status socket.
func (c *Client) Status(version string, started time.Time) control.Status {
	st := control.NewStatus("client", version, started, c.cnt.Snapshot().Map())
	s := c.sess.Load()
	if s == nil {
		return st
	}
	c.flowMu.RLock()
	flows := len(c.byID)
	c.flowMu.RUnlock()
	sess := control.Session{ID: control.SessionID(s.PeerIndex), Mode: c.cfg.Mode.String(), Cipher: s.Cipher.String(), Flows: flows}
	for _, p := range c.pathList() {
		sess.Paths = append(sess.Paths, p.Status(p.remote.Load().String(), p.conn.LocalAddr().String()))
	}
	sess.SetShares()
	st.Sessions = append(st.Sessions, sess)
	return st
}
