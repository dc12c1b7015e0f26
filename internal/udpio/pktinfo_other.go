//go:build !linux

package udpio

import (
	"net"
	"net/netip"
)

func enablePktInfo(*net.UDPConn) (v6, ok bool) { return false, false }

func parseDst([]byte) netip.Addr { return netip.Addr{} }

func sourceOOB(bool, netip.Addr) []byte { return nil }
