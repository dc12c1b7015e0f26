package impair

import (
	"errors"
	"net"

	"github.com/mptunnel/mptunnel/internal/udpio"
)

// readBatch is the most datagrams a reader takes from its socket at once.
const readBatch = 64

// newReadBatch returns readBatch messages for ReadBatch, each with a buffer
// any datagram fits in. The buffers are one allocation whose pages the
// kernel only backs once a datagram has been written into them.
func newReadBatch() []udpio.Msg {
	slab := make([]byte, readBatch*maxDatagram)
	msgs := make([]udpio.Msg, readBatch)
	for i := range msgs {
		msgs[i].Buf = slab[i*maxDatagram : (i+1)*maxDatagram : (i+1)*maxDatagram]
	}
	return msgs
}

// readBatches reads from conn a batch at a time (udpio.Read) and hands
// each batch to handle until conn is closed or handle returns false.
func readBatches(conn udpio.Conn, handle func(msgs []udpio.Msg) bool) {
	msgs := newReadBatch()
	for {
		n, ok := udpio.Read(conn, msgs)
		if !ok || !handle(msgs[:n]) {
			return
		}
	}
}

// outbox gathers the datagrams one goroutine writes in one direction, in
// the order it decided to write them, as one run of messages per socket,
// and writes each run with one WriteBatch. It belongs to one goroutine
// and reuses its memory from one batch to the next.
type outbox struct {
	d    *direction
	runs []outRun // runs[:n] are in use
	n    int
}

// outRun is the datagrams an outbox writes through one socket.
type outRun struct {
	conn udpio.Conn
	msgs []udpio.Msg
}

// add appends pkt, bound for peer p, to the run of the socket that writes
// it. pkt must stay valid and unchanged until flush.
func (o *outbox) add(p *peer, pkt []byte) {
	conn, to := o.d.r.ln, p.addr
	if o.d.up {
		conn, to = p.conn, o.d.r.to
	}
	var run *outRun
	// Most batches go to a single socket; look at the latest run first.
	for i := o.n - 1; i >= 0; i-- {
		if o.runs[i].conn == conn {
			run = &o.runs[i]
			break
		}
	}
	if run == nil {
		if o.n == len(o.runs) {
			o.runs = append(o.runs, outRun{})
		}
		run = &o.runs[o.n]
		o.n++
		run.conn = conn
	}
	run.msgs = append(run.msgs, udpio.Msg{Buf: pkt, Addr: to})
}

// pending reports whether datagrams are waiting for flush.
func (o *outbox) pending() bool { return o.n > 0 }

// flush writes every run and empties the outbox.
func (o *outbox) flush() {
	for i := range o.runs[:o.n] {
		run := &o.runs[i]
		o.d.r.write(o.d, run.conn, run.msgs)
		clear(run.msgs) // drop the references to the datagrams
		run.msgs = run.msgs[:0]
		run.conn = nil
	}
	o.n = 0
}

// write sends msgs through conn in the direction of d and counts each
// datagram as forwarded, failed or, while the relay is down, dropped. A
// datagram that fails does not stop the ones after it.
func (r *Relay) write(d *direction, conn udpio.Conn, msgs []udpio.Msg) {
	if r.down.Load() {
		d.stats.droppedDown.Add(uint64(len(msgs)))
		return
	}
	for len(msgs) > 0 {
		n, err := conn.WriteBatch(msgs)
		n = min(max(n, 0), len(msgs))
		if n > 0 {
			d.stats.forwarded.Add(uint64(n))
		}
		msgs = msgs[n:]
		if len(msgs) == 0 {
			return
		}
		if err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, udpio.ErrQueueFull) {
			// A closed socket, a full send buffer, or a short write the
			// Conn did not explain: the rest cannot be sent.
			d.stats.sendErrors.Add(uint64(len(msgs)))
			return
		}
		d.stats.sendErrors.Add(1)
		msgs = msgs[1:]
	}
}
