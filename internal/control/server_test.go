package control

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"math"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/status"
)

func sampleStatus() status.Status {
	return status.Status{
		Role:    "client",
		Version: "1.0.0",
		Uptime:  3723.5,
		Sessions: []status.Session{{
			ID:    status.SessionID(0x2a),
			Mode:  status.ModeRedundant,
			Flows: 3,
			Paths: []status.Path{
				{
					Remote: "203.0.113.10:4000", Local: "192.0.2.1:50001", State: status.PathUp,
					RTTms: 12.34, JitterMs: 1.2, LossOut: 0.001, LossIn: 0,
					TxPackets: 1234, RxPackets: 3_400_000, TxBytes: 1_500_000, RxBytes: 4_000_000_000,
					Duplicates: 12, LastSeen: "2024-05-01T12:00:00.123Z",
				},
				{
					Remote: "[2001:db8::7]:4000", Local: "[2001:db8::1]:50002", State: status.PathDown,
				},
			},
		}},
		Counters: map[string]uint64{"too_old": 3, "unknown_session": 1},
		Targets:  []status.Target{{Name: "127.0.0.1:5353", Target: "10.0.0.53:53", Flows: 1, TxDatagrams: 10, RxDatagrams: 9, Refused: 2}},
	}
}

// serve runs Serve on a fresh socket and returns its path and a function that
// stops it and returns Serve's result.
func serve(t *testing.T, snapshot func() status.Status) (path string, stop func() error) {
	t.Helper()
	path, s := listen(t)
	return path, runServer(t, s, snapshot)
}

// listen returns a server listening on a fresh socket, and its path.
func listen(t *testing.T) (string, *Server) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "client.sock")
	s, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	return path, s
}

// lstat returns the file information of path, not following a link.
func lstat(t *testing.T, path string) fs.FileInfo {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// checkRemoved fails the test if the socket file at path is still there;
// when says since when it should be gone.
func checkRemoved(t *testing.T, path, when string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file still there %s: %v", when, err)
	}
}

func runServer(t *testing.T, s *Server, snapshot func() status.Status) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, snapshot) }()
	var once sync.Once
	var result error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Serve did not return after its context ended")
			}
		})
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func fetch(t *testing.T, path string) status.Status {
	t.Helper()
	st, err := Fetch(context.Background(), path)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	return st
}

func TestRoundTrip(t *testing.T) {
	want := sampleStatus()
	path, stop := serve(t, func() status.Status { return want })
	got := fetch(t, path)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Fetch returned\n%+v\nwant\n%+v", got, want)
	}
	if err := stop(); err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func TestPackageServe(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, path, func() status.Status { return status.Status{Role: "server"} }) }()
	var st status.Status
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if st, err = Fetch(context.Background(), path); err == nil {
			break
		}
	}
	if err != nil || st.Role != "server" {
		t.Errorf("Fetch = %+v, %v", st, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	checkRemoved(t, path, "after Serve returned")
}

func TestSocketIsOwnerOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "mptunnel")
	path := filepath.Join(dir, "client.sock")
	s, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer s.Close()
	fi := lstat(t, path)
	if fi.Mode()&fs.ModeSocket == 0 {
		t.Errorf("%s is %v, not a socket", path, fi.Mode())
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket mode = %#o, want 0600", perm)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := di.Mode().Perm(); perm != 0o700 {
		t.Errorf("created directory mode = %#o, want 0700", perm)
	}
	// No leftovers of the private bind directory.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "client.sock" {
		t.Errorf("directory holds %v, want only client.sock", entries)
	}
}

