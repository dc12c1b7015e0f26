package status_test

import (
	"os"
	"time"

	"github.com/mptunnel/mptunnel/internal/status"
)

// exampleStatus is the sample shown in docs/STATUS.md.
func exampleStatus(now time.Time) status.Status {
	return status.Status{
		Role:    "client",
		Version: "1.0.0",
		Uptime:  7384.2,
		Sessions: []status.Session{{
			ID:     status.SessionID(0x2a),
			Mode:   status.ModeRedundant,
			Cipher: "aes-256-gcm",
			Flows:  3,
			Paths: []status.Path{
				{
					Remote: "203.0.113.10:4000", Local: "192.0.2.1:50001", State: status.PathUp,
					RTTms: 12.34, JitterMs: 1.2, LossOut: 0.001, LossIn: 0,
					TxPackets: 1234, RxPackets: 3_412_345, TxBytes: 1_523_456, RxBytes: 4_213_456_789,
					Duplicates: 12, LastSeen: status.FormatTime(now.Add(-300 * time.Millisecond)),
				},
				{
					ID: 1, Remote: "198.51.100.7:4000", Local: "10.0.0.2:50002", State: status.PathDegraded,
					RTTms: 48.9, JitterMs: 15.25, LossOut: 0.083, LossIn: 0.12,
					TxPackets: 1230, RxPackets: 3_001_002, TxBytes: 1_519_804, RxBytes: 3_712_004_113,
					Duplicates: 3_398_117, LastSeen: status.FormatTime(now.Add(-1700 * time.Millisecond)),
				},
				{
					ID: 2, Remote: "[2001:db8::7]:4000", Local: "[2001:db8::1]:50003", State: status.PathDown,
					RTTms: 0, JitterMs: 0, LossOut: 1, LossIn: 1,
					TxPackets: 57, RxPackets: 0, TxBytes: 70_308, RxBytes: 0,
					Duplicates: 0, LastSeen: "",
				},
			},
		}},
		Counters: map[string]uint64{"too_old": 3, "unknown_session": 1},
	}
}

var exampleNow = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func ExampleWriteTable() {
	if err := status.WriteTable(os.Stdout, exampleStatus(exampleNow), exampleNow); err != nil {
		panic(err)
	}
	// Output:
	// mptunnel client 1.0.0  up 2h03m  1 session
	// session 0000002a  redundant  aes-256-gcm  3 flows  3 paths
	//   REMOTE                STATE       RTT JITTER  LOSS O/I   TX   RX DUPS     SEEN
	//   203.0.113.10:4000     up       12.3ms 1.20ms   0.1%/0% 1.2k 3.4M   12 0.3s ago
	//   198.51.100.7:4000     degraded 48.9ms 15.2ms  8.3%/12% 1.2k 3.0M 3.4M 1.7s ago
	//   [2001:db8::7]:4000    down          -      - 100%/100%   57    0    0    never
	// counters:
	//   too_old=3 unknown_session=1
}

func ExampleWriteJSON() {
	if err := status.WriteJSON(os.Stdout, exampleStatus(exampleNow)); err != nil {
		panic(err)
	}
	// Output:
	// {
	//   "role": "client",
	//   "version": "1.0.0",
	//   "uptime_s": 7384.2,
	//   "sessions": [
	//     {
	//       "id": "0000002a",
	//       "mode": "redundant",
	//       "cipher": "aes-256-gcm",
	//       "flows": 3,
	//       "paths": [
	//         {
	//           "id": 0,
	//           "remote": "203.0.113.10:4000",
	//           "local": "192.0.2.1:50001",
	//           "state": "up",
	//           "rtt_ms": 12.34,
	//           "jitter_ms": 1.2,
	//           "loss_out": 0.001,
	//           "loss_in": 0,
	//           "tx_packets": 1234,
	//           "rx_packets": 3412345,
	//           "tx_bytes": 1523456,
	//           "rx_bytes": 4213456789,
	//           "duplicates": 12,
	//           "last_seen": "2024-05-01T11:59:59.700Z",
	//           "share": 0
	//         },
	//         {
	//           "id": 1,
	//           "remote": "198.51.100.7:4000",
	//           "local": "10.0.0.2:50002",
	//           "state": "degraded",
	//           "rtt_ms": 48.9,
	//           "jitter_ms": 15.25,
	//           "loss_out": 0.083,
	//           "loss_in": 0.12,
	//           "tx_packets": 1230,
	//           "rx_packets": 3001002,
	//           "tx_bytes": 1519804,
	//           "rx_bytes": 3712004113,
	//           "duplicates": 3398117,
	//           "last_seen": "2024-05-01T11:59:58.300Z",
	//           "share": 0
	//         },
	//         {
	//           "id": 2,
	//           "remote": "[2001:db8::7]:4000",
	//           "local": "[2001:db8::1]:50003",
	//           "state": "down",
	//           "rtt_ms": 0,
	//           "jitter_ms": 0,
	//           "loss_out": 1,
	//           "loss_in": 1,
	//           "tx_packets": 57,
	//           "rx_packets": 0,
	//           "tx_bytes": 70308,
	//           "rx_bytes": 0,
	//           "duplicates": 0,
	//           "last_seen": "",
	//           "share": 0
	//         }
	//       ]
	//     }
	//   ],
	//   "counters": {
	//     "too_old": 3,
	//     "unknown_session": 1
	//   },
	//   "targets": []
	// }
}
