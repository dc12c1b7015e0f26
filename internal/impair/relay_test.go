package impair

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestZeroConfigForwardsUnchanged(t *testing.T) {
	t.Run("zero", func(t *testing.T) { forwardsUnchanged(t, Config{}) })
	// The same through the delay line, where datagrams are copied into
	// pooled buffers instead of being written straight away.
	t.Run("delayed", func(t *testing.T) { forwardsUnchanged(t, Config{Delay: time.Millisecond}) })
}

func forwardsUnchanged(t *testing.T, cfg Config) {
	var tapUp, tapDown, tapBytes atomic.Int64
	r := newRelay(t, Options{
		To: newEcho(t),
		Up: cfg, Down: cfg,
		Tap: func(up bool, pkt []byte) {
			if up {
				tapUp.Add(1)
			} else {
				tapDown.Add(1)
			}
			tapBytes.Add(int64(len(pkt)))
		},
	})
	c := dial(t, r)

	sizes := []int{0, 1, 1400, 65507, 7, 512, 9000, 1200}
	rng := rand.New(rand.NewPCG(1, 2))
	const n, window = 64, 8
	var want [][]byte
	var total int64
	for i := range n {
		b := make([]byte, sizes[i%len(sizes)])
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		want = append(want, b)
		total += 2 * int64(len(b))
	}
	buf := make([]byte, maxDatagram)
	for start := 0; start < n; start += window {
		for _, b := range want[start : start+window] {
			send(t, c, b)
		}
		for i, b := range want[start : start+window] {
			got := recv(t, c, buf)
			if !bytes.Equal(got, b) {
				t.Fatalf("datagram %d: got %d bytes, want %d bytes (identical)", start+i, len(got), len(b))
			}
		}
	}

	// A counter is bumped just after its write returns, so the last reply
	// can be read before the counters catch up.
	waitFor(t, "counters", func() bool { return settled(r.Stats().Up) && settled(r.Stats().Down) })
	st := r.Stats()
	if wantStats := (DirStats{Received: n, Forwarded: n}); st.Up != wantStats || st.Down != wantStats {
		t.Errorf("stats up %+v down %+v, want both %+v", st.Up, st.Down, wantStats)
	}
	if st.Peers != 1 {
		t.Errorf("Peers = %d, want 1", st.Peers)
	}
	if tapUp.Load() != n || tapDown.Load() != n || tapBytes.Load() != total {
		t.Errorf("tap saw up=%d down=%d bytes=%d, want %d %d %d",
			tapUp.Load(), tapDown.Load(), tapBytes.Load(), n, n, total)
	}
}

// lossRun sends n datagrams through a relay with the given up config and
// seed and returns the sequence numbers that did not arrive.
func lossRun(t *testing.T, cfg Config, seed int64, n int) []uint64 {
	t.Helper()
	epoch := time.Now()
	s := newSink(t, epoch)
	r := newRelay(t, Options{To: s.addr(), Up: cfg, Seed: seed})
	c := dial(t, r)
	pump(t, c, r, s, n, 32, 100, epoch)

	seen := make([]bool, n)
	for _, a := range s.received() {
		seq := packetSeq(a.data)
		if seq >= uint64(n) || seen[seq] {
			t.Fatalf("unexpected or repeated sequence number %d", seq)
		}
		seen[seq] = true
	}
	var lost []uint64
	for i, ok := range seen {
		if !ok {
			lost = append(lost, uint64(i))
		}
	}
	if st := r.Stats().Up; st.DroppedLoss != uint64(len(lost)) {
		t.Fatalf("DroppedLoss = %d, but %d datagrams missing", st.DroppedLoss, len(lost))
	}
	return lost
}

func TestLossIsSeededAndCalibrated(t *testing.T) {
	const n = 5000
	cfg := Config{Loss: 0.1}
	a := lossRun(t, cfg, 42, n)
	// Binomial(5000, 0.1) has a standard deviation of about 0.0042 in the
	// fraction, so 0.02 is a tolerance of almost five sigma.
	if f := float64(len(a)) / n; f < 0.08 || f > 0.12 {
		t.Fatalf("dropped fraction %.4f, want 0.1 +- 0.02", f)
	}
	b := lossRun(t, cfg, 42, n)
	if !slices.Equal(a, b) {
		t.Fatalf("same seed dropped different datagrams: %d vs %d dropped", len(a), len(b))
	}
	c := lossRun(t, cfg, 43, n)
	if slices.Equal(a, c) {
		t.Fatal("different seeds dropped the same datagrams")
	}
}

