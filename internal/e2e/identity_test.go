package e2e

import (
	"encoding/binary"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/server"
)

// pair makes a key pair.
func pair(t testing.TB) (handshake.PrivateKey, handshake.PublicKey) {
	t.Helper()
	priv, pub, err := handshake.GeneratePair()
	if err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

// identityClient is one named client of identityServer.
type identityClient struct {
	name string
	priv handshake.PrivateKey
	pub  handshake.PublicKey
}

func (ic identityClient) entry() server.Client {
	return server.Client{Name: ic.name, Public: ic.pub}
}

// identitySetup is a server with a key pair and named clients, forwarding
// to an echo target, and the shared key they all hold as well.
type identitySetup struct {
	key     handshake.Key
	srvPub  handshake.PublicKey
	clients []identityClient
	echo    *echoTarget
	srv     *server.Server
	log     *lockedBuffer // the server's log
}

func newIdentitySetup(t *testing.T, names ...string) *identitySetup {
	t.Helper()
	srvPriv, srvPub := pair(t)
	is := &identitySetup{key: testKey(t), srvPub: srvPub, echo: newEchoTarget(t), log: &lockedBuffer{}}
	var list []server.Client
	for _, n := range names {
		priv, pub := pair(t)
		ic := identityClient{name: n, priv: priv, pub: pub}
		is.clients = append(is.clients, ic)
		list = append(list, ic.entry())
	}
	is.srv = startServer(t, server.Config{Key: is.key, Private: &srvPriv, Clients: list, Target: is.echo.addr(), Logger: slog.New(slog.NewTextHandler(is.log, nil))})
	return is
}

// config is the client configuration of client i of the setup.
func (is *identitySetup) config(i int) client.Config {
	ic := is.clients[i]
	return client.Config{Paths: []client.PathConfig{{Remote: is.srv.Addr().String()}}, Key: is.key, Private: &ic.priv, ServerPublic: &is.srvPub}
}

// echoCounter streams numbered datagrams through app until stop closes,
// counting the echoes and when the last came.
type echoCounter struct {
	mu   sync.Mutex
	sent int
	got  map[uint32]bool
	last time.Time
}

func streamEchoes(app *net.UDPConn, every time.Duration, stop <-chan struct{}, wg *sync.WaitGroup) *echoCounter {
	ec := &echoCounter{got: make(map[uint32]bool)}
	wg.Add(2)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for seq := uint32(0); ; seq++ {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			if _, err := app.Write(binary.BigEndian.AppendUint32(nil, seq)); err == nil {
				ec.mu.Lock()
				ec.sent++
				ec.mu.Unlock()
			}
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 64)
		for {
			app.SetReadDeadline(time.Now().Add(time.Second))
			n, err := app.Read(buf)
			if err == nil && n == 4 {
				ec.mu.Lock()
				ec.got[binary.BigEndian.Uint32(buf)] = true
				ec.last = time.Now()
				ec.mu.Unlock()
			} else if err != nil && closed(stop) {
				return
			}
		}
	}()
	return ec
}

// closed reports whether c is closed.
func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (ec *echoCounter) counts() (sent, got int, last time.Time) {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	return ec.sent, len(ec.got), ec.last
}

