// Package prom exposes a daemon's status as Prometheus metrics: a collector
// that takes a fresh status snapshot at every scrape, and an HTTP server for
// /metrics with the Go runtime's and the process's metrics beside it.
// docs/METRICS.md lists the metrics.
package prom

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mptunnel/mptunnel/internal/metrics"
	"github.com/mptunnel/mptunnel/internal/status"
)

const ns = "mptunnel"

// States a path can be in, for the mptunnel_path_state metric.
var states = []string{status.PathProbing, status.PathUp, status.PathDegraded, status.PathDown}

// Collector turns status snapshots into metrics.
type Collector struct {
	status func() status.Status

	info, uptime, sessions, flows, clientSessions      *prometheus.Desc
	rtt, jitter, loss, state                           *prometheus.Desc
	txPackets, rxPackets, txBytes, rxBytes, duplicates *prometheus.Desc
	tFlows, tTx, tRx, tRefused                         *prometheus.Desc
	counters                                           map[string]*prometheus.Desc
	names                                              []string
}

// NewCollector returns a collector calling snapshot at each scrape.
func NewCollector(snapshot func() status.Status) *Collector {
	path := []string{"session", "path", "remote"}
	c := &Collector{
		status:   snapshot,
		info:     prometheus.NewDesc(ns+"_info", "The daemon's role and version; always 1.", []string{"role", "version"}, nil),
		uptime:   prometheus.NewDesc(ns+"_uptime_seconds", "Seconds since the daemon started.", nil, nil),
		sessions: prometheus.NewDesc(ns+"_sessions", "Sessions up.", nil, nil),
		flows:    prometheus.NewDesc(ns+"_session_flows", "Flows (local peers) a session carries.", []string{"session", "mode", "cipher", "client"}, nil),
		// Its client label takes only names on the server's client list:
		// no session has another.
		clientSessions: prometheus.NewDesc(ns+"_client_sessions", "Sessions up by client, on a server with identities.", []string{"client"}, nil),
		rtt:            prometheus.NewDesc(ns+"_path_rtt_seconds", "Smoothed round-trip time of a path; 0 while unknown.", path, nil),
		jitter:         prometheus.NewDesc(ns+"_path_jitter_seconds", "Round-trip time variation of a path.", path, nil),
		loss:           prometheus.NewDesc(ns+"_path_loss_ratio", "Share of packets lost on a path over the last 5 s, by direction (out: sent from here).", append(path, "direction"), nil),
		state:          prometheus.NewDesc(ns+"_path_state", "1 for the path's current state, 0 for the others.", append(path, "state"), nil),
		txPackets:      prometheus.NewDesc(ns+"_path_sent_packets_total", "Tunnel packets sent on a path.", path, nil),
		rxPackets:      prometheus.NewDesc(ns+"_path_received_packets_total", "Tunnel packets received on a path.", path, nil),
		txBytes:        prometheus.NewDesc(ns+"_path_sent_bytes_total", "UDP payload bytes sent on a path.", path, nil),
		rxBytes:        prometheus.NewDesc(ns+"_path_received_bytes_total", "UDP payload bytes received on a path.", path, nil),
		duplicates:     prometheus.NewDesc(ns+"_path_duplicates_total", "Packets received on a path that had already arrived and were dropped.", path, nil),
		counters:       make(map[string]*prometheus.Desc),
		tFlows:         prometheus.NewDesc(ns+"_target_flows", "Live flows by where they came and where they go.", []string{"name", "target"}, nil),
		tTx:            prometheus.NewDesc(ns+"_target_sent_datagrams_total", "Datagrams sent toward a target (client: into the tunnel; server: to the target).", []string{"name", "target"}, nil),
		tRx:            prometheus.NewDesc(ns+"_target_received_datagrams_total", "Datagrams that came back from a target.", []string{"name", "target"}, nil),
		tRefused:       prometheus.NewDesc(ns+"_target_refused_datagrams_total", "Datagrams dropped because the server refused the flow.", []string{"name", "target"}, nil),
	}
	for _, name := range metrics.Names() {
		c.names = append(c.names, name)
		c.counters[name] = prometheus.NewDesc(ns+"_"+name+"_total", counterHelp(name), nil, nil)
	}
	sort.Strings(c.names)
	return c
}

func counterHelp(name string) string {
	return "The daemon's " + name + " counter (docs/METRICS.md)."
}

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.info, c.uptime, c.sessions, c.flows, c.clientSessions, c.rtt, c.jitter, c.loss, c.state,
		c.txPackets, c.rxPackets, c.txBytes, c.rxBytes, c.duplicates, c.tFlows, c.tTx, c.tRx, c.tRefused} {
		ch <- d
	}
	for _, name := range c.names {
		ch <- c.counters[name]
	}
}

// Collect takes a status snapshot and sends its metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(c.info, 1, st.Role, st.Version)
	gauge(c.uptime, st.Uptime)
	gauge(c.sessions, float64(len(st.Sessions)))
	for _, name := range c.names {
		counter(c.counters[name], st.Counters[name])
	}
	byClient := make(map[string]int)
	for _, s := range st.Sessions {
		if s.Client != "" {
			byClient[s.Client]++
		}
	}
	for name, n := range byClient {
		gauge(c.clientSessions, float64(n), name)
	}
	for _, s := range st.Sessions {
		gauge(c.flows, float64(s.Flows), s.ID, s.Mode, s.Cipher, s.Client)
		for _, p := range s.Paths {
			l := []string{s.ID, strconv.Itoa(p.ID), p.Remote}
			gauge(c.rtt, p.RTTms/1000, l...)
			gauge(c.jitter, p.JitterMs/1000, l...)
			gauge(c.loss, p.LossOut, append(l, "out")...)
			gauge(c.loss, p.LossIn, append(l, "in")...)
			for _, state := range states {
				v := 0.0
				if p.State == state {
					v = 1
				}
				gauge(c.state, v, append(l, state)...)
			}
			counter(c.txPackets, p.TxPackets, l...)
			counter(c.rxPackets, p.RxPackets, l...)
			counter(c.txBytes, p.TxBytes, l...)
			counter(c.rxBytes, p.RxBytes, l...)
			counter(c.duplicates, p.Duplicates, l...)
		}
	}
	for _, t := range st.Targets {
		gauge(c.tFlows, float64(t.Flows), t.Name, t.Target)
		counter(c.tTx, t.TxDatagrams, t.Name, t.Target)
		counter(c.tRx, t.RxDatagrams, t.Name, t.Target)
		counter(c.tRefused, t.Refused, t.Name, t.Target)
	}
}

// Handler returns the /metrics handler for snapshot, with the Go runtime's
// and the process's metrics.
func Handler(snapshot func() status.Status) (http.Handler, error) {
	reg := prometheus.NewRegistry()
	for _, col := range []prometheus.Collector{
		NewCollector(snapshot),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), nil
}

// Serve serves /metrics for snapshot on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener, snapshot func() status.Status) error {
	h, err := Handler(snapshot)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err = srv.Serve(ln)
	cancel()
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("metrics: %w", err)
}