// TestLongPathFallback covers a path so close to the socket address limit
// that the private bind directory does not fit: the socket is bound in place
// and still ends up owner-only.
func TestLongPathFallback(t *testing.T) {
	base := t.TempDir()
	n := maxSocketPath() - len(base) - len("/") - len("/s")
	if n < 1 {
		t.Skipf("temporary directory %s is too long for this test", base)
	}
	dir := filepath.Join(base, strings.Repeat("d", n))
	path := filepath.Join(dir, "s")
	if len(path) != maxSocketPath() {
		t.Fatalf("built a path of %d bytes, want %d", len(path), maxSocketPath())
	}
	makeStaleSocket(t, path)
	s, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	fi := lstat(t, path)
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket mode = %#o, want 0600", perm)
	}
	stop := runServer(t, s, func() status.Status { return status.Status{Role: "client"} })
	if st := fetch(t, path); st.Role != "client" {
		t.Errorf("Fetch role = %q", st.Role)
	}
	if err := stop(); err != nil {
		t.Errorf("Serve: %v", err)
	}
	checkRemoved(t, path, "after Serve returned")
}

func TestPathTooLong(t *testing.T) {
	path := "/" + strings.Repeat("x", maxSocketPath())
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("Listen error = %v, want one saying the path is too long", err)
	}
	if _, err := Fetch(context.Background(), path); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("Fetch error = %v, want one saying the path is too long", err)
	}
	if _, err := Listen(""); err == nil {
		t.Error("Listen(\"\") succeeded")
	}
}

// makeStaleSocket leaves a socket file at path that nothing listens on, as a
// killed daemon would.
func makeStaleSocket(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&fs.ModeSocket == 0 {
		t.Fatalf("stale socket not left behind: %v, %v", fi, err)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "client.sock")
	makeStaleSocket(t, path)
	if _, err := Fetch(context.Background(), path); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Fetch on a stale socket: %v, want ErrNotRunning", err)
	}
	s, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	stop := runServer(t, s, func() status.Status { return status.Status{Role: "client", Version: "v"} })
	if st := fetch(t, path); st.Version != "v" {
		t.Errorf("Fetch version = %q", st.Version)
	}
	if err := stop(); err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func TestSecondServerRefused(t *testing.T) {
	path, _ := serve(t, func() status.Status { return status.Status{Role: "server", Version: "first"} })
	s, err := Listen(path)
	if err == nil {
		s.Close()
		t.Fatal("second Listen on a live socket succeeded")
	}
	if !errors.Is(err, ErrAlreadyServing) || !strings.Contains(err.Error(), path) ||
		!strings.Contains(err.Error(), "--control") {
		t.Errorf("second Listen error = %q, want ErrAlreadyServing naming the path and --control", err)
	}
	if err := Serve(context.Background(), path, sampleStatus); !errors.Is(err, ErrAlreadyServing) {
		t.Errorf("second Serve error = %v, want ErrAlreadyServing", err)
	}
	// The first server is untouched.
	if st := fetch(t, path); st.Version != "first" {
		t.Errorf("first server now answers %q", st.Version)
	}
}

func TestNonSocketNotReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "client.sock")
	if err := os.WriteFile(path, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file: %v, want a 'not a socket' error", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep" {
		t.Errorf("regular file changed: %q, %v", b, err)
	}
}

func TestParentNotDirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(filepath.Join(file, "client.sock")); err == nil {
		t.Error("Listen under a regular file succeeded")
	}
}

func TestFetchMissingSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nothing", "client.sock")
	_, err := Fetch(context.Background(), path)
	if !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Fetch error = %v, want ErrNotRunning", err)
	}
	msg := err.Error()
	for _, want := range []string{"no mptunnel daemon is serving status", path, "is it running?", "--control"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Fetch error %q does not contain %q", msg, want)
		}
	}
}

func TestServeStopsAndRemovesSocket(t *testing.T) {
	path, stop := serve(t, sampleStatus)
	fetch(t, path)
	if err := stop(); err != nil {
		t.Fatalf("Serve returned %v, want nil", err)
	}
	checkRemoved(t, path, "after Serve returned")
	if _, err := Fetch(context.Background(), path); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Fetch after stop: %v, want ErrNotRunning", err)
	}
}

func TestCloseStopsServe(t *testing.T) {
	path, s := listen(t)
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background(), sampleStatus) }()
	fetch(t, path)
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
	if err := s.Serve(context.Background(), sampleStatus); err == nil {
		t.Error("second Serve call succeeded")
	}
	checkRemoved(t, path, "after Close")
}

