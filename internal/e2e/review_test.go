package e2e

import (
	"crypto/rand"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/cookie"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/server"
	"github.com/mptunnel/mptunnel/internal/session"
	"github.com/mptunnel/mptunnel/internal/status"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// probeSize is the size of a sealed probe or probe reply on the wire; the
// tests' own datagrams are kept smaller, so a relay can tell probes apart.
const probeSize = wire.HeaderLen + wire.ProbeLen + wire.TagLen

// holder is an on-path attacker in a relay: when armed, it holds back the
// next probe the client sends and, when told, everything after it too.
type holder struct {
	mu     sync.Mutex
	armed  bool
	all    bool // hold back everything upstream
	probe  []byte
	caught chan struct{}
}

func newHolder() *holder { return &holder{caught: make(chan struct{})} }

func (h *holder) hold(up bool, pkt []byte) bool {
	if !up {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.armed && h.probe == nil && len(pkt) == probeSize && wire.Type(pkt) == wire.TypeTransport {
		h.probe = append([]byte(nil), pkt...)
		close(h.caught)
		return true
	}
	return h.all && h.probe != nil
}

func (h *holder) arm(all bool) {
	h.mu.Lock()
	h.armed, h.all = true, all
	h.mu.Unlock()
}

// held waits for the probe held back.
func (h *holder) held(t *testing.T) []byte {
	t.Helper()
	select {
	case <-h.caught:
	case <-time.After(5 * time.Second):
		t.Fatal("no probe went through the relay")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.probe
}

// pathRemote returns the remote the server has for path id of its only
// session ("" when it has no such path).
func pathRemote(srv *server.Server, id int) string {
	for _, p := range serverPaths(srv) {
		if p.ID == id {
			return p.Remote
		}
	}
	return ""
}

// TestHeldBackProbeMovesNothing: an authentic probe held back by someone on
// the path and sent later from another address neither moves the path nor
// draws the session's traffic to that address. Security review finding 1
// (ef6581c): fails before the fix: the server moved the path to any address
// an authentic probe came from, older than the path's latest or not, and sent
// the path's share of every reply there.
func TestHeldBackProbeMovesNothing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		silent bool // the path carries nothing after the held probe
	}{{"path goes on", false}, {"path silent after it", true}} {
		t.Run(tc.name, func(t *testing.T) {
			key, _, srv := echoServer(t)
			h := newHolder()
			tapped, err := impair.New(impair.Options{Listen: "127.0.0.1:0", To: srv.Addr().String(), Hold: h.hold})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { tapped.Close() })
			other, err := impair.New(impair.Options{Listen: "127.0.0.1:0", To: srv.Addr().String()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { other.Close() })
			cl := startClient(t, client.Config{Key: key, Paths: []client.PathConfig{
				{Remote: tapped.Addr().String()}, {Remote: other.Addr().String()}}})
			app := dial(t, cl)
			pingPong(t, app, "a", 20)
			if !eventually(3*time.Second, func() bool { return len(serverPaths(srv)) == 2 }) {
				t.Fatalf("server paths %+v, want 2", serverPaths(srv))
			}
			before := pathRemote(srv, 0)

			h.arm(tc.silent)
			probe := h.held(t)
			if !tc.silent {
				// Newer packets of the path arrive before the held one.
				rx := serverPaths(srv)[0].RxPackets
				pingPong(t, app, "b", 20)
				if !eventually(3*time.Second, func() bool { return serverPaths(srv)[0].RxPackets > rx+10 }) {
					t.Fatal("the path carried nothing after the held probe")
				}
			}
			attacker, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer attacker.Close()
			moves := srv.Counters().PathMoveRefused.Load()
			if _, err := attacker.WriteToUDPAddrPort(probe, srv.Addr()); err != nil {
				t.Fatal(err)
			}

			// The session's traffic goes on (over the other path when the
			// tapped one is silent) and none of it reaches the attacker.
			var got []int
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 65536)
				attacker.SetReadDeadline(time.Now().Add(time.Second))
				for {
					n, _, err := attacker.ReadFromUDPAddrPort(buf)
					if err != nil {
						return
					}
					got = append(got, n)
				}
			}()
			pingPong(t, app, "c", 50)
			wg.Wait()
			if tc.silent {
				// Newest on the path: the address is asked to prove
				// itself, once; it cannot.
				if len(got) > 1 || (len(got) == 1 && got[0] != probeSize) {
					t.Fatalf("the attacker received %d packets of sizes %v; at most one probe-sized challenge is allowed", len(got), got)
				}
			} else {
				if len(got) != 0 {
					t.Fatalf("the attacker received %d packets of sizes %v for a probe older than the path's latest", len(got), got)
				}
				if srv.Counters().PathMoveRefused.Load() == moves {
					t.Fatal("the refused move was not counted")
				}
			}
			if now := pathRemote(srv, 0); now != before {
				t.Fatalf("path 0 moved from %s to %s", before, now)
			}
		})
	}
}

