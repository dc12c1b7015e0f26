package fec

import (
	"testing"
	"time"
)

// BenchmarkEncoderAdd adds 1,000-byte datagrams: one op is one datagram, its
// data shard, and a tenth or an eighth of a group's parity.
func BenchmarkEncoderAdd(b *testing.B) {
	for _, p := range []Params{DefaultParams(), {Data: 10, Parity: 4}} {
		b.Run(shape(p), func(b *testing.B) {
			enc := mustEncoder(b, p)
			d := make([]byte, 1000)
			now := t0
			b.SetBytes(int64(len(d)))
			b.ReportAllocs()
			for b.Loop() {
				now = now.Add(time.Microsecond)
				if _, _, err := enc.Add(d, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecoderAdd feeds the shards of groups of 1,000-byte datagrams:
// one op is one whole group (k datagrams). "repair" loses data shard 1 of
// each group, rebuilt from the first parity shard; "clean" loses nothing.
func BenchmarkDecoderAdd(b *testing.B) {
	for _, p := range []Params{DefaultParams(), {Data: 10, Parity: 4}} {
		for _, lossy := range []bool{false, true} {
			name := shape(p) + "/clean"
			if lossy {
				name = shape(p) + "/repair"
			}
			b.Run(name, func(b *testing.B) {
				const groups = 64
				enc := mustEncoder(b, p)
				d := make([]byte, 1000)
				var shards []Shard
				for i := range p.Data * groups {
					d[0] = byte(i)
					s, parity, _ := enc.Add(d, t0)
					s.Body = append([]byte(nil), s.Body...)
					shards = append(shards, s)
					for _, ps := range parity {
						ps.Body = append([]byte(nil), ps.Body...)
						shards = append(shards, ps)
					}
				}
				per := p.Data + p.Parity
				dec := NewDecoder(Limits{})
				now := t0
				g := uint32(0)
				b.SetBytes(int64(1000 * p.Data))
				b.ReportAllocs()
				for b.Loop() {
					base := int(g%groups) * per
					for j, s := range shards[base : base+per] {
						if lossy && j == 1 {
							continue
						}
						s.Group = g
						now = now.Add(time.Microsecond)
						dec.Add(s, now)
					}
					g++
				}
				st := dec.Stats()
				if lossy && st.Recovered != uint64(g) || !lossy && st.Delivered != uint64(g)*uint64(p.Data) {
					b.Fatalf("%d groups: stats %+v", g, st)
				}
			})
		}
	}
}

func shape(p Params) string {
	return "k" + itoa(p.Data) + "m" + itoa(p.Parity)
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}
