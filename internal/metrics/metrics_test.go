package metrics

import (
	"encoding/json"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
)

// wantNames are the counter names of status output and Prometheus
// (docs/STATUS.md, docs/METRICS.md): a stable interface.
var wantNames = []string{
	"tx_packets", "tx_bytes", "rx_packets", "rx_bytes", "delivered", "delivered_bytes", "forwarded",
	"reassembled", "duplicates", "too_old", "auth_failed", "malformed", "unknown_session", "oversize",
	"fragments_evicted", "no_session", "send_errors", "queue_full", "target_refused", "handshakes", "rekeys",
	"handshake_bad", "handshake_replay", "handshake_stale", "handshake_cookie", "handshake_rate_limited",
	"session_limit", "flow_limit", "sessions_freed", "flows_freed", "fec_parity", "fec_recovered",
	"fec_unrecoverable", "path_move_refused", "repair_asked", "repair_filled", "repair_lost", "repair_resent",
	"repair_missing", "parity_sent", "parity_recovered", "streams_opened", "streams_refused", "stream_bytes_up",
	"stream_bytes_down", "flows_reclaimed", "flows_evicted", "unknown_flow", "resets_sent", "resets_accepted",
	"resets_refused", "handshake_unknown_client",
}

// TestEachCoversEveryField: each names every field of set once, in order.
func TestEachCoversEveryField(t *testing.T) {
	var s set[uint64]
	v := reflect.ValueOf(&s).Elem()
	i := 0
	s.each(func(name string, p *uint64) {
		if i >= v.NumField() {
			t.Fatalf("each names %q beyond set's %d fields", name, v.NumField())
		}
		if want := v.Field(i).Addr().Interface().(*uint64); p != want {
			t.Errorf("each's entry %d (%q) is not field %s", i, name, v.Type().Field(i).Name)
		}
		i++
	})
	if i != v.NumField() {
		t.Fatalf("each names %d counters, set has %d fields", i, v.NumField())
	}
	if !slices.Equal(Names(), wantNames) {
		t.Fatalf("names changed:\n got %q\nwant %q", Names(), wantNames)
	}
}

// TestSnapshot: every counter reaches its own name, in Snapshot, Map and JSON.
func TestSnapshot(t *testing.T) {
	var c Counters
	k := uint64(1)
	c.each(func(_ string, v *atomic.Uint64) {
		v.Add(k)
		k++
	})
	s := c.Snapshot()
	if s.HandshakeReplay != 23 || s.PathMoveRefused != 34 || s.TxPackets != 1 {
		t.Fatalf("snapshot fields: %+v", s)
	}
	m := s.Map()
	if len(m) != len(wantNames) {
		t.Fatalf("map has %d counters, want %d", len(m), len(wantNames))
	}
	for i, name := range wantNames {
		if m[name] != uint64(i+1) {
			t.Errorf("%s = %d, want %d", name, m[name], i+1)
		}
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]uint64
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, m) {
		t.Fatalf("JSON %s, want %v", b, m)
	}
}

func BenchmarkSnapshotMap(b *testing.B) {
	var c Counters
	b.ReportAllocs()
	for b.Loop() {
		_ = c.Snapshot().Map()
	}
}