// onlyPath returns the only path of the only session in st.
func onlyPath(t *testing.T, st status.Status) status.Path {
	t.Helper()
	if len(st.Sessions) != 1 || len(st.Sessions[0].Paths) != 1 {
		t.Fatalf("want one session with one path, have %+v", st.Sessions)
	}
	return st.Sessions[0].Paths[0]
}

// TestSpoofedPacketsDoNotCount: packets forged with a path's source address
// do not move the path's received count, which its probes report to the far
// end and its loss figures come from. Security review finding 7 (ef6581c):
// fails before the fix: both ends counted every packet from a path's address
// on the path before authenticating it, so an off-path sender could hide the
// path's real loss and steer adaptive and failover.
func TestSpoofedPacketsDoNotCount(t *testing.T) {
	nw, srv, cl, app := memTunnel(t, 1)
	out, in := pipelineMsgs(20, cl.Addr())
	for i := range out {
		out[i].Buf = out[i].Buf[:100]
	}
	if n, err := roundTrips(app, out, in); err != nil || n != len(out) {
		t.Fatalf("%d of %d echoes, %v", n, len(out), err)
	}
	ss := srv.Status("test", time.Now())
	sp := onlyPath(t, ss)
	idx, err := strconv.ParseUint(ss.Sessions[0].ID, 16, 32)
	if err != nil {
		t.Fatal(err)
	}
	clientPath := netip.MustParseAddrPort(sp.Remote) // the client's path socket
	cp := onlyPath(t, cl.Status("test", time.Now()))

	const forged = 3000
	srvSeen := func() uint64 { c := srv.Counters(); return c.AuthFailed.Load() + c.Duplicates.Load() }
	clSeen := func() uint64 {
		c := cl.Counters()
		return c.AuthFailed.Load() + c.UnknownSession.Load() + c.Malformed.Load()
	}
	srvBefore, clBefore := srvSeen(), clSeen()
	pkt := make([]byte, 100)
	for i := 0; i < forged; i++ {
		rand.Read(pkt)
		// To the server: transport packets for the live session with
		// counters it has seen and not, from the client's path address.
		wire.PutHeader(pkt, wire.Header{Receiver: uint32(idx), Counter: uint64(i % 40)})
		if !nw.SendFrom(clientPath, srv.Addr(), pkt) {
			t.Fatal("no server socket")
		}
		// To the client: anything, from the server's address.
		if !nw.SendFrom(srv.Addr(), clientPath, pkt) {
			t.Fatal("no client path socket")
		}
		if i%500 == 499 {
			// Let the readers drain the in-memory queues.
			want := uint64(i + 1)
			if !eventually(5*time.Second, func() bool { return srvSeen()-srvBefore >= want && clSeen()-clBefore >= want }) {
				t.Fatalf("forged packets not all seen: server %d, client %d of %d", srvSeen()-srvBefore, clSeen()-clBefore, want)
			}
		}
	}
	// Probes go on meanwhile: a few dozen at most in this time.
	const slack = 100
	if got := onlyPath(t, srv.Status("test", time.Now())).RxPackets; got > sp.RxPackets+slack {
		t.Fatalf("server path received count went from %d to %d after %d forged packets", sp.RxPackets, got, forged)
	}
	if got := onlyPath(t, cl.Status("test", time.Now())).RxPackets; got > cp.RxPackets+slack {
		t.Fatalf("client path received count went from %d to %d after %d forged packets", cp.RxPackets, got, forged)
	}
	// The session still works.
	if n, err := roundTrips(app, out, in); err != nil || n != len(out) {
		t.Fatalf("%d of %d echoes after the forgeries, %v", n, len(out), err)
	}
}

// insider holds the key and speaks the protocol by hand, as fast as it
// likes: the client the limits are there for.
type insider struct {
	t    *testing.T
	conn *net.UDPConn
	srv  netip.AddrPort
	key  handshake.Key
	jar  *cookie.Jar
	sl   *session.Sealer
}

func newInsider(t *testing.T, srv netip.AddrPort, key handshake.Key) *insider {
	t.Helper()
	conn := listenLoopback(t)
	jar, err := cookie.NewJar(key)
	if err != nil {
		t.Fatal(err)
	}
	return &insider{t: t, conn: conn, srv: srv, key: key, jar: jar, sl: session.NewSealer()}
}

