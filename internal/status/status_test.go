package status

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sampleStatus() Status {
	return Status{
		Role:    "client",
		Version: "1.0.0",
		Uptime:  3723.5,
		Sessions: []Session{{
			ID:    SessionID(0x2a),
			Mode:  ModeRedundant,
			Flows: 3,
			Paths: []Path{
				{
					Remote: "203.0.113.10:4000", Local: "192.0.2.1:50001", State: PathUp,
					RTTms: 12.34, JitterMs: 1.2, LossOut: 0.001, LossIn: 0,
					TxPackets: 1234, RxPackets: 3_400_000, TxBytes: 1_500_000, RxBytes: 4_000_000_000,
					Duplicates: 12, LastSeen: "2024-05-01T12:00:00.123Z",
				},
				{
					Remote: "[2001:db8::7]:4000", Local: "[2001:db8::1]:50002", State: PathDown,
				},
			},
		}},
		Counters: map[string]uint64{"too_old": 3, "unknown_session": 1},
		Targets:  []Target{{Name: "127.0.0.1:5353", Target: "10.0.0.53:53", Flows: 1, TxDatagrams: 10, RxDatagrams: 9, Refused: 2}},
	}
}

func TestFormatTime(t *testing.T) {
	if got := FormatTime(time.Time{}); got != "" {
		t.Errorf("FormatTime(zero) = %q, want empty", got)
	}
	tm := time.Date(2024, 5, 1, 14, 0, 0, 123456789, time.FixedZone("CEST", 2*3600))
	if got, want := FormatTime(tm), "2024-05-01T12:00:00.123Z"; got != want {
		t.Errorf("FormatTime = %q, want %q", got, want)
	}
	if got, want := FormatTime(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)), "2024-05-01T12:00:00.000Z"; got != want {
		t.Errorf("FormatTime = %q, want %q", got, want)
	}
	if got := SessionID(0xdeadbeef); got != "deadbeef" {
		t.Errorf("SessionID = %q", got)
	}
	if got := SessionID(1); got != "00000001" {
		t.Errorf("SessionID = %q", got)
	}
}

func TestWriteJSON(t *testing.T) {
	var b strings.Builder
	if err := WriteJSON(&b, sampleStatus()); err != nil {
		t.Fatal(err)
	}
	var got Status
	if err := json.Unmarshal([]byte(b.String()), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, sampleStatus()) {
		t.Errorf("WriteJSON round trip = %+v", got)
	}
	if !strings.HasSuffix(b.String(), "}\n") {
		t.Errorf("WriteJSON output does not end in a newline")
	}
}

func TestMarshal(t *testing.T) {
	b, err := Marshal(sampleStatus())
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 || b[len(b)-1] != '\n' || strings.Count(string(b), "\n") != 1 {
		t.Errorf("Marshal gave %q, want one line of JSON ending in a newline", b)
	}
	var got Status
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, sampleStatus()) {
		t.Errorf("Marshal round trip = %+v", got)
	}
}

// TestNonFinite: NaN and infinities, which JSON cannot carry, are written as
// 0, and the caller's status is left as it was.
func TestNonFinite(t *testing.T) {
	st := sampleStatus()
	st.Uptime = math.Inf(1)
	st.Sessions[0].Paths[0].RTTms = math.NaN()
	b, err := Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var got Status
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Uptime != 0 || got.Sessions[0].Paths[0].RTTms != 0 {
		t.Errorf("non-finite numbers came back as %v, %v; want 0", got.Uptime, got.Sessions[0].Paths[0].RTTms)
	}
	if !math.IsNaN(st.Sessions[0].Paths[0].RTTms) {
		t.Error("the caller's status was modified")
	}
}

// TestWriteJSONList: the list of daemons is a JSON array of name, socket and
// status, each status normalized ([] rather than null, finite numbers); an
// empty list is [].
func TestWriteJSONList(t *testing.T) {
	named := sampleStatus()
	named.Name = "vpn1"
	bare := Status{Role: "server", Version: "1.0.0", Uptime: math.NaN()}
	var b strings.Builder
	if err := WriteJSONList(&b, []Daemon{
		{Name: "vpn1", Socket: "/run/mptunnel/vpn1.sock", Status: named},
		{Name: "server-2000", Socket: "/run/mptunnel/server-2000.sock", Status: bare},
	}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(b.String(), "]\n") {
		t.Errorf("output does not end in \"]\\n\": %q", b.String())
	}
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(b.String()), &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw) != 2 {
		t.Fatalf("%d entries, want 2:\n%s", len(raw), b.String())
	}
	for _, k := range []string{"name", "socket", "status"} {
		if _, ok := raw[0][k]; !ok {
			t.Errorf("entry has no %q:\n%s", k, b.String())
		}
	}
	var got []Daemon
	if err := json.Unmarshal([]byte(b.String()), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got[0].Status, named) || got[0].Name != "vpn1" || got[0].Socket != "/run/mptunnel/vpn1.sock" {
		t.Errorf("first entry came back as %+v", got[0])
	}
	if s := got[1].Status; s.Role != "server" || s.Uptime != 0 || s.Sessions == nil || s.Targets == nil {
		t.Errorf("second entry's status not normalized: %+v", s)
	}
	if !strings.Contains(b.String(), `"sessions": []`) {
		t.Errorf("an empty session list is not []:\n%s", b.String())
	}
	var empty strings.Builder
	if err := WriteJSONList(&empty, nil); err != nil || empty.String() != "[]\n" {
		t.Errorf("empty list: %q, %v; want \"[]\\n\"", empty.String(), err)
	}
}
