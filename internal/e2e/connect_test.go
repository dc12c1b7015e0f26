package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/server"
	"github.com/mptunnel/mptunnel/internal/status"
	"github.com/mptunnel/mptunnel/internal/tcptest"
)

// TestSocksConnect: a SOCKS5 CONNECT through the tunnel, over three paths
// losing 10% each way, reaches a TCP target the server allows (tcp: rule):
// 2 MiB go there and back whole, with a half-close in between, on several
// connections at once; a port no rule allows for TCP is refused as the
// rules' (0x02), and a closed allowed port as refused (0x05). The server
// counts what it carried.
func TestSocksConnect(t *testing.T) {
	echo := tcptest.Echo(t)
	host, _, _ := net.SplitHostPort(echo)
	closed := freeTCPPort(t)
	key := testKey(t)
	udp := newEchoTarget(t)
	srv := startServer(t, server.Config{Target: udp.addr(), Key: key,
		Allow: []string{"tcp:" + echo, "tcp:" + net.JoinHostPort(host, strconv.Itoa(closed))}})
	lossy := impair.Config{Loss: 0.1, Delay: 2 * time.Millisecond}
	paths, _ := startPaths(t, srv.Addr().String(), 71, lossy, lossy, lossy)
	cl := startClient(t, client.Config{Paths: paths, Key: key, Listen: "none", Socks: "127.0.0.1:0"})
	dialer, err := proxy.SOCKS5("tcp", cl.SocksAddr().String(), nil, &net.Dialer{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}

	const conns, size = 4, 2 << 20
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for range conns {
		wg.Go(func() {
			c, err := dialer.Dial("tcp", echo)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			data := make([]byte, size)
			rand.Read(data)
			go func() {
				c.Write(data)
				c.(interface{ CloseWrite() error }).CloseWrite()
			}()
			back, err := io.ReadAll(c)
			if err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(back, data) {
				errs <- errors.New("echo differs: " + strconv.Itoa(len(back)) + " bytes back")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	for _, c := range []struct {
		addr, want string
	}{
		{net.JoinHostPort(host, "9"), "not allowed"},
		{net.JoinHostPort(host, strconv.Itoa(closed)), "refused"},
	} {
		_, err := dialer.Dial("tcp", c.addr)
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
			t.Errorf("CONNECT %s: %v, want %q", c.addr, err, c.want)
		}
	}
	var m map[string]uint64
	eventually(5*time.Second, func() bool {
		m = srv.Counters().Snapshot().Map()
		return m["stream_bytes_up"] == conns*size && m["stream_bytes_down"] == conns*size
	})
	t.Logf("server: %d streams opened, %d refused, %d bytes up, %d down", m["streams_opened"], m["streams_refused"], m["stream_bytes_up"], m["stream_bytes_down"])
	if m["stream_bytes_up"] != conns*size || m["stream_bytes_down"] != conns*size {
		t.Errorf("the server carried %d bytes up and %d down, want %d each", m["stream_bytes_up"], m["stream_bytes_down"], conns*size)
	}
}

// freeTCPPort returns a loopback TCP port nothing listens on.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return p
}

// TestCurlThroughSocks: curl, pointed at the SOCKS5 front with
// --socks5-hostname (the name resolved on the server), fetches an 8 MiB
// file from an HTTP server the server allows by name, over lossy paths,
// and its SHA-256 matches; the same
// server by an address no rule names gets reply 2 (not allowed).
func TestCurlThroughSocks(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("needs curl (apt-get install curl)")
	}
	page := make([]byte, 8<<20) // several MB, checked by their SHA-256
	rand.Read(page)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(page) }))
	t.Cleanup(hs.Close)
	_, port, _ := net.SplitHostPort(hs.Listener.Addr().String())
	key := testKey(t)
	udp := newEchoTarget(t)
	srv := startServer(t, server.Config{Target: udp.addr(), Key: key, Allow: []string{"tcp:localhost:" + port}})
	lossy := impair.Config{Loss: 0.1, Delay: 2 * time.Millisecond}
	paths, _ := startPaths(t, srv.Addr().String(), 72, lossy, lossy, lossy)
	cl := startClient(t, client.Config{Paths: paths, Key: key, Listen: "none", Socks: "127.0.0.1:0"})
	fetch := func(url string) ([]byte, string, error) {
		var stderr bytes.Buffer
		cmd := exec.Command(curl, "-sS", "--max-time", "30", "--socks5-hostname", cl.SocksAddr().String(), url)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		return out, stderr.String(), err
	}
	body, stderr, err := fetch("http://localhost:" + port + "/")
	if err != nil || sha256.Sum256(body) != sha256.Sum256(page) {
		t.Fatalf("curl: %v (%s); %d bytes, want the %d-byte file and its checksum", err, stderr, len(body), len(page))
	}
	// curl names the SOCKS5 reply by its code: 2, not allowed by the rules.
	if _, stderr, err := fetch("http://127.0.0.1:" + port + "/"); err == nil || !strings.Contains(stderr, "(2)") {
		t.Fatalf("curl to an address no rule names: %v, %q; want SOCKS5 reply 2 (not allowed)", err, stderr)
	}
}