// median returns the middle value of ds (which it sorts).
func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// The delay tests send one datagram at a time and bound the median rather
// than the mean, so that a scheduling stall of a loaded machine hitting a
// datagram or two cannot fail them.

func TestDelay(t *testing.T) {
	const delay = 25 * time.Millisecond
	epoch := time.Now()
	s := newSink(t, epoch)
	r := newRelay(t, Options{To: s.addr(), Up: Config{Delay: delay}})
	c := dial(t, r)
	const n = 20
	for i := range n {
		send(t, c, seqPacket(uint64(i), 100, epoch))
		waitFor(t, "datagram", func() bool { return s.count.Load() == int64(i+1) })
	}

	got := s.received()
	var ds []time.Duration
	var sum time.Duration
	for i, a := range got {
		if seq := packetSeq(a.data); seq != uint64(i) {
			t.Fatalf("datagram %d arrived in position %d", seq, i)
		}
		d := a.at - packetSent(a.data)
		if d < delay {
			t.Errorf("datagram %d delayed %v, want >= %v", i, d, delay)
		}
		ds = append(ds, d)
		sum += d
	}
	if m := median(ds); m > delay+50*time.Millisecond {
		t.Errorf("median delay %v (mean %v), want close to %v", m, sum/n, delay)
	}
}

func TestDelayBothDirections(t *testing.T) {
	const up, down = 10 * time.Millisecond, 20 * time.Millisecond
	r := newRelay(t, Options{To: newEcho(t), Up: Config{Delay: up}, Down: Config{Delay: down}})
	c := dial(t, r)
	buf := make([]byte, maxDatagram)
	const n = 10
	var rtts []time.Duration
	for i := range n {
		start := time.Now()
		msg := []byte(fmt.Sprint("ping ", i))
		send(t, c, msg)
		if got := recv(t, c, buf); !bytes.Equal(got, msg) {
			t.Fatalf("got %q, want %q", got, msg)
		}
		rtt := time.Since(start)
		if rtt < up+down {
			t.Errorf("round trip %v, want >= %v", rtt, up+down)
		}
		rtts = append(rtts, rtt)
	}
	if m := median(rtts); m > up+down+50*time.Millisecond {
		t.Errorf("median round trip %v, want close to %v", m, up+down)
	}
}

// checkAllOnce fails unless every sequence number below n arrived once.
func checkAllOnce(t *testing.T, seqs []uint64, n int) {
	t.Helper()
	sorted := slices.Sorted(slices.Values(seqs))
	if len(sorted) != n {
		t.Fatalf("received %d datagrams, want %d", len(sorted), n)
	}
	for i, s := range sorted {
		if s != uint64(i) {
			t.Fatalf("sequence numbers are not 0..%d exactly once (at %d: %d)", n-1, i, s)
		}
	}
}

func TestJitterReorders(t *testing.T) {
	epoch := time.Now()
	s := newSink(t, epoch)
	cfg := Config{Delay: 2 * time.Millisecond, Jitter: 10 * time.Millisecond}
	r := newRelay(t, Options{To: s.addr(), Up: cfg, Seed: 7})
	c := dial(t, r)
	const n = 300
	pump(t, c, r, s, n, 64, 50, epoch)
	drain(t, r, s)

	got := s.received()
	seqs := seqsOf(got)
	checkAllOnce(t, seqs, n)
	if inversions(seqs) == 0 {
		t.Error("jitter produced no reordering")
	}
	for _, a := range got {
		if d := a.at - packetSent(a.data); d < cfg.Delay {
			t.Errorf("datagram %d delayed %v, want >= %v", packetSeq(a.data), d, cfg.Delay)
		}
	}
}

