package impair

import (
	"fmt"
	"math"
	"time"
)

// Defaults applied when the corresponding field is zero.
const (
	// DefaultQueueLimit bounds the time a packet may wait in the rate
	// queue when Config.Rate is set and Config.QueueLimit is zero.
	DefaultQueueLimit = 50 * time.Millisecond
	// DefaultReorderDelay is the hold-back applied to reordered packets
	// when both Config.ReorderDelay and Config.Jitter are zero.
	DefaultReorderDelay = time.Millisecond
	// DefaultIdleTimeout is the per-peer upstream socket idle timeout.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultMaxPeers is the default limit on concurrent downstream peers.
	DefaultMaxPeers = 1024
)

// RateOverhead is the number of bytes added to each datagram's payload
// length when charging it against Config.Rate, approximating the IPv4 and
// UDP headers a real link carries. It also gives empty datagrams a cost.
const RateOverhead = 28

// Config describes the impairments applied to one direction of a relay.
// The zero value forwards everything unchanged.
//
// The impairments are applied in this order: random loss (Loss and
// BurstLoss together), the rate queue (Rate, QueueLimit), then the delay
// line (Delay, Jitter, Reorder). A duplicated packet is charged twice
// against the rate and released right after its original.
type Config struct {
	// Loss is the probability in [0, 1] that a packet is dropped at random.
	Loss float64
	// BurstLoss is a Gilbert-Elliott bursty loss model, applied in addition
	// to Loss. Its zero value disables it.
	BurstLoss BurstLoss
	// Delay is the fixed one-way delay.
	Delay time.Duration
	// Jitter adds a uniform random delay in [0, Jitter) to each packet, so
	// packets may be reordered.
	Jitter time.Duration
	// Reorder is the probability in [0, 1] that a packet is held back an
	// extra ReorderDelay so that later packets overtake it.
	Reorder float64
	// ReorderDelay is the extra hold-back of a reordered packet. Zero means
	// 2*Jitter, or DefaultReorderDelay when Jitter is zero too.
	ReorderDelay time.Duration
	// Duplicate is the probability in [0, 1] that a packet is sent twice.
	Duplicate float64
	// Rate limits the link to this many bits per second (each datagram
	// counting len+RateOverhead bytes); 0 means unlimited. A packet that
	// would wait in the rate queue longer than QueueLimit is dropped.
	Rate int64
	// QueueLimit is the longest a packet may wait in the rate queue.
	// Zero means DefaultQueueLimit. It is ignored when Rate is 0.
	QueueLimit time.Duration
}

// BurstLoss is a two-state (good/bad) Markov loss model evaluated once per
// packet: the state first moves (good to bad with probability PGoodToBad,
// bad to good with probability PBadToGood), then a packet seen in the bad
// state is lost with probability LossInBad. The model is off while
// PGoodToBad is zero. A zero LossInBad is treated as 1, the classic
// Gilbert model. Mean loss-run length is about 1/PBadToGood.
type BurstLoss struct {
	PGoodToBad float64
	PBadToGood float64
	LossInBad  float64
}

// Enabled reports whether the model can ever lose a packet.
func (b BurstLoss) Enabled() bool { return b.PGoodToBad > 0 }

func (b BurstLoss) lossInBad() float64 {
	if b.LossInBad == 0 {
		return 1
	}
	return b.LossInBad
}

// EffectiveReorderDelay returns the hold-back applied to reordered packets
// once defaults are resolved.
func (c Config) EffectiveReorderDelay() time.Duration {
	switch {
	case c.ReorderDelay > 0:
		return c.ReorderDelay
	case c.Jitter > 0:
		return 2 * c.Jitter
	default:
		return DefaultReorderDelay
	}
}

// EffectiveQueueLimit returns the rate-queue limit once defaults are
// resolved.
func (c Config) EffectiveQueueLimit() time.Duration {
	if c.QueueLimit > 0 {
		return c.QueueLimit
	}
	return DefaultQueueLimit
}

// Validate reports the first field that is out of range: probabilities must
// lie in [0, 1], durations and Rate must not be negative.
func (c Config) Validate() error {
	probs := []struct {
		name string
		v    float64
	}{
		{"loss", c.Loss},
		{"reorder", c.Reorder},
		{"duplicate", c.Duplicate},
		{"burst loss good-to-bad", c.BurstLoss.PGoodToBad},
		{"burst loss bad-to-good", c.BurstLoss.PBadToGood},
		{"burst loss in bad", c.BurstLoss.LossInBad},
	}
	for _, p := range probs {
		if math.IsNaN(p.v) || p.v < 0 || p.v > 1 {
			return fmt.Errorf("%s probability %v outside [0, 1]", p.name, p.v)
		}
	}
	durs := []struct {
		name string
		v    time.Duration
	}{
		{"delay", c.Delay},
		{"jitter", c.Jitter},
		{"reorder delay", c.ReorderDelay},
		{"queue limit", c.QueueLimit},
	}
	for _, d := range durs {
		if d.v < 0 {
			return fmt.Errorf("negative %s %v", d.name, d.v)
		}
	}
	if c.Rate < 0 {
		return fmt.Errorf("negative rate %d", c.Rate)
	}
	return nil
}

// sanitize clamps every field into its valid range.
func (c Config) sanitize() Config {
	c.Loss = clampProb(c.Loss)
	c.Reorder = clampProb(c.Reorder)
	c.Duplicate = clampProb(c.Duplicate)
	c.BurstLoss.PGoodToBad = clampProb(c.BurstLoss.PGoodToBad)
	c.BurstLoss.PBadToGood = clampProb(c.BurstLoss.PBadToGood)
	c.BurstLoss.LossInBad = clampProb(c.BurstLoss.LossInBad)
	c.Delay = max(c.Delay, 0)
	c.Jitter = max(c.Jitter, 0)
	c.ReorderDelay = max(c.ReorderDelay, 0)
	c.QueueLimit = max(c.QueueLimit, 0)
	c.Rate = max(c.Rate, 0)
	return c
}

func clampProb(p float64) float64 {
	if math.IsNaN(p) || p < 0 {
		return 0
	}
	return min(p, 1)
}

// txTime is the serialization time of n payload bytes at rate bits/s.
func txTime(n int, rate int64) time.Duration {
	bits := int64(n+RateOverhead) * 8
	// bits <= ~5.3e5, so bits*1e9 cannot overflow int64.
	return time.Duration(bits * int64(time.Second) / rate)
}
