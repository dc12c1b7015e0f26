package e2e

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/server"
	"github.com/mptunnel/mptunnel/internal/socks"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// pysocks returns the Python with PySocks (Debian's python3-socks), or
// skips the test.
func pysocks(t *testing.T) string {
	t.Helper()
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import socks").Run(); err != nil {
		t.Skipf("needs %s with PySocks (apt-get install python3-socks): %v", py, err)
	}
	return py
}

// socksClient is a SOCKS5 client in Python with PySocks: it makes a UDP
// association (with a username and password), sends numbered datagrams to
// the allowed target and reads each answer with the address the relay says
// it came from, sends to a refused target and waits for nothing, and asks
// for a CONNECT. It prints one JSON object.
const socksClient = `
import json, socket, sys, socks
proxy, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ok_host, ok_port, no_host, no_port, n = sys.argv[5], int(sys.argv[6]), sys.argv[7], int(sys.argv[8]), int(sys.argv[9])
res = {"echoes": 0, "from": [], "refused_answers": 0, "connect": ""}
s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
s.set_proxy(socks.SOCKS5, proxy, port, username=user, password=pw)
s.settimeout(3)
for i in range(n):
    msg = b"socks %d" % i
    s.sendto(msg, (ok_host, ok_port))
    try:
        data, addr = s.recvfrom(2048)
    except socket.timeout:
        continue
    if data == msg:
        res["echoes"] += 1
        res["from"].append("%s:%d" % addr)
s.settimeout(0.5)
for i in range(3):
    s.sendto(b"refused %d" % i, (no_host, no_port))
    try:
        s.recvfrom(2048)
        res["refused_answers"] += 1
    except socket.timeout:
        pass
c = socks.socksocket()
c.set_proxy(socks.SOCKS5, proxy, port, username=user, password=pw)
c.settimeout(3)
try:
    c.connect((ok_host, ok_port))
    res["connect"] = "connected"
except Exception as e:
    res["connect"] = str(e)
print(json.dumps(res))
`

// TestSocksUDP: a real SOCKS5 client (PySocks) reaches an allowed target
// through a UDP association of the client's SOCKS5 front, over lossy paths;
// a refused destination answers nothing and receives nothing; CONNECT is
// refused with "command not supported".
func TestSocksUDP(t *testing.T) {
	py := pysocks(t)
	key := testKey(t)
	def, ok, denied := newEchoTarget(t), newEchoTarget(t), newEchoTarget(t)
	srv := startServer(t, server.Config{Target: def.addr(), Key: key, Allow: []string{ok.addr()}})
	paths, _ := startPaths(t, srv.Addr().String(), 65, impair.Config{Loss: 0.1}, impair.Config{Loss: 0.1}, impair.Config{Loss: 0.1})
	cl := startClient(t, client.Config{Paths: paths, Key: key, Listen: "none", Socks: "127.0.0.1:0", SocksUser: "alice", SocksPass: "s3cret"})
	<-cl.Up()
	sa := cl.SocksAddr()
	okAP, deniedAP := netip.MustParseAddrPort(ok.addr()), netip.MustParseAddrPort(denied.addr())
	const n = 50
	cmd := exec.Command(py, "-c", socksClient, sa.Addr().String(), strconv.Itoa(int(sa.Port())), "alice", "s3cret",
		okAP.Addr().String(), strconv.Itoa(int(okAP.Port())), deniedAP.Addr().String(), strconv.Itoa(int(deniedAP.Port())), strconv.Itoa(n))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	outb, err := cmd.Output()
	if err != nil {
		t.Fatalf("the SOCKS5 client failed: %v\n%s", err, stderr.String())
	}
	var res struct {
		Echoes         int      `json:"echoes"`
		From           []string `json:"from"`
		RefusedAnswers int      `json:"refused_answers"`
		Connect        string   `json:"connect"`
	}
	if err := json.Unmarshal(outb, &res); err != nil {
		t.Fatalf("%q: %v", outb, err)
	}
	t.Logf("PySocks: %d of %d echoes over three 10%%-lossy paths; CONNECT: %s", res.Echoes, n, res.Connect)
	if res.Echoes < n-2 {
		t.Fatalf("%d of %d echoes came back through the association", res.Echoes, n)
	}
	for _, f := range res.From {
		if f != ok.addr() {
			t.Fatalf("an answer said it came from %s, want the target %s", f, ok.addr())
		}
	}
	if res.RefusedAnswers != 0 {
		t.Fatalf("a refused destination answered %d times", res.RefusedAnswers)
	}
	if _, got := denied.stats(); got != 0 {
		t.Fatalf("the refused destination received %d datagrams", got)
	}
	// The target is allowed for UDP only: a CONNECT to it is refused by
	// the server's rules (0x02).
	if !strings.Contains(strings.ToLower(res.Connect), "not allowed") {
		t.Fatalf("CONNECT: %q, want it refused as not allowed by the rules", res.Connect)
	}
}

