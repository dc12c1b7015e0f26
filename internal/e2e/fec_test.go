package e2e

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/fec"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/sched"
)

// streamEchoEvery sends n numbered datagrams of size bytes through app to an
// echo target, burst every millisecond, and returns how many distinct ones
// came back; it waits until none has come for half a second. Call it from
// the test's goroutine; elsewhere, call echoStream.
func streamEchoEvery(t *testing.T, app *net.UDPConn, n, size, burst int) int {
	t.Helper()
	got, err := echoStream(app, n, size, burst)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// echoStream is streamEchoEvery for any goroutine: it returns the error of
// a failed send (with the echoes counted until then) instead of failing the
// test, which only the test's goroutine may do.
func echoStream(app *net.UDPConn, n, size, burst int) (int, error) {
	seen := make([]bool, n)
	got := 0
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, size+1)
		for {
			app.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			k, err := app.Read(buf)
			if err != nil {
				return
			}
			if k != size {
				continue
			}
			seq := int(binary.BigEndian.Uint32(buf))
			mu.Lock()
			if seq < n && !seen[seq] {
				seen[seq] = true
				got++
			}
			mu.Unlock()
		}
	}()
	var err error
	for i := range n {
		if _, err = app.Write(stamp(uint32(i), size)); err != nil {
			err = fmt.Errorf("sending datagram %d of %d: %w", i, n, err)
			break
		}
		if i%burst == burst-1 {
			time.Sleep(time.Millisecond)
		}
	}
	// The reader ends half a second after the last echo.
	<-done
	mu.Lock()
	defer mu.Unlock()
	return got, err
}

// upPackets returns the datagrams the relays received from the client.
func upPackets(relays []*impair.Relay) uint64 {
	var n uint64
	for _, r := range relays {
		n += r.Stats().Up.Received
	}
	return n
}

// TestFECMode: three paths with 10% loss each way; fec sends each datagram
// once plus parity, about 1.5 packets a datagram, and repairs most losses.
func TestFECMode(t *testing.T) {
	key, _, srv := echoServer(t)
	lossy := impair.Config{Loss: 0.1}
	paths, relays := startPaths(t, srv.Addr().String(), 21, lossy, lossy, lossy)
	cl := startClient(t, client.Config{Paths: paths, Key: key, Mode: sched.FEC})
	app := dial(t, cl)
	const n, size = 4000, 1000
	before := upPackets(relays)
	got := streamEchoEvery(t, app, n, size, 4)
	sent := upPackets(relays) - before
	// Each way, a datagram is lost for good only when its shard and at
	// least 4 of the 11 others of its group are: about 0.19%; round trip
	// about 0.4%. Allow 1% each way.
	if lost := n - got; lost > n/50 {
		t.Fatalf("%d of %d datagrams lost on the round trip (%.2f%%), want at most 2%%", lost, n, 100*float64(lost)/n)
	}
	// 1.5 shards a datagram, plus probes and flushed partial groups.
	if ratio := float64(sent) / n; ratio < 1.3 || ratio > 1.7 {
		t.Fatalf("%d packets on the paths for %d datagrams (%.2f a datagram), want about 1.5", sent, n, ratio)
	}
	cc, sc := cl.Counters().Snapshot(), srv.Counters().Snapshot()
	if cc.FECRecovered == 0 || sc.FECRecovered == 0 {
		t.Fatalf("recovered: client %d, server %d; want both above 0", cc.FECRecovered, sc.FECRecovered)
	}
	if sc.FECParity == 0 || cc.FECParity == 0 {
		t.Fatalf("parity sent: client %d, server %d", cc.FECParity, sc.FECParity)
	}
	t.Logf("fec: %d of %d back, %.3f packets a datagram upstream, recovered %d (client) and %d (server)",
		got, n, float64(sent)/n, cc.FECRecovered, sc.FECRecovered)
	if m := srv.Status("test", time.Now()).Sessions[0].Mode; m != "fec" {
		t.Fatalf("server reports mode %q", m)
	}
}

// TestFECBurstLoss: bursts of about ten lost packets (10% on average) on one
// path of three; with shards spread over the paths, fec still delivers at
// least 99% each way: 8/4 because no group has more shards on a path than
// parity, 10/4 (under 1.5x) when 4 groups interleave so that a burst is
// shared among them.
func TestFECBurstLoss(t *testing.T) {
	for _, tc := range []struct {
		name  string
		shape fec.Params
		depth int
	}{
		{"8/4", fec.Params{Data: 8, Parity: 4}, 1},
		{"10/4x4", fec.Params{Data: 10, Parity: 4}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, _, srv := echoServer(t)
			bursty := impair.Config{BurstLoss: impair.BurstLoss{PGoodToBad: 0.1 / 9, PBadToGood: 0.1}}
			paths, relays := startPaths(t, srv.Addr().String(), 22, impair.Config{}, bursty, impair.Config{})
			cl := startClient(t, client.Config{Paths: paths, Key: key, Mode: sched.FEC, FEC: tc.shape, FECDepth: tc.depth})
			app := dial(t, cl)
			const n, size = 4000, 1000
			got := streamEchoEvery(t, app, n, size, 2)
			if lost := n - got; lost > n/50 {
				t.Fatalf("%d of %d datagrams lost on the round trip, want at most 2%% (99%% each way)", lost, n)
			}
			st := relays[1].Stats()
			if st.Up.DroppedLoss == 0 || st.Down.DroppedLoss == 0 {
				t.Fatalf("the bursty path lost nothing: %+v", st)
			}
			t.Logf("burst loss, %s: %d of %d back; bursty path dropped %d up, %d down", tc.name, got, n, st.Up.DroppedLoss, st.Down.DroppedLoss)
		})
	}
}
