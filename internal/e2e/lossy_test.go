package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/testlock"
)

// startPaths puts one impair relay in front of the server per config.
func startPaths(t *testing.T, to string, seed int64, cfgs ...impair.Config) ([]client.PathConfig, []*impair.Relay) {
	t.Helper()
	var paths []client.PathConfig
	var relays []*impair.Relay
	for i, c := range cfgs {
		r, err := impair.New(impair.Options{Listen: "127.0.0.1:0", To: to, Up: c, Down: c, Seed: seed + int64(i)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		paths = append(paths, client.PathConfig{Remote: r.Addr().String()})
		relays = append(relays, r)
	}
	return paths, relays
}

// stamp makes a datagram of n bytes (n >= 0) that carries seq when n >= 4 and
// is otherwise recognisable by its size and content from the sequence alone.
func stamp(seq uint32, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(seq), uint64(n)))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if n >= 4 {
		binary.BigEndian.PutUint32(b, seq)
	}
	return b
}

// TestLossyPaths is the core promise: three paths with 10% loss each, delays
// of 5, 20 and 50 ms and reordering; datagrams from 0 to 1,400 bytes plus
// large ones that must be cut and put back, round trip through an echo target.
// Every echo must be whole and unique, and the loss near the product of the
// paths' losses.
func TestLossyPaths(t *testing.T) {
	testlock.Heavy(t)
	n := 20000
	if testing.Short() {
		n = 4000
	}
	key, _, srv := echoServer(t)
	mk := func(delay time.Duration) impair.Config {
		return impair.Config{Loss: 0.10, Delay: delay, Jitter: 2 * time.Millisecond, Reorder: 0.02, ReorderDelay: 5 * time.Millisecond}
	}
	paths, relays := startPaths(t, srv.Addr().String(), 42, mk(5*time.Millisecond), mk(20*time.Millisecond), mk(50*time.Millisecond))
	cl := startClient(t, client.Config{Paths: paths, Key: key})
	app := dial(t, cl)

	// The plan: sequence numbers and sizes, large ones interleaved.
	type dgram struct{ size int }
	var plan []dgram
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < n; i++ {
		plan = append(plan, dgram{rng.IntN(1401)})
	}
	big := 100
	huge := 20
	if testing.Short() {
		big, huge = 20, 4
	}
	for i := 0; i < big; i++ {
		plan = append(plan, dgram{8000})
	}
	for i := 0; i < huge; i++ {
		plan = append(plan, dgram{60000})
	}
	rng.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	// Datagrams under 4 bytes cannot carry a sequence number: their content
	// is stamp(0, size) and they are counted by size instead.
	small := map[int]int{}
	for _, d := range plan {
		if d.size < 4 {
			small[d.size]++
		}
	}

	var mu sync.Mutex
	seen := make([]bool, len(plan))
	smallGot := map[int]int{}
	var bad []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 70000)
		for {
			app.SetReadDeadline(time.Now().Add(3 * time.Second))
			got, err := app.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
					return
				}
				continue
			}
			mu.Lock()
			if got < 4 {
				smallGot[got]++
				if !bytes.Equal(buf[:got], stamp(0, got)) {
					bad = append(bad, "corrupt tiny datagram")
				}
				mu.Unlock()
				continue
			}
			seq := binary.BigEndian.Uint32(buf)
			switch {
			case int(seq) >= len(plan):
				bad = append(bad, "unknown sequence")
			case seen[seq]:
				bad = append(bad, "duplicate delivery")
			case !bytes.Equal(buf[:got], stamp(seq, plan[seq].size)):
				bad = append(bad, "corrupt datagram")
			default:
				seen[seq] = true
			}
			mu.Unlock()
		}
	}()

	// Send at a steady pace (about 2,500 datagrams/s).
	tick := time.NewTicker(4 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < len(plan); {
		<-tick.C
		for j := 0; j < 10 && i < len(plan); j, i = j+1, i+1 {
			seq := uint32(i)
			msg := stamp(seq, plan[i].size)
			if plan[i].size < 4 {
				msg = stamp(0, plan[i].size)
			}
			if _, err := app.Write(msg); err != nil {
				t.Fatal(err)
			}
		}
	}
	<-done

	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("%d bad deliveries, first: %s", len(bad), bad[0])
	}
	lost := 0
	for i, d := range plan {
		if d.size >= 4 && !seen[i] {
			lost++
		}
	}
	for size, want := range small {
		if smallGot[size] > want {
			t.Fatalf("%d-byte datagrams: %d delivered, only %d sent", size, smallGot[size], want)
		}
		lost += want - smallGot[size]
	}
	frac := float64(lost) / float64(len(plan))
	for i, r := range relays {
		st := r.Stats()
		t.Logf("path %d: up %d/%d dropped, down %d/%d dropped", i, st.Up.DroppedLoss, st.Up.Received, st.Down.DroppedLoss, st.Down.Received)
	}
	c := srv.Counters().Snapshot()
	t.Logf("sent %d, lost %d round trip (%.3f%%); server: %d duplicates, %d reassembled", len(plan), lost, 100*frac, c.Duplicates, c.Reassembled)
	if frac > 0.006 {
		t.Fatalf("round-trip loss %.3f%% over 0.6%%", 100*frac)
	}
	if c.Duplicates == 0 || c.Reassembled == 0 {
		t.Fatalf("server counters show no duplicates (%d) or no reassembly (%d)", c.Duplicates, c.Reassembled)
	}
}