func (a *insider) send(pkt []byte) {
	a.t.Helper()
	if _, err := a.conn.WriteToUDPAddrPort(pkt, a.srv); err != nil {
		a.t.Fatal(err)
	}
}

// initiation makes a signed initiation packet.
func (a *insider) initiation() (*handshake.Initiation, []byte) {
	a.t.Helper()
	in, err := handshake.InitiateWith(a.key, handshake.Hello{}, time.Now())
	if err != nil {
		a.t.Fatal(err)
	}
	pkt := wire.AppendInit(nil, in.Msg)
	a.jar.Sign(pkt, time.Now())
	return in, pkt
}

// finish waits up to d for the response to in and returns its session, or
// nil when none came.
func (a *insider) finish(in *handshake.Initiation, d time.Duration) *session.State {
	a.t.Helper()
	buf := make([]byte, 2048)
	a.conn.SetReadDeadline(time.Now().Add(d))
	for {
		n, err := a.conn.Read(buf)
		if err != nil {
			return nil
		}
		idx, msg, err := wire.ParseResponse(buf[:n])
		if err != nil || idx != in.Index {
			continue // a probe, a challenge, another response
		}
		fin, err := in.Finish(msg)
		if err != nil {
			a.t.Fatal(err)
		}
		st, err := session.New(fin.Keys, fin.Cipher, fin.PeerIndex, 0)
		if err != nil {
			a.t.Fatal(err)
		}
		st.LocalIndex = in.Index
		return st
	}
}

// confirm sends a probe under st: the server learns the path (where rekey
// responses go) and, for a rekey's session, takes it as the live one.
func (a *insider) confirm(st *session.State) {
	a.t.Helper()
	pkt, err := a.sl.SealProbe(st, wire.MsgProbe, wire.Probe{Path: 0, Seq: 1, Sent: time.Now().UnixNano()})
	if err != nil {
		a.t.Fatal(err)
	}
	a.send(pkt)
}

// TestChainedRekeysBounded: a key holder that rekeys each new session at
// once, and sends initiations to a full server, holds no more than the
// bounds say. Security review finding 2 (ef6581c): fails before the fix:
// the rekey rate was kept per session and a new session started at zero, so
// 40 chained rekeys left 41 sessions with max_sessions = 1; every rekey and
// every refused initiation took a place in the memory of initiations.
func TestChainedRekeysBounded(t *testing.T) {
	key, _, srv := echoServerWith(t, server.Config{MaxSessions: 1})
	a := newInsider(t, srv.Addr(), key)
	in, pkt := a.initiation()
	a.send(pkt)
	st := a.finish(in, 3*time.Second)
	if st == nil {
		t.Fatal("no session")
	}
	a.confirm(st)
	if !eventually(3*time.Second, func() bool { return len(serverPaths(srv)) == 1 }) {
		t.Fatal("the server did not learn the insider's path")
	}
	memory := srv.RecentHandshakes()

	start := time.Now()
	made, most := 0, 0
	for i := 0; i < 40; i++ {
		in, _ := a.initiation()
		rk, err := a.sl.SealRekey(st, in.Msg)
		if err != nil {
			t.Fatal(err)
		}
		a.send(rk)
		if next := a.finish(in, 50*time.Millisecond); next != nil {
			a.confirm(next)
			st = next
			made++
		}
		most = max(most, srv.Sessions())
	}
	elapsed := time.Since(start)
	if !eventually(time.Second, func() bool { return srv.Sessions() <= 3 }) || most > 3 {
		t.Fatalf("the server held %d sessions (at most %d during the chain) for one client, max_sessions 1: want at most 3", srv.Sessions(), most)
	}
	if limit := int(elapsed/(100*time.Millisecond)) + 1; made > limit {
		t.Fatalf("%d rekeys in %v: more than one a 100 ms", made, elapsed)
	}
	if made == 0 {
		t.Fatal("no rekey was made at all")
	}
	if srv.Counters().HandshakeRate.Load() == 0 {
		t.Fatal("no rekey was refused for its rate")
	}
	if n := srv.RecentHandshakes(); n != memory {
		t.Fatalf("rekeys took %d places in the memory of initiations", n-memory)
	}

	// Initiations to a full server: refused before any key exchange, and
	// they take no place in the memory.
	refused := srv.Counters().SessionLimit.Load()
	for i := 0; i < 100; i++ {
		_, pkt := a.initiation()
		a.send(pkt)
	}
	if !eventually(3*time.Second, func() bool { return srv.Counters().SessionLimit.Load() >= refused+100 }) {
		t.Fatalf("%d of 100 initiations refused for the session limit", srv.Counters().SessionLimit.Load()-refused)
	}
	if n := srv.RecentHandshakes(); n != memory {
		t.Fatalf("refused initiations took %d places in the memory of initiations", n-memory)
	}
}

