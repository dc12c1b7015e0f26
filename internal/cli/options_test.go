package cli

import (
	"flag"
	"io"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/conffile"
	"github.com/mptunnel/mptunnel/internal/peer"
	"github.com/mptunnel/mptunnel/internal/server"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// TestOptionsFileAndFlags: a flag given wins over the TOML file, the file
// wins over a flag's default, and an option neither sets keeps the one
// default both the command line and the Config declare.
func TestOptionsFileAndFlags(t *testing.T) {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	b := binder{fs: fs}
	var cfg, file server.Config
	b.serverFlags(&cfg, &file)
	if err := fs.Parse([]string{"--mtu", "1200", "--max-sessions", "9"}); err != nil {
		t.Fatal(err)
	}
	file = serverFile(conffile.Server{Common: conffile.Common{MTU: 1300, MaxFlows: 17, FlowTimeout: conffile.Duration(time.Minute)}, MaxSessions: 7, Listen: ":2000"})
	b.take(visited(fs))
	if cfg.MTU != 1200 || cfg.MaxSessions != 9 {
		t.Fatalf("flags given: mtu %d, max-sessions %d; want 1200 and 9", cfg.MTU, cfg.MaxSessions)
	}
	if cfg.MaxFlows != 17 || cfg.FlowTimeout != time.Minute {
		t.Fatalf("file: max-flows %d, flow-timeout %v; want 17 and 1m", cfg.MaxFlows, cfg.FlowTimeout)
	}
	if cfg.SessionTimeout != peer.DefaultSessionTimeout || cfg.Window != 0 {
		t.Fatalf("neither: session-timeout %v, window %d; want the defaults", cfg.SessionTimeout, cfg.Window)
	}

	fs = flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	b = binder{fs: fs}
	var ccfg, cfile client.Config
	b.clientFlags(&ccfg, &cfile)
	if err := fs.Parse([]string{"--listen", "127.0.0.1:4000"}); err != nil {
		t.Fatal(err)
	}
	cfile = clientFile(conffile.Client{Listen: "127.0.0.1:5000", Rekey: conffile.Rekey{Packets: 1 << 20},
		Paths: []conffile.Path{{Remote: "192.0.2.1:2000", Priority: 1}}})
	b.take(visited(fs))
	if ccfg.Listen != "127.0.0.1:4000" || ccfg.RekeyPackets != 1<<20 || ccfg.MTU != wire.DefaultMTU || ccfg.RekeyAfter != client.DefaultRekeyAfter {
		t.Fatalf("client: listen %s, rekey-packets %d, mtu %d, rekey-after %v", ccfg.Listen, ccfg.RekeyPackets, ccfg.MTU, ccfg.RekeyAfter)
	}
	if len(cfile.Paths) != 1 || cfile.Paths[0].Priority != 1 {
		t.Fatalf("the file's paths: %+v", cfile.Paths)
	}
}
