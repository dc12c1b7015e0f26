//go:build linux

package netlab

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// SNMP returns the namespace's protocol counters from /proc/net/snmp,
// keyed "Proto.Name", for example "Udp.RcvbufErrors" (datagrams dropped
// because a socket's receive buffer was full) or "Tcp.RetransSegs".
func (n *NS) SNMP(t testing.TB) map[string]uint64 {
	t.Helper()
	m, err := parseSNMP(n.Run(t, "cat", "/proc/net/snmp"))
	if err != nil {
		t.Fatalf("netlab: /proc/net/snmp in %s: %v", n.Name, err)
	}
	return m
}

// parseSNMP parses /proc/net/snmp: for each protocol a line of names and
// then a line of values, both starting with "Proto:".
func parseSNMP(s string) (map[string]uint64, error) {
	m := map[string]uint64{}
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) != len(values) || len(names) == 0 || names[0] != values[0] || !strings.HasSuffix(names[0], ":") {
			return nil, fmt.Errorf("line %d: %q and %q do not pair", i+1, lines[i], lines[i+1])
		}
		proto := strings.TrimSuffix(names[0], ":")
		for j := 1; j < len(names); j++ {
			// Some counters (Tcp.MaxConn) are signed; they read as 0 here.
			v, _ := strconv.ParseUint(values[j], 10, 64)
			m[proto+"."+names[j]] = v
		}
	}
	return m, nil
}

// LinkCounters are an interface's packet counters.
type LinkCounters struct {
	RxPackets, RxDropped, TxPackets, TxDropped uint64
}

// LinkCounters returns the packet counters of an interface of the
// namespace. Packets dropped by SetLoss are not counted as dropped.
func (n *NS) LinkCounters(t testing.TB, ifname string) LinkCounters {
	t.Helper()
	out, err := runCmd(t.Context(), nil, "ip", "-n", n.Name, "-s", "-j", "link", "show", "dev", ifname)
	if err != nil {
		t.Fatalf("netlab: %v\n%s", err, out)
	}
	var links []struct {
		Stats struct {
			Rx struct {
				Packets uint64 `json:"packets"`
				Dropped uint64 `json:"dropped"`
			} `json:"rx"`
			Tx struct {
				Packets uint64 `json:"packets"`
				Dropped uint64 `json:"dropped"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("netlab: ip -s -j link show dev %s in %s: %v: %s", ifname, n.Name, err, out)
	}
	s := links[0].Stats
	return LinkCounters{RxPackets: s.Rx.Packets, RxDropped: s.Rx.Dropped, TxPackets: s.Tx.Packets, TxDropped: s.Tx.Dropped}
}

// UDPSocketDrops returns, for each UDP socket of the namespace that has
// dropped datagrams (its receive buffer was full), the count, keyed by the
// socket's local address, peer address and owning program, as ss shows
// them. It uses ss.
func (n *NS) UDPSocketDrops(t testing.TB) map[string]uint64 {
	t.Helper()
	m, err := parseSSDrops(n.Run(t, "ss", "-H", "-uanmp"))
	if err != nil {
		t.Fatalf("netlab: ss in %s: %v", n.Name, err)
	}
	return m
}

// ssProgRE finds the first program name in ss's users:(...) column.
var ssProgRE = regexp.MustCompile(`users:\(\("([^"]*)"`)

// parseSSDrops parses `ss -H -uanmp`: a line for each socket (state,
// queues, local and peer address, users) followed by its skmem line, whose
// d field counts drops.
func parseSSDrops(out string) (map[string]uint64, error) {
	m := map[string]uint64{}
	var sock string
	for _, line := range strings.Split(out, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" {
			continue
		}
		if strings.HasPrefix(trimmed, "skmem:(") {
			if sock == "" {
				return nil, fmt.Errorf("skmem line %q follows no socket", trimmed)
			}
			fields := strings.Split(strings.TrimSuffix(strings.TrimPrefix(trimmed, "skmem:("), ")"), ",")
			for _, f := range fields {
				if v, ok := strings.CutPrefix(f, "d"); ok {
					if d, err := strconv.ParseUint(v, 10, 64); err == nil && d > 0 {
						m[sock] = d
					}
				}
			}
			sock = ""
			continue
		}
		f := strings.Fields(trimmed)
		if len(f) < 5 {
			return nil, fmt.Errorf("socket line %q", trimmed)
		}
		sock = f[3] + " " + f[4]
		if p := ssProgRE.FindStringSubmatch(trimmed); p != nil {
			sock += " " + p[1]
		}
	}
	return m, nil
}

// LossDrops returns how many packets the SetLoss rule on ifname has
// dropped so far; 0 if the interface never had one. It needs nft.
func (n *NS) LossDrops(t testing.TB, ifname string) uint64 {
	t.Helper()
	out, err := n.RunE("nft", "-j", "list", "chain", "netdev", lossTable, lossChain(ifname))
	if err != nil {
		return 0 // no such table or chain: no rule has dropped anything
	}
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Expr []struct {
					Counter *struct {
						Packets uint64 `json:"packets"`
					} `json:"counter"`
				} `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("netlab: nft -j list chain in %s: %v: %s", n.Name, err, out)
	}
	var total uint64
	for _, item := range doc.Nftables {
		if item.Rule == nil {
			continue
		}
		for _, e := range item.Rule.Expr {
			if e.Counter != nil {
				total += e.Counter.Packets
			}
		}
	}
	return total
}
