package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/server"
)

// upTimeout bounds the wait for a client's first session.
const upTimeout = 15 * time.Second

// tunnel is a server forwarding to the target, bridges to it and a client
// using the bridges as paths, all on loopback.
type tunnel struct {
	srv    *server.Server
	cl     *client.Client
	relays []*impair.Relay
}

func (tn *tunnel) addr() netip.AddrPort { return tn.cl.Addr() }

// paths is how many paths the tunnel has; a nil tunnel, the baseline, has
// none.
func (tn *tunnel) paths() int {
	if tn == nil {
		return 0
	}
	return len(tn.relays)
}

// counters snapshots the client's and the server's counters; a nil tunnel
// has none.
func (tn *tunnel) counters() Counters {
	if tn == nil {
		return Counters{}
	}
	return Counters{Client: tn.cl.Counters().Snapshot().Map(), Server: tn.srv.Counters().Snapshot().Map()}
}

// withTunnel starts a tunnel with paths bridges, waits for its session,
// calls fn and stops everything it started before returning.
func (b *bencher) withTunnel(ctx context.Context, paths int, fn func(*tunnel) error) (err error) {
	b.prog.printf("starting a tunnel with %d path(s)", paths)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	serveErrs := make(chan error, 2)
	defer func() {
		cancel()
		wg.Wait()
		close(serveErrs)
		for e := range serveErrs {
			if err == nil && e != nil {
				err = e
			}
		}
	}()

	scfg := server.Config{
		Listen:   "127.0.0.1:0",
		Target:   b.target.addr(),
		Key:      b.key,
		Cipher:   b.cfg.Cipher,
		Logger:   b.log,
		NoRepair: b.cfg.NoRepair,
		NoParity: b.cfg.NoParity,
	}
	if b.sink != nil {
		scfg.Allow = []string{"tcp:" + b.sink.addr()}
	}
	srv, err := server.Listen(scfg)
	if err != nil {
		return fmt.Errorf("bench server: %w", err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ctx); err != nil {
			serveErrs <- fmt.Errorf("bench server: %w", err)
		}
	}()

	tn := &tunnel{srv: srv}
	defer func() {
		for _, r := range tn.relays {
			if cerr := r.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("bench bridge: %w", cerr)
			}
		}
	}()
	imp := impair.Config{Loss: b.cfg.Loss, Delay: b.cfg.Delay, Rate: b.cfg.BridgeRate}
	ccfg := client.Config{Listen: "127.0.0.1:0", Key: b.key, Mode: b.cfg.Mode, Cipher: b.cfg.Cipher, FEC: b.cfg.FEC, FECDepth: b.cfg.FECDepth, FECFlush: b.cfg.FECFlush, Logger: b.log,
		NoRepair: b.cfg.NoRepair, NoParity: b.cfg.NoParity}
	if b.sink != nil {
		ccfg.Forwards = []client.Forward{{Listen: "127.0.0.1:0", Target: b.sink.addr(), TCP: true}}
	}
	for i := 0; i < paths; i++ {
		imp := imp
		if len(b.cfg.BridgeRates) == b.cfg.Paths && paths == b.cfg.Paths {
			imp.Rate = b.cfg.BridgeRates[i]
		} else if len(b.cfg.BridgeRates) > 0 {
			imp.Rate = b.cfg.BridgeRates[0] // one path: the first bridge
		}
		r, err := impair.New(impair.Options{
			Listen: "127.0.0.1:0",
			To:     srv.Addr().String(),
			Up:     imp,
			Down:   imp,
			Seed:   int64(i + 1),
		})
		if err != nil {
			return fmt.Errorf("bench bridge %d: %w", i+1, err)
		}
		tn.relays = append(tn.relays, r)
		ccfg.Paths = append(ccfg.Paths, client.PathConfig{Remote: r.Addr().String()})
	}

	cl, err := client.Listen(ccfg)
	if err != nil {
		return fmt.Errorf("bench client: %w", err)
	}
	tn.cl = cl
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := cl.Serve(ctx); err != nil {
			serveErrs <- fmt.Errorf("bench client: %w", err)
		}
	}()
	if err := waitUp(ctx, cl); err != nil {
		return err
	}
	return fn(tn)
}

// waitUp waits for the client's first session.
func waitUp(ctx context.Context, cl *client.Client) error {
	t := time.NewTimer(upTimeout)
	defer t.Stop()
	select {
	case <-cl.Up():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errors.New("bench client: no session with the server within " + upTimeout.String())
	}
}
