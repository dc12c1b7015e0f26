// Package bench measures mptunnel on loopback, in one process: a UDP target
// (counting sink and echo), an mptunnel server forwarding to it, built-in
// bridges (internal/impair relays, optionally lossy or slow) as the paths of
// an mptunnel client, and a paced generator sending numbered, timestamped
// datagrams to the client. Each measurement is also taken directly from the
// generator to the target, without the tunnel, as a baseline.
//
// Throughput is the highest offered rate whose delivered loss stays below
// LossLimit, found by a bounded doubling-then-bisecting search. Latency is
// the round-trip time of echoes at a fixed rate. The optional memory scenario
// runs the server as a child process, opens many sessions and flows through
// it and reads the child's resident memory.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"time"

	"github.com/mptunnel/mptunnel/internal/aead"
	"github.com/mptunnel/mptunnel/internal/fec"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/sched"
	"github.com/mptunnel/mptunnel/internal/udpio"
)

// Measure selects the measurements.
type Measure string

// Modes.
const (
	MeasureThroughput Measure = "throughput"
	MeasureLatency    Measure = "latency"
	MeasureAll        Measure = "all"
	MeasureMemory     Measure = "memory" // only the memory scenario
	// MeasureDelivery streams at Rate through the tunnel over all its
	// paths and reports what arrived and what it cost on the paths.
	MeasureDelivery Measure = "delivery"
	// MeasureTCP sends one TCP connection's bytes through a TCP forward of
	// the tunnel to a sink behind it, against a direct connection.
	MeasureTCP Measure = "tcp"
)

// Config describes a run. Zero fields take the defaults given.
type Config struct {
	Paths      int           // bridges, each a path of the tunnel (3)
	Size       int           // datagram size in bytes, MinSize..65507 (1200)
	Duration   time.Duration // one measurement step (3s; 200ms with Short)
	Measure    Measure       // which measurements (MeasureAll)
	Mode       sched.Mode    // the tunnel's scheduling mode (redundant)
	Cipher     aead.Cipher   // the tunnel's cipher (aead.Auto: as the tunnel would choose here)
	FEC        fec.Params    // fec mode: the group shape (fec.DefaultParams)
	FECDepth   int           // fec mode: groups open at once (1)
	FECFlush   time.Duration // fec mode: a group's wait to fill (fec.DefaultFlushDelay)
	BridgeRate int64         // each bridge's rate limit in bits/s, 0 for none
	// BridgeRates, when set, is bridge i's rate limit in bits/s for each i
	// (0 for none); it overrides BridgeRate and needs one entry a path.
	BridgeRates []int64
	Rate        int           // latency: echoes a second (10000)
	Loss        float64       // bridges: loss probability each way, 0..1
	Delay       time.Duration // bridges: one-way delay
	Short       bool          // a few seconds in all, for CI
	// NoOffload keeps the generator and the target from using UDP
	// segmentation and receive offload (GSO, GRO): one datagram per
	// buffer through the kernel, as most applications send.
	NoOffload bool
	MaxSteps  int // throughput: search steps after the first probe (7; 4 with Short)
	// BothWays makes throughput steps send echo requests and count the
	// echoes that come back: every datagram crosses the tunnel both ways,
	// and the figure is what it carries each way at once.
	BothWays bool
	// NoRepair and NoParity turn repair and parity off at both tunnel
	// ends, to measure what they cost.
	NoRepair, NoParity bool
	// Samples, when set, receives every latency round trip as a line
	// "SETUP SENT_US RTT_US": the setup's name, when the request was sent
	// (microseconds since the run began) and its round-trip time.
	Samples io.Writer

	// Memory scenario, skipped when Sessions is 0: that many in-process
	// clients with Flows local flows each, every flow sending FlowRate
	// datagrams a second (10) through a server run as
	// `ServerExe server ...`.
	Sessions  int
	Flows     int
	FlowRate  int
	ServerExe string

	// Progress, when set, receives a one-line account of what the run is
	// doing, at most once a second; with ProgressTTY the line is
	// rewritten in place.
	Progress    io.Writer
	ProgressTTY bool
}

const maxDatagram = 65507