// TestTCPForward: -L tcp:LISTEN=TARGET: connections accepted on the local
// address become streams to the target (allowed by a tcp: rule), 1 MiB
// each way with a half-close; a forward to a target no rule allows closes
// each connection without a byte.
func TestTCPForward(t *testing.T) {
	echo := tcptest.Echo(t)
	key := testKey(t)
	udp := newEchoTarget(t)
	srv := startServer(t, server.Config{Target: udp.addr(), Key: key, Allow: []string{"tcp:" + echo}})
	lossy := impair.Config{Loss: 0.1, Delay: 2 * time.Millisecond}
	paths, _ := startPaths(t, srv.Addr().String(), 73, lossy, lossy)
	cl := startClient(t, client.Config{Paths: paths, Key: key, Listen: "none", Forwards: []client.Forward{
		{Listen: "127.0.0.1:0", Target: echo, TCP: true},
		{Listen: "127.0.0.1:0", Target: "127.0.0.1:9", TCP: true},
	}})
	addrs := cl.ForwardAddrs()
	if len(addrs) != 2 {
		t.Fatalf("%d forward addresses, want 2", len(addrs))
	}
	c, err := net.Dial("tcp", addrs[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	data := make([]byte, 1<<20)
	rand.Read(data)
	go func() {
		c.Write(data)
		c.(*net.TCPConn).CloseWrite()
	}()
	back, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("through the forward: %d bytes back of %d, %v", len(back), len(data), err)
	}
	r, err := net.Dial("tcp", addrs[1].String())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.SetDeadline(time.Now().Add(30 * time.Second))
	if got, _ := io.ReadAll(r); len(got) != 0 {
		t.Fatalf("a refused forward gave %d bytes", len(got))
	}
	// A stream is counted when both its directions have ended at the
	// server, which may be a moment after the client read the last byte.
	var m map[string]uint64
	if !eventually(5*time.Second, func() bool {
		m = srv.Counters().Snapshot().Map()
		return m["streams_refused"] == 1 && m["streams_opened"] == 1
	}) {
		t.Fatalf("server: %d streams opened, %d refused; want 1 and 1", m["streams_opened"], m["streams_refused"])
	}
	// Status, both ends: by forward on the client, by target on the server.
	streamsOf := func(ts []status.Target, name string) *status.Streams {
		for _, tg := range ts {
			if tg.Name == name {
				return tg.Streams
			}
		}
		return nil
	}
	const mib = 1 << 20
	// Counted once both directions have ended at each end.
	check := func() (errs []string) {
		cs, ss := cl.Status("test", time.Now()).Targets, srv.Status("test", time.Now()).Targets
		for _, c := range []struct {
			end, name string
			got       *status.Streams
			refused   bool
		}{
			{"client", "tcp:" + addrs[0].String(), streamsOf(cs, "tcp:"+addrs[0].String()), false},
			{"client", "tcp:" + addrs[1].String(), streamsOf(cs, "tcp:"+addrs[1].String()), true},
			{"server", "tcp:" + echo, streamsOf(ss, "tcp:"+echo), false},
			{"server", "tcp:127.0.0.1:9", streamsOf(ss, "tcp:127.0.0.1:9"), true},
		} {
			switch {
			case c.got == nil:
				errs = append(errs, fmt.Sprintf("%s status: no streams for %s", c.end, c.name))
			case c.refused && (c.got.Opened != 0 || c.got.Refused["not_allowed"] != 1):
				errs = append(errs, fmt.Sprintf("%s status, %s: %+v; want one refused as not_allowed", c.end, c.name, *c.got))
			case !c.refused && (c.got.Opened != 1 || c.got.Open != 0 || c.got.BytesUp != mib || c.got.BytesDown != mib):
				errs = append(errs, fmt.Sprintf("%s status, %s: %+v; want 1 opened, none open, 1 MiB each way", c.end, c.name, *c.got))
			}
		}
		return errs
	}
	var errs []string
	if !eventually(5*time.Second, func() bool { errs = check(); return len(errs) == 0 }) {
		for _, e := range errs {
			t.Error(e)
		}
	}
}

// TestChromiumThroughSocks: a browser (headless Chromium) with the SOCKS5
// front as its proxy loads a page from an HTTP server the server allows,
// over lossy paths, and the page it renders is the server's.
func TestChromiumThroughSocks(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("needs chromium (apt-get install chromium)")
	}
	const marker = "carried-through-mptunnel"
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<html><body><p id=m>"+marker+"</p>"+strings.Repeat("<p>filler</p>", 5000)+"</body></html>")
	}))
	t.Cleanup(hs.Close)
	key := testKey(t)
	udp := newEchoTarget(t)
	srv := startServer(t, server.Config{Target: udp.addr(), Key: key, Allow: []string{"tcp:" + hs.Listener.Addr().String()}})
	lossy := impair.Config{Loss: 0.1, Delay: 2 * time.Millisecond}
	paths, _ := startPaths(t, srv.Addr().String(), 75, lossy, lossy, lossy)
	cl := startClient(t, client.Config{Paths: paths, Key: key, Listen: "none", Socks: "127.0.0.1:0"})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// The browser skips proxies for loopback unless told otherwise.
	cmd := exec.CommandContext(ctx, chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--user-data-dir="+t.TempDir(), "--proxy-server=socks5://"+cl.SocksAddr().String(), "--proxy-bypass-list=<-loopback>",
		"--dump-dom", hs.URL+"/")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || !strings.Contains(string(out), marker) {
		t.Fatalf("chromium: %v; page %d bytes without the marker\n%s", err, len(out), lastLines(stderr.String(), 10))
	}
	// The browser's own connections elsewhere (its services) are refused
	// by the rules; the page's went through.
	var m map[string]uint64
	if !eventually(5*time.Second, func() bool { m = srv.Counters().Snapshot().Map(); return m["streams_opened"] > 0 }) {
		t.Fatalf("the server opened no stream (%d refused)", m["streams_refused"])
	}
	t.Logf("server: %d streams opened, %d refused (the browser's other destinations)", m["streams_opened"], m["streams_refused"])
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestForwardInteractiveAndBulk: one TCP forward, over two lossy paths,
// carries an ssh-like exchange (the target speaks first, then each small
// line the client types comes back at once, 300 times) while a bulk
// transfer of 8 MiB goes through the same forward on another connection:
// the keystrokes are answered one by one however much the bulk sends, and
// the bulk's bytes come back whole.
func TestForwardInteractiveAndBulk(t *testing.T) {
	const banner = "SSH-2.0-mptunnel-test\r\n"
	shell := tcptest.Serve(t, func(c *net.TCPConn) {
		if _, err := c.Write([]byte(banner)); err != nil {
			return
		}
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := c.Write([]byte("> " + line)); err != nil {
				return
			}
		}
	})
	echo := tcptest.Echo(t)
	key := testKey(t)
	udp := newEchoTarget(t)
	srv := startServer(t, server.Config{Target: udp.addr(), Key: key, Allow: []string{"tcp:" + shell, "tcp:" + echo}})
	lossy := impair.Config{Loss: 0.1, Delay: 2 * time.Millisecond}
	paths, _ := startPaths(t, srv.Addr().String(), 77, lossy, lossy)
	cl := startClient(t, client.Config{Paths: paths, Key: key, Listen: "none", Forwards: []client.Forward{
		{Listen: "127.0.0.1:0", Target: shell, TCP: true},
		{Listen: "127.0.0.1:0", Target: echo, TCP: true},
	}})
	addrs := cl.ForwardAddrs()

	bulkErr := make(chan error, 1)
	go func() {
		c, err := net.Dial("tcp", addrs[1].String())
		if err != nil {
			bulkErr <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		data := make([]byte, 8<<20)
		rand.Read(data)
		go func() {
			c.Write(data)
			c.(*net.TCPConn).CloseWrite()
		}()
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err == nil && (n != int64(len(data)) || !bytes.Equal(h.Sum(nil), sha256Sum(data))) {
			err = fmt.Errorf("bulk: %d bytes back of %d, or not the same bytes", n, len(data))
		}
		bulkErr <- err
	}()

	c, err := net.Dial("tcp", addrs[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReader(c)
	if got, err := r.ReadString('\n'); err != nil || got != banner {
		t.Fatalf("banner %q, %v; want %q", got, err, banner)
	}
	for i := range 300 {
		line := strings.Repeat("k", 1+i%40) + strconv.Itoa(i) + "\n"
		if _, err := c.Write([]byte(line)); err != nil {
			t.Fatalf("keystroke %d: %v", i, err)
		}
		if got, err := r.ReadString('\n'); err != nil || got != "> "+line {
			t.Fatalf("keystroke %d: %q, %v; want %q", i, got, err, "> "+line)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Errorf("after the client's end: %q, %v; want the target's end alone", rest, err)
	}
	if err := <-bulkErr; err != nil {
		t.Fatal(err)
	}
}

// sha256Sum returns b's SHA-256.
func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