func TestCloseWithoutServe(t *testing.T) {
	path, s := listen(t)
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	checkRemoved(t, path, "after Close")
}

// TestCloseKeepsReplacement checks that a server does not remove a file that
// has taken its socket's place.
func TestCloseKeepsReplacement(t *testing.T) {
	path, s := listen(t)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("other"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("replacement removed: %v", err)
	}
}

func TestNilSnapshot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "client.sock")
	if err := Serve(context.Background(), path, nil); err == nil {
		t.Error("Serve with a nil snapshot succeeded")
	}
	checkRemoved(t, path, "after Serve failed")
}

func TestConcurrentFetches(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	path, stop := serve(t, func() status.Status {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return sampleStatus()
	})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := Fetch(context.Background(), path)
			if err == nil && !reflect.DeepEqual(st, sampleStatus()) {
				err = errors.New("status differs")
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := stop(); err != nil {
		t.Errorf("Serve: %v", err)
	}
	if calls != 40 {
		t.Errorf("snapshot called %d times, want 40", calls)
	}
}

// TestStopWithIdleClient checks that a connected client that never reads
// does not hold up shutdown.
func TestStopWithIdleClient(t *testing.T) {
	big := sampleStatus()
	big.Version = strings.Repeat("v", 1<<20) // larger than a socket buffer
	path, stop := serve(t, func() status.Status { return big })
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(50 * time.Millisecond) // let the server start writing
	start := time.Now()
	if err := stop(); err != nil {
		t.Errorf("Serve: %v", err)
	}
	if d := time.Since(start); d > ConnTimeout/2 {
		t.Errorf("shutdown took %v with an idle client", d)
	}
}

func TestNonFiniteNumbersEncoded(t *testing.T) {
	st := sampleStatus()
	st.Uptime = math.Inf(1)
	st.Sessions[0].Paths[0].RTTms = math.NaN()
	path, _ := serve(t, func() status.Status { return st })
	got := fetch(t, path)
	if got.Uptime != 0 || got.Sessions[0].Paths[0].RTTms != 0 {
		t.Errorf("non-finite numbers came back as %v, %v; want 0", got.Uptime, got.Sessions[0].Paths[0].RTTms)
	}
	if !math.IsNaN(st.Sessions[0].Paths[0].RTTms) {
		t.Error("the caller's status was modified")
	}
}

// rawReply reads what the server sends, undecoded.
func rawReply(t *testing.T, path string) []byte {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func keys(m map[string]any) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	sort.Strings(k)
	return k
}

func wantKeys(t *testing.T, what string, m map[string]any, want ...string) {
	t.Helper()
	sort.Strings(want)
	if got := keys(m); !reflect.DeepEqual(got, want) {
		t.Errorf("%s keys = %v, want %v", what, got, want)
	}
}

func TestJSONFieldNames(t *testing.T) {
	path, _ := serve(t, sampleStatus)
	b := rawReply(t, path)
	if len(b) == 0 || b[len(b)-1] != '\n' || strings.Count(string(b), "\n") != 1 {
		t.Errorf("reply is not one line of JSON ending in a newline: %q", b)
	}
	var top map[string]any
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	wantKeys(t, "status", top, "role", "version", "uptime_s", "sessions", "counters", "targets")
	wantKeys(t, "target", top["targets"].([]any)[0].(map[string]any), "name", "target", "flows", "tx_datagrams", "rx_datagrams", "refused")
	session := top["sessions"].([]any)[0].(map[string]any)
	wantKeys(t, "session", session, "id", "mode", "flows", "paths")
	p := session["paths"].([]any)[0].(map[string]any)
	wantKeys(t, "path", p, "id", "remote", "local", "state", "rtt_ms", "jitter_ms", "loss_out", "loss_in",
		"tx_packets", "rx_packets", "tx_bytes", "rx_bytes", "duplicates", "last_seen", "share")
	if session["id"] != "0000002a" {
		t.Errorf("session id = %v, want 0000002a", session["id"])
	}
}

// TestJSONEmpty checks that lists are [] rather than null and that counters
// are left out when there are none.
func TestJSONEmpty(t *testing.T) {
	path, _ := serve(t, func() status.Status {
		return status.Status{Role: "server", Sessions: []status.Session{{ID: "00000001", Mode: status.ModeRedundant}}}
	})
	var top map[string]any
	if err := json.Unmarshal(rawReply(t, path), &top); err != nil {
		t.Fatal(err)
	}
	wantKeys(t, "status", top, "role", "version", "uptime_s", "sessions", "targets")
	if tg, ok := top["targets"].([]any); !ok || len(tg) != 0 {
		t.Errorf("targets = %#v, want []", top["targets"])
	}
	paths, ok := top["sessions"].([]any)[0].(map[string]any)["paths"].([]any)
	if !ok || len(paths) != 0 {
		t.Errorf("paths = %#v, want []", paths)
	}

	path2, _ := serve(t, func() status.Status { return status.Status{Role: "server"} })
	if err := json.Unmarshal(rawReply(t, path2), &top); err != nil {
		t.Fatal(err)
	}
	if s, ok := top["sessions"].([]any); !ok || len(s) != 0 {
		t.Errorf("sessions = %#v, want []", top["sessions"])
	}
}

// fakeServer accepts one connection on a fresh socket and hands it to answer.
func fakeServer(t *testing.T, answer func(net.Conn)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fake.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		answer(c)
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return path
}

func TestFetchBadReplies(t *testing.T) {
	for _, tc := range []struct {
		name, reply, want string
	}{
		{"garbage", "hello\n", "not valid"},
		{"empty", "", "without sending status"},
		{"truncated", `{"role":"client","sess`, "not valid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := fakeServer(t, func(c net.Conn) { _, _ = io.WriteString(c, tc.reply) })
			_, err := Fetch(context.Background(), path)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("Fetch error = %v, want one containing %q and the path", err, tc.want)
			}
		})
	}
}

