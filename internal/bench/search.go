package bench

import (
	"context"
	"errors"
	"math"
)

// LossLimit is the largest delivered loss fraction a throughput step may
// have and still pass.
const LossLimit = 0.001

// Step is one throughput measurement at one offered rate.
type Step struct {
	TargetPPS    float64 `json:"target_pps"`    // the rate asked of the generator
	OfferedPPS   float64 `json:"offered_pps"`   // the rate it achieved
	Sent         uint64  `json:"sent"`          // datagrams written
	Delivered    uint64  `json:"delivered"`     // distinct datagrams at the target
	Duplicates   uint64  `json:"duplicates"`    // datagrams the target saw more than once
	Loss         float64 `json:"loss"`          // 1 - delivered/sent
	DeliveredPPS float64 `json:"delivered_pps"` // delivered / send time
	GoodputMbps  float64 `json:"goodput_mbps"`  // delivered × size × 8 / send time
	Seconds      float64 `json:"seconds"`       // send time
	CPUCores     float64 `json:"cpu_cores"`     // process CPU time / send time (generator, target and tunnel together)
	Pass         bool    `json:"pass"`          // loss below LossLimit
}

// searchParams bound a rate search.
type searchParams struct {
	Start     float64 // first rate tried
	MinRate   float64 // give up below this rate
	MaxSteps  int     // measurements at most
	Tolerance float64 // stop once the passing and failing rates are this close (relative)
}

// errNoSteps reports a search allowed no measurement.
var errNoSteps = errors.New("bench: rate search needs at least one step")

// searchRate looks for the highest rate whose measurement passes: it doubles
// the rate while steps pass (halves it, or goes below what was delivered,
// while they fail and none has passed),
// then bisects between the highest pass and the lowest failure. A passing
// step whose generator fell well short of the asked rate ends the search,
// since higher rates cannot be offered. It returns every step in order and
// the index of the best passing one, or -1.
func searchRate(ctx context.Context, p searchParams, measure func(ctx context.Context, rate float64) (Step, error)) ([]Step, int, error) {
	if p.MaxSteps < 1 {
		return nil, -1, errNoSteps
	}
	if p.Tolerance <= 0 {
		p.Tolerance = 0.05
	}
	if p.MinRate <= 0 {
		p.MinRate = 1
	}
	var steps []Step
	best := -1
	lo, hi := 0.0, math.Inf(1) // highest passing and lowest failing rates
	rate := max(p.Start, p.MinRate)
	for len(steps) < p.MaxSteps {
		if err := ctx.Err(); err != nil {
			return steps, best, err
		}
		s, err := measure(ctx, rate)
		if err != nil {
			return steps, best, err
		}
		steps = append(steps, s)
		if s.Pass {
			if best < 0 || s.DeliveredPPS > steps[best].DeliveredPPS {
				best = len(steps) - 1
			}
			if s.OfferedPPS < 0.9*rate {
				break // the generator cannot offer more
			}
			lo = rate
		} else {
			hi = rate
		}
		switch {
		case math.IsInf(hi, 1):
			rate *= 2
		case lo == 0:
			// Overloaded: what got through is a fair guess at the
			// capacity when it is below half the rate. A step that got
			// nothing through (the machine stalled) says nothing of it:
			// try a quarter of the rate.
			if s.DeliveredPPS > 0 {
				rate = min(rate/2, 0.9*s.DeliveredPPS)
			} else {
				rate /= 4
			}
			if rate < p.MinRate {
				return steps, best, nil
			}
		default:
			if hi/lo-1 <= p.Tolerance {
				return steps, best, nil
			}
			rate = (lo + hi) / 2
		}
	}
	return steps, best, nil
}
