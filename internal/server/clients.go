package server

import (
	"errors"
	"fmt"
	"time"

	"github.com/mptunnel/mptunnel/internal/allow"
	"github.com/mptunnel/mptunnel/internal/cookie"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/reset"
	"github.com/mptunnel/mptunnel/internal/status"
)

// Client is one named client of a server with identities: it is let in by
// its public key (an identity handshake), with its own rules.
type Client struct {
	Name   string
	Public handshake.PublicKey
	// Allow, when not empty, replaces the server's Allow rules for this
	// client's flows and streams (the default target stays).
	Allow []string
	// MaxSessions bounds the client's sessions at once (with the ones
	// their rekeys made, as MaxSessionsPerAddr does for an address);
	// MaxSessionsPerAddr when 0.
	MaxSessions int
	// RekeyMin, when longer than the server's 100 ms, is the least time
	// between a session's start or rekey and its next rekey, for the
	// client's sessions: sooner ones are refused (handshake_rate_limited).
	RekeyMin time.Duration
	// Disabled keeps the client out without removing it.
	Disabled bool
}

// client is a Client as the server holds it: its rules parsed.
type client struct {
	Client
	rules allow.Rules // nil: the server's
}

// clientList is the server's clients by public key; replaced whole.
type clientList map[handshake.PublicKey]*client

func newClientList(cs []Client, defaultMax int) (clientList, error) {
	l := make(clientList, len(cs))
	names := make(map[string]bool, len(cs))
	for _, c := range cs {
		if c.Name == "" {
			return nil, errors.New("server: a client has no name")
		}
		if names[c.Name] {
			return nil, fmt.Errorf("server: client %q is listed twice", c.Name)
		}
		if other, dup := l[c.Public]; dup {
			return nil, fmt.Errorf("server: clients %q and %q have the same public key", other.Name, c.Name)
		}
		names[c.Name] = true
		e := &client{Client: c}
		if len(c.Allow) > 0 {
			r, err := allow.ParseAll(c.Allow)
			if err != nil {
				return nil, fmt.Errorf("server: client %q: %w", c.Name, err)
			}
			e.rules = r
		}
		if e.MaxSessions <= 0 {
			e.MaxSessions = defaultMax
		}
		l[c.Public] = e
	}
	return l, nil
}

// setupIdentity readies identity handshakes for a server with a private key.
func (s *Server) setupIdentity() error {
	cfg := s.cfg
	if cfg.AllowShared && cfg.Key.IsZero() {
		// Shared-key handshakes need a shared key: with none, anyone who
		// knows the server's public key could make one.
		return errors.New("server: taking shared-key clients beside the client list needs a shared key")
	}
	l, err := newClientList(cfg.Clients, cfg.MaxSessionsPerAddr)
	if err != nil {
		return err
	}
	s.clients.Store(&l)
	s.resetKey.Store(reset.NewServerKey(*cfg.Private))
	s.resp.IdentityOnly = !cfg.AllowShared
	s.resp.ResetToken = func(idx uint32) [handshake.ResetTokenLen]byte { return s.resetKey.Load().Token(idx) }
	s.resp.SetIdentity(*cfg.Private, s.authorize)
	return nil
}

// authorize lets in the listed clients that are not disabled.
func (s *Server) authorize(pub handshake.PublicKey) error {
	if l := s.clients.Load(); l != nil {
		if c := (*l)[pub]; c != nil && !c.Disabled {
			return nil
		}
	}
	return handshake.ErrUnknownPeer
}

// clientOf returns the listed client with public key pub, or nil.
func (s *Server) clientOf(pub handshake.PublicKey) *client {
	if l := s.clients.Load(); l != nil {
		return (*l)[pub]
	}
	return nil
}

// SetClients replaces the server's client list (a reload): the sessions of
// a client removed, disabled, renamed or given another key end at once; the
// others go on, under their client's new rules and limits.
func (s *Server) SetClients(cs []Client) error {
	if s.cfg.Private == nil {
		return errors.New("server: a client list needs the server's private key")
	}
	l, err := newClientList(cs, s.cfg.MaxSessionsPerAddr)
	if err != nil {
		return err
	}
	s.clients.Store(&l)
	s.mu.Lock()
	defer s.mu.Unlock()
	ended := make(map[string]int)
	for id, ss := range s.sessions {
		lin := ss.lin
		if lin == nil || lin.client.Load() == nil {
			continue
		}
		old := lin.client.Load()
		c := l[old.Public]
		if c == nil || c.Disabled || c.Name != old.Name {
			// A client renamed is counted and named anew: its sessions
			// end too, and it makes new ones under its new name.
			ended[old.Name]++
			s.closeSessionLocked(id, ss)
			continue
		}
		lin.client.Store(c)
	}
	for name, n := range ended {
		s.log.Info("client's sessions ended: removed, disabled or renamed", "client", name, "sessions", n)
	}
	return nil
}

// rulesOf returns the rules for the flows of lineage lin.
func (s *Server) rulesOf(lin *lineage) allow.Rules {
	if lin != nil {
		if c := lin.client.Load(); c != nil && c.rules != nil {
			return c.rules
		}
	}
	return s.rules
}

// rekeyGap is the least time between two rekeys of lineage lin.
func (lin *lineage) rekeyGap() time.Duration {
	if c := lin.client.Load(); c != nil && c.RekeyMin > minRekeyGap {
		return c.RekeyMin
	}
	return minRekeyGap
}

// clientName returns the name of the client of lineage lin, "" for a
// shared-key one.
func (lin *lineage) clientName() string {
	if lin == nil {
		return ""
	}
	if c := lin.client.Load(); c != nil {
		return c.Name
	}
	return ""
}

// admitClientLocked returns the listed client with public key pub if it
// may open one more session, else nil, counting and logging why; the caller
// holds s.mu.
func (s *Server) admitClientLocked(pub handshake.PublicKey) *client {
	c := s.clientOf(pub)
	if c == nil || c.Disabled {
		s.cnt.HandshakeUnknown.Add(1) // removed since its handshake began
		return nil
	}
	if s.byClient[c.Name] >= c.MaxSessions {
		s.cnt.SessionLimit.Add(1)
		s.warn.Warn("sessions-client", "session refused: this client has as many sessions as it may", "client", c.Name, "limit", c.MaxSessions)
		return nil
	}
	return c
}

// mac1Key is the key initiations' mac1 (and cookie replies) are made with
// for shared key k: k itself, or, for a server with identities and no
// shared key (the zero Key), the server's public key, as in WireGuard.
func (s *Server) mac1Key(k handshake.Key) [32]byte {
	if k.IsZero() && s.cfg.Private != nil {
		return s.cfg.Private.Public()
	}
	return k
}

// pskOf returns the shared key whose mac1 key the cookie checker matched.
func (s *Server) pskOf(k cookie.Key) handshake.Key {
	if l := *s.psks.Load(); int(k) >= 0 && int(k) < len(l) {
		return l[k]
	}
	return handshake.Key{}
}

// who is the log attributes naming session ss: its ID and, with
// identities, its client's name.
func (ss *sess) who() []any {
	if n := ss.lin.clientName(); n != "" {
		return []any{"session", status.SessionID(ss.index), "client", n}
	}
	return []any{"session", status.SessionID(ss.index)}
}
