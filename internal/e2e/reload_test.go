package e2e

import (
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/impair"
)

// TestSetPaths: while a stream flows, one path is removed and another
// added; the path that stays carries everything, so nothing is lost, the new
// path carries traffic and the removed one none.
func TestSetPaths(t *testing.T) {
	key, _, srv := echoServer(t)
	paths, relays := startPaths(t, srv.Addr().String(), 41, impair.Config{}, impair.Config{}, impair.Config{})
	cl := startClient(t, client.Config{Paths: paths[:2], Key: key})
	app := dial(t, cl)
	type result struct {
		got int
		err error
	}
	done := make(chan result, 1)
	go func() {
		got, err := echoStream(app, 3000, 100, 10)
		done <- result{got, err}
	}()
	time.Sleep(100 * time.Millisecond) // the stream is flowing
	err := cl.SetPaths([]client.PathConfig{paths[1], paths[2]})
	removedAt := relays[0].Stats().Up.Received
	// The stream ends before any failure is reported, so that no goroutine
	// outlives the test.
	r := <-done
	if err != nil {
		t.Fatal(err)
	}
	if r.err != nil {
		t.Fatalf("the stream failed after %d echoes: %v", r.got, r.err)
	}
	if got := r.got; got != 3000 {
		t.Fatalf("%d of 3000 echoes came back across the change; want all, the path that stayed carries them", got)
	}
	if n := relays[2].Stats().Up.Forwarded; n < 1000 {
		t.Fatalf("the added path carried %d packets", n)
	}
	// SetPaths closes the removed path's socket before it returns, so its
	// relay can only read what was already queued in the kernel then: a few
	// packets on a loaded machine, against the ~2,000 the path would have
	// carried in the rest of the stream.
	if n := relays[0].Stats().Up.Received - removedAt; n > 256 {
		t.Fatalf("the removed path got %d more packets after its removal", n)
	}
	st := cl.PathStates()
	if len(st) != 2 {
		t.Fatalf("%d paths after the change, want 2", len(st))
	}
	// A bad list changes nothing.
	if err := cl.SetPaths([]client.PathConfig{paths[1], {Remote: "no-such-host.invalid:1"}}); err == nil {
		t.Fatal("a path that does not resolve was accepted")
	}
	if got := len(cl.PathStates()); got != 2 {
		t.Fatalf("a refused change left %d paths", got)
	}
}
