package demo

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestReportFromTheRun: a short demo's figures agree with each other and
// with the client's counters, and the printed report shows them.
func TestReportFromTheRun(t *testing.T) {
	rep, err := Run(context.Background(), Config{Duration: 2 * time.Second, Rate: 200})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []Stream{rep.Single, rep.Tunnel} {
		if s.Sent != 400 || s.Received+s.Lost != s.Sent || s.Received > s.Sent {
			t.Fatalf("%s: sent %d, received %d, lost %d", s.Name, s.Sent, s.Received, s.Lost)
		}
		if want := 100 * float64(s.Lost) / float64(s.Sent); s.LossPct != want {
			t.Fatalf("%s: loss %.3f%%, want %.3f%%", s.Name, s.LossPct, want)
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
