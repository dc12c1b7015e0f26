// Package netlab builds small network-namespace labs for the project's
// end-to-end tests.
//
// A Lab owns a set of Linux network namespaces joined by veth pairs, the
// processes started inside them, and any nftables rules or qdiscs set on
// their interfaces. Everything is removed by a t.Cleanup registered in New,
// so a lab is torn down even when the test fails or panics. Namespace names
// carry a random per-lab prefix ("mpt" followed by five hex digits), so
// parallel labs never collide. If the test binary itself dies (for example
// on a -timeout panic, where no cleanup runs), the kernel kills the
// processes it started, and the next run deletes the namespaces left behind
// once they are 15 minutes old and empty.
//
// The package exists only on Linux; elsewhere it is empty. Using it needs
// root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and the ip command from iproute2;
// some helpers also need nft, tc, ss or socat.
// Tests call Require first, which skips the test with a clear message when
// any of that is missing, so `go test ./...` passes for ordinary users.
//
// The package never switches namespaces inside the test process: namespaces
// belong to OS threads, not goroutines. Every command runs through
// `ip netns exec NAME ...` or `ip -n NAME ...` instead.
//
// A typical test:
//
//	func TestMain(m *testing.M) { netlab.Main(m) }
//
//	func TestRelay(t *testing.T) {
//		netlab.Require(t, "socat", "nft")
//		lab := netlab.New(t)
//		client := lab.Namespace("client")
//		server := lab.Namespace("server")
//		cIf, _ := lab.Link(client, "10.77.1.1/24", server, "10.77.1.2/24")
//		server.StartEcho(t, "0.0.0.0:2000")
//		client.WaitEcho(t, "10.77.1.2:2000", 10*time.Second)
//		client.SetLoss(t, cIf, 100)
//		if err := client.Probe(t, "10.77.1.2:2000", []byte("x"), time.Second); err == nil {
//			t.Fatal("echo came back through a link with 100% loss")
//		}
//	}
//
// # Echo target and probe client
//
// The UDP echo target and the probe client are the test binary itself,
// started again inside a namespace with an environment variable that makes
// it play that role instead of running tests. For that to work, the test
// package's TestMain must call MaybeRunEcho before anything else (Main does
// so). When MPTUNNEL_NETLAB_ECHO is set to an address, MaybeRunEcho serves
// UDP echo on it, sending every datagram (including empty ones, up to 65535
// bytes) back whole to its sender, until SIGTERM, and then exits. NS.StartEcho
// starts such a server and NS.Probe and NS.WaitEcho run the matching client.
//
// # Stream client
//
// NS.StartStream runs the test binary a third way, with StreamEnv set: as
// a client that sends a steady stream of numbered, timestamped datagrams
// (500 a second by default) from one UDP socket, reads the echoes on the
// same socket, and at the end prints a one-line JSON report. Stream.Wait
// returns it as a StreamReport: how many datagrams were sent, echoed,
// duplicated, corrupted or lost (and which), the receive time of every
// echo, and the gaps in which no echo arrived. Its times are wall-clock
// times, so a test can compare them with its own time.Now(), for example
// to check how soon echoes resume after it restarts a server:
//
//	s := client.StartStream(t, netlab.StreamConfig{Addr: "127.0.0.1:5000", Duration: 5 * time.Second})
//	time.Sleep(time.Second)
//	srv.Stop()
//	restarted := time.Now()
//	srv = server.Start(t, bins["mpserver"], args...)
//	r := s.Wait(t)
//	if at, ok := r.FirstEchoAfter(restarted); !ok || at.Sub(restarted) > 2*time.Second {
//		t.Fatalf("stream did not resume within 2 s of the restart: %+v", r.Gaps)
//	}
//
// # Relays, WireGuard and iperf3
//
// The test binary also runs as an internal/impair relay with delay and loss
// of its own (relay.go; MaybeRunEcho takes that role too, with a random seed
// per relay). wireguard.go runs a userspace WireGuard (wireguard-go and wg
// from wireguard-tools) between two namespaces, iperf.go iperf3's server and
// client with their JSON reports, and counters.go reads the drop counters on
// the way (/proc/net/snmp, per-socket drops from ss, interfaces, the nftables
// loss rule). Tests that use them skip without those programs.
//
// # Project binaries
//
// BuildBinaries builds main packages of the module (for example
// "./cmd/mpserver") once per test binary into a temporary directory and
// returns their paths; RemoveBuilds, called by Main after the tests, deletes
// that directory.
package netlab
