package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/server"
	"github.com/mptunnel/mptunnel/internal/socks"
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
	if !strings.Contains(strings.ToLower(res.Connect), "command not supported") {
		t.Fatalf("CONNECT: %q, want it refused as command not supported", res.Connect)
	}
}

// TestSocksReplies: the RFC 1928 and 1929 answers to what the front does
// not do, byte for byte: no acceptable method, a wrong password, BIND, an
// unknown address type.
func TestSocksReplies(t *testing.T) {
	key := testKey(t)
	echo := newEchoTarget(t)
	srv := startServer(t, server.Config{Target: echo.addr(), Key: key})
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
	exchange(append(append([]byte{}, auth...), 5, socks.CmdConnect, 0, 1, 127, 0, 0, 1, 0, 80), append(append([]byte{}, authOK...), refused...))
	exchange(append(append([]byte{}, auth...), 5, socks.CmdUDPAssociate, 0, 9, 1, 2), append(append([]byte{}, authOK...), socks.Reply(socks.RepAddressUnsupported, netip.AddrPort{})...))
}