// TestSocksReplies: the RFC 1928 and 1929 answers to what the front does
// not do, byte for byte: no acceptable method, a wrong password, BIND, a
// CONNECT no rule allows, an unknown address type.
func TestSocksReplies(t *testing.T) {
	key, _, srv := echoServer(t)
	paths, _ := startPaths(t, srv.Addr().String(), 66, impair.Config{})
	cl := startClient(t, client.Config{Paths: paths, Key: key, Socks: "127.0.0.1:0", SocksUser: "alice", SocksPass: "s3cret"})
	exchange := func(send []byte, want []byte) {
		t.Helper()
		conn, err := net.Dial("tcp", cl.SocksAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		conn.Write(send)
		got, _ := io.ReadAll(conn) // the front closes after a refusal
		if !bytes.Equal(got, want) {
			t.Fatalf("sent %x: got %x, want %x", send, got, want)
		}
	}
	auth := []byte{5, 1, socks.MethodUserPass, 1, 5, 'a', 'l', 'i', 'c', 'e', 6, 's', '3', 'c', 'r', 'e', 't'}
	authOK := []byte{5, socks.MethodUserPass, 1, 0}
	refused := socks.Reply(socks.RepCommandUnsupported, netip.AddrPort{})
	exchange([]byte{5, 1, socks.MethodNoAuth}, []byte{5, socks.MethodNone})
	exchange([]byte{5, 1, socks.MethodUserPass, 1, 5, 'a', 'l', 'i', 'c', 'e', 5, 'w', 'r', 'o', 'n', 'g'}, []byte{5, socks.MethodUserPass, 1, 1})
	exchange(append(append([]byte{}, auth...), 5, socks.CmdBind, 0, 1, 127, 0, 0, 1, 0, 80), append(append([]byte{}, authOK...), refused...))
	// No rule allows TCP to 127.0.0.1:80: the server says so (0x02).
	exchange(append(append([]byte{}, auth...), 5, socks.CmdConnect, 0, 1, 127, 0, 0, 1, 0, 80), append(append([]byte{}, authOK...), socks.Reply(socks.RepNotAllowed, netip.AddrPort{})...))
	exchange(append(append([]byte{}, auth...), 5, socks.CmdUDPAssociate, 0, 9, 1, 2), append(append([]byte{}, authOK...), socks.Reply(socks.RepAddressUnsupported, netip.AddrPort{})...))
}

// socksAssociate makes a UDP association on the SOCKS5 front at front, with
// user and pass (RFC 1929) unless user is empty, naming src (IPv4) as the
// address it will send from. It returns the relay's address; the control
// connection, and so the association, ends at cleanup.
func socksAssociate(t *testing.T, front netip.AddrPort, user, pass string, src netip.AddrPort) netip.AddrPort {
	t.Helper()
	conn, err := net.Dial("tcp", front.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	method := byte(socks.MethodNoAuth)
	if user != "" {
		method = socks.MethodUserPass
	}
	if _, err := conn.Write([]byte{socks.Version, 1, method}); err != nil {
		t.Fatal(err)
	}
	var got [2]byte
	if _, err := io.ReadFull(conn, got[:]); err != nil || got != [2]byte{socks.Version, method} {
		t.Fatalf("method: %x %v", got, err)
	}
	if user != "" {
		m := append([]byte{1, byte(len(user))}, user...)
		m = append(append(m, byte(len(pass))), pass...)
		if _, err := conn.Write(m); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(conn, got[:]); err != nil || got != [2]byte{1, 0} {
			t.Fatalf("login: %x %v", got, err)
		}
	}
	a := src.Addr().As4()
	req := append([]byte{socks.Version, socks.CmdUDPAssociate, 0, 1}, a[:]...)
	req = binary.BigEndian.AppendUint16(req, src.Port())
	if _, err := conn.Write(req); err != nil {
		t.Fatal(err)
	}
	var rep [10]byte
	if _, err := io.ReadFull(conn, rep[:]); err != nil || rep[1] != socks.RepSucceeded || rep[3] != 1 {
		t.Fatalf("UDP ASSOCIATE %v: reply %x %v", src, rep, err)
	}
	conn.SetDeadline(time.Time{})
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(rep[4:8])), binary.BigEndian.Uint16(rep[8:]))
}

