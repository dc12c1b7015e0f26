package e2e

import (
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/sched"
	"github.com/mptunnel/mptunnel/internal/server"
)

// TestRekey: while a stream flows, the session is replaced several times,
// on a timer or on a packet count, by handshakes made inside it. No echo is
// lost, the target sees one source address throughout (the server moved the
// flow to each new session instead of opening another), no packet arrives
// for a session either end has forgotten, and the replaced sessions are
// freed after their grace.
func TestRekey(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  client.Config
	}{
		{"timer", client.Config{RekeyAfter: 200 * time.Millisecond}},
		{"packets", client.Config{RekeyPackets: 800}},
		{"fec", client.Config{Mode: sched.FEC, RekeyAfter: 200 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, echo, srv := echoServerWith(t, server.Config{RekeyGrace: 500 * time.Millisecond})
			d := impair.Config{Delay: 2 * time.Millisecond}
			paths, _ := startPaths(t, srv.Addr().String(), 57, d, d)
			cfg := tc.cfg
			cfg.Paths, cfg.Key = paths, key
			cfg.HandshakeRetry = 400 * time.Millisecond // how often a due rekey is tried
			cl := startClient(t, cfg)
			app := dial(t, cl)
			const n = 3000
			if got := streamEchoEvery(t, app, n, 200, 1); got != n {
				t.Fatalf("%d of %d echoes came back across the rekeys", got, n)
			}
			rekeys := cl.Counters().Rekeys.Load()
			if rekeys < 2 {
				t.Fatalf("the client rekeyed %d times in a 3 s stream, want 2 or more", rekeys)
			}
			if !eventually(3*time.Second, func() bool { return srv.Counters().Rekeys.Load() >= rekeys }) {
				t.Fatalf("the server confirmed %d rekeys of the client's %d", srv.Counters().Rekeys.Load(), rekeys)
			}
			if peers, _ := echo.stats(); peers != 1 {
				t.Fatalf("the target saw %d source addresses, want 1: a rekey must keep the flow", peers)
			}
			for who, c := range map[string]uint64{"client": cl.Counters().UnknownSession.Load(), "server": srv.Counters().UnknownSession.Load()} {
				if c != 0 {
					t.Fatalf("the %s got %d packets for a session it did not know", who, c)
				}
			}
			// Every session a rekey replaced is freed after its grace; the
			// timer keeps rekeying meanwhile, so count the freed ones.
			if !eventually(3*time.Second, func() bool { return srv.Counters().SessionsFreed.Load() >= rekeys && srv.Flows() == 1 }) {
				t.Fatalf("%d sessions freed after %d rekeys, %d live; %d flows, want 1", srv.Counters().SessionsFreed.Load(), rekeys, srv.Sessions(), srv.Flows())
			}
			if n := srv.Sessions(); n > 4 {
				t.Fatalf("%d sessions live on the server for one client", n)
			}
			t.Logf("%s: %d rekeys, %d echoes", tc.name, rekeys, n)
		})
	}
}