func TestReorder(t *testing.T) {
	epoch := time.Now()
	s := newSink(t, epoch)
	cfg := Config{Reorder: 0.2, ReorderDelay: 5 * time.Millisecond}
	r := newRelay(t, Options{To: s.addr(), Up: cfg, Seed: 7})
	c := dial(t, r)
	const n = 300
	pump(t, c, r, s, n, 64, 50, epoch)
	drain(t, r, s)

	seqs := seqsOf(s.received())
	checkAllOnce(t, seqs, n)
	if inversions(seqs) == 0 {
		t.Error("Reorder produced no reordering")
	}
}

func TestDuplicate(t *testing.T) {
	epoch := time.Now()
	s := newSink(t, epoch)
	r := newRelay(t, Options{To: s.addr(), Up: Config{Duplicate: 0.2}, Seed: 3})
	c := dial(t, r)
	const n = 2000
	pump(t, c, r, s, n, 64, 100, epoch)

	copies := make([]int, n)
	got := s.received()
	for _, a := range got {
		copies[packetSeq(a.data)]++
	}
	for seq, k := range copies {
		if k != 1 && k != 2 {
			t.Fatalf("datagram %d arrived %d times", seq, k)
		}
	}
	extra := len(got) - n
	// Binomial(2000, 0.2): standard deviation about 0.009 in the fraction.
	if f := float64(extra) / n; f < 0.16 || f > 0.24 {
		t.Errorf("extra copies %.3f of datagrams, want 0.2 +- 0.04", f)
	}
	if st := r.Stats().Up; st.Duplicated != uint64(extra) || st.Forwarded != uint64(len(got)) {
		t.Errorf("stats %+v, want Duplicated=%d Forwarded=%d", st, extra, len(got))
	}
}

func TestBurstLossComesInRuns(t *testing.T) {
	const n = 4000
	// Stationary loss 0.05/(0.05+0.25) = 1/6; mean run length 1/0.25 = 4.
	// Independent loss at the same rate would give runs of 1.2 on average.
	cfg := Config{BurstLoss: BurstLoss{PGoodToBad: 0.05, PBadToGood: 0.25}}
	lost := lossRun(t, cfg, 11, n)
	if f := float64(len(lost)) / n; f < 0.1 || f > 0.25 {
		t.Errorf("loss fraction %.3f, want about 0.167", f)
	}
	runs := 0
	for i, seq := range lost {
		if i == 0 || lost[i-1] != seq-1 {
			runs++
		}
	}
	if runs == 0 {
		t.Fatal("no losses")
	}
	if mean := float64(len(lost)) / float64(runs); mean < 2 {
		t.Errorf("mean loss run length %.2f, want > 2", mean)
	}
}

func TestRateLimit(t *testing.T) {
	const (
		rate    = 4_000_000 // bits/s: about 486 datagrams/s of 1000 bytes
		size    = 1000
		offered = 1000 // datagrams/s, about twice the rate
		period  = 600 * time.Millisecond
	)
	epoch := time.Now()
	s := newSink(t, epoch)
	r := newRelay(t, Options{To: s.addr(), Up: Config{Rate: rate}})
	c := dial(t, r)

	sent := 0
	for start := time.Now(); time.Since(start) < period; time.Sleep(time.Millisecond) {
		due := int(time.Since(start).Seconds()*offered) + 1
		for ; sent < due; sent++ {
			send(t, c, seqPacket(uint64(sent), size, epoch))
		}
	}
	waitFor(t, "relay to read everything", func() bool { return r.Stats().Up.Received == uint64(sent) })
	drain(t, r, s)

	st := r.Stats().Up
	if st.DroppedQueue == 0 {
		t.Errorf("nothing dropped at twice the rate: %+v", st)
	}
	got := s.received()
	if len(got) < 10 {
		t.Fatalf("only %d of %d datagrams delivered", len(got), sent)
	}
	// The relay cannot finish sending k datagrams sooner than k
	// serialization times after the first one reached it, which is after
	// it was sent; stalls only lower the figure, so the bound is firm.
	span := got[len(got)-1].at - packetSent(got[0].data)
	bps := float64(len(got)) * (size + RateOverhead) * 8 / span.Seconds()
	if bps > 1.05*rate {
		t.Errorf("throughput %.0f bit/s, above the rate %d", bps, rate)
	}
	t.Logf("offered %d, delivered %d at %.0f bit/s, %+v", sent, len(got), bps, st)
	if inv := inversions(seqsOf(got)); inv != 0 {
		t.Errorf("rate limit reordered datagrams (%d inversions)", inv)
	}
}

