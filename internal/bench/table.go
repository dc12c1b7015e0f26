package bench

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// WriteTable writes the report for people, in at most 80 columns.
func (r Report) WriteTable(w io.Writer) error {
	bw := bufio.NewWriter(w)
	c := r.Config
	bridges := "no loss"
	if c.Loss > 0 {
		bridges = strconv.FormatFloat(c.Loss*100, 'g', 4, 64) + "% loss"
	}
	if c.DelayMs > 0 {
		bridges += ", " + time.Duration(c.DelayMs*1e6).String() + " delay"
	} else {
		bridges += ", no delay"
	}
	if len(c.BridgesBps) > 0 {
		var rs []string
		for _, r := range c.BridgesBps {
			rs = append(rs, strconv.FormatFloat(float64(r)/1e6, 'g', 4, 64))
		}
		bridges += ", " + strings.Join(rs, "/") + " Mbit/s"
	} else if c.BridgeBps > 0 {
		bridges += ", " + strconv.FormatFloat(float64(c.BridgeBps)/1e6, 'g', 4, 64) + " Mbit/s each"
	}
	mode := orDash(c.Mode)
	if c.FEC != "" {
		mode += " " + c.FEC
	}
	fmt.Fprintf(bw, "mptunnel bench: %d-byte datagrams, %gs steps, %s mode, %s\n", c.Size, c.StepSecs, mode, orDash(c.Cipher))
	fmt.Fprintf(bw, "bridges: %s\n", bridges)
	m := r.Machine
	fmt.Fprintf(bw, "machine: %s\n", clip(fmt.Sprintf("%d CPUs, %s, %s %s, %s", m.CPUs, orDash(m.CPUModel), m.OS, orDash(m.Kernel), m.Go), 71))

	if len(r.TCP) > 0 {
		fmt.Fprintf(bw, "\nTCP (one connection, as fast as it sends, to a sink behind the server)\n")
		fmt.Fprintf(bw, "%-16s %10s %14s %12s\n", "setup", "Mbit/s", "bytes", "vs baseline")
		for _, t := range r.TCP {
			vs := "-"
			if t.VsBaseline > 0 {
				vs = fmt.Sprintf("%.1f%%", t.VsBaseline*100)
			}
			fmt.Fprintf(bw, "%-16s %10.1f %14s %12s\n", clip(t.Name, 16), t.Mbps, thousands(float64(t.Bytes)), vs)
		}
	}
	if len(r.Throughput) > 0 {
		if c.BothWays {
			fmt.Fprintf(bw, "\nThroughput both ways (echoes back, loss < %g%% of the round trip)\n", c.LossLimit*100)
		} else {
			fmt.Fprintf(bw, "\nThroughput (highest rate with loss < %g%%)\n", c.LossLimit*100)
		}
		fmt.Fprintf(bw, "%-16s %10s %12s %9s %6s %12s\n", "setup", "Mbit/s", "pkt/s", "loss", "cpu", "vs baseline")
		for _, t := range r.Throughput {
			if !t.Found {
				fmt.Fprintf(bw, "%-16s %10s %12s %9s %6s %12s\n", clip(t.Name, 16), "-", "-", "-", "-", "no pass")
				continue
			}
			vs := "-"
			if t.VsBaseline > 0 {
				vs = fmt.Sprintf("%.1f%%", t.VsBaseline*100)
			}
			cores := fmt.Sprintf("%.2f", t.CPUCores)
			if t.GeneratorLimited {
				cores += "*"
			}
			fmt.Fprintf(bw, "%-16s %10.1f %12s %8.3f%% %6s %12s\n", clip(t.Name, 16), t.GoodputMbps,
				thousands(t.DeliveredPPS), t.Loss*100, cores, vs)
		}
		fmt.Fprintln(bw, "cpu: cores busy in this process (generator, target and tunnel)")
		for _, t := range r.Throughput {
			if t.GeneratorLimited {
				fmt.Fprintln(bw, "*: the generator could not offer more; the figure is a lower bound")
				break
			}
		}
	}

	if len(r.Latency) > 0 {
		fmt.Fprintf(bw, "\nLatency (round trip through an echo, %s echoes/s)\n", thousands(float64(c.Rate)))
		fmt.Fprintf(bw, "%-16s %9s %9s %9s %9s %10s\n", "setup", "p50 us", "p99 us", "p99.9 us", "max us", "lost")
		for i, l := range r.Latency {
			fmt.Fprintf(bw, "%-16s %9.1f %9.1f %9.1f %9.1f %10d\n", clip(l.Name, 16), l.P50Us, l.P99Us, l.P999Us, l.MaxUs, l.Lost)
			if i > 0 {
				fmt.Fprintf(bw, "%-16s %+9.1f %+9.1f %+9.1f\n", "  added", l.AddedP50Us, l.AddedP99Us, l.AddedP999Us)
			}
		}
	}

	if d := r.Delivery; d != nil {
		fmt.Fprintf(bw, "\nDelivery (%s datagrams/s for %gs, one way through the tunnel)\n", thousands(d.RatePPS), c.StepSecs)
		fmt.Fprintf(bw, "%-16s %10s %10s %9s %10s %10s\n", "setup", "sent", "delivered", "loss", "bandwidth", "recovered")
		fmt.Fprintf(bw, "%-16s %10d %10d %8.3f%% %9.3fx %10d\n", clip(d.Name, 16), d.Sent, d.Delivered, d.Loss*100, d.Bandwidth, d.Server["fec_recovered"])
		fmt.Fprintln(bw, "bandwidth: bytes the client put on the paths (headers, copies, parity and probes")
		fmt.Fprintln(bw, "included) over the application's bytes")
	}

	if mem := r.Memory; mem != nil {
		fmt.Fprintf(bw, "\nMemory (server: %d sessions x %d flows x %d paths, %d pkt/s a flow)\n",
			mem.Sessions, mem.Flows, mem.Paths, mem.FlowRate)
		fmt.Fprintf(bw, "VmRSS %.1f MiB, VmHWM %.1f MiB after %gs of steady traffic\n", mem.RSSMiB, mem.HWMMiB, mem.SteadySecs)
		fmt.Fprintf(bw, "%d of %d sessions up; %d datagrams sent, %d echoed\n", mem.SessionsUp, mem.Sessions, mem.Sent, mem.Echoed)
	}
	return bw.Flush()
}

// thousands formats v rounded to an integer with comma separators.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
