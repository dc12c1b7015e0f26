// Package metrics holds the counters both tunnel ends keep: traffic, and every
// packet dropped, by the reason it was dropped. Counters are lock-free and
// safe for concurrent use; Snapshot reads them for status and exposition.
package metrics

import (
	"encoding/json"
	"sync/atomic"
)

// Counters counts one tunnel end's traffic and drops. The zero value is ready.
type Counters struct {
	TxPackets, TxBytes atomic.Uint64 // tunnel packets sent on paths (each copy counts)
	RxPackets, RxBytes atomic.Uint64 // tunnel packets received from paths

	Delivered     atomic.Uint64 // datagrams delivered to the application or target
	DeliveredBy   atomic.Uint64 // bytes of them
	Forwarded     atomic.Uint64 // datagrams taken from the application or target and sent
	Reassembled   atomic.Uint64 // datagrams put back together from fragments
	Duplicates    atomic.Uint64 // copies of packets already received (authenticated, but for those a server gets from no path's address)
	TooOld        atomic.Uint64 // packets behind the replay window (authenticated as Duplicates are)
	AuthFailed    atomic.Uint64 // transport packets that did not authenticate
	Malformed     atomic.Uint64 // packets whose layout is wrong (garbage, truncated)
	UnknownSess   atomic.Uint64 // transport packets for no session we know
	Oversize      atomic.Uint64 // datagrams larger than the tunnel carries
	FragEvicted   atomic.Uint64 // incomplete datagrams dropped for age or room
	NoSession     atomic.Uint64 // datagrams dropped because no session was up
	SendErrors    atomic.Uint64 // failed writes to a path, target or application
	QueueFull     atomic.Uint64 // datagrams dropped because a socket's send buffer was full
	TargetRefused atomic.Uint64 // datagrams dropped for a flow whose target was refused (or not yet open and too many waiting)
	HandshakeOK   atomic.Uint64 // handshakes completed
	Rekeys        atomic.Uint64 // sessions replaced by a rekey that kept their flows (server: when the new one is confirmed)
	HandshakeBad  atomic.Uint64 // handshake messages that did not authenticate
	HandshakeRply atomic.Uint64 // handshake initiations seen before (replays or copies from other paths)
	HandshakeOld  atomic.Uint64 // authentic initiations with a timestamp outside the window
	Cookies       atomic.Uint64 // server: cookie replies sent under load; client: cookies taken
	HandshakeRate atomic.Uint64 // initiations refused by the per-source rate limit under load
	SessionLimit  atomic.Uint64 // sessions refused for the session limit
	FlowLimit     atomic.Uint64 // flows refused for the flow limit
	SessionsGone  atomic.Uint64 // sessions freed (timeout or close)
	FlowsGone     atomic.Uint64 // flows freed
	FECParity     atomic.Uint64 // fec mode: parity packets sent
	FECRecovered  atomic.Uint64 // fec mode: datagrams rebuilt from parity
	FECLost       atomic.Uint64 // fec mode: datagrams neither received nor rebuilt
	PathMoves     atomic.Uint64 // authentic packets from a path's new address that did not move it (older than the path's latest)
}

// Snapshot is a copy of Counters at one moment, with the names used in
// status output.
type Snapshot struct {
	TxPackets       uint64 `json:"tx_packets"`
	TxBytes         uint64 `json:"tx_bytes"`
	RxPackets       uint64 `json:"rx_packets"`
	RxBytes         uint64 `json:"rx_bytes"`
	Delivered       uint64 `json:"delivered"`
	DeliveredBytes  uint64 `json:"delivered_bytes"`
	Forwarded       uint64 `json:"forwarded"`
	Reassembled     uint64 `json:"reassembled"`
	Duplicates      uint64 `json:"duplicates"`
	TooOld          uint64 `json:"too_old"`
	AuthFailed      uint64 `json:"auth_failed"`
	Malformed       uint64 `json:"malformed"`
	UnknownSession  uint64 `json:"unknown_session"`
	Oversize        uint64 `json:"oversize"`
	FragEvicted     uint64 `json:"fragments_evicted"`
	NoSession       uint64 `json:"no_session"`
	SendErrors      uint64 `json:"send_errors"`
	QueueFull       uint64 `json:"queue_full"`
	TargetRefused   uint64 `json:"target_refused"`
	HandshakeOK     uint64 `json:"handshakes"`
	Rekeys          uint64 `json:"rekeys"`
	HandshakeBad    uint64 `json:"handshake_bad"`
	HandshakeReplay uint64 `json:"handshake_replay"`
	HandshakeStale  uint64 `json:"handshake_stale"`
	Cookies         uint64 `json:"handshake_cookie"`
	HandshakeRate   uint64 `json:"handshake_rate_limited"`
	SessionLimit    uint64 `json:"session_limit"`
	FlowLimit       uint64 `json:"flow_limit"`
	SessionsFreed   uint64 `json:"sessions_freed"`
	FlowsFreed      uint64 `json:"flows_freed"`
	FECParity       uint64 `json:"fec_parity"`
	FECRecovered    uint64 `json:"fec_recovered"`
	FECLost         uint64 `json:"fec_unrecoverable"`
	PathMoveRefused uint64 `json:"path_move_refused"`
}

// Snapshot reads every counter.
func (c *Counters) Snapshot() Snapshot {
	return Snapshot{
		TxPackets: c.TxPackets.Load(), TxBytes: c.TxBytes.Load(),
		RxPackets: c.RxPackets.Load(), RxBytes: c.RxBytes.Load(),
		Delivered: c.Delivered.Load(), DeliveredBytes: c.DeliveredBy.Load(),
		Forwarded: c.Forwarded.Load(), Reassembled: c.Reassembled.Load(),
		Duplicates: c.Duplicates.Load(), TooOld: c.TooOld.Load(),
		AuthFailed: c.AuthFailed.Load(), Malformed: c.Malformed.Load(),
		UnknownSession: c.UnknownSess.Load(), Oversize: c.Oversize.Load(),
		FragEvicted: c.FragEvicted.Load(), NoSession: c.NoSession.Load(),
		SendErrors: c.SendErrors.Load(), QueueFull: c.QueueFull.Load(), TargetRefused: c.TargetRefused.Load(), HandshakeOK: c.HandshakeOK.Load(), Rekeys: c.Rekeys.Load(),
		HandshakeBad: c.HandshakeBad.Load(), HandshakeReplay: c.HandshakeRply.Load(),
		HandshakeStale: c.HandshakeOld.Load(), SessionLimit: c.SessionLimit.Load(),
		Cookies: c.Cookies.Load(), HandshakeRate: c.HandshakeRate.Load(),
		FlowLimit: c.FlowLimit.Load(), SessionsFreed: c.SessionsGone.Load(),
		FlowsFreed: c.FlowsGone.Load(), FECParity: c.FECParity.Load(),
		FECRecovered: c.FECRecovered.Load(), FECLost: c.FECLost.Load(),
		PathMoveRefused: c.PathMoves.Load(),
	}
}

// Map returns the snapshot as counter name to value, with the names of its
// JSON form.
func (s Snapshot) Map() map[string]uint64 {
	b, err := json.Marshal(s)
	if err != nil {
		return nil
	}
	m := make(map[string]uint64)
	if err := json.Unmarshal(b, &m); err != nil {
		return nil
	}
	return m
}
