// Package metrics holds the counters both tunnel ends keep: traffic, and every
// packet dropped, by the reason it was dropped. Counters are lock-free and
// safe for concurrent use; Snapshot reads them for status and exposition.
//
// Each counter is declared once, as a field of set, and named once, in
// set.each: the name is the one status output (docs/STATUS.md) and Prometheus
// (docs/METRICS.md) show, a stable interface.
package metrics

import (
	"encoding/json"
	"sync/atomic"
)

// set is the list of counters, each held in a T: atomic.Uint64 in Counters,
// uint64 in Snapshot.
type set[T any] struct {
	TxPackets, TxBytes T // tunnel packets sent on paths (each copy counts)
	RxPackets, RxBytes T // tunnel packets received from paths

	Delivered       T // datagrams delivered to the application or target
	DeliveredBytes  T // bytes of them
	Forwarded       T // datagrams taken from the application or target and sent
	Reassembled     T // datagrams put back together from fragments
	Duplicates      T // copies of packets already received (authenticated, but for those a server gets from no path's address)
	TooOld          T // packets behind the replay window (authenticated as Duplicates are)
	AuthFailed      T // transport packets that did not authenticate
	Malformed       T // packets whose layout is wrong (garbage, truncated)
	UnknownSession  T // transport packets for no session we know
	Oversize        T // datagrams larger than the tunnel carries
	FragEvicted     T // incomplete datagrams dropped for age or room
	NoSession       T // datagrams dropped because no session was up
	SendErrors      T // failed writes to a path, target or application
	QueueFull       T // datagrams dropped because a socket's send buffer was full
	TargetRefused   T // datagrams dropped for a flow whose target was refused (or not yet open and too many waiting)
	HandshakeOK     T // handshakes completed
	Rekeys          T // sessions replaced by a rekey that kept their flows (server: when the new one is confirmed)
	HandshakeBad    T // handshake messages that did not authenticate
	HandshakeReplay T // handshake initiations seen before (replays or copies from other paths)
	HandshakeStale  T // authentic initiations with a timestamp outside the window
	Cookies         T // server: cookie replies sent under load; client: cookies taken
	HandshakeRate   T // initiations refused by the per-source rate limit under load
	SessionLimit    T // sessions refused for the session limit
	FlowLimit       T // flows refused for the flow limit
	SessionsFreed   T // sessions freed (timeout or close)
	FlowsFreed      T // flows freed
	FECParity       T // fec mode: parity packets sent
	FECRecovered    T // fec mode: datagrams rebuilt from parity
	FECLost         T // fec mode: datagrams neither received nor rebuilt
	PathMoveRefused T // authentic packets from a path's new address that did not move it (older than the path's latest)
	RepairAsked     T // repair: requests for a packet lost on every path (each try counts)
	RepairFilled    T // repair: packets asked for that then arrived
	RepairLost      T // repair: packets given up (asked for in vain, or too many missing at once)
	RepairResent    T // repair: packets sent again at the peer's request
	RepairMissing   T // repair: packets the peer asked for that were no longer kept
	ParitySent      T // parity packets sent (each covers a group of this end's packets)
	ParityRecovered T // the peer's packets rebuilt from its parity
	StreamsOpened   T // TCP streams connected to their target (server)
	StreamsRefused  T // TCP streams refused: rules, name, target (server)
	StreamBytesUp   T // bytes the streams carried client to server
	StreamBytesDown T // bytes the streams carried server to client
	FlowsReclaimed  T // flows freed early by the short-flow rule (at most a couple of datagrams each way, then idle); also in FlowsFreed
	FlowsEvicted    T // idle flows freed at the flow limit to make room for a new one; also in FlowsFreed
	UnknownFlow     T // datagrams for a flow this end no longer has (freed), dropped
	ResetsSent      T // stateless resets sent for packets naming no session we know (server)
	ResetsAccepted  T // stateless resets acted on: a new handshake at once (client)
	ResetsRefused   T // stateless resets ignored: wrong size or token, or not for the session in use (client)

	// identity initiations from a client public key not on the server's list
	// (or disabled): not answered
	HandshakeUnknown T
}

