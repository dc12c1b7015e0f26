// Package status is the status document of an mptunnel daemon: its
// sessions, paths, targets and counters (docs/STATUS.md), the JSON it is
// written as and the 80-column table and watch view `mptunnel status` prints.
// The socket that serves it is package control.
//
// The JSON field names are a stable interface: within major version 1 fields
// are only added, never renamed or removed, so readers must ignore fields they
// do not know. docs/STATUS.md describes every field.
package status

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"time"
)

// Status is the whole snapshot of one daemon.
type Status struct {
	// Role is "client" or "server".
	Role string `json:"role"`
	// Name is the daemon's instance name (--name, or one made of its
	// listen address); absent from daemons older than names.
	Name string `json:"name,omitempty"`
	// Version is the program version of the daemon.
	Version string `json:"version"`
	// Uptime is the time since the daemon started, in seconds.
	Uptime float64 `json:"uptime_s"`
	// Sessions lists the live sessions; never null on the wire.
	Sessions []Session `json:"sessions"`
	// Counters holds daemon-wide counters (drops by reason and the like)
	// by name.
	Counters map[string]uint64 `json:"counters,omitempty"`
	// Targets lists where flows go and their traffic: on a client, each
	// local address (the default one, each forward, the SOCKS5 front); on
	// a server, each target flows have reached. Never null on the wire.
	Targets []Target `json:"targets"`
}

// Target is one destination of flows and its traffic.
type Target struct {
	// Name is what the flows came by: on a client the local address (or
	// "socks ADDR"), on a server the target as clients named it.
	Name string `json:"name"`
	// Target is where they go: host:port, "" for the server's default
	// target, "*" for a SOCKS5 front (each datagram names its own).
	Target string `json:"target"`
	// Flows is the number of live flows.
	Flows int `json:"flows"`
	// TxDatagrams counts datagrams sent toward the target: into the tunnel
	// on a client, to the target on a server.
	TxDatagrams uint64 `json:"tx_datagrams"`
	// RxDatagrams counts the datagrams that came back.
	RxDatagrams uint64 `json:"rx_datagrams"`
	// Refused counts datagrams dropped because the server refused the flow.
	Refused uint64 `json:"refused"`
	// Streams are the TCP connections carried as streams (SOCKS5 CONNECT,
	// TCP forwards); absent where there were none.
	Streams *Streams `json:"streams,omitempty"`
}

// Streams counts TCP streams.
type Streams struct {
	Open   int    `json:"open"`   // carrying bytes now
	Opened uint64 `json:"opened"` // connected so far
	// Refused counts the streams refused, by reason: not_allowed, no_name,
	// refused, timed_out, unreachable, failed, too_many_streams.
	Refused   map[string]uint64 `json:"refused,omitempty"`
	BytesUp   uint64            `json:"bytes_up"`   // client to server
	BytesDown uint64            `json:"bytes_down"` // server to client
}

// Session is one tunnel session and its paths.
type Session struct {
	// ID is the session index as 8 lower-case hex digits.
	ID string `json:"id"`
	// Mode is the scheduling mode; "redundant" sends every packet on
	// every usable path.
	Mode string `json:"mode"`
	// Client is the name of the session's client, on a server with
	// identities (key pairs); empty for a shared-key session.
	Client string `json:"client,omitempty"`
	// Cipher is the transport cipher: "chacha20-poly1305" or
	// "aes-256-gcm".
	Cipher string `json:"cipher,omitempty"`
	// Flows is the number of inner flows (local peers) the session carries.
	Flows int `json:"flows"`
	// Paths lists the session's paths; never null on the wire.
	Paths []Path `json:"paths"`
}

// Path is one path of a session and its measurements.
type Path struct {
	// ID is the path's index in the client's path list (0-based), the same
	// on both ends.
	ID int `json:"id"`
	// Remote is the far end of the path, host:port.
	Remote string `json:"remote"`
	// Local is the near end of the path, host:port.
	Local string `json:"local"`
	// State is one of the Path* state constants.
	State string `json:"state"`
	// RTTms is the smoothed round-trip time in milliseconds; 0 if unknown.
	RTTms float64 `json:"rtt_ms"`
	// JitterMs is the round-trip time variation in milliseconds.
	JitterMs float64 `json:"jitter_ms"`
	// LossOut is the fraction (0..1) of packets sent on the path that
	// the far end did not receive.
	LossOut float64 `json:"loss_out"`
	// LossIn is the fraction (0..1) of packets the far end sent on the
	// path that did not arrive here.
	LossIn float64 `json:"loss_in"`
	// TxPackets and RxPackets count packets sent and received on the path.
	TxPackets uint64 `json:"tx_packets"`
	RxPackets uint64 `json:"rx_packets"`
	// TxBytes and RxBytes count bytes of UDP payload sent and received.
	TxBytes uint64 `json:"tx_bytes"`
	RxBytes uint64 `json:"rx_bytes"`
	// Duplicates counts packets received on this path that had already
	// arrived on another path (or earlier on this one) and were dropped.
	Duplicates uint64 `json:"duplicates"`
	// LastSeen is when a packet last arrived on the path, in the format of
	// FormatTime; empty if never.
	LastSeen string `json:"last_seen"`
	// Share is this path's part of the bytes the session sent on all its
	// paths, 0..1 (in redundant mode each live path carries everything, so
	// the shares are about equal).
	Share float64 `json:"share"`
}

