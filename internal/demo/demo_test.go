package demo

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestReportFromTheRun: a short demo's figures agree with what its echo
// target received, with the loss its paths were given and with the client's
// counters, and the printed report shows them.
func TestReportFromTheRun(t *testing.T) {
	// The echo target's own count: the distinct requests of each stream
	// that reached it.
	var mu sync.Mutex
	arrived := [2]map[uint32]bool{{}, {}}
	echoed := func(req []byte) {
		if len(req) != requestLen || req[4] > 1 {
			t.Errorf("the echo target got a %d-byte datagram that is no request of the demo", len(req))
			return
		}
		mu.Lock()
		arrived[req[4]][binary.BigEndian.Uint32(req)] = true
		mu.Unlock()
	}
	rep, err := Run(context.Background(), Config{Duration: 2 * time.Second, Rate: 200, echoed: echoed})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// Each path loses 10% each way. The single path: about 10% of the
	// requests lost on the way out, 19% of the round trips. The tunnel,
	// three such paths: about 0.1% and 0.2%. The bounds are more than four
	// standard deviations wide for 400 requests.
	for i, c := range []struct {
		s                        Stream
		minArrived, maxArrived   int     // requests that reach the target
		minReceived, maxReceived int     // echoes that come back
		minLoss, maxLoss         float64 // the loss shown, in percent
	}{
		{rep.Single, 330, 390, 280, 360, 10, 30},
		{rep.Tunnel, 395, 400, 390, 400, 0, 2.5},
	} {
		s, n := c.s, len(arrived[i])
		t.Logf("%s: sent %d, %d reached the target, %d came back (%.2f%% lost)", s.Name, s.Sent, n, s.Received, s.LossPct)
		if s.Sent != 400 {
			t.Fatalf("%s: sent %d requests, want 400", s.Name, s.Sent)
		}
		if n < c.minArrived || n > c.maxArrived {
			t.Errorf("%s: %d of 400 requests reached the target, want %d to %d", s.Name, n, c.minArrived, c.maxArrived)
		}
		// No echo without its request at the target: more would mean
		// the stream counted copies or echoes of other requests.
		if s.Received > n || s.Received < c.minReceived || s.Received > c.maxReceived {
			t.Errorf("%s: %d echoes came back, want %d to %d and at most the %d requests the target got", s.Name, s.Received, c.minReceived, c.maxReceived, n)
		}
		// Every request that did not reach the target is lost.
		if s.Lost < s.Sent-n {
			t.Errorf("%s: reported %d lost, but %d of %d requests never reached the target", s.Name, s.Lost, s.Sent-n, s.Sent)
		}
		if s.LossPct < c.minLoss || s.LossPct > c.maxLoss {
			t.Errorf("%s: loss shown %.2f%%, want %v%% to %v%%", s.Name, s.LossPct, c.minLoss, c.maxLoss)
		}
		if s.Received > 0 && (s.P50Ms <= 0 || s.P99Ms < s.P50Ms || s.MaxMs < s.P99Ms) {
			t.Fatalf("%s: latencies %v %v %v", s.Name, s.P50Ms, s.P99Ms, s.MaxMs)
		}
		if len(s.PerSecond) != 2 {
			t.Fatalf("%s: %d seconds of delivery figures, want 2", s.Name, len(s.PerSecond))
		}
	}
	// The client forwarded every request and delivered every echo counted.
	if got := rep.Counters["forwarded"]; got != uint64(rep.Tunnel.Sent) {
		t.Fatalf("client forwarded %d datagrams, the report says %d were sent", got, rep.Tunnel.Sent)
	}
	if got := rep.Counters["delivered"]; got != uint64(rep.Tunnel.Received) {
		t.Fatalf("client delivered %d datagrams, the report says %d came back", got, rep.Tunnel.Received)
	}
	var sent uint64
	for _, p := range rep.Client.Sessions[0].Paths {
		sent += p.TxPackets
	}
	if sent < 3*uint64(rep.Tunnel.Sent) {
		t.Fatalf("the paths sent %d packets for %d requests in redundant mode over 3 paths", sent, rep.Tunnel.Sent)
	}
	// Three 10% paths against one: the tunnel loses far less (about 0.2%
	// against 19% of the round trips).
	if rep.Tunnel.Lost >= rep.Single.Lost || rep.Single.Lost == 0 {
		t.Fatalf("tunnel lost %d, single path %d", rep.Tunnel.Lost, rep.Single.Lost)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, s := range []Stream{rep.Single, rep.Tunnel} {
		line := fmt.Sprintf("%6d %6d %7.2f%%", s.Sent, s.Lost, s.LossPct)
		if !strings.Contains(text.String(), line) {
			t.Fatalf("the report does not show %q:\n%s", line, text.String())
		}
	}
	for _, l := range strings.Split(text.String(), "\n") {
		if len(l) > 80 {
			t.Fatalf("line over 80 columns: %q", l)
		}
	}
	var page bytes.Buffer
	if err := rep.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	h := page.String()
	if strings.Count(h, "<svg") != 2 || !strings.Contains(h, "<polyline") || strings.Contains(h, "http://") && strings.Count(h, "http://") != strings.Count(h, "http://www.w3.org/2000/svg") {
		t.Fatal("the HTML page lacks its charts, or loads something from the network")
	}
}
