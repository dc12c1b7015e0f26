//go:build race

package fec

// raceEnabled shrinks the loss simulations under the race detector, which
// makes them about ten times slower.
const raceEnabled = true
