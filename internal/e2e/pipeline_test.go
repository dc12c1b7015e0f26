package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/server"
	"github.com/mptunnel/mptunnel/internal/udpio"
)

// memEcho echoes every datagram on an in-memory socket until closed.
func memEcho(tb testing.TB, nw *udpio.MemNet) netip.AddrPort {
	conn, err := nw.Listen(netip.AddrPort{}, "")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		msgs := make([]udpio.Msg, 64)
		for i := range msgs {
			msgs[i].Buf = make([]byte, 65536)
		}
		out := make([]udpio.Msg, 64)
		for {
			n, err := conn.ReadBatch(msgs)
			if err != nil {
				return
			}
			for i := range msgs[:n] {
				out[i] = udpio.Msg{Buf: msgs[i].Buf[:msgs[i].N], Addr: msgs[i].Addr}
			}
			conn.WriteBatch(out[:n])
		}
	})
	tb.Cleanup(func() { conn.Close(); wg.Wait() })
	return conn.LocalAddr()
}

// memPipeline starts a server, a client with the given number of paths and
// an echo target on an in-memory network, and returns the application's socket
// and the client's address.
func memPipeline(tb testing.TB, paths int) (app udpio.Conn, to netip.AddrPort) {
	_, _, cl, app := memTunnel(tb, paths)
	return app, cl.Addr()
}

// memTunnel starts a server, a client with the given number of paths and an
// echo target on an in-memory network, where a test can forge source
// addresses, and returns them with an application's socket.
func memTunnel(tb testing.TB, paths int) (nw *udpio.MemNet, srv *server.Server, cl *client.Client, app udpio.Conn) {
	tb.Helper()
	nw = &udpio.MemNet{}
	key := testKey(tb)
	target := memEcho(tb, nw)
	srv = startServer(tb, server.Config{Target: target.String(), Key: key, Net: nw})
	var pcs []client.PathConfig
	for i := 0; i < paths; i++ {
		pcs = append(pcs, client.PathConfig{Remote: srv.Addr().String()})
	}
	cl = serveClient(tb, client.Config{Paths: pcs, Key: key, Net: nw})
	if !comesUp(cl, 10*time.Second) {
		tb.Fatal("no session on the in-memory network")
	}
	app, err := nw.Listen(netip.AddrPort{}, "")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { app.Close() })
	return nw, srv, cl, app
}

// roundTrips sends out from app and reads as many echoes into in; it
// returns how many came back.
func roundTrips(app udpio.Conn, out, in []udpio.Msg) (int, error) {
	if _, err := app.WriteBatch(out); err != nil {
		return 0, err
	}
	got := 0
	for got < len(out) {
		n, err := app.ReadBatch(in)
		if err != nil {
			return got, err
		}
		got += n
	}
	return got, nil
}

// pipelineMsgs returns window datagrams of 1,200 bytes addressed to to, and
// window buffers to read echoes into.
func pipelineMsgs(window int, to netip.AddrPort) (out, in []udpio.Msg) {
	out = make([]udpio.Msg, window)
	in = make([]udpio.Msg, window)
	for i := range out {
		out[i] = udpio.Msg{Buf: make([]byte, 1200), Addr: to}
		in[i].Buf = make([]byte, 2048)
	}
	return out, in
}