// testDirection returns a direction driven by a fake clock, with no
// sockets and no scheduler, for checking queueing decisions exactly.
func testDirection(cfg Config, now *time.Duration) *direction {
	r := &Relay{epoch: time.Now()}
	d := newDirection(r, true, cfg, 1, 2)
	d.clock = func() time.Duration { return *now }
	return d
}

func TestRateQueueModel(t *testing.T) {
	// 97 bytes + RateOverhead = 1000 bits: 1ms each at 1 Mbit/s.
	const size = 1000/8 - RateOverhead
	var now time.Duration
	d := testDirection(Config{Rate: 1_000_000, QueueLimit: 10 * time.Millisecond, Delay: 5 * time.Millisecond}, &now)
	pkt := make([]byte, size)
	p := &peer{}
	out := outbox{d: d} // stays empty: every datagram waits for the rate
	for range 100 {
		d.process(pkt, p, &out, d.clock())
	}
	// Waits of 0..10ms are within the limit: 11 admitted, 89 tail-dropped.
	if st := d.stats.snapshot(); st.DroppedQueue != 89 || len(d.q) != 11 {
		t.Fatalf("queued %d, stats %+v; want 11 queued, 89 dropped", len(d.q), st)
	}
	for i := range 11 {
		it := d.q.pop()
		if want := time.Duration(i+1)*time.Millisecond + 5*time.Millisecond; it.at != want {
			t.Fatalf("datagram %d released at %v, want %v", i, it.at, want)
		}
		d.r.pool.put(it.buf)
	}
	// Once the link has drained, a datagram waits only for itself.
	now = 100 * time.Millisecond
	d.process(pkt, p, &out, d.clock())
	if it := d.q.pop(); it.at != now+6*time.Millisecond {
		t.Fatalf("released at %v, want %v", it.at, now+6*time.Millisecond)
	}
	// A duplicate costs link time too.
	d.setConfig(Config{Rate: 1_000_000, Duplicate: 1})
	now = time.Second
	d.process(pkt, p, &out, d.clock())
	a, b := d.q.pop(), d.q.pop()
	if a.at != now+time.Millisecond || b.at != now+2*time.Millisecond {
		t.Fatalf("duplicate pair released at %v and %v", a.at, b.at)
	}
}

func TestSetDown(t *testing.T) {
	r := newRelay(t, Options{To: newEcho(t)})
	c := dial(t, r)
	buf := make([]byte, maxDatagram)
	roundTrip := func(msg string) {
		t.Helper()
		send(t, c, []byte(msg))
		if got := recv(t, c, buf); string(got) != msg {
			t.Fatalf("got %q, want %q", got, msg)
		}
	}
	roundTrip("hello")
	waitFor(t, "counters", func() bool { return settled(r.Stats().Down) })

	r.SetDown(true)
	for i := range 20 {
		send(t, c, []byte(fmt.Sprint("lost ", i)))
	}
	waitFor(t, "drops while down", func() bool { return r.Stats().Up.DroppedDown == 20 })
	expectNothing(t, c, 50*time.Millisecond)
	if st := r.Stats(); st.Up.Forwarded != 1 || st.Down.Forwarded != 1 {
		t.Fatalf("forwarded while down: %+v", st)
	}

	r.SetDown(false)
	for i := range 20 {
		roundTrip(fmt.Sprint("back ", i))
	}

	// Replies waiting in the delay line die when the path goes down.
	waitFor(t, "counters", func() bool { return settled(r.Stats().Down) })
	r.SetConfig(Config{}, Config{Delay: time.Hour})
	for i := range 5 {
		send(t, c, []byte(fmt.Sprint("held ", i)))
	}
	waitFor(t, "replies to queue", func() bool { return r.Stats().Down.Received == 26 })
	r.SetDown(true)
	// A reply still being processed when SetDown returns sees the relay
	// down; one already queued is flushed by SetDown itself.
	waitFor(t, "queued replies to drop", func() bool { return settled(r.Stats().Down) })
	if st := r.Stats().Down; st.DroppedDown != 5 || st.Forwarded != 21 {
		t.Fatalf("down stats after SetDown = %+v, want DroppedDown=5 Forwarded=21", st)
	}
	r.SetDown(false)
	r.SetConfig(Config{}, Config{})
	expectNothing(t, c, 20*time.Millisecond)
	roundTrip("again")
}

