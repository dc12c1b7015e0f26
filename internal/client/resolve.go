package client

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// resolve looks up a host:port path address. network is "ip", "ip4" or "ip6".
// IPv4 answers are preferred for "ip", as most paths are IPv4.
func resolve(ctx context.Context, r *net.Resolver, hostport, network string) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return netip.AddrPort{}, errors.New("bad port " + portStr)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), uint16(port)), nil
	}
	ips, err := r.LookupNetIP(ctx, network, host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	best := ips[0]
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			best = ip
			break
		}
	}
	return netip.AddrPortFrom(best.Unmap(), uint16(port)), nil
}

// isName reports whether a path's host is a name rather than an address.
func isName(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	_, err = netip.ParseAddr(host)
	return err != nil
}

// resolver looks up again, every ResolveEvery, the host names of paths that
// are down, and moves a path to its name's new address.
func (c *Client) resolver(ctx context.Context) {
	t := time.NewTicker(c.cfg.ResolveEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, p := range c.pathList() {
			if !p.Down() || !isName(p.Name) {
				continue
			}
			old := p.Addr()
			network := "ip4"
			if old.Addr().Is6() {
				network = "ip6"
			}
			lctx, cancel := context.WithTimeout(ctx, c.cfg.ResolveEvery)
			addr, err := resolve(lctx, c.cfg.Resolver, p.Name, network)
			cancel()
			if err != nil {
				c.warn.Warn("resolve", "cannot resolve a down path again", "path", p.Name, "err", err)
				continue
			}
			if addr != old {
				p.SetAddr(addr)
				c.log.Info("path resolved to a new address", "path", p.Name, "from", old.String(), "to", addr.String())
			}
		}
	}
}
