package path

import (
	"time"

	"github.com/mptunnel/mptunnel/internal/status"
)

// Status describes the link for the status socket, with the given remote and
// local addresses.
func (l *Link) Status(remote, local string) status.Path {
	st := l.Stats()
	return status.Path{
		ID:         int(l.ID),
		Remote:     remote,
		Local:      local,
		State:      st.State.String(),
		RTTms:      ms(st.RTT),
		JitterMs:   ms(st.Jitter),
		LossOut:    st.LossOut,
		LossIn:     st.LossIn,
		TxPackets:  l.TxPackets.Load(),
		RxPackets:  l.RxPackets.Load(),
		TxBytes:    l.TxBytes.Load(),
		RxBytes:    l.RxBytes.Load(),
		Duplicates: l.Duplicates.Load(),
		LastSeen:   status.FormatTime(st.LastHeard),
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
