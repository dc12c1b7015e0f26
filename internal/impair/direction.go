package impair

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds on what one direction may hold in its delay line; packets beyond
// them are dropped and counted as DroppedQueue.
const (
	maxQueuedPackets = 65536
	maxQueuedBytes   = 64 << 20
)

// maxBatch bounds how many due packets the scheduler takes per lock.
const maxBatch = 256

// item is one packet waiting in the delay line.
type item struct {
	at   time.Duration // release time, relative to Relay.epoch
	seq  uint64        // tie-break: FIFO among equal release times
	buf  *[]byte
	peer *peer
}

// itemHeap is a min-heap ordered by (at, seq).
type itemHeap []item

func (h itemHeap) less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}

func (h *itemHeap) push(it item) {
	*h = append(*h, it)
	s := *h
	i := len(s) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if !s.less(i, parent) {
			break
		}
		s[i], s[parent] = s[parent], s[i]
		i = parent
	}
}

func (h *itemHeap) pop() item {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s[last] = item{}
	s = s[:last]
	i := 0
	for {
		l := 2*i + 1
		if l >= len(s) {
			break
		}
		m := l
		if r := l + 1; r < len(s) && s.less(r, l) {
			m = r
		}
		if !s.less(m, i) {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

// counters are the live statistics of one direction.
type counters struct {
	received     atomic.Uint64
	forwarded    atomic.Uint64
	droppedLoss  atomic.Uint64
	droppedQueue atomic.Uint64
	droppedDown  atomic.Uint64
	duplicated   atomic.Uint64
	sendErrors   atomic.Uint64
}

// snapshot reads the outcome counters before Duplicated and Received.
// Every datagram bumps Received, then possibly Duplicated, before any of
// its outcomes, so a snapshot never shows more outcomes than the datagrams
// it shows received: DirStats.InFlight is exact once traffic has stopped
// and never falsely zero while a counted datagram is still pending.
func (c *counters) snapshot() DirStats {
	var s DirStats
	s.Forwarded = c.forwarded.Load()
	s.DroppedLoss = c.droppedLoss.Load()
	s.DroppedQueue = c.droppedQueue.Load()
	s.DroppedDown = c.droppedDown.Load()
	s.SendErrors = c.sendErrors.Load()
	s.Duplicated = c.duplicated.Load()
	s.Received = c.received.Load()
	return s
}

// direction applies one Config to the datagrams flowing one way and owns
// the delay line and the scheduler goroutine that drains it.
type direction struct {
	r     *Relay
	up    bool
	clock func() time.Duration // current time relative to Relay.epoch
	stats counters
	kick  chan struct{} // capacity 1: wakes the scheduler for a new head

	mu        sync.Mutex
	cfg       Config
	rng       *rand.Rand
	bad       bool          // Gilbert-Elliott state
	busyUntil time.Duration // when the rate-limited link becomes idle
	q         itemHeap
	qBytes    int
	seq       uint64
	sending   bool // the scheduler is writing a batch outside mu
}

func newDirection(r *Relay, up bool, cfg Config, seed1, seed2 uint64) *direction {
	return &direction{
		r:     r,
		up:    up,
		clock: r.now,
		kick:  make(chan struct{}, 1),
		cfg:   cfg,
		rng:   rand.New(rand.NewPCG(seed1, seed2)),
	}
}

func (d *direction) setConfig(cfg Config) {
	d.mu.Lock()
	d.cfg = cfg
	d.mu.Unlock()
}

// process decides the fate of one received datagram. When the packet is
// due immediately and nothing is queued ahead of it, process adds it to out
// (twice when duplicated), for the caller to write with the rest of its
// batch: pkt must then stay valid until out is flushed. Otherwise pkt is
// copied into the delay line, after out has been flushed so that the
// datagrams decided before it are written first. now is when its batch was
// read (d.clock's time).
func (d *direction) process(pkt []byte, p *peer, out *outbox, now time.Duration) {
	d.stats.received.Add(1)

	d.mu.Lock()
	cfg := d.cfg
	// A fixed number of draws per packet keeps the random stream aligned
	// with the input sequence whatever the configuration or the timing.
	var u [6]float64
	for i := range u {
		u[i] = d.rng.Float64()
	}
	lost := u[0] < cfg.Loss
	if cfg.BurstLoss.Enabled() {
		if d.bad {
			if u[1] < cfg.BurstLoss.PBadToGood {
				d.bad = false
			}
		} else if u[1] < cfg.BurstLoss.PGoodToBad {
			d.bad = true
		}
		if d.bad && u[2] < cfg.BurstLoss.lossInBad() {
			lost = true
		}
	}
	if d.r.down.Load() {
		d.mu.Unlock()
		d.stats.droppedDown.Add(1)
		return
	}
	if lost {
		d.mu.Unlock()
		d.stats.droppedLoss.Add(1)
		return
	}

	delay := cfg.Delay
	if cfg.Jitter > 0 {
		delay += min(time.Duration(u[3]*float64(cfg.Jitter)), cfg.Jitter-1)
	}
	if u[4] < cfg.Reorder {
		delay += cfg.EffectiveReorderDelay()
	}
	copies := 1
	if u[5] < cfg.Duplicate {
		copies = 2
	}

	release := [2]time.Duration{now, now}
	if cfg.Rate > 0 {
		start := max(now, d.busyUntil)
		if start-now > cfg.EffectiveQueueLimit() {
			d.mu.Unlock()
			d.stats.droppedQueue.Add(1)
			return
		}
		tx := txTime(len(pkt), cfg.Rate)
		for i := range copies {
			start += tx
			release[i] = start
		}
		d.busyUntil = start
	}
	if copies == 2 {
		d.stats.duplicated.Add(1)
	}

	if delay == 0 && release[copies-1] <= now && len(d.q) == 0 && !d.sending {
		d.mu.Unlock()
		for range copies {
			out.add(p, pkt)
		}
		return
	}
	if out.pending() {
		// Nothing queued may be released before what this goroutine has
		// already decided to write: write that first.
		d.mu.Unlock()
		out.flush()
		d.mu.Lock()
		if d.r.down.Load() {
			// SetDown may have flushed the delay line meanwhile.
			d.mu.Unlock()
			d.stats.droppedDown.Add(uint64(copies))
			return
		}
	}

	newHead := false
	for i := range copies {
		if len(d.q) >= maxQueuedPackets || d.qBytes+len(pkt) > maxQueuedBytes {
			d.stats.droppedQueue.Add(1)
			continue
		}
		b := d.r.pool.get(len(pkt))
		copy(*b, pkt)
		d.seq++
		d.q.push(item{at: release[i] + delay, seq: d.seq, buf: b, peer: p})
		d.qBytes += len(pkt)
		if d.q[0].seq == d.seq {
			newHead = true
		}
	}
	d.mu.Unlock()
	if newHead {
		select {
		case d.kick <- struct{}{}:
		default:
		}
	}
}

// flush drops everything queued, counting it as DroppedDown.
func (d *direction) flush() {
	d.mu.Lock()
	n := len(d.q)
	for _, it := range d.q {
		d.r.pool.put(it.buf)
	}
	clear(d.q)
	d.q = d.q[:0]
	d.qBytes = 0
	d.mu.Unlock()
	d.stats.droppedDown.Add(uint64(n))
}

// run is the scheduler: it releases queued packets when they are due.
func (d *direction) run() {
	defer d.r.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	batch := make([]item, 0, maxBatch)
	out := outbox{d: d}
	for {
		d.mu.Lock()
		now := d.clock()
		batch = batch[:0]
		for len(d.q) > 0 && d.q[0].at <= now && len(batch) < maxBatch {
			it := d.q.pop()
			d.qBytes -= len(*it.buf)
			batch = append(batch, it)
		}
		wait := time.Duration(-1)
		if len(batch) == 0 && len(d.q) > 0 {
			wait = d.q[0].at - now
		}
		// While sending, new due packets must queue behind this batch.
		d.sending = len(batch) > 0
		d.mu.Unlock()

		if len(batch) > 0 {
			for i := range batch {
				out.add(batch[i].peer, *batch[i].buf)
			}
			out.flush()
			for i := range batch {
				d.r.pool.put(batch[i].buf)
				batch[i] = item{}
			}
			select {
			case <-d.r.done:
				return
			default:
			}
			continue
		}

		if wait >= 0 {
			timer.Reset(wait)
		}
		select {
		case <-d.r.done:
			return
		case <-d.kick:
		case <-timer.C:
		}
		timer.Stop()
	}
}
