package e2e

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/impair"
)

// TestOrderKept: three paths of equal delay, no loss, redundant mode, a
// stream in bursts of datagrams of mixed sizes (some cut in two, some
// whole): every echo comes back in the order it was sent. Each path keeps
// order, so the first copies do too, unless the tunnel's ends mix them:
// datagrams put back together handed on ahead of whole ones read in the
// same batch, or one path's reader handing on its batch while another
// path's, holding earlier datagrams, is still at work.
func TestOrderKept(t *testing.T) {
	key, _, srv := echoServer(t)
	d := impair.Config{Delay: 2 * time.Millisecond}
	paths, _ := startPaths(t, srv.Addr().String(), 5, d, d, d)
	cl := startClient(t, client.Config{Paths: paths, Key: key})
	app := dial(t, cl)
	const n = 6000
	sizes := []int{8, 1400, 200, 2000}
	done := make(chan [2]int)
	go func() {
		buf := make([]byte, 4096)
		last, got, inv := -1, 0, 0
		for {
			app.SetReadDeadline(time.Now().Add(time.Second))
			k, err := app.Read(buf)
			if err != nil {
				done <- [2]int{got, inv}
				return
			}
			if k < 8 {
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
	b := make([]byte, 4096)
	for i := range n {
		binary.BigEndian.PutUint64(b, uint64(i))
		app.Write(b[:sizes[i%len(sizes)]])
		if i%16 == 15 {
			time.Sleep(time.Millisecond)
		}
	}
	r := <-done
	t.Logf("%d of %d echoes back, %d out of order", r[0], n, r[1])
	if r[0] < n*99/100 {
		t.Fatalf("%d of %d echoes back over clean paths", r[0], n)
	}
	if r[1] != 0 {
		t.Fatalf("%d of %d echoes came back after a later one", r[1], r[0])
	}
}
