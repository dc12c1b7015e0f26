package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/server"
	"github.com/mptunnel/mptunnel/internal/testlock"
)

// soakDuration is how long TestSoak runs: MPTUNNEL_SOAK (for example "10m")
// or 12 s.
func soakDuration(t *testing.T) time.Duration {
	if s := os.Getenv("MPTUNNEL_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("MPTUNNEL_SOAK=%q: %v", s, err)
		}
		return d
	}
	return 12 * time.Second
}

// TestSoak streams 2,000 datagrams a second, echoed, through three paths
// losing 5% each way, with one path at a time taken down in turn every
// thirtieth of the run and the server restarted twice (at a third and two
// thirds). Every echo must be intact; the loss must stay within what the
// restarts explain (each costs at most 3 s of traffic while the client
// notices and handshakes again) plus 1%; and goroutines and memory must not
// grow between the first quarter and the end. MPTUNNEL_SOAK=10m runs the long
// version.
func TestSoak(t *testing.T) {
	testlock.Heavy(t)
	if testing.Short() {
		t.Skip("the soak takes a while")
	}
	d := soakDuration(t)
	key := testKey(t)
	echo := newEchoTarget(t)
	// The server is restarted on the same port.
	first := startableServer(t, server.Config{Listen: "127.0.0.1:0", Target: echo.addr(), Key: key})
	srvAddr := first.addr
	lossy := impair.Config{Loss: 0.05, Delay: 5 * time.Millisecond}
	paths, relays := startPaths(t, srvAddr, 51, lossy, lossy, lossy)
	cl := startClient(t, client.Config{Paths: paths, Key: key})
	app := dial(t, cl)

	const rate = 2000
	var sent, intact, corrupt atomic.Int64
	seen := sync.Map{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // the receiver checks every echo against what was sent
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			app.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := app.Read(buf)
			if err != nil {
				select {
				case <-stop:
					return
				default:
					continue
				}
			}
			if n < 4 {
				corrupt.Add(1)
				continue
			}
			seq := binary.BigEndian.Uint32(buf)
			if !bytes.Equal(buf[:n], stamp(seq, soakSize(seq))) {
				corrupt.Add(1)
				continue
			}
			if _, dup := seen.LoadOrStore(seq, true); !dup {
				intact.Add(1)
			}
		}
	}()
	go func() { // the sender, 2 datagrams a millisecond
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for seq := uint32(0); ; seq += 2 {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for k := range uint32(2) {
				app.Write(stamp(seq+k, soakSize(seq+k)))
				sent.Add(1)
			}
		}
	}()

	start := time.Now()
	flap := d / 30
	restarts := []time.Duration{d / 3, 2 * d / 3}
	srv := first
	var quarter struct {
		goroutines int
		heap       uint64
	}
	measured := false
	for i := 0; time.Since(start) < d; i++ {
		time.Sleep(flap)
		el := time.Since(start)
		// One path down at a time, in turn; the others carry everything.
		for j, r := range relays {
			r.SetDown(j == i%len(relays) && i%2 == 0)
		}
		if len(restarts) > 0 && el >= restarts[0] {
			restarts = restarts[1:]
			srv.stop()
			srv = startableServer(t, server.Config{Listen: srvAddr, Target: echo.addr(), Key: key})
			t.Logf("%v: server restarted", el.Round(time.Second))
		}
		if !measured && el >= d/4 {
			measured = true
			quarter.goroutines, quarter.heap = runtime.NumGoroutine(), heap()
		}
	}
	for _, r := range relays {
		r.SetDown(false)
	}
	time.Sleep(2 * time.Second) // the last paths come back, late echoes arrive
	close(stop)
	wg.Wait()
	endG, endHeap := runtime.NumGoroutine(), heap()
	s, ok := sent.Load(), intact.Load()
	lost := s - ok
	allowed := int64(2*3*rate) + s/100
	t.Logf("soak %v: sent %d, back intact %d, lost %d (allowed %d), corrupt %d; goroutines %d -> %d, heap %d -> %d KiB",
		d, s, ok, lost, allowed, corrupt.Load(), quarter.goroutines, endG, quarter.heap>>10, endHeap>>10)
	if corrupt.Load() != 0 {
		t.Fatalf("%d echoes came back corrupt", corrupt.Load())
	}
	if lost > allowed {
		t.Fatalf("lost %d of %d, more than the restarts explain (%d)", lost, s, allowed)
	}
	if endG > quarter.goroutines+5 {
		t.Fatalf("goroutines grew from %d to %d", quarter.goroutines, endG)
	}
	if endHeap > quarter.heap*3/2+(4<<20) {
		t.Fatalf("heap grew from %d to %d bytes", quarter.heap, endHeap)
	}
	srv.stop()
}

// soakSize varies the datagram sizes of the soak from 4 to 1,300 bytes.
func soakSize(seq uint32) int { return 4 + int(seq*7919%1297) }

// restartable is a server that a test can stop and replace on its port.
type restartable struct {
	addr   string
	cancel context.CancelFunc
	done   chan error
}

func startableServer(t *testing.T, cfg server.Config) *restartable {
	t.Helper()
	cfg.Logger = quietLogger()
	var s *server.Server
	var err error
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if s, err = server.Listen(cfg); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &restartable{addr: s.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Serve(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *restartable) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.cancel = nil
}
