//go:build linux

package netlab

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// IperfConfig describes one iperf3 TCP run from a namespace.
type IperfConfig struct {
	// Server is the address of the iperf3 server (StartIperfServer).
	Server string
	// Port is the server's port; 0 means iperf3's 5201.
	Port int
	// Duration is how long data is sent; it is rounded to whole seconds,
	// at least one.
	Duration time.Duration
	// Congestion names the sender's TCP congestion control, such as
	// "cubic" (iperf3 -C); empty leaves the namespace's default.
	Congestion string
}

// IperfResult is what iperf3 --json reports of one TCP run from the client
// to the server.
type IperfResult struct {
	// SentBytes and ReceivedBytes count the payload sent by the client and
	// received by the server.
	SentBytes, ReceivedBytes uint64
	// ReceivedBitsPerSecond is the throughput at the receiver.
	ReceivedBitsPerSecond float64
	// Seconds is the receiver's measured duration.
	Seconds float64
	// Retransmits counts the sender's TCP retransmissions.
	Retransmits int
	// Congestion is the congestion control the sender used.
	Congestion string
	// Intervals are the sender's bits per second in each interval
	// (one a second), showing stalls that the mean hides.
	Intervals []float64
}

// iperfJSON is the part of iperf3's --json output that IperfResult uses.
type iperfJSON struct {
	Error     string `json:"error"`
	Intervals []struct {
		Sum struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum"`
	} `json:"intervals"`
	End struct {
		SumSent struct {
			Bytes       uint64 `json:"bytes"`
			Retransmits int    `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			Seconds       float64 `json:"seconds"`
			Bytes         uint64  `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		SenderCongestion string `json:"sender_tcp_congestion"`
	} `json:"end"`
}

// StartIperfServer starts an iperf3 server in the namespace, bound to addr
// (an address of the namespace) and port (0 for 5201), and waits until it
// listens. It serves one run after another until the lab stops it. It needs
// iperf3 and ss.
func (n *NS) StartIperfServer(t testing.TB, addr string, port int) *Proc {
	t.Helper()
	if port == 0 {
		port = 5201
	}
	p := n.Start(t, "iperf3", "--server", "--bind", addr, "--port", strconv.Itoa(port), "--idle-timeout", "30")
	n.WaitListening(t, "tcp", port, 10*time.Second)
	return p
}

// RunIperf runs an iperf3 TCP client in the namespace, sending to the
// server for cfg.Duration, and returns its report. The run is bounded: its
// control connection must open within 20 s, and the command is killed 40 s
// after its duration.
func (n *NS) RunIperf(t testing.TB, cfg IperfConfig) (IperfResult, error) {
	t.Helper()
	port := cfg.Port
	if port == 0 {
		port = 5201
	}
	secs := max(int(cfg.Duration.Round(time.Second)/time.Second), 1)
	args := []string{"--client", cfg.Server, "--port", strconv.Itoa(port), "--time", strconv.Itoa(secs),
		"--json", "--connect-timeout", "20000"}
	if cfg.Congestion != "" {
		args = append(args, "--congestion", cfg.Congestion)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Duration(secs)*time.Second+40*time.Second)
	defer cancel()
	cmd := n.Command(ctx, "iperf3", args...)
	cmd.WaitDelay = 2 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var j iperfJSON
	if jerr := json.Unmarshal(out, &j); jerr != nil {
		if err == nil {
			err = jerr
		}
		return IperfResult{}, fmt.Errorf("iperf3 to %s in %s: %w: %s%s", cfg.Server, n.Name, err, tail(string(out), 2<<10), stderr.String())
	}
	if j.Error != "" {
		return IperfResult{}, fmt.Errorf("iperf3 to %s in %s: %s", cfg.Server, n.Name, j.Error)
	}
	if err != nil {
		return IperfResult{}, fmt.Errorf("iperf3 to %s in %s: %w: %s", cfg.Server, n.Name, err, stderr.String())
	}
	r := IperfResult{
		SentBytes:             j.End.SumSent.Bytes,
		ReceivedBytes:         j.End.SumReceived.Bytes,
		ReceivedBitsPerSecond: j.End.SumReceived.BitsPerSecond,
		Seconds:               j.End.SumReceived.Seconds,
		Retransmits:           j.End.SumSent.Retransmits,
		Congestion:            j.End.SenderCongestion,
	}
	for _, iv := range j.Intervals {
		r.Intervals = append(r.Intervals, iv.Sum.BitsPerSecond)
	}
	return r, nil
}