// SetShares fills each path's Share from its TxBytes.
func (s *Session) SetShares() {
	var total uint64
	for _, p := range s.Paths {
		total += p.TxBytes
	}
	for i := range s.Paths {
		if total > 0 {
			s.Paths[i].Share = float64(s.Paths[i].TxBytes) / float64(total)
		}
	}
}

// Path states.
const (
	PathProbing  = "probing"
	PathUp       = "up"
	PathDegraded = "degraded"
	PathDown     = "down"
)

// Session modes.
const (
	ModeRedundant = "redundant"
)

// timeLayout is RFC 3339 with exactly three fractional digits.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// FormatTime formats t as Path.LastSeen wants it: RFC 3339 in UTC with
// milliseconds, e.g. "2024-05-01T12:00:00.123Z". The zero time gives "".
func FormatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeLayout)
}

// SessionID formats a session index as Session.ID wants it: 8 hex digits.
func SessionID(index uint32) string {
	return fmt.Sprintf("%08x", index)
}

// WriteJSON writes s to w as indented JSON followed by a newline, the output
// of `mptunnel status --json`.
func WriteJSON(w io.Writer, s Status) error {
	return writeIndented(w, normalize(s))
}

// writeIndented writes v to w as indented JSON followed by a newline.
func writeIndented(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding status: %w", err)
	}
	b = append(b, '\n')
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("writing status: %w", err)
	}
	return nil
}

// Daemon is one daemon `mptunnel status` found: its name, the socket it
// serves status on and the status itself.
type Daemon struct {
	// Name is the daemon's Status.Name, or for a daemon that sends none
	// its socket's file name without ".sock".
	Name string `json:"name"`
	// Socket is the path of the status socket.
	Socket string `json:"socket"`
	// Status is the daemon's status document.
	Status Status `json:"status"`
}

// WriteJSONList writes ds to w as an indented JSON array followed by a
// newline ("[]" when empty), the output of `mptunnel status --json` without
// --control.
func WriteJSONList(w io.Writer, ds []Daemon) error {
	list := make([]Daemon, len(ds))
	for i, d := range ds {
		d.Status = normalize(d.Status)
		list[i] = d
	}
	return writeIndented(w, list)
}

// Marshal encodes s compactly with a trailing newline, as the status socket
// sends it.
func Marshal(s Status) ([]byte, error) {
	b, err := json.Marshal(normalize(s))
	if err != nil {
		return nil, fmt.Errorf("encoding status: %w", err)
	}
	return append(b, '\n'), nil
}

// normalize returns a copy of s that encodes cleanly and predictably: nil
// slices become empty ones (so the JSON has [] rather than null) and
// non-finite numbers, which JSON cannot carry, become 0. The caller's slices
// are not modified.
func normalize(s Status) Status {
	s.Uptime = finite(s.Uptime)
	sessions := make([]Session, len(s.Sessions))
	for i, se := range s.Sessions {
		paths := make([]Path, len(se.Paths))
		for j, p := range se.Paths {
			p.RTTms = finite(p.RTTms)
			p.JitterMs = finite(p.JitterMs)
			p.LossOut = finite(p.LossOut)
			p.LossIn = finite(p.LossIn)
			paths[j] = p
		}
		se.Paths = paths
		sessions[i] = se
	}
	s.Sessions = sessions
	if s.Targets == nil {
		s.Targets = []Target{}
	}
	return s
}

func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}

// NewStatus starts a daemon's snapshot: its role, version, uptime since
// started and counters, with no sessions yet.
func NewStatus(role, version string, started time.Time, counters map[string]uint64) Status {
	return Status{
		Role:     role,
		Version:  version,
		Uptime:   time.Since(started).Seconds(),
		Sessions: []Session{},
		Targets:  []Target{},
		Counters: counters,
	}
}