func TestSetConfigLive(t *testing.T) {
	r := newRelay(t, Options{To: newEcho(t)})
	c := dial(t, r)
	buf := make([]byte, maxDatagram)
	send(t, c, []byte("a"))
	recv(t, c, buf)

	r.SetConfig(Config{Loss: 1}, Config{})
	for range 10 {
		send(t, c, []byte("x"))
	}
	waitFor(t, "losses", func() bool { return r.Stats().Up.DroppedLoss == 10 })

	// Out-of-range values are clamped rather than rejected.
	r.SetConfig(Config{Loss: -3, Duplicate: 7}, Config{})
	send(t, c, []byte("b"))
	for range 2 {
		if got := recv(t, c, buf); string(got) != "b" {
			t.Fatalf("got %q, want b", got)
		}
	}
}

func TestTwoPeersGetTheirOwnReplies(t *testing.T) {
	r := newRelay(t, Options{To: newEcho(t)})
	a, b := dial(t, r), dial(t, r)
	const n = 50
	for i := range n {
		send(t, a, []byte(fmt.Sprint("A ", i)))
		send(t, b, []byte(fmt.Sprint("B ", i)))
	}
	buf := make([]byte, maxDatagram)
	for name, c := range map[string]*net.UDPConn{"A": a, "B": b} {
		for i := range n {
			want := fmt.Sprint(name, " ", i)
			if got := recv(t, c, buf); string(got) != want {
				t.Fatalf("peer %s got %q, want %q", name, got, want)
			}
		}
	}
	if p := r.Stats().Peers; p != 2 {
		t.Errorf("Peers = %d, want 2", p)
	}
}

func TestMaxPeers(t *testing.T) {
	r := newRelay(t, Options{To: newEcho(t), MaxPeers: 1})
	a, b := dial(t, r), dial(t, r)
	buf := make([]byte, maxDatagram)
	send(t, a, []byte("a"))
	recv(t, a, buf)
	for range 3 {
		send(t, b, []byte("b"))
	}
	waitFor(t, "peer limit drops", func() bool { return r.Stats().PeerLimitDrops == 3 })
	expectNothing(t, b, 20*time.Millisecond)
	send(t, a, []byte("a2"))
	if got := recv(t, a, buf); string(got) != "a2" {
		t.Fatalf("got %q, want a2", got)
	}
}

func TestIdlePeerExpires(t *testing.T) {
	r := newRelay(t, Options{To: newEcho(t), IdleTimeout: 300 * time.Millisecond})
	// Replies keep flowing through a fresh upstream socket: the old one is
	// gone, so writing through it would count as a send error.
	c := dial(t, r)
	buf := make([]byte, maxDatagram)
	send(t, c, []byte("a"))
	recv(t, c, buf)
	waitFor(t, "idle peer to expire", func() bool { return r.Stats().Peers == 0 })
	send(t, c, []byte("b"))
	if got := recv(t, c, buf); string(got) != "b" {
		t.Fatalf("got %q, want b", got)
	}
	waitFor(t, "counters", func() bool { return settled(r.Stats().Up) })
	if st := r.Stats(); st.Up.SendErrors != 0 || st.Up.Forwarded != 2 {
		t.Errorf("stats %+v, want 2 forwarded and no send errors", st)
	}
}

func TestUpstreamUnreachableIsNotFatal(t *testing.T) {
	// Reserve a port and free it, so datagrams sent there are refused.
	l := listen(t)
	to := l.LocalAddr().String()
	_ = l.Close()
	r := newRelay(t, Options{To: to})
	c := dial(t, r)
	for range 5 {
		send(t, c, []byte("x"))
	}
	waitFor(t, "relay to read", func() bool { return r.Stats().Up.Received == 5 })
	if p := r.Stats().Peers; p != 1 {
		t.Errorf("Peers = %d, want 1", p)
	}
}