// TestIdentityRemoveClient: three named clients stream through one server;
// one is removed from the list (a reload) while all three stream. Its
// stream stops within a second and it gets no new session; the other two
// lose nothing.
func TestIdentityRemoveClient(t *testing.T) {
	is := newIdentitySetup(t, "alice", "bob", "carol")
	var apps []*net.UDPConn
	for i := range is.clients {
		apps = append(apps, dial(t, startClient(t, is.config(i))))
	}
	if n := is.srv.Sessions(); n != 3 {
		t.Fatalf("%d sessions, want 3", n)
	}
	st := is.srv.Status("test", time.Now())
	names := map[string]bool{}
	for _, s := range st.Sessions {
		names[s.Client] = true
	}
	if !names["alice"] || !names["bob"] || !names["carol"] {
		t.Fatalf("status names the sessions' clients %v, want alice, bob and carol", names)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ecs []*echoCounter
	for _, app := range apps {
		ecs = append(ecs, streamEchoes(app, 2*time.Millisecond, stop, &wg))
	}
	time.Sleep(500 * time.Millisecond) // all three are streaming
	removed := time.Now()
	err := is.srv.SetClients([]server.Client{is.clients[0].entry(), is.clients[2].entry()})
	time.Sleep(1500 * time.Millisecond) // the others go on streaming
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	for i, ec := range ecs {
		sent, got, last := ec.counts()
		name := is.clients[i].name
		if i == 1 {
			if d := last.Sub(removed); d > time.Second {
				t.Errorf("%s, removed, still had echoes %v after its removal", name, d.Round(time.Millisecond))
			}
			if got >= sent {
				t.Errorf("%s, removed, had all its %d datagrams echoed", name, sent)
			}
			continue
		}
		if sent < 500 || got != sent {
			t.Errorf("%s lost datagrams across the reload: %d of %d echoed", name, got, sent)
		}
	}
	if n := is.srv.Sessions(); n != 2 {
		t.Fatalf("%d sessions after the removal, want 2", n)
	}
	if is.srv.Counters().HandshakeUnknown.Load() == 0 {
		t.Fatal("the removed client's new handshakes were not counted as unknown")
	}
	logged := is.log.String()
	for _, want := range []string{`msg="session up" session=`, "client=alice", "client=carol", `msg="client's sessions ended: removed, disabled or renamed" client=bob sessions=1`} {
		if !strings.Contains(logged, want) {
			t.Errorf("the server's log lacks %q:\n%s", want, logged)
		}
	}
}

// staysOut starts a client with cfg and fails unless it stays without a
// session for 2 seconds.
func staysOut(t *testing.T, cfg client.Config, who string) *client.Client {
	t.Helper()
	cl := serveClient(t, cfg)
	if comesUp(cl, 2*time.Second) {
		t.Fatalf("%s got a session", who)
	}
	return cl
}

// TestIdentityUnknownClient: a client with the right shared key and the
// server's public key, but a key pair the server does not list, gets
// nothing back at all, and it is counted.
func TestIdentityUnknownClient(t *testing.T) {
	is := newIdentitySetup(t, "alice")
	cfg := is.config(0)
	stranger, _ := pair(t)
	cfg.Private = &stranger
	cl := staysOut(t, cfg, "a client the server does not list")
	if is.srv.Counters().HandshakeUnknown.Load() == 0 {
		t.Fatal("the unknown client's handshakes were not counted")
	}
	if cl.Counters().RxPackets.Load() != 0 || cl.Counters().HandshakeBad.Load() != 0 {
		t.Fatalf("the unknown client received %d packets (%d bad handshakes); it must receive nothing",
			cl.Counters().RxPackets.Load(), cl.Counters().HandshakeBad.Load())
	}
	// And a listed client beside it still gets in.
	pingPong(t, dial(t, startClient(t, is.config(0))), "alice", 3)
}

// TestIdentityWrongServerKey: a client pinned to another server's public
// key takes nothing from this server, even one holding the same shared key
// and listing the client: a key holder on the path cannot pose as the
// server. Told the right key, the same client gets in.
func TestIdentityWrongServerKey(t *testing.T) {
	is := newIdentitySetup(t, "alice")
	cfg := is.config(0)
	_, otherPub := pair(t)
	cfg.ServerPublic = &otherPub
	staysOut(t, cfg, "a client pinned to another server key")
	if is.srv.Counters().HandshakeBad.Load() == 0 {
		t.Fatal("the server did not count the initiations it could not read")
	}
	if n := is.srv.Sessions(); n != 0 {
		t.Fatalf("the server holds %d sessions", n)
	}
	pingPong(t, dial(t, startClient(t, is.config(0))), "alice", 3)
}

// TestIdentityAllowRules: each client's own allow rules decide where its
// flows may go; the server's rules hold for a client without any.
func TestIdentityAllowRules(t *testing.T) {
	srvPriv, srvPub := pair(t)
	key := testKey(t)
	echoA, echoB := newEchoTarget(t), newEchoTarget(t)
	alicePriv, alicePub := pair(t)
	bobPriv, bobPub := pair(t)
	srv := startServer(t, server.Config{Key: key, Private: &srvPriv, Allow: []string{echoB.addr()}, Clients: []server.Client{
		{Name: "alice", Public: alicePub, Allow: []string{echoA.addr()}},
		{Name: "bob", Public: bobPub},
	}})
	fwd := func(priv *handshake.PrivateKey, to string) *net.UDPConn {
		cl := startClient(t, client.Config{Paths: []client.PathConfig{{Remote: srv.Addr().String()}}, Key: key, Private: priv, ServerPublic: &srvPub,
			Forwards: []client.Forward{{Listen: "127.0.0.1:0", Target: to}}})
		return dialAddr(t, cl.ForwardAddrs()[0])
	}
	pingPong(t, fwd(&alicePriv, echoA.addr()), "alice to A", 2)
	pingPong(t, fwd(&bobPriv, echoB.addr()), "bob to B", 2)
	silentTo := func(app *net.UDPConn, who string) {
		t.Helper()
		if _, err := app.Write([]byte("refused")); err != nil {
			t.Fatal(err)
		}
		silent(t, app, 500*time.Millisecond, who)
	}
	silentTo(fwd(&alicePriv, echoB.addr()), "alice to B (not in her rules)")
	silentTo(fwd(&bobPriv, echoA.addr()), "bob to A (not in the server's rules)")
	if _, rxB := echoB.stats(); rxB != 2 {
		t.Fatalf("target B received %d datagrams, want bob's 2", rxB)
	}
	if _, rxA := echoA.stats(); rxA != 2 {
		t.Fatalf("target A received %d datagrams, want alice's 2", rxA)
	}
}

// TestIdentityUnderLoad: a server under load answers identity initiations
// from unproven addresses with cookie replies, as it does shared-key ones,
// and the clients get in by way of them; no shared key on either end, so
// mac1 and the cookie replies are keyed by the server's public key.
func TestIdentityUnderLoad(t *testing.T) {
	srvPriv, srvPub := pair(t)
	echo := newEchoTarget(t)
	var list []server.Client
	var privs []handshake.PrivateKey
	for _, n := range []string{"alice", "bob", "carol"} {
		priv, pub := pair(t)
		privs = append(privs, priv)
		list = append(list, server.Client{Name: n, Public: pub})
	}
	srv := startServer(t, server.Config{Private: &srvPriv, Clients: list, Target: echo.addr(), HandshakeLoad: 1})
	for i := range privs {
		cl := startClient(t, client.Config{Paths: []client.PathConfig{{Remote: srv.Addr().String()}}, Private: &privs[i], ServerPublic: &srvPub})
		pingPong(t, dial(t, cl), list[i].Name, 2)
	}
	if srv.Counters().Cookies.Load() == 0 {
		t.Fatal("no cookie reply under load")
	}
	// A shared-key client, with the zero key, gets nothing from it.
	staysOut(t, client.Config{Paths: []client.PathConfig{{Remote: srv.Addr().String()}}}, "a shared-key client of an identity-only server")
}

// TestIdentityRekeyAndDisabled: identity sessions rekey as shared-key ones
// do, each client within its own rekey bound; a disabled client stays out
// until a reload enables it.
func TestIdentityRekeyAndDisabled(t *testing.T) {
	is := newIdentitySetup(t, "alice", "bob", "carol")
	list := []server.Client{is.clients[0].entry(), is.clients[1].entry(), is.clients[2].entry()}
	list[1].RekeyMin = time.Hour
	list[2].Disabled = true
	if err := is.srv.SetClients(list); err != nil {
		t.Fatal(err)
	}
	var cls []*client.Client
	for i := range 2 {
		cfg := is.config(i)
		cfg.RekeyAfter = 100 * time.Millisecond
		cls = append(cls, startClient(t, cfg))
	}
	carol := staysOut(t, is.config(2), "carol, disabled")
	rate := is.srv.Counters().HandshakeRate.Load()
	for i, cl := range cls {
		pingPong(t, dial(t, cl), is.clients[i].name, 3)
	}
	if !eventually(5*time.Second, func() bool { return cls[0].Counters().Rekeys.Load() >= 3 }) {
		t.Fatalf("alice rekeyed %d times in 5 s, every 100 ms asked", cls[0].Counters().Rekeys.Load())
	}
	if n := cls[1].Counters().Rekeys.Load(); n != 0 {
		t.Fatalf("bob rekeyed %d times; his bound is one an hour", n)
	}
	if is.srv.Counters().HandshakeRate.Load() == rate {
		t.Fatal("bob's refused rekeys were not counted")
	}
	for i, cl := range cls {
		pingPong(t, dial(t, cl), is.clients[i].name+" after rekeys", 3)
	}
	list[2].Disabled = false
	if err := is.srv.SetClients(list); err != nil {
		t.Fatal(err)
	}
	if !comesUp(carol, 5*time.Second) {
		t.Fatal("carol, enabled again, gets no session")
	}
}

// TestIdentityMaxSessions: a client's max_sessions bounds its sessions
// whatever addresses they come from; another client is not held by it.
func TestIdentityMaxSessions(t *testing.T) {
	is := newIdentitySetup(t, "alice", "bob")
	list := []server.Client{is.clients[0].entry(), is.clients[1].entry()}
	list[0].MaxSessions = 1
	if err := is.srv.SetClients(list); err != nil {
		t.Fatal(err)
	}
	pingPong(t, dial(t, startClient(t, is.config(0))), "alice", 2)
	limit := is.srv.Counters().SessionLimit.Load()
	staysOut(t, is.config(0), "alice's second session")
	if is.srv.Counters().SessionLimit.Load() == limit {
		t.Fatal("alice's second session was not counted at the session limit")
	}
	pingPong(t, dial(t, startClient(t, is.config(1))), "bob", 2)
}

// TestIdentityServerRestartReset: a server with identities restarted with
// the same private key makes the reset token its response gave before the
// restart, so the client acts on its reset and handshakes again at once.
func TestIdentityServerRestartReset(t *testing.T) {
	srvPriv, srvPub := pair(t)
	cliPriv, cliPub := pair(t)
	echo := newEchoTarget(t)
	cfg := server.Config{Listen: "127.0.0.1:0", Target: echo.addr(), Private: &srvPriv, Clients: []server.Client{{Name: "alice", Public: cliPub}}, Logger: quietLogger()}
	srv, stop := startStoppable(t, cfg)
	cfg.Listen = srv.Addr().String()
	cl := startClient(t, client.Config{Paths: []client.PathConfig{{Remote: cfg.Listen}}, Private: &cliPriv, ServerPublic: &srvPub})
	app := dial(t, cl)
	pingPong(t, app, "first server", 3)
	stop()
	srv2 := startServer(t, cfg)
	buf := make([]byte, 64)
	deadline := time.Now().Add(5 * time.Second)
	for back := false; !back; {
		if time.Now().After(deadline) {
			t.Fatal("no echo within 5 s of the restart")
		}
		app.Write([]byte("anyone?"))
		app.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := app.Read(buf)
		back = err == nil
	}
	if cl.Counters().ResetsAccepted.Load() == 0 || cl.Counters().ResetsRefused.Load() != 0 {
		t.Fatalf("resets: client accepted %d, refused %d; want the restarted server's accepted, none refused",
			cl.Counters().ResetsAccepted.Load(), cl.Counters().ResetsRefused.Load())
	}
	if srv2.Sessions() != 1 {
		t.Fatalf("the restarted server holds %d sessions, want 1", srv2.Sessions())
	}
}
