package stream

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/mptunnel/mptunnel/internal/wire"
)

// FuzzReadRequest: a stream's request is the one thing the server reads
// from a stream before it acts. Whatever the bytes, ReadRequest returns a
// valid target or an error, never reads past the request, and a target it
// returns encodes back to exactly the bytes it read.
func FuzzReadRequest(f *testing.F) {
	for _, tg := range []wire.Target{
		{Addr: netip.MustParseAddr("192.0.2.1"), Port: 80},
		{Addr: netip.MustParseAddr("2001:db8::1"), Port: 443},
		{Name: "example.org", Port: 22},
	} {
		var b bytes.Buffer
		WriteRequest(&b, tg)
		f.Add(b.Bytes())
	}
	f.Add([]byte{1, 3, 0, 0, 80})
	f.Add([]byte{2, 1, 1, 2, 3, 4, 0, 80})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		tg, err := ReadRequest(r)
		if err != nil {
			return
		}
		if !tg.Valid() {
			t.Fatalf("%x: invalid target %+v", in, tg)
		}
		used := len(in) - r.Len()
		var b bytes.Buffer
		WriteRequest(&b, tg)
		if !bytes.Equal(b.Bytes(), in[:used]) {
			t.Fatalf("%x: read %d bytes as %v, which encodes as %x", in, used, tg, b.Bytes())
		}
	})
}