func TestConcurrentUse(t *testing.T) {
	epoch := time.Now()
	s := newSink(t, epoch)
	var tapped atomic.Int64
	r := newRelay(t, Options{
		To:  s.addr(),
		Up:  Config{Delay: time.Millisecond, Jitter: time.Millisecond},
		Tap: func(bool, []byte) { tapped.Add(1) },
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 3 {
		c := dial(t, r)
		wg.Go(func() {
			for seq := uint64(0); ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = c.Write(seqPacket(seq, 100+i, epoch))
				if seq%32 == 0 {
					time.Sleep(100 * time.Microsecond)
				}
			}
		})
	}
	wg.Go(func() {
		cfgs := []Config{{}, {Loss: 0.3}, {Duplicate: 0.5, Reorder: 0.5}, {Rate: 1e6}, {Delay: 2 * time.Millisecond}}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			r.SetConfig(cfgs[i%len(cfgs)], cfgs[(i+1)%len(cfgs)])
			r.SetDown(i%7 == 0)
			_ = r.Stats()
			time.Sleep(200 * time.Microsecond)
		}
	})
	waitFor(t, "traffic", func() bool { return s.count.Load() > 200 })
	close(stop)
	wg.Wait()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if tapped.Load() == 0 {
		t.Error("tap never called")
	}
}

func TestCloseStopsEverything(t *testing.T) {
	defer goleak.VerifyNone(t)
	echo := listen(t)
	r, err := New(Options{
		Listen: "127.0.0.1:0",
		To:     echo.LocalAddr().String(),
		Up:     Config{Delay: time.Hour},
		Down:   Config{Delay: time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, r)
	send(t, c, []byte("queued forever"))
	waitFor(t, "peer", func() bool { return r.Stats().Peers == 1 })
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if p := r.Stats().Peers; p != 0 {
		t.Errorf("Peers after Close = %d", p)
	}
	_ = echo.Close()
}

func TestNewErrors(t *testing.T) {
	echo := newEcho(t)
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"no upstream", Options{Listen: "127.0.0.1:0"}, "upstream"},
		{"bad upstream", Options{Listen: "127.0.0.1:0", To: "no-port"}, "resolve upstream"},
		{"bad listen", Options{Listen: "127.0.0.1:99999", To: echo}, "listen 127.0.0.1:99999"},
		{"bad loss", Options{Listen: "127.0.0.1:0", To: echo, Up: Config{Loss: 1.5}}, "up config: loss"},
		{"negative delay", Options{Listen: "127.0.0.1:0", To: echo, Down: Config{Delay: -1}}, "down config: negative delay"},
		{"negative rate", Options{Listen: "127.0.0.1:0", To: echo, Up: Config{Rate: -1}}, "negative rate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(tc.opts)
			if err == nil {
				_ = r.Close()
				t.Fatal("New succeeded")
			}
			if !strings.HasPrefix(err.Error(), "impair: ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to mention %q", err, tc.want)
			}
		})
	}
	// A listen error wraps the cause.
	l := listen(t)
	_, err := New(Options{Listen: l.LocalAddr().String(), To: echo})
	var opErr *net.OpError
	if !errors.As(err, &opErr) {
		t.Fatalf("error %v does not wrap *net.OpError", err)
	}
}

func TestHeapOrder(t *testing.T) {
	var h itemHeap
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 1000 {
		h.push(item{at: time.Duration(rng.IntN(50)), seq: uint64(i)})
	}
	prev := item{at: -1}
	for len(h) > 0 {
		it := h.pop()
		if it.at < prev.at || it.at == prev.at && it.seq < prev.seq {
			t.Fatalf("popped (%v,%d) after (%v,%d)", it.at, it.seq, prev.at, prev.seq)
		}
		prev = it
	}
}

func TestBufPool(t *testing.T) {
	var p bufPool
	for _, n := range []int{0, 1, 255, 256, 257, 1500, 65507, maxDatagram} {
		b := p.get(n)
		if len(*b) != n || cap(*b) < n || cap(*b) > max(2*n, 256) {
			t.Fatalf("get(%d): len %d cap %d", n, len(*b), cap(*b))
		}
		p.put(b)
	}
}