func TestFetchUnknownFieldsIgnored(t *testing.T) {
	path := fakeServer(t, func(c net.Conn) {
		_, _ = io.WriteString(c, `{"role":"server","version":"1.9","future":{"x":1},"sessions":[{"id":"00000001","new":true,"paths":[]}]}`+"\n")
	})
	st, err := Fetch(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Role != "server" || len(st.Sessions) != 1 || st.Sessions[0].ID != "00000001" {
		t.Errorf("Fetch = %+v", st)
	}
}

func TestFetchTimeout(t *testing.T) {
	release := make(chan struct{})
	path := fakeServer(t, func(net.Conn) { <-release })
	defer close(release)
	start := time.Now()
	_, err := Fetch(context.Background(), path)
	if err == nil || !strings.Contains(err.Error(), "stuck") {
		t.Errorf("Fetch error = %v, want a timeout asking whether the daemon is stuck", err)
	}
	if d := time.Since(start); d < ConnTimeout-100*time.Millisecond || d > ConnTimeout+time.Second {
		t.Errorf("Fetch gave up after %v, want about %v", d, ConnTimeout)
	}
}

func TestFetchCanceled(t *testing.T) {
	release := make(chan struct{})
	path := fakeServer(t, func(net.Conn) { <-release })
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := Fetch(ctx, path)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Fetch error = %v, want context.Canceled", err)
	}
}

func TestFetchPermissionDenied(t *testing.T) {
	if os.Getuid() == 0 {
		t.Skip("root connects regardless of permissions")
	}
	path, _ := serve(t, sampleStatus)
	if err := os.Chmod(path, 0); err != nil {
		t.Fatal(err)
	}
	_, err := Fetch(context.Background(), path)
	if err == nil || !strings.Contains(err.Error(), "owner-only") {
		t.Errorf("Fetch error = %v, want one explaining the socket is owner-only", err)
	}
}
