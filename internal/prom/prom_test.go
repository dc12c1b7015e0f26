package prom

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/mptunnel/mptunnel/internal/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func sample() status.Status {
	st := status.NewStatus("client", "1.2.3", time.Now().Add(-time.Minute), map[string]uint64{"tx_packets": 42, "too_old": 3})
	st.Sessions = []status.Session{{ID: "0000002a", Client: "alice", Mode: "redundant", Cipher: "aes-256-gcm", Flows: 2, Paths: []status.Path{
		{ID: 0, Remote: "192.0.2.1:4000", State: status.PathUp, RTTms: 12.5, JitterMs: 1, LossOut: 0.1, LossIn: 0.2, TxPackets: 10, RxPackets: 9, TxBytes: 1000, RxBytes: 900, Duplicates: 4},
		{ID: 1, Remote: "[2001:db8::1]:4000", State: status.PathDown},
	}}}
	st.Targets = []status.Target{{Name: "127.0.0.1:5353", Target: "10.0.0.53:53", Flows: 3, TxDatagrams: 70, RxDatagrams: 60, Refused: 5}}
	return st
}

// TestScrape: /metrics serves what the status says, in the Prometheus text
// format, parsed here with Prometheus's own parser.
func TestScrape(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, sample) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string, labels map[string]string) (float64, bool) {
		f := fams[name]
		if f == nil {
			return 0, false
		}
	next:
		for _, m := range f.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			}
		}
		return 0, false
	}
	p0 := map[string]string{"session": "0000002a", "path": "0", "remote": "192.0.2.1:4000"}
	fw := map[string]string{"name": "127.0.0.1:5353", "target": "10.0.0.53:53"}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"mptunnel_info", map[string]string{"role": "client", "version": "1.2.3"}, 1},
		{"mptunnel_sessions", nil, 1},
		{"mptunnel_tx_packets_total", nil, 42},
		{"mptunnel_too_old_total", nil, 3},
		{"mptunnel_auth_failed_total", nil, 0},
		{"mptunnel_session_flows", map[string]string{"session": "0000002a", "mode": "redundant", "cipher": "aes-256-gcm", "client": "alice"}, 2},
		{"mptunnel_client_sessions", map[string]string{"client": "alice"}, 1},
		{"mptunnel_path_rtt_seconds", p0, 0.0125},
		{"mptunnel_path_jitter_seconds", p0, 0.001},
		{"mptunnel_path_loss_ratio", merge(p0, "direction", "out"), 0.1},
		{"mptunnel_path_loss_ratio", merge(p0, "direction", "in"), 0.2},
		{"mptunnel_path_state", merge(p0, "state", "up"), 1},
		{"mptunnel_path_state", merge(p0, "state", "down"), 0},
		{"mptunnel_path_state", map[string]string{"path": "1", "state": "down"}, 1},
		{"mptunnel_path_sent_packets_total", p0, 10},
		{"mptunnel_path_received_packets_total", p0, 9},
		{"mptunnel_path_sent_bytes_total", p0, 1000},
		{"mptunnel_path_received_bytes_total", p0, 900},
		{"mptunnel_path_duplicates_total", p0, 4},
		{"mptunnel_target_flows", fw, 3},
		{"mptunnel_target_sent_datagrams_total", fw, 70},
		{"mptunnel_target_received_datagrams_total", fw, 60},
		{"mptunnel_target_refused_datagrams_total", fw, 5},
	}
	for _, c := range checks {
		got, ok := value(c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}
	if f := fams["mptunnel_path_sent_packets_total"]; f == nil || f.GetType().String() != "COUNTER" {
		t.Error("path packet counts are not counters")
	}
}

func merge(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for a, b := range m {
		out[a] = b
	}
	return out
}

// TestDashboard: the sample Grafana dashboard is valid JSON and asks only
// for metrics this package serves.
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("../../examples/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	ch := make(chan *prometheus.Desc, 256)
	NewCollector(sample).Describe(ch)
	close(ch)
	for d := range ch {
		m := regexp.MustCompile(`fqName: "([^"]+)"`).FindStringSubmatch(d.String())
		if m != nil {
			served[m[1]] = true
		}
	}
	names := regexp.MustCompile(`mptunnel_[a-z_]+`)
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, name := range names.FindAllString(tg.Expr, -1) {
				n++
				if !served[name] {
					t.Errorf("panel %q asks for %s, which is not served", p.Title, name)
				}
			}
		}
	}
	if n < 10 {
		t.Fatalf("only %d metric references in the dashboard", n)
	}
}