// each calls fn with every counter's name and field, in the order of set's
// fields. The names are those of status output and Prometheus: never rename
// one.
func (s *set[T]) each(fn func(name string, v *T)) {
	fn("tx_packets", &s.TxPackets)
	fn("tx_bytes", &s.TxBytes)
	fn("rx_packets", &s.RxPackets)
	fn("rx_bytes", &s.RxBytes)
	fn("delivered", &s.Delivered)
	fn("delivered_bytes", &s.DeliveredBytes)
	fn("forwarded", &s.Forwarded)
	fn("reassembled", &s.Reassembled)
	fn("duplicates", &s.Duplicates)
	fn("too_old", &s.TooOld)
	fn("auth_failed", &s.AuthFailed)
	fn("malformed", &s.Malformed)
	fn("unknown_session", &s.UnknownSession)
	fn("oversize", &s.Oversize)
	fn("fragments_evicted", &s.FragEvicted)
	fn("no_session", &s.NoSession)
	fn("send_errors", &s.SendErrors)
	fn("queue_full", &s.QueueFull)
	fn("target_refused", &s.TargetRefused)
	fn("handshakes", &s.HandshakeOK)
	fn("rekeys", &s.Rekeys)
	fn("handshake_bad", &s.HandshakeBad)
	fn("handshake_replay", &s.HandshakeReplay)
	fn("handshake_stale", &s.HandshakeStale)
	fn("handshake_cookie", &s.Cookies)
	fn("handshake_rate_limited", &s.HandshakeRate)
	fn("session_limit", &s.SessionLimit)
	fn("flow_limit", &s.FlowLimit)
	fn("sessions_freed", &s.SessionsFreed)
	fn("flows_freed", &s.FlowsFreed)
	fn("fec_parity", &s.FECParity)
	fn("fec_recovered", &s.FECRecovered)
	fn("fec_unrecoverable", &s.FECLost)
	fn("path_move_refused", &s.PathMoveRefused)
	fn("repair_asked", &s.RepairAsked)
	fn("repair_filled", &s.RepairFilled)
	fn("repair_lost", &s.RepairLost)
	fn("repair_resent", &s.RepairResent)
	fn("repair_missing", &s.RepairMissing)
	fn("parity_sent", &s.ParitySent)
	fn("parity_recovered", &s.ParityRecovered)
	fn("streams_opened", &s.StreamsOpened)
	fn("streams_refused", &s.StreamsRefused)
	fn("stream_bytes_up", &s.StreamBytesUp)
	fn("stream_bytes_down", &s.StreamBytesDown)
	fn("flows_reclaimed", &s.FlowsReclaimed)
	fn("flows_evicted", &s.FlowsEvicted)
	fn("unknown_flow", &s.UnknownFlow)
	fn("resets_sent", &s.ResetsSent)
	fn("resets_accepted", &s.ResetsAccepted)
	fn("resets_refused", &s.ResetsRefused)
	fn("handshake_unknown_client", &s.HandshakeUnknown)
}

// Counters counts one tunnel end's traffic and drops. The zero value is ready.
type Counters struct {
	set[atomic.Uint64]
}

// Snapshot is a copy of Counters at one moment.
type Snapshot struct {
	set[uint64]
}

// names lists every counter's name, in the order of set's fields.
var names = func() []string {
	var s set[uint64]
	var n []string
	s.each(func(name string, _ *uint64) { n = append(n, name) })
	return n
}()

// Names returns every counter's name, as status output and Prometheus show
// it, in a fixed order.
func Names() []string {
	return append([]string(nil), names...)
}

// Snapshot reads every counter.
func (c *Counters) Snapshot() Snapshot {
	var s Snapshot
	dst := make([]*uint64, 0, len(names))
	s.each(func(_ string, v *uint64) { dst = append(dst, v) })
	i := 0
	c.each(func(_ string, v *atomic.Uint64) {
		*dst[i] = v.Load()
		i++
	})
	return s
}

// Map returns the snapshot as counter name to value.
func (s Snapshot) Map() map[string]uint64 {
	m := make(map[string]uint64, len(names))
	s.each(func(name string, v *uint64) { m[name] = *v })
	return m
}

// MarshalJSON writes the snapshot as an object of counter name to value.
func (s Snapshot) MarshalJSON() ([]byte, error) {
	return json.Marshal(s.Map())
}