// TestPipelineAllocs: once the session is up, datagrams cross the whole
// tunnel, both ways over 3 paths, without allocating. A run is 32 round
// trips. AllocsPerRun counts every goroutine's allocations over the 300 runs
// and divides by 300, rounding down; the figure must be 0 exactly. The probes
// and timers that run meanwhile allocate a dozen or so every 250 ms, which
// stays below 300 in all (the runs take well under a second); a single
// allocation per datagram anywhere on the way would make the figure 32, one
// per run 1.
func TestPipelineAllocs(t *testing.T) {
	app, to := memPipeline(t, 3)
	out, in := pipelineMsgs(32, to)
	// The in-memory network loses nothing; should a datagram go missing
	// all the same, the test fails instead of waiting for it.
	watchdog := time.AfterFunc(time.Minute, func() { app.Close() })
	defer watchdog.Stop()
	// Warm up: flows opened, and every slot of the in-memory sockets'
	// rings (4,096 datagrams each) given its buffer.
	for range 200 {
		if _, err := roundTrips(app, out, in); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	allocs := testing.AllocsPerRun(300, func() {
		if _, e := roundTrips(app, out, in); e != nil && err == nil {
			err = e
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%.0f allocations per 32 round trips", allocs)
	if allocs != 0 {
		t.Fatalf("%.0f allocations per 32 round trips through the tunnel; want none in steady state", allocs)
	}
}

// BenchmarkPipeline measures the whole tunnel, client -> server -> echo
// target -> server -> client, on an in-memory network: sealing, opening,
// dedup, scheduling and the goroutine hand-offs, without the kernel. One op
// is one 1,200-byte datagram's round trip; allocs/op must be 0.
func BenchmarkPipeline(b *testing.B) {
	for _, paths := range []int{1, 3} {
		b.Run(fmt.Sprintf("paths=%d", paths), func(b *testing.B) {
			app, to := memPipeline(b, paths)
			const window = 32
			out, in := pipelineMsgs(window, to)
			// Nothing may stall the benchmark: a lost datagram closes the socket.
			var stuck sync.WaitGroup
			done := make(chan struct{})
			progress := make(chan struct{}, 1)
			stuck.Add(1)
			go func() {
				defer stuck.Done()
				const patience = 5 * time.Second
				timer := time.NewTimer(patience) // one timer: the benchmark counts allocations
				defer timer.Stop()
				for {
					select {
					case <-done:
						return
					case <-progress:
						timer.Reset(patience)
					case <-timer.C:
						app.Close()
						return
					}
				}
			}()
			defer func() { close(done); stuck.Wait() }()
			b.SetBytes(1200)
			b.ReportAllocs()
			b.ResetTimer()
			for sent := 0; sent < b.N; {
				w := min(window, b.N-sent)
				if got, err := roundTrips(app, out[:w], in); err != nil {
					if errors.Is(err, net.ErrClosed) {
						b.Fatalf("no echo for 5 s after %d of %d datagrams", sent+got, b.N)
					}
					b.Fatal(err)
				}
				sent += w
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		})
	}
}

// TestPipelineBursts: bursts of 32 datagrams of mixed sizes (some cut into
// fragments) echo back whole and unchanged over 3 paths, in both
// directions. The bursts come faster than the server's per-flow reader
// takes single reads (docs/DESIGN.md), so its batched reads carry most of
// the replies.
func TestPipelineBursts(t *testing.T) {
	app, to := memPipeline(t, 3)
	watchdog := time.AfterFunc(time.Minute, func() { app.Close() })
	defer watchdog.Stop()
	const window, rounds = 32, 150
	out, in := pipelineMsgs(window, to)
	for i := range in {
		in[i].Buf = make([]byte, 4096)
	}
	fill := func(seq, size int) []byte {
		b := make([]byte, size)
		binary.BigEndian.PutUint32(b, uint32(seq))
		for j := 4; j < size; j++ {
			b[j] = byte(seq*7 + j)
		}
		return b
	}
	want := make(map[int][]byte)
	for r := range rounds {
		for i := range out {
			seq := r*window + i
			out[i].Buf = fill(seq, 4+(seq*97)%3000)
			want[seq] = out[i].Buf
		}
		if _, err := app.WriteBatch(out); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < window; {
			n, err := app.ReadBatch(in)
			if err != nil {
				t.Fatalf("round %d: %d of %d echoes: %v", r, got, window, err)
			}
			for _, m := range in[:n] {
				d := m.Buf[:m.N]
				if len(d) < 4 {
					t.Fatalf("a %d-byte echo", len(d))
				}
				seq := int(binary.BigEndian.Uint32(d))
				w, ok := want[seq]
				if !ok || !bytes.Equal(d, w) {
					t.Fatalf("echo of datagram %d: %d bytes, not the %d sent (or a second copy)", seq, len(d), len(w))
				}
				delete(want, seq)
			}
			got += n
		}
	}
	if len(want) != 0 {
		t.Fatalf("%d datagrams not echoed", len(want))
	}
}
