package peer

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mptunnel/mptunnel/internal/path"
	"github.com/mptunnel/mptunnel/internal/udpio"
)

// Defaults both ends share, declared once: the roles' Configs, the command
// line's flags and the TOML files take theirs from here (and the MTU and
// path bounds from wire).
const (
	DefaultMaxFlows      = 256              // flows at once: a client's local peers, a server's per session
	DefaultFlowTimeout   = 60 * time.Second // an idle flow is freed after this
	DefaultProbeInterval = path.DefaultProbeInterval
	// DefaultSessionTimeout is how long a server keeps a session with no
	// authentic packet.
	DefaultSessionTimeout = 60 * time.Second
)

// Default sets *v to def when *v is the zero value: how a Config's unset
// fields take their defaults.
func Default[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Or sets *v to def when *v is zero or less: how a Config's numeric fields
// take their defaults.
func Or[T ~int | ~int64 | ~uint64](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Listen binds a socket on nw at listen ("host:port", or ":port" for every
// address): a role's path socket or a front.
func Listen(nw udpio.Network, listen string) (udpio.Conn, error) {
	laddr, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return nil, fmt.Errorf("bad listen address %s: %w", listen, err)
	}
	lap := laddr.AddrPort()
	if laddr.IP == nil {
		lap = netip.AddrPortFrom(netip.Addr{}, uint16(laddr.Port))
	}
	conn, err := nw.Listen(lap, "")
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w", listen, err)
	}
	return conn, nil
}