func (c *Config) setDefaults() {
	if c.Paths == 0 {
		c.Paths = 3
	}
	if c.Size == 0 {
		c.Size = 1200
	}
	if c.Duration == 0 {
		c.Duration = 3 * time.Second
		if c.Short {
			c.Duration = 200 * time.Millisecond
		}
	}
	if c.Measure == "" {
		c.Measure = MeasureAll
	}
	if c.Rate == 0 {
		c.Rate = 10000
	}
	if c.MaxSteps == 0 {
		c.MaxSteps = 7
		if c.Short {
			c.MaxSteps = 4
		}
	}
	if c.Flows == 0 && c.Sessions > 0 {
		c.Flows = 1
	}
	if c.FlowRate == 0 {
		c.FlowRate = 10
	}
}

func (c *Config) check() error {
	switch {
	case c.Paths < 1 || c.Paths > 255:
		return fmt.Errorf("bench: paths %d outside 1..255", c.Paths)
	case c.Size < MinSize || c.Size > maxDatagram:
		return fmt.Errorf("bench: size %d outside %d..%d", c.Size, MinSize, maxDatagram)
	case c.Duration < 10*time.Millisecond || c.Duration > time.Hour:
		return fmt.Errorf("bench: duration %v outside 10ms..1h", c.Duration)
	case c.Measure != MeasureThroughput && c.Measure != MeasureLatency && c.Measure != MeasureAll && c.Measure != MeasureMemory && c.Measure != MeasureDelivery && c.Measure != MeasureTCP:
		return fmt.Errorf("bench: measure %q: want throughput, latency, delivery, tcp, all or memory", c.Measure)
	case len(c.BridgeRates) > 0 && len(c.BridgeRates) != c.Paths:
		return fmt.Errorf("bench: %d bridge rates for %d paths: want one a path", len(c.BridgeRates), c.Paths)
	case c.Rate < 1 || c.Rate > 1_000_000:
		return fmt.Errorf("bench: rate %d outside 1..1000000", c.Rate)
	case c.Loss < 0 || c.Loss > 1:
		return fmt.Errorf("bench: loss %v outside 0..1", c.Loss)
	case c.Delay < 0 || c.Delay > 10*time.Second:
		return fmt.Errorf("bench: delay %v outside 0..10s", c.Delay)
	case c.MaxSteps < 1 || c.MaxSteps > 30:
		return fmt.Errorf("bench: steps %d outside 1..30", c.MaxSteps)
	case c.Sessions < 0 || c.Sessions > 1000 || c.Flows < 0 || c.Flows > 256:
		return fmt.Errorf("bench: %d sessions of %d flows: want at most 1000 sessions of 256 flows", c.Sessions, c.Flows)
	case c.Sessions*c.Flows > 20000:
		return fmt.Errorf("bench: %d flows in all: want at most 20000", c.Sessions*c.Flows)
	case c.FlowRate < 1 || c.FlowRate > 1000:
		return fmt.Errorf("bench: flow rate %d outside 1..1000", c.FlowRate)
	case c.Measure == MeasureMemory && c.Sessions == 0:
		return errors.New("bench: --measure memory needs --sessions")
	case c.Sessions > 0 && c.ServerExe == "":
		return errors.New("bench: the memory scenario needs the server executable")
	}
	return nil
}

// CheckConfig reports the first field of cfg out of range, once defaults
// are applied, as Run would.
func CheckConfig(cfg Config) error {
	cfg.setDefaults()
	return cfg.check()
}

// Report is the outcome of a run. Rates are per second; latencies are in
// microseconds.
type Report struct {
	Machine    Machine      `json:"machine"`
	Config     RunConfig    `json:"config"`
	Throughput []Throughput `json:"throughput,omitempty"`
	Latency    []Latency    `json:"latency,omitempty"`
	Delivery   *Delivery    `json:"delivery,omitempty"`
	TCP        []TCP        `json:"tcp,omitempty"`
	Memory     *Memory      `json:"memory,omitempty"`
	Seconds    float64      `json:"seconds"` // the whole run
}

