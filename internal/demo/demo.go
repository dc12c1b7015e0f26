// Package demo is `mptunnel demo`: the tunnel's main job shown on loopback
// with no setup. In one process it starts an echo target, a server, three
// impaired paths and a client, and sends the same paced stream of echo
// requests over the best single path (one of the impaired relays, straight to
// the echo target) and through mptunnel over all three, at the same time. The
// report gives loss and round-trip latency for both, and each path's figures
// as the client measured them; every number comes from the run.
package demo

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/server"
	"github.com/mptunnel/mptunnel/internal/status"
)

// Config shapes a demo. Zero fields take the defaults given.
type Config struct {
	Duration time.Duration   // how long the streams run (10s)
	Rate     int             // echo requests a second on each stream (200)
	Loss     float64         // each path's random loss each way (0.1)
	Delays   []time.Duration // each path's one-way delay (5, 20 and 40 ms)
	Seed     int64           // the impairments' randomness (1)
	Progress io.Writer       // a line a second while it runs, or nil

	// echoed, when set, sees every request the echo target receives
	// (tests count them apart from the streams' own figures).
	echoed func(request []byte)
}

func (c *Config) setDefaults() {
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Rate == 0 {
		c.Rate = 200
	}
	if c.Loss == 0 {
		c.Loss = 0.1
	}
	if len(c.Delays) == 0 {
		c.Delays = []time.Duration{5 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond}
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
}

// Stream is what one stream of echo requests saw.
type Stream struct {
	Name       string    `json:"name"`
	Sent       int       `json:"sent"`
	Received   int       `json:"received"` // distinct echoes
	Lost       int       `json:"lost"`
	LossPct    float64   `json:"loss_pct"`
	P50Ms      float64   `json:"p50_ms"`
	P99Ms      float64   `json:"p99_ms"`
	MaxMs      float64   `json:"max_ms"`
	PerSecond  []float64 `json:"delivered_pct_per_second"` // share of each second's requests echoed
	rtts       []time.Duration
	sentSecond []int
	gotSecond  []int
}

// Report is a demo's outcome.
type Report struct {
	Duration time.Duration `json:"duration_ns"`
	Rate     int           `json:"rate"`
	LossPct  float64       `json:"path_loss_pct"` // each path, each way
	Delays   []float64     `json:"path_delay_ms"`
	Single   Stream        `json:"single_path"`
	Tunnel   Stream        `json:"tunnel"`
	Client   status.Status `json:"client_status"` // the client's status at the end: per path figures
	// Counters are the client's counters over the run.
	Counters map[string]uint64 `json:"client_counters"`
}

// Run runs a demo and returns its report.
func Run(ctx context.Context, cfg Config) (Report, error) {
	cfg.setDefaults()
	rep := Report{Duration: cfg.Duration, Rate: cfg.Rate, LossPct: cfg.Loss * 100}
	for _, d := range cfg.Delays {
		rep.Delays = append(rep.Delays, float64(d)/1e6)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	key, err := handshake.GenerateKey()
	if err != nil {
		return rep, err
	}

	echo, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return rep, fmt.Errorf("demo: echo: %w", err)
	}
	defer echo.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		runEcho(echo, cfg.echoed)
	}()

	srv, err := server.Listen(server.Config{Listen: "127.0.0.1:0", Target: echo.LocalAddr().String(), Key: key, Logger: quiet})
	if err != nil {
		return rep, fmt.Errorf("demo: %w", err)
	}
	serveErr := make(chan error, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		serveErr <- srv.Serve(ctx)
	}()

	var relays []*impair.Relay
	defer func() {
		for _, r := range relays {
			r.Close()
		}
	}()
	relay := func(to string, i int, d time.Duration) (*impair.Relay, error) {
		imp := impair.Config{Loss: cfg.Loss, Delay: d, Jitter: d / 10}
		r, err := impair.New(impair.Options{Listen: "127.0.0.1:0", To: to, Up: imp, Down: imp, Seed: cfg.Seed + int64(i)})
		if err == nil {
			relays = append(relays, r)
		}
		return r, err
	}
	var paths []client.PathConfig
	best := 0
	for i, d := range cfg.Delays {
		r, err := relay(srv.Addr().String(), i, d)
		if err != nil {
			return rep, fmt.Errorf("demo: %w", err)
		}
		paths = append(paths, client.PathConfig{Remote: r.Addr().String()})
		if d < cfg.Delays[best] {
			best = i
		}
	}
	// The best single path: the same impairment as the tunnel's fastest
	// path, straight to the echo target.
	single, err := relay(echo.LocalAddr().String(), 100+best, cfg.Delays[best])
	if err != nil {
		return rep, fmt.Errorf("demo: %w", err)
	}

	cl, err := client.Listen(client.Config{Listen: "127.0.0.1:0", Paths: paths, Key: key, Logger: quiet})
	if err != nil {
		return rep, fmt.Errorf("demo: %w", err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		serveErr <- cl.Serve(ctx)
	}()
	select {
	case <-cl.Up():
	case <-time.After(10 * time.Second):
		return rep, errors.New("demo: the tunnel did not come up within 10 s")
	case <-ctx.Done():
		return rep, ctx.Err()
	}
	before := cl.Counters().Snapshot().Map()

	streams := []*Stream{
		{Name: fmt.Sprintf("best single path (%v delay)", cfg.Delays[best])},
		{Name: fmt.Sprintf("mptunnel, %d paths", len(paths))},
	}
	targets := []string{single.Addr().String(), cl.Addr().String()}
	var swg sync.WaitGroup
	errs := make([]error, len(streams))
	for i := range streams {
		swg.Add(1)
		go func() {
			defer swg.Done()
			errs[i] = runStream(ctx, targets[i], streams[i], byte(i), cfg, i == 1)
		}()
	}
	swg.Wait()
	if err := errors.Join(errs...); err != nil {
		return rep, err
	}
	rep.Single, rep.Tunnel = *streams[0], *streams[1]
	rep.Client = cl.Status("demo", time.Now())
	after := cl.Counters().Snapshot().Map()
	rep.Counters = make(map[string]uint64)
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			rep.Counters[k] = d
		}
	}
	cancel()
	return rep, nil
}

