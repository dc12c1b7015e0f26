package e2e

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/server"
)

// startStoppable starts a server that the test stops with stop before its
// end (stop is safe to call again, and runs at cleanup otherwise).
func startStoppable(t *testing.T, cfg server.Config) (srv *server.Server, stop func()) {
	t.Helper()
	srv, err := server.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return srv, stop
}

// restartPair starts an echo target, a server the test stops with stop, and
// a client with two paths to it, through which an application app has
// echoed; cfg starts a new server on the same port with the same key.
func restartPair(t *testing.T) (cfg server.Config, stop func(), cl *client.Client, app *net.UDPConn) {
	t.Helper()
	echo := newEchoTarget(t)
	cfg = server.Config{Listen: "127.0.0.1:0", Target: echo.addr(), Key: testKey(t), Logger: quietLogger()}
	srv, stop := startStoppable(t, cfg)
	cfg.Listen = srv.Addr().String()
	cl = startClient(t, client.Config{Paths: []client.PathConfig{{Remote: cfg.Listen}, {Remote: cfg.Listen}}, Key: cfg.Key})
	app = dial(t, cl)
	pingPong(t, app, "first server", 5)
	return cfg, stop, cl, app
}

// TestServerRestart: the server goes away and comes back on the same port
// knowing no session; the client notices on its own and handshakes again.
func TestServerRestart(t *testing.T) {
	cfg, stop1, cl, app := restartPair(t)
	stop1()
	time.Sleep(time.Second) // the server is down for a second, as an operator's restart would be
	srv2 := startServer(t, cfg)
	restarted := time.Now()
	// Send until an answer comes: the first one marks the recovery.
	buf := make([]byte, 64)
	var recovered time.Duration
	for recovered == 0 && time.Since(restarted) < 10*time.Second {
		app.Write([]byte("anyone?"))
		app.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		for {
			n, err := app.Read(buf)
			if err != nil {
				if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
					t.Fatal(err)
				}
				break
			}
			if string(buf[:n]) == "anyone?" {
				recovered = time.Since(restarted)
				break
			}
		}
	}
	if recovered == 0 {
		t.Fatal("traffic did not resume within 10s of the server restart")
	}
	t.Logf("traffic resumed %v after the server came back", recovered.Round(time.Millisecond))
	if srv2.Sessions() != 1 {
		t.Fatalf("new server has %d sessions, want 1", srv2.Sessions())
	}
	if cl.Counters().HandshakeOK.Load() != 2 {
		t.Fatalf("client made %d handshakes, want 2", cl.Counters().HandshakeOK.Load())
	}
	pingPong(t, app, "second server", 5)
}