func (r *echoTarget) addrPort() netip.AddrPort {
	return r.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// count returns how many payloads it received that begin with prefix.
func (r *echoTarget) count(prefix string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, b := range r.got {
		if bytes.HasPrefix(b, []byte(prefix)) {
			n++
		}
	}
	return n
}

// TestSocksSource: a UDP association takes datagrams from the address and
// port its client named, or, when it named port 0, from the first sender on
// the control connection's address, and from nowhere else. Another socket
// on 127.0.0.1 (the attacker), which knows the relay's address, sends to it
// before and after the client's (the victim's) first datagram: the target
// receives nothing from it, it receives nothing back within a bounded wait,
// its datagrams are counted as dropped (malformed), and the victim's
// datagrams still go and come back. With and without RFC 1929 login.
//
// Security review finding 3 (ef6581c): fails before the fix: the port of
// 0.0.0.0:PORT was dropped, so the attacker's datagrams went through the
// victim's association to the target and their echoes came back to the
// attacker; and after 0.0.0.0:0 any port on 127.0.0.1 stayed admitted
// after the victim's first datagram.
func TestSocksSource(t *testing.T) {
	any4 := netip.IPv4Unspecified()
	for _, auth := range []bool{false, true} {
		name := "no-auth"
		if auth {
			name = "password"
		}
		t.Run(name, func(t *testing.T) {
			key := testKey(t)
			def, target := newEchoTarget(t), newRecordTarget(t)
			srv := startServer(t, server.Config{Target: def.addr(), Key: key, Allow: []string{target.addrPort().String()}})
			paths, _ := startPaths(t, srv.Addr().String(), 67, impair.Config{})
			cfg := client.Config{Paths: paths, Key: key, Listen: "none", Socks: "127.0.0.1:0"}
			user, pass := "", ""
			if auth {
				user, pass = "alice", "s3cret"
				cfg.SocksUser, cfg.SocksPass = user, pass
			}
			cl := startClient(t, cfg)
			for _, c := range []struct {
				name string
				// named is what the victim's request names for the victim
				// socket's address.
				named func(victim netip.AddrPort) netip.AddrPort
				// early: the attacker also sends before the victim's first
				// datagram (with port 0 that first sender would own the
				// association, as RFC 1928 has it).
				early bool
			}{
				{"0.0.0.0:PORT", func(v netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(any4, v.Port()) }, true},
				{"0.0.0.0:0", func(netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(any4, 0) }, false},
				{"127.0.0.1:PORT", func(v netip.AddrPort) netip.AddrPort { return v }, true},
			} {
				t.Run(c.name, func(t *testing.T) {
					victim := listenLoopback(t)
					attacker := listenLoopback(t)
					va := victim.LocalAddr().(*net.UDPAddr).AddrPort()
					relay := socksAssociate(t, cl.SocksAddr(), user, pass, c.named(va))
					dst := wire.Target{Addr: target.addrPort().Addr(), Port: target.addrPort().Port()}
					attackPrefix := "attacker " + name + " " + c.name
					attacks := 0
					attack := func() {
						t.Helper()
						for range 3 {
							msg := socks.AppendUDP(nil, dst, []byte(attackPrefix+" "+strconv.Itoa(attacks)))
							if _, err := attacker.WriteToUDPAddrPort(msg, relay); err != nil {
								t.Fatal(err)
							}
							attacks++
						}
					}
					seq := 0
					roundTrip := func() {
						t.Helper()
						payload := []byte("victim " + name + " " + c.name + " " + strconv.Itoa(seq))
						seq++
						if _, err := victim.WriteToUDPAddrPort(socks.AppendUDP(nil, dst, payload), relay); err != nil {
							t.Fatal(err)
						}
						buf := make([]byte, 2048)
						victim.SetReadDeadline(time.Now().Add(5 * time.Second))
						n, from, err := victim.ReadFromUDPAddrPort(buf)
						if err != nil {
							t.Fatalf("the victim's datagram %q got no answer: %v", payload, err)
						}
						h, data, err := socks.ParseUDP(buf[:n])
						if from != relay || err != nil || h.Dst != dst || !bytes.Equal(data, payload) {
							t.Fatalf("the victim got %x from %v (%+v %v), want %q from the target by %v", buf[:n], from, h, err, payload, relay)
						}
					}
					before := cl.Counters().Malformed.Load()
					if c.early {
						attack()
					}
					roundTrip()
					attack()
					// The victim's last datagram is queued behind the
					// attacker's on the relay socket, which one reader takes
					// in order: once its echo is back, the attacker's were
					// taken too.
					roundTrip()
					if dropped := cl.Counters().Malformed.Load() - before; dropped < uint64(attacks) {
						t.Errorf("%d of the attacker's %d datagrams counted as dropped", dropped, attacks)
					}
					attacker.SetReadDeadline(time.Now().Add(time.Second))
					buf := make([]byte, 2048)
					if n, from, err := attacker.ReadFromUDPAddrPort(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
						t.Errorf("the attacker received %q from %v (%v)", buf[:n], from, err)
					}
					if n := target.count(attackPrefix); n != 0 {
						t.Errorf("the target received %d of the attacker's %d datagrams", n, attacks)
					}
					if n := target.count("victim " + name + " " + c.name); n != seq {
						t.Errorf("the target received %d of the victim's %d datagrams", n, seq)
					}
				})
			}
		})
	}
}

// listenLoopback opens a UDP socket on 127.0.0.1, closed at cleanup.
func listenLoopback(t *testing.T) *net.UDPConn {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// socksVictim is a SOCKS5 client in Python with PySocks, which names
// 0.0.0.0:PORT in its UDP ASSOCIATE: it logs in, sends one datagram to the
// target and reads its answer, prints the relay's address, waits for a line
// on its input, then sends one more and reads its answer. It prints one
// JSON object at the end.
const socksVictim = `
import json, socket, sys, socks
proxy, port, user, pw, host, tport = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
s.set_proxy(socks.SOCKS5, proxy, port, username=user, password=pw)
s.settimeout(5)
res = {"answers": 0}
def trip(msg):
    s.sendto(msg, (host, tport))
    data, addr = s.recvfrom(2048)
    if data == msg and addr == (host, tport):
        res["answers"] += 1
trip(b"victim 0")
relay = socket.socket.getpeername(s)
print("%s:%d" % relay, flush=True)
sys.stdin.readline()
trip(b"victim 1")
print(json.dumps(res), flush=True)
`

// TestSocksSourcePySocks is TestSocksSource with a real SOCKS5 client as the
// victim: PySocks names 0.0.0.0 and its port in its UDP ASSOCIATE, with a
// username and password. Another socket on 127.0.0.1 sends to its relay
// between its two datagrams: the target receives nothing from it, it
// receives nothing back within a bounded wait, its datagrams are counted as
// dropped, and both of PySocks' datagrams are answered.
//
// Security review finding 3 (ef6581c): fails before the fix: the port of
// 0.0.0.0:PORT was dropped, so the attacker's datagrams went through
// PySocks' password-protected association to the target and their echoes
// came back to the attacker.
func TestSocksSourcePySocks(t *testing.T) {
	py := pysocks(t)
	key := testKey(t)
	def, target := newEchoTarget(t), newRecordTarget(t)
	srv := startServer(t, server.Config{Target: def.addr(), Key: key, Allow: []string{target.addrPort().String()}})
	paths, _ := startPaths(t, srv.Addr().String(), 68, impair.Config{})
	cl := startClient(t, client.Config{Paths: paths, Key: key, Listen: "none", Socks: "127.0.0.1:0", SocksUser: "alice", SocksPass: "s3cret"})
	sa, ta := cl.SocksAddr(), target.addrPort()
	cmd := exec.Command(py, "-c", socksVictim, sa.Addr().String(), strconv.Itoa(int(sa.Port())), "alice", "s3cret",
		ta.Addr().String(), strconv.Itoa(int(ta.Port())))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	out := bufio.NewReader(stdout)
	line, err := out.ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("PySocks printed no relay address: %v\n%s", err, stderr.String())
	}
	relay, err := netip.ParseAddrPort(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("relay %q: %v", line, err)
	}
	attacker := listenLoopback(t)
	before := cl.Counters().Malformed.Load()
	const attacks = 3
	for i := range attacks {
		msg := socks.AppendUDP(nil, wire.Target{Addr: ta.Addr(), Port: ta.Port()}, []byte("attacker "+strconv.Itoa(i)))
		if _, err := attacker.WriteToUDPAddrPort(msg, relay); err != nil {
			t.Fatal(err)
		}
	}
	// PySocks' second datagram is queued behind the attacker's on the relay
	// socket: once its answer is back, the attacker's were taken too.
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	line, err = out.ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("PySocks: %v\n%s", err, stderr.String())
	}
	var res struct {
		Answers int `json:"answers"`
	}
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	if res.Answers != 2 {
		t.Errorf("PySocks got %d of its 2 answers", res.Answers)
	}
	if dropped := cl.Counters().Malformed.Load() - before; dropped < attacks {
		t.Errorf("%d of the attacker's %d datagrams counted as dropped", dropped, attacks)
	}
	attacker.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 2048)
	if n, from, err := attacker.ReadFromUDPAddrPort(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the attacker received %q from %v (%v)", buf[:n], from, err)
	}
	if n := target.count("attacker"); n != 0 {
		t.Errorf("the target received %d of the attacker's %d datagrams", n, attacks)
	}
	if n := target.count("victim"); n != 2 {
		t.Errorf("the target received %d of PySocks' 2 datagrams", n)
	}
}