// runEcho sends every datagram back where it came from until conn closes,
// showing each to seen first if it is set.
func runEcho(conn *net.UDPConn, seen func([]byte)) {
	buf := make([]byte, 2048)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if seen != nil {
			seen(buf[:n])
		}
		_, _ = conn.WriteToUDPAddrPort(buf[:n], from)
	}
}

// requestLen is the size of an echo request: sequence number (4 bytes), the
// stream's number (1 byte), padding to a typical small datagram (a game
// update, a VoIP frame).
const requestLen = 200

// runStream sends cfg.Rate requests a second to dst for cfg.Duration and
// records what comes back. Its requests carry id. The tunnel's stream reports
// progress.
func runStream(ctx context.Context, dst string, s *Stream, id byte, cfg Config, progress bool) error {
	conn, err := net.Dial("udp", dst)
	if err != nil {
		return fmt.Errorf("demo: %s: %w", s.Name, err)
	}
	defer conn.Close()
	n := int(cfg.Duration.Seconds() * float64(cfg.Rate))
	seconds := int(cfg.Duration.Seconds() + 0.999)
	sentAt := make([]time.Time, n)
	got := make([]bool, n)
	s.sentSecond = make([]int, seconds)
	s.gotSecond = make([]int, seconds)
	start := time.Now()
	var mu sync.Mutex
	done := make(chan struct{})
	defer func() {
		conn.Close()
		<-done
	}()
	go func() {
		defer close(done)
		buf := make([]byte, requestLen+1)
		for {
			_ = conn.SetReadDeadline(time.Now().Add(time.Second))
			k, err := conn.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && time.Since(start) < cfg.Duration {
					continue
				}
				return
			}
			if k != requestLen {
				continue
			}
			seq := int(binary.BigEndian.Uint32(buf))
			mu.Lock()
			if seq < n && !got[seq] && !sentAt[seq].IsZero() {
				got[seq] = true
				s.rtts = append(s.rtts, time.Since(sentAt[seq]))
				s.gotSecond[min(seq/cfg.Rate, seconds-1)]++
			}
			mu.Unlock()
		}
	}()
	buf := make([]byte, requestLen)
	buf[4] = id
	tick := time.NewTicker(time.Second / time.Duration(cfg.Rate))
	defer tick.Stop()
	for seq := 0; seq < n; seq++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		binary.BigEndian.PutUint32(buf, uint32(seq))
		mu.Lock()
		sentAt[seq] = time.Now()
		mu.Unlock()
		if _, err := conn.Write(buf); err != nil {
			return fmt.Errorf("demo: %s: %w", s.Name, err)
		}
		s.Sent++
		s.sentSecond[min(seq/cfg.Rate, seconds-1)]++
		if progress && cfg.Progress != nil && (seq+1)%cfg.Rate == 0 {
			mu.Lock()
			echoed := len(s.rtts)
			mu.Unlock()
			fmt.Fprintf(cfg.Progress, "demo: %2d s: %d sent, %d echoed through mptunnel\n", (seq+1)/cfg.Rate, seq+1, echoed)
		}
	}
	<-done // a second after the last echo
	mu.Lock()
	defer mu.Unlock()
	s.summarize()
	return nil
}

func (s *Stream) summarize() {
	s.Received = len(s.rtts)
	s.Lost = s.Sent - s.Received
	if s.Sent > 0 {
		s.LossPct = 100 * float64(s.Lost) / float64(s.Sent)
	}
	slices.Sort(s.rtts)
	pick := func(q float64) float64 {
		if len(s.rtts) == 0 {
			return 0
		}
		i := min(int(q*float64(len(s.rtts))), len(s.rtts)-1)
		return float64(s.rtts[i]) / 1e6
	}
	s.P50Ms, s.P99Ms = pick(0.50), pick(0.99)
	if len(s.rtts) > 0 {
		s.MaxMs = float64(s.rtts[len(s.rtts)-1]) / 1e6
	}
	s.PerSecond = make([]float64, len(s.sentSecond))
	for i, n := range s.sentSecond {
		if n > 0 {
			s.PerSecond[i] = 100 * float64(s.gotSecond[i]) / float64(n)
		}
	}
}
