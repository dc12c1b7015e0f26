package fec

import (
	"testing"
	"time"
)

// TestDecoderLost: the datagrams of a group that neither arrived nor could be
// rebuilt are counted as lost once the group leaves the history.
func TestDecoderLost(t *testing.T) {
	enc, err := NewEncoder(Params{Data: 4, Parity: 1}, 0)
	if err != nil {
		t.Fatal(err)
	}
	dec := NewDecoder(Limits{Groups: 1, History: 1})
	now := time.Now()
	var parity []Shard
	for i := range 4 {
		s, p, err := enc.Add([]byte{byte(i), 1, 2}, now)
		if err != nil {
			t.Fatal(err)
		}
		parity = p
		if i < 2 { // data shards 2 and 3 are lost: one parity cannot repair two
			dec.Add(s, now)
		}
	}
	dec.Add(parity[0], now)
	if st := dec.Stats(); st.Lost != 0 || st.Delivered != 2 {
		t.Fatalf("before the group leaves: %+v", st)
	}
	s, _, err := enc.Add([]byte("next group"), now)
	if err != nil {
		t.Fatal(err)
	}
	dec.Add(s, now)
	if st := dec.Stats(); st.Lost != 2 {
		t.Fatalf("lost %d, want 2 (%+v)", st.Lost, st)
	}
}
