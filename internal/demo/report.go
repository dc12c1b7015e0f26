package demo

import (
	"bufio"
	"fmt"
	"html/template"
	"io"
	"strings"
	"time"
)

// WriteText writes the report for people, in at most 80 columns.
func (r Report) WriteText(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "mptunnel demo: %d paths, each losing %g%% each way, one-way delays %s ms\n",
		len(r.Delays), r.LossPct, joinFloats(r.Delays))
	fmt.Fprintf(bw, "%v of echo requests, %d a second, over the best single path and through\nmptunnel at the same time\n\n",
		r.Duration, r.Rate)
	fmt.Fprintf(bw, "%-30s %6s %6s %8s %8s %8s\n", "", "sent", "lost", "loss", "p50 ms", "p99 ms")
	for _, s := range []Stream{r.Single, r.Tunnel} {
		fmt.Fprintf(bw, "%-30s %6d %6d %7.2f%% %8.1f %8.1f\n", clip(s.Name, 30), s.Sent, s.Lost, s.LossPct, s.P50Ms, s.P99Ms)
	}
	if len(r.Client.Sessions) == 1 {
		fmt.Fprintf(bw, "\nThe paths, as the client measured them (%s mode, %s):\n", r.Client.Sessions[0].Mode, r.Client.Sessions[0].Cipher)
		fmt.Fprintf(bw, "%5s  %-22s %-8s %7s %9s %8s %7s %6s\n", "path", "remote", "state", "rtt ms", "loss out", "loss in", "sent", "dups")
		for _, p := range r.Client.Sessions[0].Paths {
			fmt.Fprintf(bw, "%5d  %-22s %-8s %7.1f %8.1f%% %7.1f%% %7d %6d\n", p.ID, clip(p.Remote, 22), p.State, p.RTTms,
				100*p.LossOut, 100*p.LossIn, p.TxPackets, p.Duplicates)
		}
	}
	fmt.Fprintf(bw, "\nEvery request crossed one lossy path both ways on its own, or all %d through\n", len(r.Delays))
	fmt.Fprintln(bw, "mptunnel, whose server and client keep the first copy that arrives: independent")
	fmt.Fprintln(bw, "losses multiply, and the fastest surviving copy sets the latency.")
	return bw.Flush()
}

func joinFloats(fs []float64) string {
	var parts []string
	for _, f := range fs {
		parts = append(parts, fmt.Sprintf("%g", f))
	}
	if len(parts) > 1 {
		return strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
	}
	return strings.Join(parts, "")
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "~"
}

// Colours of the two streams in the charts.
const (
	colorSingle = "#e4572e"
	colorTunnel = "#1f6fb4"
)

// WriteHTML writes the report as one self-contained HTML page: the figures,
// a chart of each second's delivery for both streams and a chart of their
// latencies, as inline SVG. It loads nothing from the network.
func (r Report) WriteHTML(w io.Writer) error {
	var text strings.Builder
	if err := r.WriteText(&text); err != nil {
		return err
	}
	data := struct {
		Report
		Text                   string
		Delivery, Latency      template.HTML
		ColorSingle, ColorTune string
		When                   string
	}{r, text.String(), template.HTML(deliveryChart(r)), template.HTML(latencyChart(r)), colorSingle, colorTunnel,
		time.Now().UTC().Format(time.RFC3339)}
	return page.Execute(w, data)
}

var page = template.Must(template.New("demo").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mptunnel demo</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:900px;color:#222}
pre{background:#f6f6f6;padding:1em;overflow-x:auto}
.key span{display:inline-block;width:1em;height:.6em;margin:0 .3em 0 1em}
figure{margin:1.5em 0}
</style></head><body>
<h1>mptunnel demo</h1>
<p>{{len .Delays}} paths, each losing {{.LossPct}}% each way; {{.Rate}} echo requests a second for {{.Duration}},
over the best single path and through mptunnel at the same time. Generated {{.When}}.</p>
<p class="key"><span style="background:{{.ColorSingle}}"></span>{{.Single.Name}}
<span style="background:{{.ColorTune}}"></span>{{.Tunnel.Name}}</p>
<figure id="delivery"><figcaption>Requests echoed, each second (%)</figcaption>{{.Delivery}}</figure>
<figure id="latency"><figcaption>Round-trip time, p50 and p99 (ms)</figcaption>{{.Latency}}</figure>
<pre>{{.Text}}</pre>
</body></html>
`))

// deliveryChart plots each second's delivered share for both streams.
func deliveryChart(r Report) string {
	const w, h, pad = 800, 260, 40
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img">`, w, h, w, h)
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%d" height="%d" fill="#fff"/>`, w, h)
	// Axes and grid: 0 to 100%.
	for _, v := range []int{0, 25, 50, 75, 100} {
		y := pad + (h-2*pad)*(100-v)/100
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#ddd"/><text x="4" y="%d" font-size="11">%d</text>`, pad, y, w-pad, y, y+4, v)
	}
	for i, s := range []Stream{r.Single, r.Tunnel} {
		color := colorSingle
		if i == 1 {
			color = colorTunnel
		}
		n := len(s.PerSecond)
		if n == 0 {
			continue
		}
		var pts []string
		for k, v := range s.PerSecond {
			x := pad + (w-2*pad)*k/max(n-1, 1)
			y := float64(pad) + float64(h-2*pad)*(100-v)/100
			pts = append(pts, fmt.Sprintf("%d,%.1f", x, y))
			fmt.Fprintf(&b, `<circle cx="%d" cy="%.1f" r="4" fill="%s"/>`, x, y, color)
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="3"/>`, strings.Join(pts, " "), color)
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// latencyChart draws p50 and p99 bars for both streams.
func latencyChart(r Report) string {
	const w, h, pad = 800, 220, 40
	top := 1.0
	for _, s := range []Stream{r.Single, r.Tunnel} {
		top = max(top, s.P99Ms)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img">`, w, h, w, h)
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%d" height="%d" fill="#fff"/>`, w, h)
	bar := 0
	for _, q := range []string{"p50", "p99"} {
		for i, s := range []Stream{r.Single, r.Tunnel} {
			v := s.P50Ms
			if q == "p99" {
				v = s.P99Ms
			}
			color := colorSingle
			if i == 1 {
				color = colorTunnel
			}
			x := pad + bar*150 + (bar/2)*60
			bh := int(float64(h-2*pad) * v / top)
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="120" height="%d" fill="%s"/>`, x, h-pad-bh, max(bh, 1), color)
			fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12">%s %.1f</text>`, x, h-pad+16, q, v)
			bar++
		}
	}
	b.WriteString(`</svg>`)
	return b.String()
}
