package e2e

import (
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/server"
	"github.com/mptunnel/mptunnel/internal/testlock"
)

// TestRepair: two paths losing 20% each way each lose 4% of the packets on
// both, which copies alone cannot bring back (about 8% of the echoes on a
// round trip). With repair (the default) each end asks for what it missed
// and the other sends it again, and parity rebuilds some at once: nearly
// every echo comes back, and both ends count packets asked for, filled and
// rebuilt. Without it (NoRepair at both ends) the
// loss shows, so the test can fail.
func TestRepair(t *testing.T) {
	testlock.Heavy(t)
	const n, size = 3000, 1000
	run := func(noRepair bool) (lost int, cc, sc map[string]uint64) {
		key, _, srv := echoServerWith(t, server.Config{NoRepair: noRepair})
		lossy := impair.Config{Loss: 0.2, Delay: 5 * time.Millisecond}
		paths, _ := startPaths(t, srv.Addr().String(), 77, lossy, lossy)
		cl := startClient(t, client.Config{Paths: paths, Key: key, NoRepair: noRepair})
		app := dial(t, cl)
		// A first stream lets both ends measure the paths' loss, which
		// turns parity on; the second is the one counted.
		streamEchoEvery(t, app, n/3, size, 4)
		got := streamEchoEvery(t, app, n, size, 4)
		return n - got, cl.Counters().Snapshot().Map(), srv.Counters().Snapshot().Map()
	}
	lost, cc, sc := run(false)
	for role, c := range map[string]map[string]uint64{"client": cc, "server": sc} {
		t.Logf("with repair, %s: asked %d, filled %d, lost %d, resent %d, missing %d; parity sent %d, rebuilt %d; queue full %d, send errors %d", role,
			c["repair_asked"], c["repair_filled"], c["repair_lost"], c["repair_resent"], c["repair_missing"], c["parity_sent"], c["parity_recovered"], c["queue_full"], c["send_errors"])
	}
	t.Logf("with repair: %d of %d echoes lost", lost, n)
	// Repair brings back what the paths lost (in runs here, all 3,000
	// came back); what it cannot bring back is a datagram dropped before
	// it entered the tunnel, by a full socket buffer at the echo target or
	// the server's flow socket on a loaded machine (up to 10 under -race).
	if lost > n/200 {
		t.Errorf("with repair, %d of %d echoes lost; want at most %d", lost, n, n/200)
	}
	for role, c := range map[string]map[string]uint64{"client": cc, "server": sc} {
		if c["repair_asked"] == 0 || c["repair_filled"] == 0 || c["repair_resent"] == 0 {
			t.Errorf("%s: repair asked %d, filled %d, resent %d; want each above 0", role, c["repair_asked"], c["repair_filled"], c["repair_resent"])
		}
		// The copies lose 4%: parity goes once the paths' loss is
		// measured, and rebuilds some of what they lost.
		if c["parity_sent"] == 0 || c["parity_recovered"] == 0 {
			t.Errorf("%s: %d parity packets sent, %d packets rebuilt from the peer's; want both above 0", role, c["parity_sent"], c["parity_recovered"])
		}
	}
	lost, cc, sc = run(true)
	t.Logf("without repair: %d of %d echoes lost", lost, n)
	if lost < n/50 {
		t.Errorf("without repair, only %d of %d echoes lost; the paths lose too little for this test", lost, n)
	}
	if cc["repair_asked"]+sc["repair_asked"]+cc["repair_resent"]+sc["repair_resent"]+cc["parity_sent"]+sc["parity_sent"] != 0 {
		t.Errorf("repair off, yet packets were asked for or resent: %v %v", cc, sc)
	}
}
