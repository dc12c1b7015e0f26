package e2e

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/sched"
	"github.com/mptunnel/mptunnel/internal/server"
)

// inversions sends n numbered datagrams, one a millisecond, and returns how
// many echoes came back, and how many of them came after a higher number.
func inversions(t *testing.T, cfg client.Config, srvCfg server.Config, delays ...time.Duration) (got, inv int) {
	t.Helper()
	echo := newEchoTarget(t)
	srvCfg.Target = echo.addr()
	srv := startServer(t, srvCfg)
	var imps []impair.Config
	for _, d := range delays {
		imps = append(imps, impair.Config{Delay: d})
	}
	cfg.Paths, _ = startPaths(t, srv.Addr().String(), 31, imps...)
	cl := startClient(t, cfg)
	app := dial(t, cl)
	const n = 600
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		last := -1
		for {
			app.SetReadDeadline(time.Now().Add(time.Second))
			k, err := app.Read(buf)
			if err != nil {
				return
			}
			if k != 8 {
				continue
			}
			seq := int(binary.BigEndian.Uint64(buf))
			got++
			if seq < last {
				inv++
			}
			last = max(last, seq)
		}
	}()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var b [8]byte
	for i := range n {
		<-tick.C
		binary.BigEndian.PutUint64(b[:], uint64(i))
		app.Write(b[:])
	}
	<-done
	return got, inv
}

// TestReorderBuffer: balance over a fast and a slow path delivers out of
// order; with a reorder buffer on both ends longer than the paths' delay
// difference (both directions), the echoes come back in order.
func TestReorderBuffer(t *testing.T) {
	key := testKey(t)
	got, inv := inversions(t, client.Config{Key: key, Mode: sched.Balance}, server.Config{Key: key}, time.Millisecond, 15*time.Millisecond)
	t.Logf("without a reorder buffer: %d echoes, %d out of order", got, inv)
	if inv == 0 {
		t.Fatal("paths of 1 and 15 ms delay gave no reordering: the test shows nothing")
	}
	key = testKey(t)
	got, inv = inversions(t, client.Config{Key: key, Mode: sched.Balance, Reorder: 60 * time.Millisecond}, server.Config{Key: key, Reorder: 60 * time.Millisecond}, time.Millisecond, 15*time.Millisecond)
	t.Logf("with a 60 ms reorder buffer: %d echoes, %d out of order", got, inv)
	if inv != 0 || got < 590 {
		t.Fatalf("with a reorder buffer: %d echoes of 600, %d out of order; want all, in order", got, inv)
	}
}
