// Package peer is what both ends of a tunnel do with the other end over
// their paths, written once: the paths with their sockets and probes
// (path.go, timers.go), the receive dispatch from a socket to a session to a
// flow (receive.go: open, drop copies, reorder, then probe, probe reply,
// data, the role's own messages), the scheduler's choice and the counted
// write (send.go). The client and the server keep only what differs: the
// client's fronts, handshake initiation and flows to local peers; the
// server's handshake responder, session table, rekeys and flows to targets.
//
// Locks, taken in this order and never the other way: a role's session
// table (the server's) and a session's path lock; an FEC sender's lock (its
// send function writes with the Spreader); the Spreader's lock; a path's
// estimator lock (inside path.Link). A path's counters and addresses are
// atomics, read without locks on every send. The fields a Path marks as the
// read goroutine's own are touched by that goroutine alone.
package peer