// Machine describes where the run took place.
type Machine struct {
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPUModel   string `json:"cpu_model,omitempty"`
	Kernel     string `json:"kernel,omitempty"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	Go         string `json:"go"`
}

// RunConfig is the part of Config that shaped the figures.
type RunConfig struct {
	Paths     int     `json:"paths"`
	Size      int     `json:"size"`
	StepSecs  float64 `json:"step_seconds"`
	Measure   Measure `json:"measure"`
	Mode      string  `json:"mode"`
	FEC       string  `json:"fec,omitempty"` // the group shape K/M in fec mode
	Cipher    string  `json:"cipher"`
	BridgeBps int64   `json:"bridge_rate_bps"`
	// BridgesBps are the bridges' own rates when they differ.
	BridgesBps []int64 `json:"bridge_rates_bps,omitempty"`
	Rate       int     `json:"latency_rate"`
	Loss       float64 `json:"bridge_loss"`
	DelayMs    float64 `json:"bridge_delay_ms"`
	Short      bool    `json:"short"`
	BothWays   bool    `json:"both_ways"` // throughput counted in echoes
	LossLimit  float64 `json:"loss_limit"`
	// Generator and Target are the socket speed-ups the kernel gave the
	// generator's and the target's sockets.
	Generator Sockets `json:"generator_socket"`
	Target    Sockets `json:"target_socket"`
}

// Sockets are the speed-ups a socket of the generator or the target has.
type Sockets struct {
	Batch bool `json:"batch"` // several datagrams per system call
	GSO   bool `json:"gso"`   // segmentation offload on writes
	GRO   bool `json:"gro"`   // receive offload on reads
}

func socketsOf(c udpio.Conn) Sockets {
	f := udpio.FeaturesOf(c)
	return Sockets{Batch: f.Batch, GSO: f.GSO, GRO: f.GRO}
}

// Throughput is the highest passing rate of one setup.
type Throughput struct {
	Name  string `json:"name"`  // "baseline", "tunnel 1 path", "tunnel 3 paths"
	Paths int    `json:"paths"` // 0 for the baseline
	// Found is false when no step passed; the figures are then zero.
	Found            bool    `json:"found"`
	GoodputMbps      float64 `json:"goodput_mbps"`
	DeliveredPPS     float64 `json:"delivered_pps"`
	Loss             float64 `json:"loss"`
	CPUCores         float64 `json:"cpu_cores"`
	GeneratorLimited bool    `json:"generator_limited"` // the generator could not offer more
	// VsBaseline is this goodput over the baseline's (1 for the baseline).
	VsBaseline float64 `json:"vs_baseline"`
	Probe      Step    `json:"probe"` // a flat-out step that picked the first rate
	Steps      []Step  `json:"steps"` // the search, in order
	Counters           // over the search
}

// Counters are the tunnel ends' counters over a measurement: packets sent
// and received on paths, duplicates dropped, drops by reason.
type Counters struct {
	Client map[string]uint64 `json:"client_counters,omitempty"`
	Server map[string]uint64 `json:"server_counters,omitempty"`
}

// since returns the counters that moved from before to c, by how much.
func (c Counters) since(before Counters) Counters {
	return Counters{Client: delta(c.Client, before.Client), Server: delta(c.Server, before.Server)}
}

// Latency is the echo round-trip time of one setup.
type Latency struct {
	Name       string  `json:"name"`
	Paths      int     `json:"paths"`
	RatePPS    float64 `json:"rate_pps"` // achieved send rate
	Sent       uint64  `json:"sent"`
	Received   uint64  `json:"received"` // distinct echoes
	Duplicates uint64  `json:"duplicates"`
	Lost       uint64  `json:"lost"`
	MinUs      float64 `json:"min_us"`
	MeanUs     float64 `json:"mean_us"`
	P50Us      float64 `json:"p50_us"`
	P99Us      float64 `json:"p99_us"`
	P999Us     float64 `json:"p999_us"`
	MaxUs      float64 `json:"max_us"`
	// Added is this setup's percentiles minus the baseline's (zero for
	// the baseline).
	AddedP50Us  float64 `json:"added_p50_us"`
	AddedP99Us  float64 `json:"added_p99_us"`
	AddedP999Us float64 `json:"added_p999_us"`
	Counters
}

// Delivery is a stream at a fixed rate through the tunnel over all its
// paths: how much of it arrived, and the bytes the tunnel put on the paths
// for it.
type Delivery struct {
	Name       string  `json:"name"`
	Paths      int     `json:"paths"`
	RatePPS    float64 `json:"rate_pps"` // achieved send rate
	Sent       uint64  `json:"sent"`
	Delivered  uint64  `json:"delivered"` // distinct datagrams at the target
	Duplicates uint64  `json:"duplicates"`
	Loss       float64 `json:"loss"`
	AppBytes   uint64  `json:"app_bytes"`  // the application's bytes sent
	PathBytes  uint64  `json:"path_bytes"` // every byte the client put on the paths: headers, tags, copies, parity, probes
	// Bandwidth is PathBytes over AppBytes.
	Bandwidth float64 `json:"bandwidth"`
	Counters
}

// Memory is the memory scenario: the server child's resident memory with
// every session and flow carrying traffic.
type Memory struct {
	Sessions   int     `json:"sessions"`
	Flows      int     `json:"flows_per_session"`
	Paths      int     `json:"paths_per_session"`
	FlowRate   int     `json:"flow_rate_pps"`
	SessionsUp int     `json:"sessions_up"`
	Sent       uint64  `json:"sent"`
	Echoed     uint64  `json:"echoed"`
	RSSMiB     float64 `json:"rss_mib"` // VmRSS once traffic was steady
	HWMMiB     float64 `json:"hwm_mib"` // VmHWM, the peak
	SteadySecs float64 `json:"steady_seconds"`
}

// genRunTime is how much sending time one write of the throughput
// generator may cover.
const genRunTime = 200 * time.Microsecond

// bencher holds what the measurements share.
type bencher struct {
	cfg    Config
	key    handshake.Key
	epoch  time.Time
	target *target
	gen    *generator
	log    *slog.Logger
	prog   *progress
	step   uint32
	sink   *tcpSink // MeasureTCP only
}

// Run performs the measurements cfg asks for and returns the report. Every
// socket, goroutine and child process it starts is gone when it returns.
func Run(ctx context.Context, cfg Config) (Report, error) {
	cfg.setDefaults()
	if err := cfg.check(); err != nil {
		return Report{}, err
	}
	started := time.Now()
	rep := Report{
		Machine: machine(),
		Config: RunConfig{
			Paths: cfg.Paths, Size: cfg.Size, StepSecs: cfg.Duration.Seconds(), Measure: cfg.Measure, Mode: cfg.Mode.String(), FEC: cfg.fecShape(), Cipher: cfg.resolvedCipher().String(), BridgeBps: cfg.BridgeRate, BridgesBps: cfg.BridgeRates,
			Rate: cfg.Rate, Loss: cfg.Loss, DelayMs: float64(cfg.Delay) / 1e6, Short: cfg.Short, BothWays: cfg.BothWays,
			LossLimit: LossLimit,
		},
	}
	key, err := handshake.GenerateKey()
	if err != nil {
		return rep, fmt.Errorf("bench: key: %w", err)
	}
	b := &bencher{
		cfg:   cfg,
		key:   key,
		epoch: started,
		log:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		prog:  newProgress(cfg.Progress, cfg.ProgressTTY),
	}
	defer b.prog.finish()
	b.target, err = startTarget(cfg.Size, b.sockOpts())
	if err != nil {
		return rep, err
	}
	defer b.target.close()
	gconn, err := listenBatch(b.sockOpts())
	if err != nil {
		return rep, fmt.Errorf("generator: %w", err)
	}
	defer gconn.Close()
	b.gen = newGenerator(gconn, cfg.Size, started, genRunTime)
	rep.Config.Generator = socketsOf(gconn)
	rep.Config.Target = socketsOf(b.target.conn)

	if cfg.Measure != MeasureMemory {
		if err := b.runSetups(ctx, &rep); err != nil {
			return rep, err
		}
	}
	if cfg.Sessions > 0 {
		m, err := b.memory(ctx)
		if err != nil {
			return rep, err
		}
		rep.Memory = &m
	}
	rep.Seconds = time.Since(started).Seconds()
	return rep, nil
}

// runSetups measures the baseline, the tunnel with one path and, when more
// are asked for, the tunnel with all of them.
func (b *bencher) runSetups(ctx context.Context, rep *Report) error {
	dst, err := netip.ParseAddrPort(b.target.addr())
	if err != nil {
		return fmt.Errorf("bench: target address: %w", err)
	}
	if b.cfg.Measure == MeasureTCP {
		return b.tcpSetups(ctx, rep)
	}
	if b.cfg.Measure == MeasureDelivery {
		return b.withTunnel(ctx, b.cfg.Paths, func(tn *tunnel) error {
			d, err := b.delivery(ctx, tn)
			rep.Delivery = &d
			return err
		})
	}
	doThr := b.cfg.Measure == MeasureThroughput || b.cfg.Measure == MeasureAll
	doLat := b.cfg.Measure == MeasureLatency || b.cfg.Measure == MeasureAll
	if doThr {
		t, err := b.throughput(ctx, "baseline", dst, nil)
		if err != nil {
			return err
		}
		rep.Throughput = append(rep.Throughput, t)
	}
	if doLat {
		l, err := b.latency(ctx, "baseline", dst, nil)
		if err != nil {
			return err
		}
		rep.Latency = append(rep.Latency, l)
	}
	if err := b.eachTunnel(ctx, func(name string, tn *tunnel) error {
		if doThr {
			t, err := b.throughput(ctx, name, tn.addr(), tn)
			if err != nil {
				return err
			}
			rep.Throughput = append(rep.Throughput, t)
		}
		if doLat {
			l, err := b.latency(ctx, name, tn.addr(), tn)
			if err != nil {
				return err
			}
			rep.Latency = append(rep.Latency, l)
		}
		return nil
	}); err != nil {
		return err
	}
	if len(rep.Throughput) > 0 && rep.Throughput[0].Found {
		base := rep.Throughput[0].GoodputMbps
		for i := range rep.Throughput {
			if base > 0 {
				rep.Throughput[i].VsBaseline = rep.Throughput[i].GoodputMbps / base
			}
		}
	}
	if len(rep.Latency) > 0 {
		base := rep.Latency[0]
		for i := 1; i < len(rep.Latency); i++ {
			l := &rep.Latency[i]
			l.AddedP50Us = l.P50Us - base.P50Us
			l.AddedP99Us = l.P99Us - base.P99Us
			l.AddedP999Us = l.P999Us - base.P999Us
		}
	}
	return nil
}

// sockOpts are the options of the generator's and the target's sockets.
func (b *bencher) sockOpts() udpio.Options {
	return udpio.Options{NoGSO: b.cfg.NoOffload, NoGRO: b.cfg.NoOffload}
}

func (b *bencher) nextStep() uint32 {
	b.step++
	return b.step
}

func machine() Machine {
	return Machine{
		CPUs:       runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		CPUModel:   cpuModel(),
		Kernel:     kernelRelease(),
		OS:         runtime.GOOS,
		Arch:       runtime.GOARCH,
		Go:         runtime.Version(),
	}
}

// resolvedCipher is the cipher the bench's tunnel uses: Auto resolves as a
// client and a server on this machine would agree.
func (c *Config) resolvedCipher() aead.Cipher {
	ci, ok := c.Cipher.Choose(c.Cipher.Offer())
	if !ok {
		return c.Cipher
	}
	return ci
}

// fecShape is the fec mode's group shape as K/M, or "" in other modes.
func (c *Config) fecShape() string {
	if c.Mode != sched.FEC {
		return ""
	}
	p := c.FEC
	if p == (fec.Params{}) {
		p = fec.DefaultParams()
	}
	if c.FECDepth > 1 {
		return fmt.Sprintf("%d/%d x%d", p.Data, p.Parity, c.FECDepth)
	}
	return fmt.Sprintf("%d/%d", p.Data, p.Parity)
}

// tcpSetups measures one TCP connection directly to the sink and through
// the tunnel's TCP forward with one path and with all of them.
func (b *bencher) tcpSetups(ctx context.Context, rep *Report) error {
	sink, err := startTCPSink()
	if err != nil {
		return err
	}
	defer sink.close()
	b.sink = sink
	t, err := b.tcpStep(ctx, "baseline", sink.addr(), nil)
	if err != nil {
		return err
	}
	rep.TCP = append(rep.TCP, t)
	if err := b.eachTunnel(ctx, func(name string, tn *tunnel) error {
		t, err := b.tcpStep(ctx, name, tn.cl.ForwardAddrs()[0].String(), tn)
		rep.TCP = append(rep.TCP, t)
		return err
	}); err != nil {
		return err
	}
	for i := range rep.TCP {
		if base := rep.TCP[0].Mbps; base > 0 {
			rep.TCP[i].VsBaseline = rep.TCP[i].Mbps / base
		}
	}
	return nil
}

// eachTunnel runs fn with a tunnel of one path and then, when more are
// asked for, with one of all of them, each named for the table.
func (b *bencher) eachTunnel(ctx context.Context, fn func(name string, tn *tunnel) error) error {
	counts := []int{1}
	if b.cfg.Paths > 1 {
		counts = append(counts, b.cfg.Paths)
	}
	for _, n := range counts {
		name := fmt.Sprintf("tunnel %d path", n)
		if n > 1 {
			name += "s"
		}
		if err := b.withTunnel(ctx, n, func(tn *tunnel) error { return fn(name, tn) }); err != nil {
			return err
		}
	}
	return nil
}
