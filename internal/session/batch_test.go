package session

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/mptunnel/mptunnel/internal/metrics"
	"github.com/mptunnel/mptunnel/internal/wire"
)

func TestBatch(t *testing.T) {
	a, b := pair(t)
	bt := NewBatch(4)
	var o Opener
	var cnt metrics.Counters
	sizes := []int{0, 1200, 5000, 9000}
	var want [][]byte
	maxPlain := wire.MaxPlaintext(1400, false)
	for i, n := range sizes {
		d := bytes.Repeat([]byte{byte(i + 1)}, n)
		want = append(want, d)
		copy(bt.Buf(i), d)
	}
	var got [][]byte
	collect := func(_ uint32, d []byte) { got = append(got, append([]byte(nil), d...)) }
	flush := func() {
		for _, p := range bt.Pkts {
			h, err := wire.ParseHeader(p)
			if err != nil {
				t.Fatal(err)
			}
			m, err := o.Receive(b, append([]byte(nil), p...), h, time.Now(), &cnt, collect)
			if err != nil {
				t.Fatal(err)
			}
			if m.Kind == wire.MsgData {
				collect(m.Flow, m.Body)
			}
		}
		bt.Reset()
	}
	for i, n := range sizes {
		err := bt.Add(a, i, 3, n, maxPlain)
		if errors.Is(err, ErrBatchFull) {
			if i != 3 {
				t.Fatalf("batch full at datagram %d; only the second cut datagram should fill it", i)
			}
			flush()
			err = bt.Add(a, i, 3, n, maxPlain)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	flush()
	if len(got) != len(want) {
		t.Fatalf("got %d datagrams, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("datagram %d differs", i)
		}
	}
	if err := bt.Add(a, 0, 3, wire.MaxDatagram+1, maxPlain); !errors.Is(err, ErrOversize) {
		t.Fatalf("oversize: %v", err)
	}
	if n := testing.AllocsPerRun(100, func() {
		bt.Reset()
		for i := 0; i < 2; i++ {
			if err := bt.Add(a, i, 3, 1200, maxPlain); err != nil {
				t.Fatal(err)
			}
		}
	}); n != 0 {
		t.Fatalf("Add allocates %.1f times per batch", n)
	}
}
