//go:build linux

package netlab

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/impair"
)

const (
	// RelayEnv, when set to a UDP address, makes MaybeRunRelay run a relay
	// listening there instead of returning.
	RelayEnv = "MPTUNNEL_NETLAB_RELAY"
	// relayToEnv carries the relay's upstream address.
	relayToEnv = "MPTUNNEL_NETLAB_RELAY_TO"
	// relayDelayEnv carries the relay's one-way delay, in time.Duration
	// syntax.
	relayDelayEnv = "MPTUNNEL_NETLAB_RELAY_DELAY"
	// relayLossEnv carries the relay's loss probability each way.
	relayLossEnv = "MPTUNNEL_NETLAB_RELAY_LOSS"

	// relayReady is what the relay prints once it is bound.
	relayReady = "netlab relay: listening on "
	// relayStats starts the line with the relay's final counters, in JSON.
	relayStats = "netlab relay: stats "
)

// MaybeRunRelay lets the test binary act as a lab's relay (see
// NS.StartRelay). A test package that starts relays must call it before
// its tests run, for example from TestMain or an init function. If RelayEnv
// is set, it relays until SIGTERM or SIGINT, prints its counters and exits
// 0 (1 if it cannot start); otherwise it returns at once.
func MaybeRunRelay() {
	if addr := os.Getenv(RelayEnv); addr != "" {
		os.Exit(runRelay(addr, os.Getenv(relayToEnv), os.Getenv(relayDelayEnv), os.Getenv(relayLossEnv)))
	}
}

// runRelay runs an internal/impair relay from listen to to with the same
// fixed delay and random loss each way, until SIGTERM or SIGINT.
func runRelay(listen, to, delayStr, lossStr string) int {
	delay, err := time.ParseDuration(delayStr)
	if err != nil || delay < 0 {
		fmt.Fprintf(os.Stderr, "netlab relay: bad delay %q\n", delayStr)
		return 1
	}
	loss, err := strconv.ParseFloat(lossStr, 64)
	if err != nil || !(loss >= 0 && loss <= 1) {
		fmt.Fprintf(os.Stderr, "netlab relay: bad loss %q\n", lossStr)
		return 1
	}
	stopped := stopSignal()
	cfg := impair.Config{Delay: delay, Loss: loss}
	// Each relay its own seed: relays given the same datagrams in the same
	// order (the copies of a redundant tunnel) must not drop the same ones.
	r, err := impair.New(impair.Options{Listen: listen, To: to, Up: cfg, Down: cfg, Seed: rand.Int64()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "netlab relay: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stdout, "%s%s\n", relayReady, r.Addr())
	<-stopped
	st := r.Stats()
	if err := r.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "netlab relay: %v\n", err)
	}
	b, _ := json.Marshal(st)
	fmt.Fprintf(os.Stdout, "%s%s\n", relayStats, b)
	return 0
}

// RelayConfig describes a relay.
type RelayConfig struct {
	// Listen is the UDP address the relay receives on, such as ":4000".
	Listen string
	// To is the upstream address, such as "10.77.11.2:2000".
	To string
	// Delay is the fixed one-way delay applied in each direction.
	Delay time.Duration
	// Loss is the probability in [0, 1] that the relay drops a datagram,
	// in each direction. It falls on each datagram alone. SetLoss on the
	// relay's interfaces does not, once traffic is heavy: the relay sends
	// runs of equal-size datagrams as one UDP GSO send (up to 64), which
	// the interface's loss rule sees, and drops, as one packet.
	Loss float64
}

// Relay is a relay running in a namespace: internal/impair's relay
// (one upstream socket per downstream peer, as `mptunnel bridge`) with a
// fixed delay and random loss each way and no other impairment.
type Relay struct {
	*Proc
	cfg RelayConfig
}

// StartRelay starts a relay inside the namespace and waits until it
// is bound. The relay is this test binary run again with RelayEnv set, so
// the test package must call MaybeRunRelay before its tests run. The lab
// stops it at cleanup.
func (n *NS) StartRelay(t testing.TB, cfg RelayConfig) *Relay {
	t.Helper()
	env := reexecEnv(RelayEnv+"="+cfg.Listen, relayToEnv+"="+cfg.To, relayDelayEnv+"="+cfg.Delay.String(),
		relayLossEnv+"="+strconv.FormatFloat(cfg.Loss, 'g', -1, 64))
	desc := fmt.Sprintf("netlab relay %s -> %s (delay %v, loss %g)", cfg.Listen, cfg.To, cfg.Delay, cfg.Loss)
	p := n.start(t, desc, env, testBinary(t), []string{"-test.run=^$"})
	p.waitStarted(t, relayReady, desc+" in "+n.Name, 20*time.Millisecond)
	return &Relay{Proc: p, cfg: cfg}
}

// Config returns the relay's configuration.
func (r *Relay) Config() RelayConfig { return r.cfg }

// StopStats stops the relay and returns its counters: datagrams received,
// forwarded and dropped each way over its whole life.
func (r *Relay) StopStats() (impair.Stats, error) {
	if err := r.Stop(); err != nil {
		return impair.Stats{}, err
	}
	out := r.Output()
	i := strings.LastIndex(out, relayStats)
	if i < 0 {
		return impair.Stats{}, fmt.Errorf("%s printed no counters: %s", r.desc, tail(out, 2<<10))
	}
	line, _, _ := strings.Cut(out[i+len(relayStats):], "\n")
	var st impair.Stats
	if err := json.Unmarshal([]byte(line), &st); err != nil {
		return impair.Stats{}, fmt.Errorf("%s: counters %q: %w", r.desc, line, err)
	}
	return st, nil
}
