package e2e

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/mptunnel/mptunnel/internal/client"
	"github.com/mptunnel/mptunnel/internal/impair"
	"github.com/mptunnel/mptunnel/internal/path"
	"github.com/mptunnel/mptunnel/internal/udptest"
)

// fakeDNS answers A queries for every name with the address it holds, and
// AAAA queries with no records.
type fakeDNS struct {
	conn *net.UDPConn
	a    atomic.Pointer[netip.Addr]
}

func newFakeDNS(t *testing.T, a netip.Addr) *fakeDNS {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeDNS{conn: conn}
	d.a.Store(&a)
	udptest.Serve(t, conn, func(query []byte, from netip.AddrPort) {
		var p dnsmessage.Parser
		h, err := p.Start(query)
		if err != nil {
			return
		}
		q, err := p.Question()
		if err != nil {
			return
		}
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
		b.StartQuestions()
		b.Question(q)
		b.StartAnswers()
		if q.Type == dnsmessage.TypeA {
			b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}, dnsmessage.AResource{A: d.a.Load().As4()})
		}
		out, err := b.Finish()
		if err == nil {
			conn.WriteToUDPAddrPort(out, from)
		}
	})
	return d
}

func (d *fakeDNS) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "udp", d.conn.LocalAddr().String())
	}}
}

// TestReresolve: a path named by host name whose address goes dead is looked
// up again while it is down and follows the name to its new address.
func TestReresolve(t *testing.T) {
	key, _, srv := echoServer(t)
	first, err := impair.New(impair.Options{Listen: "127.0.0.1:0", To: srv.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { first.Close() })
	port := first.Addr().Port()
	second, err := impair.New(impair.Options{Listen: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), port).String(), To: srv.Addr().String()})
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2:%d: %v", port, err)
	}
	t.Cleanup(func() { second.Close() })

	dns := newFakeDNS(t, netip.MustParseAddr("127.0.0.1"))
	remote := net.JoinHostPort("bridge.mptunnel.test.", strconv.Itoa(int(port)))
	cl := startClient(t, client.Config{
		Paths:        []client.PathConfig{{Remote: remote}},
		Key:          key,
		Resolver:     dns.resolver(),
		ResolveEvery: 200 * time.Millisecond,
	})
	app := dial(t, cl)
	pingPong(t, app, "first address", 5)

	first.SetDown(true)
	dns.a.Store(ptr(netip.MustParseAddr("127.0.0.2")))
	if !eventually(5*time.Second, func() bool { return cl.PathStates()[0].State == path.Down }) {
		t.Fatal("dead path not marked down")
	}
	if !eventually(5*time.Second, func() bool { return cl.PathStates()[0].State == path.Up }) {
		t.Fatal("path did not come back at the name's new address")
	}
	pingPong(t, app, "second address", 5)
	if got := cl.Status("test", time.Now()).Sessions[0].Paths[0].Remote; got != second.Addr().String() {
		t.Fatalf("path remote %s, want %s", got, second.Addr())
	}
}

func ptr[T any](v T) *T { return &v }