// capturedInits returns the initiations a client sent to srv on its way to
// a session, as someone on its path would capture them.
func capturedInits(t *testing.T, srv *server.Server, key handshake.Key) [][]byte {
	t.Helper()
	cl, captured := tappedClient(t, srv, key, 0)
	pingPong(t, dial(t, cl), "a", 5)
	var inits [][]byte
	for _, p := range captured() {
		if wire.Type(p) == wire.TypeInit {
			inits = append(inits, p)
		}
	}
	if len(inits) == 0 {
		t.Fatal("no initiation captured")
	}
	return inits
}

// connects fails unless a new client reaches srv and exchanges datagrams.
func connects(t *testing.T, srv *server.Server, key handshake.Key) {
	t.Helper()
	cl := startClient(t, client.Config{Paths: []client.PathConfig{{Remote: srv.Addr().String()}}, Key: key})
	pingPong(t, dial(t, cl), "new", 5)
}

// TestReplayAfterRestart: an initiation captured before a server restart,
// replayed after it, gets nothing and makes no session. Security review
// finding 4 (ef6581c): fails before the fix: the memory of initiations seen
// was lost with the restart, so the replay got a response and a session that
// counted against max_sessions for a minute.
func TestReplayAfterRestart(t *testing.T) {
	key, echo, first := echoServer(t)
	inits := capturedInits(t, first, key)
	// The restarted server.
	restarted := startServer(t, server.Config{Target: echo.addr(), Key: key})
	attacker := listenLoopback(t)
	for _, p := range inits {
		attacker.WriteToUDPAddrPort(p, restarted.Addr())
	}
	silent(t, attacker, 500*time.Millisecond, "the replayer")
	if n := restarted.Sessions(); n != 0 {
		t.Fatalf("the restarted server holds %d sessions from replays", n)
	}
	if restarted.Counters().HandshakeStale.Load() == 0 {
		t.Fatal("the replays were not counted as made before the start")
	}
	// A real client still connects at once.
	connects(t, restarted, key)
}

// TestCookieRepliesUnderLoad: a server under load does not answer replayed
// initiations, from any address. Security review finding 5 (ef6581c): fails
// before the fix: under load every copy of a captured initiation drew a
// 60-byte cookie reply before any replay check.
func TestCookieRepliesUnderLoad(t *testing.T) {
	// Under load from the second initiation a second on.
	key, _, srv := echoServerWith(t, server.Config{HandshakeLoad: 1})
	inits := capturedInits(t, srv, key)
	attacker := listenLoopback(t)
	rply := srv.Counters().HandshakeReplay.Load()
	// Finding 5: replays of what the client sent, answered or accepted.
	for i := 0; i < 200; i++ {
		attacker.WriteToUDPAddrPort(inits[i%len(inits)], srv.Addr())
	}
	silent(t, attacker, 500*time.Millisecond, "the replayer")
	if srv.Counters().HandshakeReplay.Load() < rply+200 {
		t.Fatalf("%d of 200 replays counted", srv.Counters().HandshakeReplay.Load()-rply)
	}
	// The server still takes new clients under load (by way of a cookie).
	connects(t, srv, key)
}

// TestWrongLengthInitiations: a server under load does not answer an
// initiation of any other length than an initiation's, even with a right
// mac1, so nothing it sends is larger than what drew it. Security review
// finding 6 (ef6581c): fails before the fix: any initiation longer than 36
// bytes with a right mac1 drew a 60-byte cookie reply.
func TestWrongLengthInitiations(t *testing.T) {
	key, _, srv := echoServerWith(t, server.Config{HandshakeLoad: 1})
	attacker := listenLoopback(t)
	jar, err := cookie.NewJar(key)
	if err != nil {
		t.Fatal(err)
	}
	malformed := srv.Counters().Malformed.Load()
	sent := 0
	for n := wire.InitPrefixLen + 2*wire.MACLen + 1; n <= 2*wire.InitLen; n++ {
		if n == wire.InitLen {
			continue
		}
		pkt := make([]byte, n)
		rand.Read(pkt)
		pkt[0], pkt[1], pkt[2], pkt[3] = wire.TypeInit, 0, 0, 0
		jar.Sign(pkt, time.Now())
		attacker.WriteToUDPAddrPort(pkt, srv.Addr())
		sent++
	}
	silent(t, attacker, 500*time.Millisecond, "the sender of short and long initiations")
	if got := srv.Counters().Malformed.Load() - malformed; got < uint64(sent) {
		t.Fatalf("%d of %d wrong-length initiations counted as malformed", got, sent)
	}
	// The server still takes new clients under load (by way of a cookie).
	connects(t, srv, key)
}
